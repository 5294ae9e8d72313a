"""The app factory gunicorn serves (``flaskapp:create_app()``): it assembles the service.

The model to serve (the model store's active version, or MODEL_DIR) is verified and loaded once,
in the factory, before the first request; ``service.scoring.model_switch`` then follows the store's
pointer in each worker. The request body reader (``service.http.readers.body_formats``) is built here and
handed to every predictor. ``POST /predict``, the hot path, is answered by
``service.http.endpoint.PredictEndpoint``, mounted in front of Flask's routing; Flask answers the
other routes. What both share is in ``service/``.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import MethodNotAllowed

from lib.core.artifacts import Stages, read_manifest, verify_files
from lib.core.errors import ArtifactError
from lib.core.scorer import check_golden
from service.http.auth import KEY_NAME, KeyCheck
from service.http.docs_page import docs_blueprint
from service.http.endpoint import ERRORS_MODES, METHOD, PATH, PredictEndpoint, mount
from service.http.errors import error_answer, error_payload, method_not_allowed
from service.http.model_pages import model_blueprint
from service.http.openapi import openapi_document
from service.http.readers.body_formats import BodyReader
from service.http.request_steps import RECORDER_EXTENSION, REQUEST_ID_HEADER, Exchange, Recorder, request_id
from service.http.streaming import HEARTBEAT_EXTENSION, Heartbeat
from service.ops.access_log import AccessLog
from service.ops.keys import KeyFile, KeyFileError
from service.ops.metrics import Metrics
from service.ops.settings import Settings, settings_or_exit
from service.scoring.model_switch import EXTENSION, ModelSwitch
from service.scoring.predictor import PHASES, Predictor
from service.worker import drain

log = logging.getLogger("predict")


def json_response(payload: object, status: int = 200) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(payload), status=status, mimetype="application/json")


def _configure_logging(level: str) -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level.upper())


def _unrouted_endpoint(app: Flask, req) -> str:
    """The metrics label of a request no view answered: its route for a 405 (the path exists,
    the method does not), ``unmatched`` for a 404."""
    if isinstance(req.routing_exception, MethodNotAllowed) and req.routing_exception.valid_methods:
        adapter = app.url_map.bind_to_environ(req.environ)
        rule, _ = adapter.match(method=req.routing_exception.valid_methods[0], return_rule=True)
        return rule.rule
    return "unmatched"


def _key_file(settings: Settings, metrics: Metrics) -> KeyFile:
    """The API key file, which must be readable and well-formed at start."""
    try:
        keys = KeyFile(settings.api_keys_file, on_failure=metrics.count_key_file_failure)
    except KeyFileError as exc:
        log.error("cannot start: %s (API_KEYS_FILE)", exc)
        raise SystemExit(f"cannot start: {exc} (API_KEYS_FILE)") from None
    ring = keys.ring()
    log.info("API keys on for %s: %d keys of %d names from %s", settings.api_keys_paths, len(ring.entries),
             len(ring.names), settings.api_keys_file)
    return keys


def create_app(test_config: dict | None = None, settings: Settings | None = None) -> Flask:
    """Build the app: settings, verified artifacts, compiled plan, routes, error handlers.

    ``settings`` is the server's settings object; without it, the environment's (under
    gunicorn, the object gunicorn.conf.py read). ``test_config`` replaces some of its values and
    is checked the same way: a bad value exits with every problem on stderr."""
    settings = settings_or_exit(settings, test_config)
    _configure_logging(settings.log_level)
    metrics = Metrics(PHASES, enabled=settings.metrics_enabled)
    models = _open_models(settings, metrics)
    recorder = Recorder(metrics, AccessLog() if settings.access_log else None)

    app = Flask(__name__)
    # DEBUG stays off whatever FLASK_DEBUG says: Flask would read it from the environment.
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, DEBUG=False)
    # gunicorn.conf.py's post_worker_init starts the pointer watch in each worker.
    app.extensions[EXTENSION] = models
    # service/worker/buffered_worker.py records the requests it answers before they reach the app.
    app.extensions[RECORDER_EXTENSION] = recorder
    # gunicorn.conf.py's post_worker_init connects it to each worker (a long stream's heartbeat).
    heartbeat = app.extensions[HEARTBEAT_EXTENSION] = Heartbeat()
    # gunicorn.conf.py's when_ready adds the server's drain flag (service.worker.drain.EXTENSION).
    _record_requests(app, models, recorder)
    _mount_predict(app, settings, models, metrics, recorder, heartbeat)
    _add_routes(app, settings, models, metrics)
    _add_error_handlers(app, settings)
    return app


def _open_models(settings: Settings, metrics: Metrics) -> ModelSwitch:
    """Load and verify the model to serve; each version's predictor reads bodies within the limits."""

    def build_predictor(stages: Stages) -> Predictor:
        limits = settings.decode_limits
        return Predictor(stages, lambda columns: BodyReader(columns, limits), drift=settings.metrics_enabled)

    # The directory is named here, in the operator's log, and never in an HTTP answer.
    source = (f"model directory {settings.model_dir}" if settings.model_dir is not None
              else f"model store {settings.model_store}")
    try:
        models = ModelSwitch.open(settings, build_predictor, metrics)
    except ArtifactError as exc:
        log.error("cannot start: %s (%s)", exc, source)
        raise SystemExit(f"cannot start: {exc} ({source})") from None
    log.info("model %s loaded from the %s", models.current.version, source)
    return models


def _record_requests(app: Flask, models: ModelSwitch, recorder: Recorder) -> None:
    """Give each request Flask answers an id, a start time and its model; record it when it ends."""

    @app.before_request
    def start_request() -> None:
        g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))
        g.started = time.perf_counter()
        g.model = models.current  # read once: the request ends on this model

    @app.after_request
    def finish_request(response: Response) -> Response:
        # The objects behind Flask's context proxies, fetched once: each proxy access costs
        # about as much as a metric sample.
        req, state = request._get_current_object(), g._get_current_object()
        endpoint = req.url_rule.rule if req.url_rule else _unrouted_endpoint(app, req)
        exchange = Exchange(
            request_id=state.get("request_id") or request_id(None), started=state.get("started", time.perf_counter()),
            method=req.method, path=req.path, endpoint=endpoint, status=response.status_code,
            bytes_in=req.content_length or 0, bytes_out=response.content_length, key=req.environ.get(KEY_NAME))
        response.headers.extend(recorder.finish(exchange, model_version=state.get("model", models.current).version))
        return response


def _mount_predict(app: Flask, settings: Settings, models: ModelSwitch, metrics: Metrics, recorder: Recorder,
                   heartbeat: Heartbeat) -> None:
    """Answer ``POST /predict`` in front of Flask's routing, behind the key check when keys are on."""
    # POST /predict never reaches Flask: ``mount`` sends it to the endpoint. The rule is here
    # so that Flask's routing answers the other methods on /predict (405, OPTIONS).
    app.add_url_rule(PATH, endpoint="predict", methods=[METHOD])
    app.wsgi_app = mount(app.wsgi_app, PredictEndpoint(models, settings, metrics, recorder, heartbeat))
    if settings.api_keys_file is not None:
        app.wsgi_app = KeyCheck(app.wsgi_app, _key_file(settings, metrics), settings.key_paths, metrics, recorder)


def _add_routes(app: Flask, settings: Settings, models: ModelSwitch, metrics: Metrics) -> None:
    """The routes Flask answers: health, readiness, the model pages, the docs, the metrics."""

    @app.get("/health")
    def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready")
    def ready() -> Response:
        if drain.is_draining(app):
            return json_response(error_payload(503, "draining: this server is stopping"), 503)
        served = g.model
        try:
            # The files on disk must still be the ones loaded, and the plan must still
            # reproduce the golden row recorded at training. A switch that failed does not
            # count: the worker still serves its verified model.
            if read_manifest(served.directory) != served.manifest:
                raise ArtifactError("manifest.json on disk differs from the loaded model")
            verify_files(served.directory, served.manifest)
            check_golden(served.predictor.plan, served.manifest)
        except ArtifactError as exc:
            return json_response(error_payload(503, str(exc)), 503)
        return json_response({"status": "ready", "model_version": served.version})

    app.register_blueprint(model_blueprint(models, {
        "max_rows": settings.max_rows, "max_body_bytes": settings.max_body_bytes,
        "timeout_seconds": settings.gunicorn_timeout, "graceful_timeout_seconds": settings.graceful_timeout,
        "max_listed_errors": settings.max_listed_errors}))
    key_paths = settings.key_paths if settings.api_keys_file is not None else None
    app.register_blueprint(docs_blueprint(openapi_document(settings.max_rows, settings.max_body_mb, ERRORS_MODES,
                                                           models.current.predictor.n_variables, key_paths)))

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(metrics.render(), mimetype=metrics.content_type.split(";")[0])


def _add_error_handlers(app: Flask, settings: Settings) -> None:
    """A wrong method answers 405 with its ``Allow``; any other error its status, an unexpected one 500."""

    @app.errorhandler(MethodNotAllowed)
    def wrong_method(exc: MethodNotAllowed) -> Response:
        payload, allow = method_not_allowed(request.method, request.path, exc.valid_methods or ())
        response = json_response(payload, 405)
        response.headers["Allow"] = allow
        return response

    @app.errorhandler(Exception)
    def error(exc: Exception) -> Response:
        # Routing's 404 and, for anything else, a bare 500 (logged with the request id).
        status, payload = error_answer(exc, settings.max_body_mb, settings.max_listed_errors, g.get("request_id"))
        return json_response(payload, status)
