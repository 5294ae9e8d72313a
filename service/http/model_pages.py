"""The models over HTTP: ``GET /model`` (the served model's card), ``GET /models`` (the versions
this server can see), ``GET /models/<version>`` (any version's card, to check it before a switch)
and its pictures.

A card is JSON by default and an HTML page for a client that prefers ``text/html`` (a browser):
version, training data fingerprint, metrics, the variables with coefficients and standard
errors, and the ROC and calibration pictures training drew, served from the version's directory.
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, render_template, request
from werkzeug.exceptions import NotFound

from lib.codecs.media import JSON
from lib.core.artifacts import CALIBRATION_FILE, ROC_FILE
from lib.core.errors import ArtifactError
from lib.core.explain import METHOD as EXPLANATION_METHOD
from service.scoring.model_switch import ModelSwitch

HTML = "text/html"
PICTURES = ((ROC_FILE, "ROC curve per split"), (CALIBRATION_FILE, "Calibration per split"))
#: The card page loads nothing but its own pictures.
CARD_SECURITY_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
#: A version never changes once written: its pictures can be cached for good.
PICTURE_CACHE = "public, max-age=31536000, immutable"


def model_blueprint(models: ModelSwitch, limits: dict) -> Blueprint:
    """The routes above, on ``models`` (this worker's switch); ``limits`` are shown by ``/model``."""
    blueprint = Blueprint("models", __name__, template_folder="templates")

    @blueprint.get("/model")
    def served_card() -> Response:
        served = models.current  # once: a switch may happen while this request runs
        if _wants_html():
            return _card_page(served.version, served.manifest, "/model", serving=True,
                              active=models.active_version == served.version, failed=models.failed)
        card = _card(served.manifest)
        card["limits"] = limits
        card["explanation_method"] = EXPLANATION_METHOD
        card["lifecycle"] = {"active_version": models.active_version, "loaded_at": served.loaded_at,
                             "poll_seconds": models.poll_seconds if models.store is not None else None,
                             "failed_switch": models.failed.as_dict() if models.failed else None}
        return _json(card)

    @blueprint.get("/models")
    def versions() -> Response:
        return _json({"active_version": models.active_version, "serving_version": models.current.version,
                      "versions": models.catalog()})

    @blueprint.get("/models/<version>")
    def version_card(version: str) -> Response:
        manifest = _found(models.manifest_of, version)
        serving, active = version == models.current.version, version == models.active_version
        if _wants_html():
            return _card_page(version, manifest, f"/models/{version}", serving=serving, active=active, failed=None)
        return _json({**_card(manifest), "active": active, "serving": serving})

    @blueprint.get("/models/<version>/<picture>")
    def picture(version: str, picture: str) -> Response:
        if picture not in dict(PICTURES):
            raise NotFound(f"no picture {picture[:40]!r}; pictures: {', '.join(dict(PICTURES))}")
        try:
            data = (_found(models.directory_of, version) / picture).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"version {version} has no {picture}") from None
        response = Response(data, mimetype="image/png")
        response.headers["Cache-Control"] = PICTURE_CACHE
        return response

    return blueprint


def _card(manifest: dict) -> dict:
    """The manifest as a card: everything but the golden row."""
    return {key: value for key, value in manifest.items() if key != "golden"}


def _wants_html() -> bool:
    return request.accept_mimetypes.best_match([JSON, HTML], default=JSON) == HTML


def _json(payload: dict) -> Response:
    response = Response(orjson.dumps(payload), mimetype=JSON)
    response.vary.add("Accept")
    return response


def _card_page(version: str, manifest: dict, json_path: str, serving: bool, active: bool, failed) -> Response:
    page = render_template("model_card.html", version=version, manifest=manifest, data=manifest["training_data"],
                           pictures=PICTURES, json_path=json_path, serving=serving, active=active, failed=failed)
    response = Response(page, mimetype=HTML)
    response.headers["Content-Security-Policy"] = CARD_SECURITY_POLICY
    response.vary.add("Accept")
    return response


def _found(lookup, version: str):
    """``lookup(version)``, an unknown or unusable version answered 404 with the reason."""
    try:
        return lookup(version)
    except ArtifactError as exc:
        raise NotFound(str(exc)) from None
