"""What every request goes through, whichever entry point answers it (the Flask app of
``flaskapp.py``, or the ``POST /predict`` endpoint mounted in front of it): its id, its deadline,
reading its body, and the bookkeeping of its answer (headers, request metrics, access line).
Plain WSGI and werkzeug: no Flask here.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from gunicorn.http.errors import ParseException
from werkzeug import Request
from werkzeug.exceptions import RequestEntityTooLarge

from lib.errors import PayloadError
from service.access_log import AccessLog
from service.errors import DeadlineError
from service.metrics import Metrics

REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
JSON_MIMETYPE = "application/json"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(given: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new random id."""
    return given if given and _REQUEST_ID_RE.fullmatch(given) else os.urandom(16).hex()


def server_timing(phases: dict[str, float]) -> str:
    """The Server-Timing header value: each phase's duration in milliseconds."""
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in phases.items())


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


def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole request body, refused when it is over ``max_bytes`` or shorter than announced.

    ``request.max_content_length`` must be ``max_bytes``: werkzeug then refuses an announced
    length over it before reading a byte.
    """
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


class Recorder:
    """Finishes every answer the same way, whichever entry point made it: the request-id,
    model-version and nosniff headers, the request metrics and the access line."""

    def __init__(self, metrics: Metrics, access_log: AccessLog | None):
        self.metrics = metrics
        self.access_log = access_log

    def finish(self, request_id: str, started: float, method: str, path: str, endpoint: str, status: int,
               bytes_in: int, bytes_out: int | None, rows: int = 0, invalid_rows: int = 0, *,
               model_version: str) -> list[tuple[str, str]]:
        """Record one answered request; return the headers to add to its answer. ``model_version``
        is the version the request used (fetched once at its start: a switch may happen meanwhile)."""
        seconds = time.perf_counter() - started
        self.metrics.observe_request(endpoint, method, status, seconds)
        if self.access_log is not None:
            # The path without its query string, and never a byte of the body.
            self.access_log.write({
                "time": round(time.time(), 3), "request_id": request_id, "method": method, "path": path,
                "status": status, "rows": rows, "invalid_rows": invalid_rows, "duration_ms": round(seconds * 1000, 3),
                "bytes_in": bytes_in, "bytes_out": bytes_out, "pid": os.getpid(),
            })
        return [(REQUEST_ID_HEADER, request_id), (MODEL_VERSION_HEADER, model_version),
                ("X-Content-Type-Options", "nosniff")]
