"""A gunicorn worker that receives requests without blocking and serves them synchronously.

Why: gunicorn's sync worker accepts a connection and then blocks reading it. Three connections
that sent their headers and then trickled their bodies held both sync workers of a two-core
server, and ``/health`` went unanswered for 20 s; the hold lasted until the 240 s request
deadline. Neither a Kubernetes Service nor a TCP balancer buffers requests, so any client could
do that to a replica.

How: this worker keeps the connections it accepted in a selector, with the listening sockets,
and receives their bytes as they come, without blocking, into one buffer per connection. Only
when ``service.worker.request_complete.Arrival`` says a request is ready (whole, a stream, larger than
CLIENT_BUFFER_MB, or refused by gunicorn's parser) does the worker hand it to gunicorn's usual
synchronous handling (``SyncWorker.handle``), through a socket that serves the bytes held first
(``service.worker.buffered_socket.HeldSocket``). What the worker then waits for is bounded too: the rest
of a larger body, CLIENT_IDLE_SECONDS per piece. So a slow or idle upload costs no worker time
until its request is in, and a few seconds at most after that.

- A connection whose request is not ready within CLIENT_READ_TIMEOUT of its accept gets a JSON
  408 with ``Connection: close``, an access line and a count in ``http_requests_total``
  (endpoint ``unread``).
- Each worker receives at most CLIENT_MAX_PENDING connections at once; beyond that it stops
  accepting and the rest wait in the listen backlog (bounded memory: about CLIENT_BUFFER_MB each).
- A stream (NDJSON) is handed over as soon as its head is in: it holds a worker by design, its
  waits bounded by STREAM_IDLE_SECONDS (service/http/streaming.py).
- As in the sync worker: one request per connection (``Connection: close``), the heartbeat at
  least every half GUNICORN_TIMEOUT, ``max_requests``, the parent check, and gunicorn's hooks
  and signals. At a graceful stop the worker stops accepting, serves what is ready, and gives the
  connections still arriving half of GRACEFUL_TIMEOUT; those not in by then get a JSON 503.
- TLS terminated by gunicorn itself is not received this way: with ``certfile`` set the worker
  runs as the plain sync worker.

The limits a client is held to, a connection's state while its request arrives and the answer to
one that did not arrive whole are in ``service.worker.connection``; this module is the loop.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections import deque

from gunicorn.workers.sync import SyncWorker

from service.http.request_steps import RECORDER_EXTENSION, Exchange, request_id
from service.ops.settings import Settings
from service.seams.gunicorn_internals import handle_connection, parent_alive, tls_in_gunicorn, wake_fd
from service.worker.buffered_socket import CONTINUE, HeldSocket
from service.worker.connection import ClientLimits, Connection, send, unread_answer
from service.worker.request_complete import Arrival

#: The metrics label (``endpoint``) of requests the worker answered before they were read whole.
UNREAD_ENDPOINT = "unread"
#: How long a connection answered 408 or 503 is read (and its bytes dropped) before it is closed,
#: so that closing it with unread bytes does not reset it before the client has read the answer.
CLOSE_LINGER_SECONDS = 2.0
RECEIVE_BYTES = 64 * 1024
#: TCP_DEFER_ACCEPT: how long the kernel holds a connection that has sent nothing before it lets
#: the worker accept it anyway (then CLIENT_READ_TIMEOUT runs from there).
DEFER_ACCEPT_SECONDS = 1
#: Connections accepted (and, when whole, served) in a row before the worker looks at the others.
ACCEPTS_PER_TURN = 16

_LISTENER = object()
_WAKE = object()
_SENT_BACK = (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK)


class BufferedWorker(SyncWorker):
    """gunicorn's sync worker, but requests are received without blocking before being served.

    Used through ``configured(settings)``, which gives it the server's limits: the class itself
    has none, so that no worker runs with limits other than the server's settings."""

    limits: ClientLimits

    def run(self):
        if tls_in_gunicorn(self.cfg):
            self.log.warning("TLS in gunicorn: requests are read by the plain sync worker")
            return super().run()
        for listener in self.sockets:
            listener.setblocking(False)
            _defer_accept(listener)
        self.selector = selectors.DefaultSelector()
        self.selector.register(wake_fd(self), selectors.EVENT_READ, _WAKE)
        self.connections: dict[int, Connection] = {}  # by file descriptor
        self.ready: deque[Connection] = deque()
        self.listening = False
        self.recorder = getattr(self.wsgi, "extensions", {}).get(RECORDER_EXTENSION)
        try:
            while self.alive and parent_alive(self):
                self._listen(len(self.connections) + len(self.ready) < self.limits.max_pending)
                self._turn()
            self._stop()
        finally:
            self.selector.close()

    def _turn(self, until: float | None = None) -> None:
        """Wait for something to do, do it. gunicorn passes half its timeout as ``self.timeout``:
        the heartbeat is sent at least that often."""
        self.notify()
        deadlines = [c.deadline for c in self.connections.values()] + ([until] if until is not None else [])
        wait = self.timeout or 0.5
        if deadlines:
            wait = min(wait, max(0.0, min(deadlines) - time.monotonic()))
        for key, _ in self.selector.select(wait):
            if key.data is _LISTENER:
                self._accept_and_serve(key.fileobj)
            elif key.data is _WAKE:
                _drain_pipe(wake_fd(self))
            else:
                self._receive(key.data)
        self._expire()
        while self.ready:
            self.notify()
            self._serve(self.ready.popleft())

    def _listen(self, on: bool) -> None:
        if on != self.listening:
            for listener in self.sockets:
                if on:
                    self.selector.register(listener, selectors.EVENT_READ, _LISTENER)
                else:
                    self.selector.unregister(listener)
            self.listening = on

    def _accept_and_serve(self, listener) -> None:
        """Accept connections while some wait (the other workers race for them too), serving at once
        each request that came whole with its connection, as the sync worker accepts and serves in
        one loop: no turn through the selector per request. At most ACCEPTS_PER_TURN, so that the
        connections still arriving are read and timed out between two runs."""
        for _ in range(ACCEPTS_PER_TURN):
            if not (self.alive and len(self.connections) < self.limits.max_pending and self._accept(listener)):
                return
            while self.ready:
                self.notify()
                self._serve(self.ready.popleft())

    def _accept(self, listener) -> bool:
        """Accept one connection and read what it sent; False when none was waiting."""
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno in _SENT_BACK:
                return False
            raise
        sock.setblocking(False)
        os.set_inheritable(sock.fileno(), False)  # FD_CLOEXEC, as gunicorn's sync worker sets it
        limits = self.limits
        arrival = Arrival(self.cfg, addr, limits.buffer_bytes, limits.max_body_bytes)
        connection = Connection(sock, addr, listener, arrival, time.monotonic() + limits.read_timeout)
        self.connections[sock.fileno()] = connection
        self._receive(connection)  # the request often came with the connection: then no selector
        if self._still_arriving(connection):
            self.selector.register(sock, selectors.EVENT_READ, connection)
            connection.registered = True
        return True

    def _receive(self, connection: Connection) -> None:
        try:
            data = connection.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = None  # reset by the client
        if connection.closing:
            if not data:
                self._close(connection)
            return
        if not data:
            # Gone. What it sent goes to gunicorn as it would have: a cut request is refused there.
            if data is not None and connection.arrival.data:
                self._hand_over(connection)
            else:
                self._close(connection)
        elif connection.arrival.add(data):
            self._hand_over(connection)
        elif connection.arrival.expects_continue and not connection.continue_sent:
            connection.continue_sent = True
            send(connection.sock, CONTINUE)

    def _hand_over(self, connection: Connection) -> None:
        self._forget(connection)
        self.ready.append(connection)

    def _serve(self, connection: Connection) -> None:
        """gunicorn's synchronous handling of a ready request (it closes the connection)."""
        sock = connection.sock
        sock.setblocking(True)
        held = HeldSocket(sock, bytes(connection.arrival.data), self.limits.idle_seconds, connection.continue_sent)
        handle_connection(self, connection.listener, held, connection.addr)

    def _expire(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self.connections.values() if c.deadline <= now]:
            if connection.closing:
                self._close(connection)
                continue
            self._receive(connection)  # what came while the worker was busy counts
            if self._still_arriving(connection):
                self._answer(connection, 408, f"the request did not arrive within {self.limits.read_timeout:g} s "
                                              "(CLIENT_READ_TIMEOUT)")

    def _stop(self) -> None:
        """The graceful stop: no more accepts; serve what arrives within half of GRACEFUL_TIMEOUT."""
        self._listen(False)
        stop_by = time.monotonic() + self.cfg.graceful_timeout / 2
        while (any(not c.closing for c in self.connections.values()) and time.monotonic() < stop_by
               and parent_alive(self)):
            self._turn(until=stop_by)
        for connection in list(self.connections.values()):
            if not connection.closing:
                self._answer(connection, 503, "the server stopped before the request arrived whole; send it again")
        # Closed as a 408 is: the answer, then the end of sending, then what the client still sends
        # is read and dropped for at most CLOSE_LINGER_SECONDS. Closed at once with the client's
        # bytes unread, the socket would be reset, and a client reading its answer could lose it.
        linger_by = time.monotonic() + CLOSE_LINGER_SECONDS
        while self.connections and time.monotonic() < linger_by and parent_alive(self):
            self._turn(until=linger_by)
        for connection in list(self.connections.values()):
            self._close(connection)

    def _answer(self, connection: Connection, status: int, message: str) -> None:
        """Answer a request that did not arrive whole with a JSON error and record it; then end the
        sending side and read (and drop) what the client still sends until it closes or
        CLOSE_LINGER_SECONDS pass, so that closing does not reset the connection under its answer."""
        arrival = connection.arrival
        rid = request_id(arrival.header("X-REQUEST-ID"))
        sent = send(connection.sock, unread_answer(status, message, rid))
        if self.recorder is not None:
            self.recorder.record(Exchange(request_id=rid, started=connection.started, method=arrival.method,
                                          path=arrival.path, endpoint=UNREAD_ENDPOINT, status=status,
                                          bytes_in=len(arrival.data), bytes_out=sent))
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(connection)
            return
        connection.closing = True
        connection.deadline = time.monotonic() + CLOSE_LINGER_SECONDS

    def _still_arriving(self, connection: Connection) -> bool:
        return self.connections.get(connection.sock.fileno()) is connection and not connection.closing

    def _forget(self, connection: Connection) -> None:
        if connection.registered:
            self.selector.unregister(connection.sock)
        del self.connections[connection.sock.fileno()]

    def _close(self, connection: Connection) -> None:
        self._forget(connection)
        connection.sock.close()


def _defer_accept(listener) -> None:
    """Have the kernel wake ``accept`` once a connection has sent its first bytes (Linux's
    TCP_DEFER_ACCEPT, nginx's ``deferred``): a one-row request is then whole at its accept and is
    served at once, without a turn through the selector to wait for it, and a connection that
    sends nothing costs the worker nothing until DEFER_ACCEPT_SECONDS have passed."""
    if getattr(socket, "TCP_DEFER_ACCEPT", None) is None or listener.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECONDS)
    except OSError:  # pragma: no cover - a kernel without it: accept as soon as connected
        pass


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:  # empty (non-blocking)
        pass


def configured(settings: Settings) -> type[BufferedWorker]:
    """The worker class with the limits of ``settings``, the server's one settings object
    (gunicorn.conf.py's ``worker_class``)."""
    return type("BufferedWorker", (BufferedWorker,), {"limits": ClientLimits.of(settings)})
