"""``POST /predict`` as a plain WSGI app, mounted in front of Flask's routing by ``flaskapp``.

The hot path of the service. Through Flask, a one-row request spent more time in the request
context, routing, hooks and response object than in decoding, scoring and encoding together
(docs/PERFORMANCE.md); here the request is a bare werkzeug ``Request`` (the body with
werkzeug's own length checks, the query, the Content-Type) and the answer goes straight to
``start_response``. Errors, headers, metrics and the access line come from ``service.errors``
and ``service.request_cycle``, as for Flask's routes. Every other request, including other
methods on /predict (405 from Flask's routing), goes to Flask.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import orjson
from werkzeug import Request
from werkzeug.http import HTTP_STATUS_CODES

from lib.errors import InputError, PayloadError
from service.errors import error_answer
from service.metrics import Metrics
from service.model_switch import ModelSwitch
from service.predictor import EXPLAIN_ALL, FORMATS, ROWS_FORMAT, Prediction, Predictor
from service.request_cycle import JSON_MIMETYPE, Recorder, deadline, read_body, request_id, server_timing
from service.settings import Settings

PATH = "/predict"
METHOD = "POST"
ERRORS_MODES = ("reject", "inline")


class PredictEndpoint:
    """Answers ``POST /predict``: reads the body, calls ``Predictor.predict``, maps errors."""

    def __init__(self, models: ModelSwitch, settings: Settings, metrics: Metrics, recorder: Recorder):
        self.models = models
        self.settings = settings
        self.metrics = metrics
        self.recorder = recorder
        self.deadline_message = (f"the request did not finish within {settings.deadline_seconds:g} s "
                                 f"(GUNICORN_TIMEOUT={settings.gunicorn_timeout}); send fewer rows per request")

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        # Read once: the request ends on this model whatever a switch does meanwhile.
        served = self.models.current
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        request = Request(environ)
        request.max_content_length = self.settings.max_body_bytes
        headers = [("Content-Type", JSON_MIMETYPE)]
        rows = invalid_rows = 0
        try:
            result = self._predict(request, served.predictor)
        except Exception as exc:  # every error becomes a JSON answer, as Flask's handlers make them
            if isinstance(exc, InputError):
                rows, invalid_rows = exc.n_rows, len(exc.invalid_rows)
                self.metrics.observe_prediction(exc.n_rows, 0, invalid_rows, 0, exc.errors)
            status, payload = error_answer(exc, self.settings.max_body_mb, self.settings.max_listed_errors, rid)
            body = orjson.dumps(payload)
        else:
            status, body, rows, invalid_rows = 200, result.body, result.n_rows, result.n_invalid
            self.metrics.observe_prediction(result.n_rows, result.n_rows - result.n_invalid, result.n_invalid,
                                            result.n_positive, result.errors, result.phases, result.drift)
            headers.append(("Server-Timing", server_timing(result.phases)))
        headers.append(("Content-Length", str(len(body))))
        headers += self.recorder.finish(rid, started, METHOD, PATH, PATH, status, request.content_length or 0,
                                        len(body), rows, invalid_rows, model_version=served.version)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}", headers)
        return [body]

    def _predict(self, request: Request, predictor: Predictor) -> Prediction:
        args = request.args if request.environ.get("QUERY_STRING") else {}
        fmt = args.get("format", ROWS_FORMAT)
        errors_mode = args.get("errors", "reject")
        explain = self._explain(args.get("explain"), predictor)
        if fmt not in FORMATS:
            raise PayloadError(f"format must be one of {', '.join(FORMATS)}, got {fmt[:40]!r}")
        if errors_mode not in ERRORS_MODES:
            raise PayloadError(f"errors must be one of {', '.join(ERRORS_MODES)}, got {errors_mode[:40]!r}")
        with deadline(self.settings.deadline_seconds, self.deadline_message):
            body = read_body(request, self.settings.max_body_bytes)
            return predictor.predict(body, request.mimetype, fmt, inline_errors=errors_mode == "inline",
                                     explain=explain)

    def _explain(self, value: str | None, predictor: Predictor) -> int | None:
        """How many reasons per row ``?explain=`` asks for: None without it, every one for ``all``."""
        most = predictor.n_variables
        if value is None:
            return None
        if value == EXPLAIN_ALL:
            return most
        if value.isascii() and value.isdigit() and 1 <= int(value) <= most:
            return int(value)
        raise PayloadError(f"explain must be an integer from 1 to {most} or {EXPLAIN_ALL!r}, got {value[:40]!r}")


def mount(flask_wsgi_app: Callable, endpoint: PredictEndpoint) -> Callable:
    """A WSGI app that sends ``POST /predict`` to ``endpoint`` and everything else to Flask."""

    def dispatch(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH and environ.get("REQUEST_METHOD") == METHOD:
            return endpoint(environ, start_response)
        return flask_wsgi_app(environ, start_response)

    return dispatch
