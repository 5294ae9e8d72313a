"""The OpenAPI document of the HTTP API, assembled from the row and answer schemas.

The schemas are marshmallow's (``service.http.row_schema`` for the input row,
``service.http.answer_schemas`` for what the service sends); this module lays out the paths,
their parameters, bodies, responses and headers, the key schemes, and the 405 and 401 every
operation can answer.
"""

from __future__ import annotations

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from service.http.answer_schemas import (
    COMMON_HEADERS,
    ErrorSchema,
    HealthSchema,
    IndexSchema,
    ModelCardSchema,
    ModelListSchema,
    PredictionColumnsSchema,
    PredictionSchema,
    ReadySchema,
    RowErrorSchema,
    StreamEndSchema,
    VersionCardSchema,
    error_response,
    json_content,
    schema_ref,
)
from service.http.auth import protected
from service.http.errors import allowed_methods
from service.http.openapi_predict import predict_operation
from service.http.row_schema import RowSchema

OPENAPI_VERSION = "3.1.0"
API_TITLE = "Batch prediction API"
API_VERSION = "1.0.0"

#: The two ways of sending an API key (service/http/auth.py), as OpenAPI security schemes.
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API key as `Authorization: Bearer KEY`"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "an API key as `X-API-Key`"},
}


def openapi_document(max_rows: int, max_body_mb: int, errors_modes: tuple[str, ...], n_variables: int,
                     key_paths: tuple[str, ...] | None = None) -> dict:
    """The OpenAPI 3.1 document of the service (build once per process: it takes ~50 ms).

    The key schemes are always declared; with ``key_paths`` (API keys on) the operations under
    those paths require one of them and list the 401."""
    spec = APISpec(title=API_TITLE, version=API_VERSION, openapi_version=OPENAPI_VERSION,
                   plugins=[MarshmallowPlugin()], info={"description": _DESCRIPTION})
    _register_schemas(spec)
    spec.path("/predict", operations={"post": predict_operation(max_rows, max_body_mb, errors_modes,
                                                                 n_variables)})
    _add_other_paths(spec)
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    document = spec.to_dict()
    _list_other_methods(document)
    if key_paths is not None:
        _require_keys(document, key_paths)
    return document


def _register_schemas(spec: APISpec) -> None:
    """Declare the row and answer schemas as the document's components, referred to by name."""
    for name, schema in (("Row", RowSchema), ("Prediction", PredictionSchema), ("RowError", RowErrorSchema),
                         ("PredictionColumns", PredictionColumnsSchema), ("Error", ErrorSchema),
                         ("StreamEnd", StreamEndSchema), ("Index", IndexSchema),
                         ("Health", HealthSchema), ("Ready", ReadySchema), ("ModelCard", ModelCardSchema),
                         ("VersionCard", VersionCardSchema), ("ModelList", ModelListSchema)):
        spec.components.schema(name, schema=schema)


def _add_other_paths(spec: APISpec) -> None:
    """The routes besides ``POST /predict``: the index, health and readiness, the model pages, the docs."""
    spec.path("/", operations={"get": {
        "summary": "Where to start: links to this documentation and the main routes",
        "responses": {
            "200": {"description": "the links", "content": json_content(schema_ref("Index")),
                    "headers": COMMON_HEADERS},
            "302": {"description": "a browser (preferring text/html) is sent to /docs", "headers": {
                "Location": {"description": "/docs", "schema": {"type": "string"}}}},
        }}})
    _get(spec, "/health", "The process is alive", schema_ref("Health"))
    _get(spec, "/ready", "Artifacts verified and the golden row scores as recorded", schema_ref("Ready"),
         {"503": error_response("not ready: artifacts changed or the golden row drifted")})
    _get(spec, "/model", "The served model's card: its manifest (minus the golden row), the limits, its lifecycle; "
         "an HTML page for a browser (Accept: text/html)", schema_ref("ModelCard"), html=True)
    _get(spec, "/models", "The versions of the model store, the active one and the one served", schema_ref("ModelList"))
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    _get(spec, "/models/{version}", "A version's card, to check it before a switch; an HTML page for a browser",
         schema_ref("VersionCard"), {"404": error_response("no such version")}, html=True, parameters=[version])
    spec.path("/models/{version}/{picture}", operations={"get": {
        "summary": "A picture training drew for the version", "parameters": [version, {
            "name": "picture", "in": "path", "required": True,
            "schema": {"type": "string", "enum": ["roc.png", "calibration.png"]}}],
        "responses": {"200": {"description": "PNG", "content": {"image/png": {"schema": {
            "type": "string", "format": "binary"}}}, "headers": COMMON_HEADERS},
            "404": error_response("no such version or picture")}}})
    _get(spec, "/openapi.json", "This document", {"type": "object"})
    spec.path("/metrics", operations={"get": {"summary": "Prometheus metrics, summed over the workers",
                                              "responses": {"200": {"description": "text exposition format",
                                                                    "content": {"text/plain": {"schema": {
                                                                        "type": "string"}}}}}}})
    spec.path("/docs", operations={"get": {"summary": "This documentation as a page (works offline)",
                                           "responses": {"200": {"description": "HTML page",
                                                                 "content": {"text/html": {"schema": {
                                                                     "type": "string"}}}}}}})



def _list_other_methods(document: dict) -> None:
    """Give every operation the 405 any other method on its path gets, with that path's ``Allow``."""
    for operations in document["paths"].values():
        methods = [method.upper() for method in operations]
        allow = ", ".join(allowed_methods([*methods, "OPTIONS", *(["HEAD"] if "GET" in methods else [])]))
        refused = error_response(f"another method on this path; the message names the one to use, `Allow` lists "
                         f"them: `{allow}`")
        refused["headers"] = {**refused["headers"], "Allow": {"description": f"`{allow}`",
                                                              "schema": {"type": "string"}}}
        for operation in operations.values():
            operation["responses"]["405"] = refused


def _require_keys(document: dict, key_paths: tuple[str, ...]) -> None:
    """Mark the operations under ``key_paths`` as needing a key (either scheme), with their 401."""
    refused = error_response("no API key, or not a valid one (the answer carries `WWW-Authenticate: Bearer`)")
    for path, operations in document["paths"].items():
        if protected(path, key_paths) is None:
            continue
        for operation in operations.values():
            operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            operation["responses"]["401"] = refused


def _get(spec: APISpec, path: str, summary: str, schema: dict, more: dict | None = None, html: bool = False,
         parameters: list | None = None) -> None:
    content = {**json_content(schema), **({"text/html": {"schema": {"type": "string"}}} if html else {})}
    responses = {"200": {"description": summary, "content": content, "headers": COMMON_HEADERS}, **(more or {})}
    spec.path(path, operations={"get": {"summary": summary, "responses": responses,
                                        **({"parameters": parameters} if parameters else {})}})


_DESCRIPTION = """\
Scores customers with the segmentation logistic model. `POST /predict` takes one row (a JSON
object) or many (a JSON array of rows or, with `?input=columns`, an object of columns; CSV with a
header row; an Arrow IPC stream; a Parquet file; an NDJSON stream) of the raw 100-column table
`x0..x99`, exactly as the source systems emit it, and answers for every row, in the same order,
the probability of the positive class and the predicted class: as JSON, or as an Arrow or
Parquet table when `Accept` asks for one, or as NDJSON lines for a stream.

Only the columns the model consumes are validated (`GET /model` lists them); other columns and
unknown keys are ignored. Missing values are imputed as at training.
"""
