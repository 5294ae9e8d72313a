"""What service/seams/gunicorn_internals.py relies on, checked against the installed gunicorn.

Each test exercises one adapter function on gunicorn's own objects; a failure names the pinned
version and the function to update after an upgrade.
"""

from __future__ import annotations

import inspect
import queue
import signal
import socket
from types import SimpleNamespace

import pytest
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.message import Request
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.base import Worker
from gunicorn.workers.sync import SyncWorker

from service.seams import gunicorn_internals as gi

ADDR = ("127.0.0.1", 50000)
HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\n"


def changed(what: str, function: str) -> str:
    return f"{gi.PINNED}: {what} no longer holds; update {function} in service/seams/gunicorn_internals.py"


@pytest.fixture()
def sockets():
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def received(sockets, data: bytes) -> Request:
    """gunicorn's parse of ``data`` sent on a real socket, as its workers make it."""
    server, client = sockets
    client.sendall(data)
    return Request(Config(), SocketUnreader(server), ADDR)


def test_parse_request_runs_gunicorns_parser_over_bytes():
    request = gi.parse_request(Config(), HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\nabcdeXYZ", ADDR)
    assert (request.method, request.path) == ("POST", "/predict"), changed("Request over IterUnreader", "parse_request")
    assert gi.unparsed_bytes(request) == 8, changed("Request.unreader.buf holding the bytes after the head",
                                                    "unparsed_bytes")
    assert gi.expects_continue(request), changed("Request._expected_100_continue", "expects_continue")
    assert gi.body_length(request) == 5, changed("Body.reader being a LengthReader with its length", "body_length")
    chunked = gi.parse_request(Config(), HEAD + b"Transfer-Encoding: chunked\r\n\r\n", ADDR)
    assert gi.body_length(chunked) is None and not gi.expects_continue(chunked), \
        changed("a chunked body's reader being no LengthReader", "body_length")
    with pytest.raises((gi.NoMoreData, StopIteration)):
        gi.parse_request(Config(), HEAD + b"Content-Le", ADDR)


def test_head_limit_is_gunicorns_header_buffer_bound_plus_the_request_line():
    cfg = Config()
    request = gi.parse_request(cfg, HEAD + b"\r\n", ADDR)
    assert hasattr(request, "max_buffer_headers"), changed("Message.max_buffer_headers", "head_limit")
    assert gi.head_limit(cfg) == request.max_buffer_headers + cfg.limit_request_line + 4, \
        changed("Message.max_buffer_headers = fields * (field size + 2) + 4", "head_limit")


def test_receive_body_takes_the_body_and_leaves_the_next_bytes(sockets):
    request = received(sockets, HEAD + b"Content-Length: 10\r\n\r\n0123456789NEXT")
    body = request.body
    assert gi.is_gunicorn_body(body), changed("wsgi.input being a Body with a LengthReader", "is_gunicorn_body")
    assert gi.receives_from_socket(body), changed("LengthReader.unreader.sock", "receives_from_socket")
    assert gi.receive_body(body, 10) == bytearray(b"0123456789"), \
        changed("Body.buf, Unreader.take_buffered/unread and sock.recv_into", "receive_body")
    assert body.read(10) == b"", changed("LengthReader.length counting what is left", "receive_body")
    assert request.unreader.read() == b"NEXT", changed("Unreader.unread putting bytes back", "receive_body")


def test_body_pieces_of_a_length_body_as_they_arrive(sockets):
    request = received(sockets, HEAD + b"Content-Length: 10\r\n\r\n01234")
    pieces = gi.body_pieces(request.body, 1 << 20)
    assert next(pieces) == b"01234", changed("Unreader.read(None, read_ahead=...)", "body_pieces")
    sockets[1].sendall(b"56789NEXT")
    assert b"".join(pieces) == b"56789", changed("LengthReader.length and Unreader.unread", "body_pieces")
    assert request.unreader.read() == b"NEXT", changed("Unreader.unread putting bytes back", "body_pieces")


def test_body_pieces_of_a_chunked_body_and_its_end(sockets):
    request = received(sockets, HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert request.body.reader.read(2) == b"ab"  # what Body.read(n) leaves in the reader's buf
    pieces = gi.body_pieces(request.body, 1 << 20)
    assert next(pieces) == b"c", changed("ChunkedReader.buf holding what read(n) took beyond n", "body_pieces")
    sockets[1].sendall(b"2\r\nde\r\n0\r\n\r\n")
    assert b"".join(pieces) == b"de", changed("ChunkedReader.parser yielding the chunks", "body_pieces")
    cut = received(sockets, HEAD + b"Content-Length: 10\r\n\r\n01")
    sockets[1].shutdown(socket.SHUT_WR)
    with pytest.raises(gi.NoMoreData):
        b"".join(gi.body_pieces(cut.body, 1 << 20))


def test_holds_read_ahead_sees_the_unreaders_buffer(sockets):
    request = received(sockets, HEAD + b"Content-Length: 4\r\n\r\nabcdNEXT")
    assert gi.holds_read_ahead(request.body), changed("Unreader.buf holding bytes read ahead", "holds_read_ahead")
    assert gi.body_pieces(object(), 1) is None and not gi.holds_read_ahead(object())


def test_create_sends_continue_and_puts_the_socket_in_the_environ(sockets):
    server, client = sockets
    request = received(sockets, HEAD + b"Content-Length: 1\r\nExpect: 100-continue\r\n\r\n")
    _, environ = wsgi.create(request, server, ADDR, server.getsockname(), Config())
    assert gi.client_socket(environ) is server, changed("environ['gunicorn.socket']", "client_socket")
    client.settimeout(5)
    assert client.recv(100) == gi.CONTINUE, changed("the 100 Continue bytes wsgi.create sends", "CONTINUE")


def test_workers_build_their_answers_from_the_module_level_response_class(monkeypatch):
    assert "response_class = Response" in inspect.getsource(wsgi.create).replace("  ", " "), \
        changed("wsgi.create looking up Response at each request", "use_response_class")
    monkeypatch.setattr(wsgi, "Response", wsgi.Response)
    gi.use_response_class(gi.OneWriteResponse)
    assert gi.response_class() is gi.OneWriteResponse
    for name in ("write", "_emit_body", "close", "default_headers"):
        assert callable(getattr(wsgi.Response, name, None)), changed(f"Response.{name}", "OneWriteResponse")
    response = wsgi.Response(SimpleNamespace(version=(1, 1), method="GET", headers=[], should_close=lambda: True),
                             None, Config())
    assert (response.headers_sent, response.chunked, response.headers) == (False, False, []), \
        changed("Response.headers_sent, .chunked and .headers", "OneWriteResponse")


def test_the_sync_workers_methods_the_buffered_worker_calls():
    assert list(inspect.signature(SyncWorker.handle).parameters) == ["self", "listener", "client", "addr"], \
        changed("SyncWorker.handle(listener, client, addr)", "handle_connection")
    assert callable(getattr(SyncWorker, "is_parent_alive", None)), changed("SyncWorker.is_parent_alive",
                                                                           "parent_alive")
    assert "PIPE" in vars(Worker), changed("Worker.PIPE", "wake_fd")
    assert gi.wake_fd(SimpleNamespace(PIPE=(7, 8))) == 7
    assert not gi.tls_in_gunicorn(Config()), changed("Config.is_ssl", "tls_in_gunicorn")
    cfg = Config()
    cfg.set("certfile", "cert.pem")
    assert gi.tls_in_gunicorn(cfg), changed("Config.is_ssl true with a certfile", "tls_in_gunicorn")


def test_the_arbiters_term_handling_and_signal_queue():
    assert Arbiter.SIG_NAMES.get(signal.SIGTERM) == "term" and "handle_%s" in inspect.getsource(Arbiter.run), \
        changed("the arbiter's loop calling handle_term by name", "wrap_term_handler")
    arbiter = SimpleNamespace(handle_term=lambda: "gunicorn's", SIG_QUEUE=queue.SimpleQueue())
    gi.wrap_term_handler(arbiter, lambda graceful_stop: ("ours", graceful_stop()))
    assert arbiter.handle_term() == ("ours", "gunicorn's")
    arbiter.signal = lambda sig, frame: Arbiter.signal(arbiter, sig, frame)
    gi.queue_signal(arbiter, signal.SIGTERM)
    assert arbiter.SIG_QUEUE.get_nowait() == signal.SIGTERM, changed("Arbiter.signal queueing", "queue_signal")


def test_loaded_app_is_the_app_gunicorn_loaded_once():
    class App(BaseApplication):
        def load_config(self):
            pass

        def load(self):
            return object()

    app = App()
    server = SimpleNamespace(app=app)
    assert gi.loaded_app(server) is gi.loaded_app(server), changed("Application.wsgi() caching the app",
                                                                   "loaded_app")
