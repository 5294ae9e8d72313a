"""A client for NDJSON streams: sends the rows with chunked transfer encoding from one thread
while the main thread reads the answer lines as they come.

Both directions at once matter: the server answers each chunk before it reads the next, so a
client that sent everything before reading would stall once the socket buffers filled (the
server gives up after STREAM_IDLE_SECONDS). Used by ``stress_test.sh --stream``, ``bench.run``
and the tests.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

NDJSON = "application/x-ndjson"
READ_BYTES = 1 << 20


@dataclass
class StreamResult:
    """What a stream got back: status, headers, the answer lines (if kept) and counts."""

    status: int
    headers: dict[str, str]
    lines: list[bytes] = field(default_factory=list)
    n_lines: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    send_error: str | None = None


def post_stream(url: str, blocks: Iterable[bytes], *, keep_lines: bool = True, timeout: float = 120.0,
                on_lines: Callable[[list[bytes]], None] | None = None, query: str = "",
                headers: dict[str, str] | None = None) -> StreamResult:
    """POST ``blocks`` (the NDJSON body, in pieces) to ``url``/predict and read the answer.

    ``on_lines`` sees each run of complete answer lines as it arrives; with ``keep_lines`` they
    are also kept in the result. The request ends when the server has answered in full.
    """
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
    head = [f"POST /predict{'?' + query if query else ''} HTTP/1.1", f"Host: {parts.netloc}",
            f"Content-Type: {NDJSON}", "Transfer-Encoding: chunked", "Accept: application/x-ndjson"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sent = [0]
    failure: list[str] = []

    def send() -> None:
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for block in blocks:
                if block:
                    sock.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
                    sent[0] += len(block)
            sock.sendall(b"0\r\n\r\n")
        except OSError as exc:  # the server may stop reading once it has ended the stream
            failure.append(f"{type(exc).__name__}: {exc}")

    sender = threading.Thread(target=send, name="ndjson-sender", daemon=True)
    sender.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        result = StreamResult(response.status, {k.lower(): v for k, v in response.getheaders()})
        rest = b""
        while block := response.read1(READ_BYTES):
            result.bytes_received += len(block)
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            lines = block[:cut].splitlines()
            result.n_lines += len(lines)
            if on_lines is not None:
                on_lines(lines)
            if keep_lines:
                result.lines += lines
        if rest:  # a last line without its newline
            result.n_lines += 1
            if on_lines is not None:
                on_lines([rest])
            if keep_lines:
                result.lines.append(rest)
        sender.join(timeout)
    finally:
        sock.close()
    result.bytes_sent = sent[0]
    result.send_error = failure[0] if failure else None
    return result


class OpenStream:
    """A stream sent piece by piece, its answer lines read in between: for a client that waits
    for the answers to what it has sent before it sends more.

        with OpenStream(url) as stream:
            stream.send(rows_block)
            lines = stream.read_lines(100)   # blocks until 100 answer lines in all have come
    """

    def __init__(self, url: str, query: str = "", timeout: float = 30.0):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        self.sock.sendall((f"POST /predict{'?' + query if query else ''} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                           f"Content-Type: {NDJSON}\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        self.response: http.client.HTTPResponse | None = None
        self.lines: list[bytes] = []
        self._rest = b""

    def send(self, block: bytes) -> None:
        """Send one piece of the body (one chunk of the chunked encoding)."""
        self.sock.sendall(b"%x\r\n" % len(block) + block + b"\r\n")

    def end(self) -> None:
        """End the body."""
        self.sock.sendall(b"0\r\n\r\n")

    def read_lines(self, total: int) -> list[bytes]:
        """Read until ``total`` answer lines in all have come (or the answer ends); return them all."""
        if self.response is None:
            self.response = http.client.HTTPResponse(self.sock)
            self.response.begin()
        while len(self.lines) < total:
            block = self.response.read1(READ_BYTES)
            if not block:
                break
            block = self._rest + block
            cut = block.rfind(b"\n") + 1
            self._rest = block[cut:]
            self.lines += block[:cut].splitlines()
        return self.lines

    def close(self) -> None:
        """Close the connection (the response holds a file of the socket: close both)."""
        if self.response is not None:
            self.response.close()
        self.sock.close()

    def __enter__(self) -> OpenStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
