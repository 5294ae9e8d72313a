"""HTTP layer: read the body and headers, call the core, map errors to status codes.

gunicorn serves ``flaskapp:create_app()``; artifacts are verified and loaded once, in the
factory, before the first request.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus

import orjson
from flask import Flask, Response, g, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from access_log import AccessLog
from api_docs import docs_blueprint
from api_schema import openapi_document
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
from predictor import FORMATS, PHASES, ROWS_FORMAT, Predictor
from settings import Settings


class DeadlineError(ServiceError):
    """A request ran past its time budget; raised from SIGALRM by ``deadline``."""


ERROR_STATUS = {
    PayloadError: 400,
    LimitError: 413,
    UnsupportedMediaError: 415,
    InputError: 422,
    ArtifactError: 503,
    DeadlineError: 504,
}
ERROR_CODES = {400: "bad_request", 413: "too_large", 415: "unsupported_media_type",
               422: "invalid_rows", 503: "not_ready", 504: "deadline_exceeded"}
REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ERRORS_MODES = ("reject", "inline")

log = logging.getLogger("predict")


def json_response(payload: object, status: int = 200) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(payload), status=status, mimetype="application/json")


def error_response(status: int, message: str, **extra: object) -> Response:
    """The JSON error body every non-2xx answer uses."""
    code = ERROR_CODES.get(status) or _status_code_name(status)
    return json_response({"error": code, "message": message, **extra}, status)


def server_timing(phases: dict[str, float]) -> str:
    """The Server-Timing header value: each phase's duration in milliseconds."""
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in phases.items())


def _status_code_name(status: int) -> str:
    try:
        return re.sub(r"\W+", "_", HTTPStatus(status).phrase).lower()
    except ValueError:
        return "error"


@contextmanager
def deadline(seconds: float, message: str) -> Iterator[None]:
    """Raise DeadlineError(message) inside the block once ``seconds`` have passed.

    gunicorn kills a sync worker that overruns its timeout, and the client then gets
    gunicorn's HTML 500 instead of an answer; this lets the app answer first and go on
    serving. Only the main thread can take signals, and a real-time timer somebody else
    set (pytest-timeout) is left alone: the block then runs without a deadline.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0]:
        yield
        return
    # The handler is installed once per process (a request only arms and disarms the timer);
    # it is checked each time because a test runner may have put its own in its place.
    if signal.getsignal(signal.SIGALRM) is not _expire:
        signal.signal(signal.SIGALRM, _expire)
    _deadline_message[0] = message
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


_deadline_message = [""]


def _expire(signum, frame) -> None:
    raise DeadlineError(_deadline_message[0])


def read_body(max_bytes: int) -> bytes:
    """The whole request body, refused when it is over ``max_bytes`` or shorter than announced."""
    try:
        body = request.get_data(cache=False)
    except ParseException:  # gunicorn reads chunked framing while the app reads the body
        raise PayloadError("the chunked transfer encoding of the body is malformed") from None
    announced = request.content_length
    if announced is None and len(body) >= max_bytes:
        # Without Content-Length (chunked), werkzeug stops reading at MAX_CONTENT_LENGTH and
        # hands over what it has, as if the body ended there.
        raise RequestEntityTooLarge()
    if announced is not None and len(body) < announced:
        # gunicorn hands over what arrived when the client stops sending early.
        raise PayloadError(f"the body ended after {len(body)} of the {announced} bytes given in Content-Length")
    return body


def _configure_logging(level: str) -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level.upper())


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings, verified artifacts, compiled plan, routes, error handlers."""
    settings = Settings.from_env().with_overrides(test_config)
    _configure_logging(settings.log_level)
    try:
        stages = load_artifacts(settings.model_dir, settings.allow_version_mismatch)
        predictor = Predictor(stages, settings.max_rows, drift=settings.metrics_enabled)
        check_golden(predictor.plan, stages.manifest)
    except ArtifactError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(f"cannot start: {exc}") from None
    manifest = stages.manifest
    version = stages.version
    metrics = Metrics(version, manifest["created_at"], manifest["consumed_columns"], PHASES,
                      enabled=settings.metrics_enabled)
    access_log = AccessLog() if settings.access_log else None
    log.info("model %s loaded from %s", version, settings.model_dir)

    app = Flask(__name__)
    # DEBUG stays off whatever FLASK_DEBUG says: Flask would read it from the environment.
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, DEBUG=False)
    deadline_message = (f"the request did not finish within {settings.deadline_seconds:g} s "
                        f"(GUNICORN_TIMEOUT={settings.gunicorn_timeout}); send fewer rows per request")

    @app.before_request
    def start_request() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if given and _REQUEST_ID_RE.fullmatch(given) else os.urandom(16).hex()
        g.started = time.perf_counter()
        g.rows = g.invalid_rows = 0

    @app.after_request
    def finish_request(response: Response) -> Response:
        # The objects behind Flask's context proxies, fetched once: each proxy access costs
        # about as much as a metric sample, and this runs on every request.
        req, state = request._get_current_object(), g._get_current_object()
        request_id = response.headers[REQUEST_ID_HEADER] = state.get("request_id") or os.urandom(16).hex()
        response.headers[MODEL_VERSION_HEADER] = version
        response.headers["X-Content-Type-Options"] = "nosniff"
        seconds = time.perf_counter() - state.get("started", time.perf_counter())
        endpoint = req.url_rule.rule if req.url_rule else "unmatched"
        metrics.observe_request(endpoint, req.method, response.status_code, seconds)
        if access_log is not None:
            # The path without its query string, and never a byte of the body.
            access_log.write({
                "time": round(time.time(), 3), "request_id": request_id, "method": req.method,
                "path": req.path, "status": response.status_code, "rows": state.get("rows", 0),
                "invalid_rows": state.get("invalid_rows", 0), "duration_ms": round(seconds * 1000, 3),
                "bytes_in": req.content_length or 0, "bytes_out": response.content_length, "pid": os.getpid(),
            })
        return response

    @app.post("/predict")
    def predict() -> Response:
        args = request.args if request.query_string else {}
        fmt = args.get("format", ROWS_FORMAT)
        errors_mode = args.get("errors", "reject")
        if fmt not in FORMATS:
            return error_response(400, f"format must be one of {', '.join(FORMATS)}, got {fmt[:40]!r}")
        if errors_mode not in ERRORS_MODES:
            return error_response(400, f"errors must be one of {', '.join(ERRORS_MODES)}, got {errors_mode[:40]!r}")
        with deadline(settings.deadline_seconds, deadline_message):
            result = predictor.predict(read_body(settings.max_body_bytes), request.mimetype, fmt,
                                       inline_errors=errors_mode == "inline")
        g.rows, g.invalid_rows = result.n_rows, result.n_invalid
        metrics.observe_prediction(result.n_rows, result.n_rows - result.n_invalid, result.n_invalid,
                                   result.n_positive, result.errors, result.phases, result.drift)
        response = Response(result.body, mimetype="application/json")
        response.headers["Server-Timing"] = server_timing(result.phases)
        return response

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

    app.register_blueprint(docs_blueprint(openapi_document(settings.max_rows, settings.max_body_mb, ERRORS_MODES)))

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(metrics.render(), mimetype=metrics.content_type.split(";")[0])

    @app.errorhandler(ServiceError)
    def service_error(exc: ServiceError) -> Response:
        status = next(s for cls, s in ERROR_STATUS.items() if isinstance(exc, cls))
        if isinstance(exc, InputError):
            g.rows, g.invalid_rows = exc.n_rows, len(exc.invalid_rows)
            listed = exc.errors[: settings.max_listed_errors]
            metrics.observe_prediction(exc.n_rows, 0, len(exc.invalid_rows), 0, exc.errors)
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
