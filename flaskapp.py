"""HTTP layer: read the body and headers, call the core, map errors to status codes.

gunicorn serves ``flaskapp:create_app()``; artifacts are verified and loaded once, in the
factory, before the first request.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from http import HTTPStatus

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from lib.artifacts import load_artifacts, read_manifest, verify_files
from lib.errors import (
    ArtifactError,
    InputError,
    LimitError,
    PayloadError,
    ServiceError,
    UnsupportedMediaError,
)
from lib.scorer import check_golden
from metrics import Metrics
from predictor import FORMATS, Predictor, ROWS_FORMAT
from settings import Settings

ERROR_STATUS = {
    PayloadError: 400,
    LimitError: 413,
    UnsupportedMediaError: 415,
    InputError: 422,
    ArtifactError: 503,
}
ERROR_CODES = {400: "bad_request", 413: "too_large", 415: "unsupported_media_type",
               422: "invalid_rows", 503: "not_ready"}
REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ERRORS_MODES = ("reject", "inline")

log = logging.getLogger("predict")
access_log = logging.getLogger("predict.access")


def json_response(payload: object, status: int = 200) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(payload), status=status, mimetype="application/json")


def error_response(status: int, message: str, **extra: object) -> Response:
    """The JSON error body every non-2xx answer uses."""
    code = ERROR_CODES.get(status) or _status_code_name(status)
    return json_response({"error": code, "message": message, **extra}, status)


def _status_code_name(status: int) -> str:
    try:
        return re.sub(r"\W+", "_", HTTPStatus(status).phrase).lower()
    except ValueError:
        return "error"


def _configure_logging(level: str) -> None:
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.propagate = False
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level.upper())
    access_log.setLevel(level.upper())


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings, verified artifacts, compiled plan, routes, error handlers."""
    settings = Settings.from_env().with_overrides(test_config)
    _configure_logging(settings.log_level)
    try:
        stages = load_artifacts(settings.model_dir, settings.allow_version_mismatch)
        predictor = Predictor(stages, settings.max_rows)
        check_golden(predictor.plan, stages.manifest)
    except ArtifactError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(f"cannot start: {exc}") from None
    manifest = stages.manifest
    version = stages.version
    metrics = Metrics(version)
    log.info("model %s loaded from %s", version, settings.model_dir)

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, SETTINGS=settings)

    @app.before_request
    def start_request() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
        g.started = time.perf_counter()
        g.rows = g.invalid_rows = 0

    @app.after_request
    def finish_request(response: Response) -> Response:
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or uuid.uuid4().hex
        response.headers[MODEL_VERSION_HEADER] = version
        response.headers["X-Content-Type-Options"] = "nosniff"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.observe_request(endpoint, request.method, response.status_code, seconds)
        access_log.info(orjson.dumps({
            "request_id": response.headers[REQUEST_ID_HEADER], "method": request.method,
            "path": request.path, "status": response.status_code, "rows": g.get("rows", 0),
            "invalid_rows": g.get("invalid_rows", 0), "duration_ms": round(seconds * 1000, 3),
            "bytes_in": request.content_length or 0, "bytes_out": response.calculate_content_length(),
        }).decode())
        return response

    @app.post("/predict")
    def predict() -> Response:
        fmt = request.args.get("format", ROWS_FORMAT)
        errors_mode = request.args.get("errors", "reject")
        if fmt not in FORMATS:
            return error_response(400, f"format must be one of {', '.join(FORMATS)}, got {fmt[:40]!r}")
        if errors_mode not in ERRORS_MODES:
            return error_response(400, f"errors must be one of {', '.join(ERRORS_MODES)}, got {errors_mode[:40]!r}")
        result = predictor.predict(request.get_data(cache=False), request.mimetype, fmt,
                                   inline_errors=errors_mode == "inline")
        g.rows, g.invalid_rows = result.n_rows, result.n_invalid
        metrics.observe_scores(result.n_rows, result.n_rows - result.n_invalid,
                               result.n_positive, result.rejected_columns)
        return Response(result.body, mimetype="application/json")

    @app.get("/health")
    def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready")
    def ready() -> Response:
        try:
            # The files on disk must still be the ones loaded, and the plan must still
            # reproduce the golden row recorded at training.
            if read_manifest(settings.model_dir) != manifest:
                raise ArtifactError("manifest.json on disk differs from the loaded model")
            verify_files(settings.model_dir, manifest)
            check_golden(predictor.plan, manifest)
        except ArtifactError as exc:
            return error_response(503, str(exc))
        return json_response({"status": "ready", "model_version": version})

    @app.get("/model")
    def model_card() -> Response:
        card = {key: manifest[key] for key in manifest if key != "golden"}
        card["limits"] = {"max_rows": settings.max_rows, "max_body_bytes": settings.max_body_bytes,
                          "timeout_seconds": settings.gunicorn_timeout}
        return json_response(card)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(metrics.render(), mimetype=metrics.content_type.split(";")[0])

    @app.errorhandler(ServiceError)
    def service_error(exc: ServiceError) -> Response:
        status = next(s for cls, s in ERROR_STATUS.items() if isinstance(exc, cls))
        if isinstance(exc, InputError):
            g.rows, g.invalid_rows = exc.n_rows, len(exc.invalid_rows)
            listed = exc.errors[: settings.max_listed_errors]
            metrics.observe_scores(exc.n_rows, 0, 0, [e.column for e in exc.errors])
            return error_response(
                status, str(exc), invalid_row_count=len(exc.invalid_rows), error_count=len(exc.errors),
                errors=[e.as_dict() for e in listed], errors_truncated=len(listed) < len(exc.errors),
            )
        return error_response(status, str(exc))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Response:
        return error_response(413, f"the body is over the limit of {settings.max_body_mb} MB per request (MAX_BODY_MB)")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error in request %s", g.get("request_id"))
        return error_response(500, "internal server error; the request id identifies it in the logs")

    return app
