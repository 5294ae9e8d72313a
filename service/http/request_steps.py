"""What every request goes through, whichever entry point answers it (the Flask app of
``flaskapp.py``, or the ``POST /predict`` endpoint mounted in front of it): its id, its deadline,
reading its body, and the bookkeeping of its answer (headers, request metrics, access line).
Plain WSGI and werkzeug: no Flask here.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from werkzeug import Request
from werkzeug.exceptions import RequestEntityTooLarge

from lib.core.errors import PayloadError
from service.http.errors import ClientTimeoutError, DeadlineError
from service.ops.access_log import AccessLog
from service.ops.metrics import Metrics
from service.seams import gunicorn_internals
from service.seams.gunicorn_internals import NoMoreData, ParseException

REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
#: The key of the app's ``Recorder`` in ``app.extensions``: service/worker/buffered_worker.py records
#: with it the requests it answers itself (408, 503) before they reach the app.
RECORDER_EXTENSION = "predict.recorder"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(given: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new random id."""
    return given if given and _REQUEST_ID_RE.fullmatch(given) else os.urandom(16).hex()


def server_timing(phases: dict[str, float]) -> str:
    """The Server-Timing header value: each phase's duration in milliseconds."""
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in phases.items())


class Deadline:
    """Raises DeadlineError(message) inside a ``running()`` block once ``seconds`` have passed.

    gunicorn kills a sync worker that overruns its timeout, and the client then gets
    gunicorn's HTML 500 instead of an answer; this lets the app answer first and go on
    serving. Only the main thread can take signals, and a real-time timer somebody else
    set (pytest-timeout) is left alone: the block then runs without a deadline.
    """

    def __init__(self, seconds: float, message: str):
        self.seconds = seconds
        self.message = message
        # One bound method, so that the installed handler is recognised by identity.
        self._handler = self._expire

    @contextmanager
    def running(self) -> Iterator[None]:
        """The block, under this deadline."""
        if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0]:
            yield
            return
        # The handler is installed once per process (a request only arms and disarms the timer);
        # it is checked each time because a test runner may have put its own in its place.
        if signal.getsignal(signal.SIGALRM) is not self._handler:
            signal.signal(signal.SIGALRM, self._handler)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _expire(self, signum, frame) -> None:
        raise DeadlineError(self.message)


def read_body(request: Request, max_bytes: int) -> bytes | bytearray:
    """The whole request body, refused when it is over ``max_bytes`` or shorter than announced,
    or when the client stops sending it (the socket's read timeout, service/worker/buffered_socket.py).

    An announced length over ``max_bytes`` is refused before a byte is read, a chunked body as
    soon as it passes the limit. Under gunicorn a body of known length is received into one
    buffer of its size, and a chunked one gathered from the pieces gunicorn receives
    (``ArrivingBody``) and joined once: werkzeug's stream reads in small steps, for each of which
    gunicorn copies what it holds ahead, which cost a 10 MB body several milliseconds.
    """
    try:
        return _read_body(request, max_bytes)
    except TimeoutError as exc:
        raise ClientTimeoutError(f"the body stopped arriving before its end: {exc}") from None


def _read_body(request: Request, max_bytes: int) -> bytes | bytearray:
    announced = request.content_length
    if announced is not None and announced > max_bytes:
        raise RequestEntityTooLarge()
    source = request.environ["wsgi.input"]
    if announced is not None and gunicorn_internals.receives_from_socket(source):
        body = gunicorn_internals.receive_body(source, announced)
        if len(body) < announced:
            raise PayloadError(f"the body ended after {len(body)} of the {announced} bytes given in Content-Length")
        return body
    if not gunicorn_internals.is_gunicorn_body(source):
        source = request.stream  # another server: werkzeug's stream stops at the announced length
    pieces, size = [], 0
    try:
        for piece in ArrivingBody(source):
            size += len(piece)
            if size > max_bytes:
                raise RequestEntityTooLarge()
            pieces.append(piece)
    except ParseException:  # gunicorn reads chunked framing while the app reads the body
        raise PayloadError("the chunked transfer encoding of the body is malformed") from None
    except NoMoreData:
        if announced is None:
            raise PayloadError("the chunked transfer encoding of the body is malformed") from None
    if announced is not None and size < announced:
        # The client stopped sending early (gunicorn, or werkzeug's stream, hands over what arrived).
        raise PayloadError(f"the body ended after {size} of the {announced} bytes given in Content-Length")
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class ArrivingBody:
    """The request body piece by piece as it arrives, for a body read while the client still
    sends it: each piece is what gunicorn already holds or one receive from the socket.

    gunicorn's own ``read(n)`` waits until ``n`` bytes are in, which would hold back rows a
    client has sent while it waits for their answers. This reads from gunicorn's body readers
    (chunked or Content-Length, through service/seams/gunicorn_internals.py) and
    falls back to ``read(block)`` on any other server. Iterating raises NoMoreData (an OSError)
    if the client ends the connection before the body's end, TimeoutError if the socket's
    timeout passes without data.
    """

    def __init__(self, wsgi_input, sock: socket.socket | None = None, block: int = 1 << 20):
        self.input = wsgi_input
        self.sock = sock
        self.block = block

    def __iter__(self) -> Iterator[bytes]:
        pieces = gunicorn_internals.body_pieces(self.input, self.block)
        if pieces is not None:
            yield from pieces
        else:
            while piece := self.input.read(self.block):
                yield piece

    def paused(self, seconds: float) -> bool:
        """True when no more of the body arrives within ``seconds``: nothing read ahead is held
        and the socket stays quiet, but for the CRLF that ends a chunk of chunked encoding
        (gunicorn reads it with the next chunk's size). Always False without a socket (a test
        client's body is all there)."""
        if self.sock is None or getattr(self.sock, "held", 0):  # bytes the worker received ahead
            return False
        if gunicorn_internals.holds_read_ahead(self.input):
            return False
        deadline = time.monotonic() + seconds
        while True:
            readable, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                return True
            waiting = self.sock.recv(3, socket.MSG_PEEK)
            if waiting not in (b"\r", b"\r\n"):  # data, or the end of the connection
                return False
            if time.monotonic() >= deadline:
                return True
            time.sleep(_CRLF_POLL_SECONDS)


#: How often ``ArrivingBody.paused`` looks again when only a chunk's CRLF has arrived (select
#: reports the socket readable as long as those two bytes wait there).
_CRLF_POLL_SECONDS = 0.01


@dataclass(frozen=True, kw_only=True)
class Exchange:
    """One answered request, as its metrics and its access line see it."""

    request_id: str
    #: ``time.perf_counter()`` at its start.
    started: float
    method: str
    #: The path without its query string.
    path: str
    #: The metrics label: the route (``/predict``), ``unmatched``, ``unread``...
    endpoint: str
    status: int
    bytes_in: int
    #: None when not known (a streamed Flask response).
    bytes_out: int | None
    rows: int = 0
    invalid_rows: int = 0
    #: The name of its API key (None without one), never the key.
    key: str | None = None
    #: The log field of its column report (service.scoring.column_report).
    columns: dict | None = None


class Recorder:
    """Finishes every answer the same way, whichever entry point made it: the request-id,
    model-version and nosniff headers, the request metrics and the access line."""

    def __init__(self, metrics: Metrics, access_log: AccessLog | None):
        self.metrics = metrics
        self.access_log = access_log

    def finish(self, exchange: Exchange, *, model_version: str | None) -> list[tuple[str, str]]:
        """Record one answered request; return the headers to add to its answer. ``model_version``
        is the version the request used (fetched once at its start: a switch may happen meanwhile;
        None for a request refused before it reached a model)."""
        self.record(exchange)
        return self.headers(exchange.request_id, model_version)

    @staticmethod
    def headers(request_id: str, model_version: str | None) -> list[tuple[str, str]]:
        """The headers every answer carries (a stream sends them before its rows are counted)."""
        version = [(MODEL_VERSION_HEADER, model_version)] if model_version is not None else []
        return [(REQUEST_ID_HEADER, request_id), *version, ("X-Content-Type-Options", "nosniff")]

    def record(self, exchange: Exchange) -> None:
        """The request metrics and the access line of one answered request."""
        e = exchange
        seconds = time.perf_counter() - e.started
        self.metrics.observe_request(e.endpoint, e.method, e.status, seconds, e.key)
        if self.access_log is not None:
            # The path without its query string, and never a byte of the body.
            self.access_log.write({
                "time": round(time.time(), 3), "request_id": e.request_id, "method": e.method, "path": e.path,
                "status": e.status, "rows": e.rows, "invalid_rows": e.invalid_rows,
                "duration_ms": round(seconds * 1000, 3), "bytes_in": e.bytes_in, "bytes_out": e.bytes_out,
                "pid": os.getpid(), "key": e.key, "columns": e.columns,
            })
