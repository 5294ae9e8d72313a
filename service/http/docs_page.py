"""The API documentation over HTTP: ``GET /openapi.json``, a Swagger UI page at ``GET /docs``,
and ``GET /`` pointing to both (a browser is redirected to the page).

The page works without internet: Swagger UI's files ship inside the pinned ``flask-swagger-ui``
package (only its static files are used) and are served from ``/docs/<file>``; the online
validator badge is switched off.
"""

from __future__ import annotations

from importlib.resources import files

import orjson
from flask import Blueprint, Response, redirect, request, send_from_directory

SWAGGER_UI_DIR = str(files("flask_swagger_ui") / "dist")
ASSET_MAX_AGE = 86_400  # the assets only change with the pinned package

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
      deepLinking: true,
      tryItOutEnabled: true,
      displayRequestDuration: true,
      validatorUrl: null
    }});
  </script>
</body>
</html>
"""


#: What ``GET /`` points to: where to read about the API and its routes.
LINKS = {"docs": "/docs", "openapi": "/openapi.json", "predict": "/predict", "health": "/health",
         "ready": "/ready", "model": "/model"}


def docs_blueprint(document: dict) -> Blueprint:
    """Routes for ``document`` (an OpenAPI dict, encoded once), the page that renders it, and
    ``GET /``, which points to both."""
    blueprint = Blueprint("docs", __name__)
    encoded = orjson.dumps(document)
    page = _PAGE.format(title=document["info"]["title"])
    index = orjson.dumps({"message": f"{document['info']['title']}: POST rows to /predict; the API is "
                                     "described at /docs (a page) and /openapi.json", "links": LINKS})

    @blueprint.get("/")
    def root() -> Response:
        # A browser (preferring HTML) goes straight to the page; any other client gets the links.
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
            return redirect(LINKS["docs"], 302)
        return Response(index, mimetype="application/json")

    @blueprint.get("/openapi.json")
    def openapi_json() -> Response:
        return Response(encoded, mimetype="application/json")

    @blueprint.get("/docs")
    @blueprint.get("/docs/")
    def docs_page() -> Response:
        return Response(page, mimetype="text/html")

    @blueprint.get("/docs/<path:name>")
    def docs_asset(name: str) -> Response:
        # send_from_directory refuses paths that leave the directory (404).
        return send_from_directory(SWAGGER_UI_DIR, name, max_age=ASSET_MAX_AGE)

    return blueprint
