"""Every use the service makes of gunicorn's internals, in one module.

gunicorn's public API is its settings, its server hooks and its worker classes (``Worker`` with
``notify``, ``cfg``, ``log``, ``sockets``, ``wsgi``, ``alive``). The service needs more: to parse
the bytes a connection has sent without a socket (``service.worker.request_complete``), to receive a body
straight into one buffer or piece by piece as it arrives (``service.http.request_steps``), to send an
answer's header with its body (``service.worker.one_write_response``), to serve a connection the worker
received itself (``service.worker.buffered_worker``) and to put a drain before the graceful stop
(``service.worker.drain``). None of that has a public API, so each function here names the internal it
relies on. They hold for the pinned version (``PINNED``, requirements.txt);
tests/service/seams/test_gunicorn_internals.py checks each one against the installed gunicorn and names the
function to update when an upgrade changed what it relies on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.body import ChunkedReader, LengthReader

# What gunicorn's body readers raise, re-exported: NoMoreData (an OSError) when the client ends the
# connection before the body's end, ParseException (and its subclasses) for malformed chunked
# framing. gunicorn.http.errors is not documented; these are its readers' behaviour.
from gunicorn.http.errors import NoMoreData as NoMoreData
from gunicorn.http.errors import ParseException as ParseException
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader
from gunicorn.workers.sync import SyncWorker

#: The gunicorn whose internals this module was written against (requirements.txt pins it).
PINNED = "gunicorn 27.0.1"

#: What gunicorn sends (with ``sock.send``, once) before it reads a body announced with
#: ``Expect: 100-continue`` (``gunicorn.http.wsgi.create``).
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


# -- Parsing the bytes a connection sent (service/worker/request_complete.py) ------------------------------------


def head_limit(cfg) -> int:
    """The most bytes a request line and header section can take before gunicorn refuses them:
    its header buffer bound (``Message.max_buffer_headers``, computed from the limit_request_*
    settings in ``Message.__init__``) plus the request line. Not a setting of its own."""
    fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= 32768 else 32768
    field_size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else 8190
    line = cfg.limit_request_line if cfg.limit_request_line > 0 else 8190
    return fields * (field_size + 2) + 4 + line + 4


def parse_request(cfg, data: bytes, addr) -> Request:
    """gunicorn's own parse of ``data``: ``gunicorn.http.message.Request`` over an
    ``IterUnreader``, the parser its workers run, fed bytes instead of a socket (gunicorn has no
    public function that parses bytes). Raises what gunicorn raises on them: NoMoreData or
    StopIteration while the head is incomplete."""
    return Request(cfg, IterUnreader([data]), addr)


def unparsed_bytes(request: Request) -> int:
    """How many of the bytes given to ``parse_request`` follow the head (``Request.unreader.buf``:
    what the parser read beyond the head and put back)."""
    return len(request.unreader.buf.getvalue())


def expects_continue(request: Request) -> bool:
    """Whether the client waits for "100 Continue" before it sends its body (the private flag
    ``Request._expected_100_continue``, which gunicorn sets from the Expect header it accepted)."""
    return bool(getattr(request, "_expected_100_continue", False))


def body_length(request: Request) -> int | None:
    """The Content-Length of a parsed request's body (``Body.reader``, a ``LengthReader`` with its
    ``length``); None for a chunked body (a ``ChunkedReader``: gunicorn gives requests no other)."""
    reader = request.body.reader
    return reader.length if isinstance(reader, LengthReader) else None


# -- Reading a request's body (service/http/request_steps.py) ------------------------------------------


def _reader(wsgi_input) -> LengthReader | ChunkedReader | None:
    """The reader behind gunicorn's ``wsgi.input`` (``Body.reader``); None on another server."""
    reader = getattr(wsgi_input, "reader", None)
    return reader if isinstance(reader, ChunkedReader | LengthReader) else None


def is_gunicorn_body(wsgi_input) -> bool:
    """Whether ``wsgi_input`` is gunicorn's ``Body`` over a Content-Length or chunked reader (whose
    ``read`` stops at the body's end by itself, unlike another server's raw stream)."""
    return _reader(wsgi_input) is not None


def receives_from_socket(wsgi_input) -> bool:
    """Whether ``receive_body`` can read ``wsgi_input``: a Content-Length body over gunicorn's
    ``SocketUnreader`` (it has the ``sock`` the rest is received from)."""
    reader = _reader(wsgi_input)
    return isinstance(reader, LengthReader) and hasattr(reader.unreader, "sock")


def receive_body(wsgi_input, length: int) -> bytearray:
    """A body of known length received straight into one buffer of that size: what gunicorn read
    ahead (``Body.buf``, then ``Unreader.take_buffered()``), then ``recv_into`` on the unreader's
    ``sock``; the client's bytes beyond the body are put back (``Unreader.unread``) and the
    reader's ``length`` is kept true. Shorter if the client stopped sending. gunicorn's public
    ``read(n)`` copies what it holds ahead at every step, which cost a 10 MB body milliseconds.
    Only for ``receives_from_socket`` inputs."""
    reader = _reader(wsgi_input)
    buffer = bytearray(length)
    view = memoryview(buffer)
    held = wsgi_input.buf.getvalue() + reader.unreader.take_buffered()
    if len(held) > length:  # the client's next bytes are not this body's
        reader.unreader.unread(held[length:])
        held = held[:length]
    view[:len(held)] = held
    filled = len(held)
    try:
        while filled < length:
            received = reader.unreader.sock.recv_into(view[filled:], min(length - filled, 1 << 20))
            if not received:
                break
            filled += received
    finally:
        view.release()
        reader.length = max(0, reader.length - filled)
    return buffer if filled == length else buffer[:filled]


def body_pieces(wsgi_input, block: int) -> Iterator[bytes] | None:
    """The body of gunicorn's ``wsgi.input`` piece by piece as it arrives, each piece what gunicorn
    already holds or one receive (None on another server). gunicorn's ``read(n)`` waits until
    ``n`` bytes are in. Relies on ``Body.buf``, and for a chunked body on ``ChunkedReader.buf``
    and its ``parser`` generator, for a Content-Length one on ``LengthReader.length`` and
    ``Unreader.read(None, read_ahead=...)`` / ``unread``. Raises NoMoreData if the client ends
    the connection before the body's end."""
    reader = _reader(wsgi_input)
    if reader is None:
        return None
    return _pieces(wsgi_input, reader, block)


def _pieces(wsgi_input, reader: LengthReader | ChunkedReader, block: int) -> Iterator[bytes]:
    held = wsgi_input.buf.getvalue()  # what an earlier read(n) took beyond n
    if isinstance(reader, ChunkedReader):
        held += reader.buf.getvalue()
    if held:
        yield held
    if isinstance(reader, ChunkedReader):
        if reader.parser is not None:
            parser, reader.parser = reader.parser, None
            yield from parser
        return
    while reader.length > 0:
        piece = reader.unreader.read(None, read_ahead=min(reader.length, block))
        if not piece:
            raise NoMoreData()
        if len(piece) > reader.length:  # the client's next bytes are not this body's
            reader.unreader.unread(piece[reader.length:])
            piece = piece[:reader.length]
        reader.length -= len(piece)
        yield piece


def holds_read_ahead(wsgi_input) -> bool:
    """Whether gunicorn holds body bytes it received ahead and has not handed out yet (the
    unreader's ``buf``): ``select`` on the socket does not see them."""
    unreader = getattr(getattr(wsgi_input, "reader", None), "unreader", None)
    if unreader is None:
        return False
    unreader.buf.seek(0, os.SEEK_END)
    return bool(unreader.buf.tell())


def client_socket(environ: dict):
    """The connection's socket, which gunicorn puts in the WSGI environ as ``gunicorn.socket``
    (not in its documentation); None on another server."""
    return environ.get("gunicorn.socket")


# -- Answers (service/worker/one_write_response.py) ------------------------------------------------------


class OneWriteResponse(wsgi.Response):
    """A gunicorn response that holds its header back until the first body write.

    Relies on ``gunicorn.http.wsgi.Response``: ``write`` sends the header (``headers_sent``)
    unless ``chunked``, then hands the body to ``_emit_body``; the header is
    ``default_headers()`` plus ``headers``; ``close`` ends the answer on ``sock``. gunicorn has
    no setting for one write per answer.
    """

    _pending_header: bytes | None = None

    def write(self, arg):
        if not self.headers_sent and not self.chunked:
            # The same header gunicorn's send_headers() builds, kept for _emit_body().
            lines = self.default_headers()
            lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
            self._pending_header = util.to_bytestring("".join(lines) + "\r\n", "latin-1")
            self.headers_sent = True
        super().write(arg)

    def _emit_body(self, data):
        if self._pending_header is not None:
            data, self._pending_header = self._pending_header + data, None
        super()._emit_body(data)

    def close(self):
        if self._pending_header is not None:  # no body bytes were written (HEAD, 204, empty)
            header, self._pending_header = self._pending_header, None
            util.write(self.sock, header)
        super().close()


def use_response_class(response_class: type[wsgi.Response]) -> None:
    """Make gunicorn's workers build their answers with ``response_class``: they look up the
    module-level name ``gunicorn.http.wsgi.Response`` at each request (``wsgi.create``);
    gunicorn has no setting for it."""
    wsgi.Response = response_class


def response_class() -> type:
    """The class gunicorn's workers build their answers with now (``gunicorn.http.wsgi.Response``)."""
    return wsgi.Response


# -- The worker (service/worker/buffered_worker.py) -----------------------------------------------------


def handle_connection(worker: SyncWorker, listener, client, addr) -> None:
    """gunicorn's synchronous handling of one connection (``SyncWorker.handle``: parse, call the
    app, answer, close), which the sync worker runs after its own blocking accept; a worker that
    receives the request itself first has no public way to hand the connection over."""
    worker.handle(listener, client, addr)


def parent_alive(worker: SyncWorker) -> bool:
    """False once the master is gone (``SyncWorker.is_parent_alive``, which logs it)."""
    return worker.is_parent_alive()


def wake_fd(worker) -> int:
    """The read end of the pipe gunicorn's signal handlers write to to wake a waiting worker
    (``Worker.PIPE[0]``): a worker with its own wait loop must watch it too."""
    return worker.PIPE[0]


def tls_in_gunicorn(cfg) -> bool:
    """Whether gunicorn terminates TLS itself (``Config.is_ssl``, true when ``certfile`` is set)."""
    return bool(cfg.is_ssl)


# -- The master (service/worker/drain.py, gunicorn.conf.py) ---------------------------------------------


def wrap_term_handler(arbiter, handler: Callable[[Callable[[], None]], None]) -> None:
    """Have ``handler(graceful_stop)`` run when the master handles SIGTERM, in place of its own
    handling (``Arbiter.handle_term``, looked up per signal in its main loop); calling
    ``graceful_stop`` runs gunicorn's own. gunicorn has no hook before its graceful stop."""
    graceful_stop = arbiter.handle_term
    arbiter.handle_term = lambda: handler(graceful_stop)


def queue_signal(arbiter, signum: int) -> None:
    """Have the master handle ``signum`` in its main loop as if it had received it
    (``Arbiter.signal`` puts it on ``SIG_QUEUE``)."""
    arbiter.signal(signum, None)


def loaded_app(server):
    """The WSGI app gunicorn loaded (``Application.wsgi()``): with ``preload_app`` the one the master
    made before it forks, which every worker inherits."""
    return server.app.wsgi()
