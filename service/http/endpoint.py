"""``POST /predict`` as a plain WSGI app, mounted in front of Flask's routing by ``flaskapp``.

The hot path of the service. Through Flask, a one-row request spent more time in the request
context, routing, hooks and response object than in decoding, scoring and encoding together
(docs/PERFORMANCE.md); here the request is a bare werkzeug ``Request`` (the body with
werkzeug's own length checks, the query, the Content-Type) and the answer goes straight to
``start_response``. Errors, headers, metrics and the access line come from ``service.http.errors``
and ``service.http.request_steps``, as for Flask's routes. Every other request, including other
methods on /predict (405 from Flask's routing), goes to Flask.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import orjson
from werkzeug import Request
from werkzeug.http import HTTP_STATUS_CODES

from lib.codecs.media import JSON, NDJSON
from lib.core.columns import ColumnError, ColumnReport
from lib.core.errors import InputError, PayloadError
from service.http.auth import KEY_NAME
from service.http.errors import error_answer
from service.http.readers import INPUT_LAYOUTS
from service.http.request_steps import ArrivingBody, Deadline, Exchange, Recorder, read_body, request_id, server_timing
from service.http.streaming import Heartbeat, NdjsonStream, StreamLimits, StreamTotals
from service.ops.metrics import Metrics
from service.ops.settings import MB, Settings
from service.scoring.answers import ANSWER_ALIASES, ANSWER_TYPES, FORMATS, ROWS_FORMAT
from service.scoring.column_report import COLUMN_MODES, column_headers, log_field
from service.scoring.model_switch import ModelSwitch, ServedModel
from service.scoring.predictor import EXPLAIN_ALL, Prediction, Predictor
from service.seams.gunicorn_internals import client_socket

PATH = "/predict"
METHOD = "POST"
ERRORS_MODES = ("reject", "inline")


class PredictEndpoint:
    """Answers ``POST /predict``: reads the body, calls ``Predictor.predict``, maps errors."""

    def __init__(self, models: ModelSwitch, settings: Settings, metrics: Metrics, recorder: Recorder,
                 heartbeat: Heartbeat):
        """``heartbeat``: how a stream tells gunicorn its worker is alive (the app's, connected per worker)."""
        self.models = models
        self.settings = settings
        self.metrics = metrics
        self.recorder = recorder
        self.heartbeat = heartbeat
        self.deadline = Deadline(settings.deadline_seconds,
                                 f"the request did not finish within {settings.deadline_seconds:g} s "
                                 f"(GUNICORN_TIMEOUT={settings.gunicorn_timeout}); send fewer rows per request")

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        # Read once: the request (or stream) ends on this model whatever a switch does meanwhile.
        served = self.models.current
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        request = Request(environ)
        request.max_content_length = self.settings.max_body_bytes
        stream_reader = served.predictor.reader.streamed_reader(request.mimetype)
        if stream_reader is not None:
            try:
                explain, strict = self._stream_options(request, served.predictor)
            except PayloadError as exc:
                return self._answer_error(exc, rid=rid, started=started, model_version=served.version,
                                          key=environ.get(KEY_NAME), start_response=start_response)
            return self._stream(request, served, stream_reader, explain=explain, strict=strict, rid=rid,
                                started=started, start_response=start_response)
        headers = [("Content-Type", JSON)]
        rows = invalid_rows = 0
        report = ColumnReport()
        try:
            result = self._predict(request, served.predictor)
        except Exception as exc:  # every error becomes a JSON answer, as Flask's handlers make them
            if isinstance(exc, InputError):
                rows, invalid_rows = exc.n_rows, len(exc.invalid_rows)
                self.metrics.observe_prediction(n_rows=exc.n_rows, n_scored=0, n_invalid=invalid_rows, n_positive=0,
                                                errors=exc.errors)
            if isinstance(exc, ColumnError):
                rows, report = exc.n_rows, exc.report
            status, payload = error_answer(exc, self.settings.max_body_mb, self.settings.max_listed_errors, rid)
            body = orjson.dumps(payload)
        else:
            status, body, rows, invalid_rows = 200, result.body, result.n_rows, result.n_invalid
            self._observe(result)
            report = result.columns
            headers = [("Content-Type", result.media_type), ("Server-Timing", server_timing(result.phases)),
                       *column_headers(report)]
        self.metrics.observe_columns(report)
        headers.append(("Content-Length", str(len(body))))
        exchange = Exchange(request_id=rid, started=started, method=METHOD, path=PATH, endpoint=PATH, status=status,
                            bytes_in=request.content_length or 0, bytes_out=len(body), rows=rows,
                            invalid_rows=invalid_rows, key=environ.get(KEY_NAME), columns=log_field(report))
        headers += self.recorder.finish(exchange, model_version=served.version)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}", headers)
        return [body]

    def _predict(self, request: Request, predictor: Predictor) -> Prediction:
        args = request.args if request.environ.get("QUERY_STRING") else {}
        fmt = _choice(args, "format", FORMATS)
        errors_mode = _choice(args, "errors", ERRORS_MODES)
        layout = _choice(args, "input", INPUT_LAYOUTS)
        strict = self._strict(args)
        explain = self._explain(args.get("explain"), predictor)
        answer = JSON
        if request.environ.get("HTTP_ACCEPT"):
            offered = request.accept_mimetypes.best_match([*ANSWER_TYPES, *ANSWER_ALIASES], default=JSON)
            answer = ANSWER_ALIASES.get(offered, offered)
        with self.deadline.running():
            body = read_body(request, self.settings.max_body_bytes)
            return predictor.predict(body, request.mimetype, fmt, inline_errors=errors_mode == "inline",
                                     explain=explain, layout=layout, answer=answer, strict_columns=strict)

    def _observe(self, result: Prediction) -> None:
        self.metrics.observe_prediction(n_rows=result.n_rows, n_scored=result.n_rows - result.n_invalid,
                                        n_invalid=result.n_invalid, n_positive=result.n_positive,
                                        errors=result.errors, phases=result.phases, drift=result.drift)

    def _answer_error(self, exc: Exception, *, rid: str, started: float, model_version: str, key: str | None,
                      start_response: Callable) -> Iterable[bytes]:
        status, payload = error_answer(exc, self.settings.max_body_mb, self.settings.max_listed_errors, rid)
        body = orjson.dumps(payload)
        headers = [("Content-Type", JSON), ("Content-Length", str(len(body)))]
        exchange = Exchange(request_id=rid, started=started, method=METHOD, path=PATH, endpoint=PATH, status=status,
                            bytes_in=0, bytes_out=len(body), key=key)
        headers += self.recorder.finish(exchange, model_version=model_version)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}", headers)
        return [body]

    def _strict(self, args) -> bool:
        """Whether a body with a column report is refused: ``?columns=strict`` or REQUIRE_COLUMNS."""
        return _choice(args, "columns", COLUMN_MODES) == "strict" or self.settings.require_columns

    def _stream_options(self, request: Request, predictor: Predictor) -> tuple[int | None, bool]:
        """The query of a streamed request: ``explain`` and ``columns``; every row is answered inline."""
        args = request.args if request.environ.get("QUERY_STRING") else {}
        for name, allowed in (("format", ROWS_FORMAT), ("errors", "inline"), ("input", "rows")):
            if args.get(name, allowed) != allowed:
                raise PayloadError(f"{name}={args[name][:40]!r} does not apply to a stream ({NDJSON}): its answer "
                                   "is NDJSON, one line a row, with an error object in place of an invalid row")
        return self._explain(args.get("explain"), predictor), self._strict(args)

    def _stream(self, request: Request, served: ServedModel, reader, *, explain: int | None, strict: bool, rid: str,
                started: float, start_response: Callable) -> Iterable[bytes]:
        """Answer an NDJSON body chunk by chunk (service.http.streaming) as it arrives."""
        settings = self.settings
        sock = client_socket(request.environ)
        if sock is not None:  # bounds every wait on the client, reading its rows or writing answers
            sock.settimeout(settings.stream_idle_limit)
        # The answers the client does not take yet are held while its rows are read (all but TLS
        # terminated by gunicorn, whose socket is not the buffered worker's).
        hold_answers = getattr(sock, "hold_answers", None)
        hold = hold_answers(settings.stream_hold_bytes, settings.stream_idle_limit) if hold_answers else None

        def start(status: int, error_body: bytes | None, report: ColumnReport | None = None) -> None:
            # A stream's headers show the column report of its first chunk; the access line, the whole stream's.
            headers = [("Content-Type", NDJSON), *column_headers(report or ColumnReport())]
            if error_body is not None:
                headers = [("Content-Type", JSON), ("Content-Length", str(len(error_body)))]
            start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}",
                           headers + self.recorder.headers(rid, served.version))

        def on_end(totals: StreamTotals) -> None:
            report = totals.columns or ColumnReport()
            self.metrics.observe_columns(report)
            self.recorder.record(Exchange(
                request_id=rid, started=started, method=METHOD, path=PATH, endpoint=PATH, status=totals.status,
                bytes_in=totals.bytes_in, bytes_out=totals.bytes_out, rows=totals.rows,
                invalid_rows=totals.invalid_rows, key=request.environ.get(KEY_NAME), columns=log_field(report)))

        limits = StreamLimits(settings.stream_max_body_mb * MB, settings.stream_timeout, settings.stream_idle_limit,
                              settings.stream_chunk_rows)
        return NdjsonStream(predictor=served.predictor, reader=reader,
                            body=ArrivingBody(request.environ["wsgi.input"], sock), limits=limits, explain=explain,
                            start=start, on_chunk=self._observe, on_end=on_end, beat=self.heartbeat, request_id=rid,
                            hold=hold, strict_columns=strict)

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


def _choice(args, name: str, allowed: tuple[str, ...]) -> str:
    """The value of query parameter ``name``, one of ``allowed`` (the first by default)."""
    value = args.get(name, allowed[0])
    if value not in allowed:
        raise PayloadError(f"{name} must be one of {', '.join(allowed)}, got {value[:40]!r}")
    return value


def mount(flask_wsgi_app: Callable, endpoint: PredictEndpoint) -> Callable:
    """A WSGI app that sends ``POST /predict`` to ``endpoint`` and everything else to Flask."""

    def dispatch(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH and environ.get("REQUEST_METHOD") == METHOD:
            return endpoint(environ, start_response)
        return flask_wsgi_app(environ, start_response)

    return dispatch
