"""A connection the buffered worker (``service/worker/buffered_worker.py``) accepted: the limits its
client is held to, its state while its request arrives, and the raw answer it gets when the request
does not arrive whole (408, or 503 at a graceful stop)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from http import HTTPStatus

import orjson

from service.http.errors import error_payload
from service.http.request_steps import Recorder
from service.ops.settings import Settings
from service.worker.request_complete import Arrival


@dataclass(frozen=True)
class ClientLimits:
    """What the worker allows a client (service/ops/settings.py: CLIENT_*, MAX_BODY_MB)."""

    read_timeout: float
    idle_seconds: float
    buffer_bytes: int
    max_pending: int
    max_body_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> ClientLimits:
        return cls(settings.client_read_timeout, settings.client_idle_seconds, settings.client_buffer_bytes,
                   settings.client_max_pending, settings.max_body_bytes)


@dataclass(eq=False)
class Connection:
    """An accepted connection whose request is still arriving (or, ``closing``, being closed)."""

    sock: socket.socket
    addr: object
    listener: object
    arrival: Arrival
    deadline: float
    started: float = field(default_factory=time.perf_counter)
    continue_sent: bool = False
    closing: bool = False
    registered: bool = False  # in the worker's selector


def unread_answer(status: int, message: str, rid: str) -> bytes:
    """The whole answer, head and JSON error body, to a request answered before it was read whole;
    it closes the connection, as nothing after it on that connection was read."""
    body = orjson.dumps(error_payload(status, message))
    headers = [("Connection", "close"), ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               *Recorder.headers(rid, None)]
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    return (head + "\r\n").encode("latin-1") + body


def send(sock: socket.socket, data: bytes) -> int:
    """Send what the socket takes now (an answer of a few hundred bytes: all of it); bytes sent."""
    try:
        return sock.send(data)
    except OSError:
        return 0
