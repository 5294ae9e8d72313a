"""HTTP/1.1 over raw sockets, for what well-behaved clients cannot send: requests framed two ways
at once (request smuggling) and bodies trickled a byte at a time (slow clients)."""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from tests.support.live_server import wait_for

ROW = (Path(__file__).resolve().parents[2] / "docs" / "examples" / "row.json").read_bytes().strip()


def predict_request(body: bytes = ROW, *, framing: str = "") -> bytes:
    """A complete ``POST /predict`` of ``body``; ``framing`` replaces its Content-Length line."""
    framing = framing or f"Content-Length: {len(body)}\r\n"
    return (b"POST /predict HTTP/1.1\r\nHost: balancer\r\nContent-Type: application/json\r\n"
            + framing.encode() + b"\r\n" + body)


#: A second request hidden in the first one's body, as a balancer and a replica that disagree on
#: where the first ends would each see it: a one-row prediction, so a replica that ever answered
#: it counts one more successful /predict.
SMUGGLED = predict_request()


def cl_te() -> bytes:
    """Content-Length and Transfer-Encoding: chunked: chunked says the body is empty ("0"), the
    length says it holds the smuggled request too."""
    body = b"0\r\n\r\n" + SMUGGLED
    return predict_request(body, framing=f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n")


def duplicate_cl() -> bytes:
    """Two Content-Length lines: the first covers the row, the second the smuggled request too."""
    body = ROW + SMUGGLED
    return predict_request(body, framing=f"Content-Length: {len(ROW)}\r\nContent-Length: {len(body)}\r\n")


def identical_cl() -> bytes:
    """Two Content-Length lines of the same value: one body, nothing smuggled."""
    return predict_request(ROW, framing=f"Content-Length: {len(ROW)}\r\nContent-Length: {len(ROW)}\r\n")


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self):
        return json.loads(self.body)


class Connection:
    """One client connection; ``tls`` wraps it (with verification) for HTTPS."""

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None, timeout: float = 30):
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock = tls.wrap_socket(sock, server_hostname=host) if tls else sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def read_response(self) -> Response:
        """The next response (bodies framed by Content-Length, as every server here frames its own)."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a response; got {self.buffer[:200]!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed inside a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(int(status_line.split()[1]), headers, body)

    def closed_by_server(self, wait: float = 5) -> bool:
        """Whether the server closes the connection (with nothing more sent) within ``wait`` s."""
        self.sock.settimeout(wait)
        try:
            return not self.buffer and not self._fill()
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def request(host: str, port: int, data: bytes, **kwargs) -> Response:
    """One request on a new connection."""
    with Connection(host, port, **kwargs) as connection:
        connection.send(data)
        return connection.read_response()


def raw_exchange(port: int, data: bytes, *, half_close: bool = False, timeout: float = 30) -> bytes:
    """Send ``data`` on a new connection to 127.0.0.1:``port`` and read until the server closes
    it: every byte it answered. ``half_close`` shuts the sending side after ``data``, so the
    server reads the end of the stream where a body falls short of its length."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    """The status code of ``answer`` (raw bytes of a response) and everything after its head."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def smuggling_refused(host: str, port: int, data: bytes, predictions, **kwargs) -> Response:
    """Send ``data`` (a request framed two ways, with a smuggled prediction after it) and check what
    every server here must do with it: answer 400 and close the connection, so that nothing after
    the refused request is read as a request, and serve the next connection as usual.
    ``predictions()`` counts the successful predictions the replicas answered: it must grow by
    the follow-up's one alone. Returns the 400."""
    before = predictions()
    with Connection(host, port, **kwargs) as connection:
        connection.send(data)
        refused = connection.read_response()
        assert refused.status == 400, (refused.status, refused.body[:300])
        assert connection.closed_by_server(), "the connection stayed open after a 400 for a malformed request"
    follow_up = request(host, port, predict_request(), **kwargs)
    assert follow_up.status == 200 and len(follow_up.json()) == 1, (follow_up.status, follow_up.body[:300])
    # The count is recorded as the answer ends: wait for the follow-up's, then for no other.
    counted = wait_for(lambda: (n := predictions()) >= before + 1 and n, 10, "the follow-up counted")
    assert counted == before + 1, "a smuggled request reached a replica"
    return refused

