"""A client socket whose first bytes the worker already received (``service/worker/buffered_worker.py``).

gunicorn's synchronous handling reads the request from the socket it is given. ``HeldSocket``
serves the bytes received ahead first, from ``recv`` and ``recv_into`` (also to ``MSG_PEEK``,
without using them up), then reads the socket itself; everything else is the socket's own.
``select`` on it sees only the socket, not the bytes held, so a reader that waits on it must ask
``held`` first (``service.http.request_steps.ArrivingBody.paused`` does).

``read_timeout`` bounds each wait for more bytes while the socket has no timeout of its own (a
larger body handed over before its end): a client that stops sending then raises TimeoutError
instead of holding the worker. Answers are written without that bound: ``sendall`` counts its
timeout over the whole answer, which a large answer to a slow reader could exceed.

A stream's answers go through ``hold_answers`` (``service.http.answer_hold``): its writes never wait,
what the socket does not take is held, and each wait for body bytes sends held bytes meanwhile.
"""

from __future__ import annotations

import select
import socket

from service.http.answer_hold import AnswerHold
from service.seams.gunicorn_internals import CONTINUE


class HeldSocket:
    """``sock`` with ``data`` (received from it ahead) in front of what it still has to give."""

    def __init__(self, sock: socket.socket, data: bytes, read_timeout: float | None = None,
                 continue_sent: bool = False):
        """``continue_sent``: the worker already answered the client's Expect: 100-continue, so
        gunicorn's own "100 Continue" is not sent a second time."""
        self._sock = sock
        self._held = memoryview(data)
        self._read_timeout = read_timeout
        self._continue_sent = continue_sent
        self._answers: AnswerHold | None = None

    @property
    def held(self) -> int:
        """How many bytes received ahead are still to be read."""
        return len(self._held)

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self._held:
            piece = bytes(self._held[:size])
            if not flags & socket.MSG_PEEK:
                self._held = self._held[len(piece):]
            return piece
        self._wait_readable()
        return self._sock.recv(size, flags)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        if self._held:
            size = min(nbytes or len(buffer), len(self._held))
            memoryview(buffer)[:size] = self._held[:size]
            if not flags & socket.MSG_PEEK:
                self._held = self._held[size:]
            return size
        self._wait_readable()
        return self._sock.recv_into(buffer, nbytes, flags)

    def send(self, data, flags: int = 0) -> int:
        if self._continue_sent and bytes(data) == CONTINUE:
            self._continue_sent = False
            return len(data)
        return self._sock.send(data, flags)

    def sendall(self, data, flags: int = 0) -> None:
        if self._answers is not None:
            self._answers.sendall(data)
        else:
            self._sock.sendall(data, flags)

    def hold_answers(self, limit_bytes: int, idle_seconds: float) -> AnswerHold:
        """From now on, what is written and the socket does not take at once is held while the body
        is read (an NDJSON stream's answers, service/http/answer_hold.py)."""
        self._answers = AnswerHold(self._sock, limit_bytes, idle_seconds)
        return self._answers

    def _wait_readable(self) -> None:
        if self._answers is not None:
            self._answers.wait_readable()
            return
        if self._read_timeout is None or self._sock.gettimeout() is not None:
            return  # no bound of ours, or the socket's own timeout (a stream's) applies
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        if not poller.poll(self._read_timeout * 1000):
            raise TimeoutError(f"no data from the client for {self._read_timeout:g} s (CLIENT_IDLE_SECONDS)")

    def __getattr__(self, name: str):
        return getattr(self._sock, name)
