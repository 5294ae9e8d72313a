"""Whether the bytes a connection has sent so far make a request a worker can serve without waiting.

``service/worker/buffered_worker.py`` receives each connection's bytes itself, without blocking, and
asks ``Arrival`` after each receive whether to hand the connection to gunicorn's synchronous
handling yet. The answer comes from gunicorn's own parser run over the bytes held (``Request``
over an ``IterUnreader``), never from a parser of ours, so what is accepted or refused cannot
change: whatever that parser refuses is handed over at once, to be refused by gunicorn exactly as
before (400, 431, 501...). A request is ready when:

- its head is in and its body is complete: the bytes of its single Content-Length, or the whole
  chunked body with its last chunk (gunicorn's ``ChunkedReader`` read to its end);
- or it is a stream (a POST whose Content-Type is a streamed format, ``service.http.readers``): its
  client sends rows and waits for their answers, so it is handed over as soon as its head is in;
- or its announced body is over MAX_BODY_MB (the app refuses it unread), or ``buffer_bytes`` of
  its body are in (a larger body: the worker reads the rest, waiting at most CLIENT_IDLE_SECONDS
  for each piece);
- or its head alone is over gunicorn's header limits (refused 431 or 414 by gunicorn).
"""

from __future__ import annotations

from functools import cached_property

from gunicorn.http.message import Request

from service.http.readers import streamed_media_types
from service.seams.gunicorn_internals import (
    NoMoreData,
    body_length,
    expects_continue,
    head_limit,
    parse_request,
    unparsed_bytes,
)

STREAMED = streamed_media_types()
#: Headers (lower case) after which only gunicorn's parse tells when the request is ready.
_READ_CHANGING = frozenset({b"transfer-encoding", b"expect"})


class Arrival:
    """The bytes one connection has sent so far, and what they are known to hold."""

    def __init__(self, cfg, addr, buffer_bytes: int, max_body_bytes: int):
        self.cfg = cfg
        self.addr = addr
        self.buffer_bytes = buffer_bytes
        self.max_body_bytes = max_body_bytes
        self.data = bytearray()
        #: Set once the head is parsed: the request's method, path and headers (upper-case names).
        self.method = self.path = ""
        self.headers: list[tuple[str, str]] = []
        #: The client waits for "100 Continue" before it sends its body (gunicorn's own flag).
        self.expects_continue = False
        self._body_start: int | None = None
        self._length: int | None = None  # Content-Length; None for a chunked body
        self._parsed_at = 0  # len(data) when a chunked body was last parsed

    @cached_property
    def head_limit(self) -> int:
        """The most bytes of a head gunicorn takes (``head_limit``)."""
        return head_limit(self.cfg)

    def add(self, data: bytes) -> bool:
        """Take the bytes just received; True when the connection is ready to be served."""
        before = len(self.data)
        self.data += data
        if self._body_start is None:
            return self._head_done()
        return self._body_done(before)

    def header(self, name: str) -> str | None:
        """The value of a header of the parsed head (``name`` in upper case), else None."""
        return next((value for key, value in self.headers if key == name), None)

    def _parse(self) -> Request:
        """gunicorn's own parse of the bytes held (raises what gunicorn raises on them)."""
        return parse_request(self.cfg, bytes(self.data), self.addr)

    def _head_done(self) -> bool:
        if self._whole_at_a_glance():
            return True
        try:
            request = self._parse()
        except (NoMoreData, StopIteration):  # the head is not all in yet
            return len(self.data) > self.head_limit  # gunicorn refuses a head this long
        except Exception:  # refused: gunicorn answers it from the same bytes
            return True
        self.method, self.path, self.headers = request.method, request.path, request.headers
        self.expects_continue = expects_continue(request)
        self._body_start = len(self.data) - unparsed_bytes(request)
        if request.method == "POST" and _media_type(self.header("CONTENT-TYPE") or "") in STREAMED:
            return True
        self._length = body_length(request)
        return self._body_done(self._body_start)

    def _whole_at_a_glance(self) -> bool:
        """A shortcut for the common request, cheaper than a parse: the head is in, it has at most
        one Content-Length (all digits), no Transfer-Encoding or Expect, no streamed Content-Type,
        and that many body bytes follow. It only ever
        says "ready": gunicorn then parses the request in full as always, and whatever else (or a
        request that only looks this way to a glance) goes through ``_parse`` here first."""
        end = self.data.find(b"\r\n\r\n")
        if end < 0 or self.cfg.proxy_protocol != "off":
            return False
        length = 0
        seen = False
        for line in bytes(self.data[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name in _READ_CHANGING or (name == b"content-length" and seen):
                return False
            if name == b"content-type" and _media_type(value) in STREAMED:
                return False
            if name == b"content-length":
                value = value.strip(b" \t")
                if not value.isdigit():
                    return False
                seen, length = True, int(value)
        return len(self.data) - end - 4 >= length and length <= self.max_body_bytes

    def _body_done(self, before: int) -> bool:
        received = len(self.data) - self._body_start
        if self._length is not None:
            return (received >= self._length or self._length > self.max_body_bytes
                    or received >= self.buffer_bytes)
        if received >= min(self.buffer_bytes, self.max_body_bytes):
            return True
        # A chunked body ends with its last chunk and an empty line: parse it again only when an
        # empty line may have just arrived, or when the bytes held have doubled (so a malformed
        # one is found without parsing ever more bytes again at every receive).
        if b"\r\n\r\n" not in self.data[max(self._body_start, before - 3):] and len(self.data) < 2 * self._parsed_at:
            return False
        self._parsed_at = len(self.data)
        try:
            return self._chunked_done(self._parse())
        except NoMoreData:
            return False
        except Exception:  # malformed, or cut before its trailers: gunicorn decides
            return True

    @staticmethod
    def _chunked_done(request: Request) -> bool:
        """Whether the chunked body of ``request`` (parsed from the bytes held) is all there."""
        try:
            while request.body.read(1 << 20):
                pass
        except NoMoreData:
            return False
        except Exception:  # malformed: handed over for gunicorn to refuse
            return True
        return True


def _media_type(value: str | bytes) -> str:
    """A Content-Type value without its parameters, in lower case (as werkzeug's ``mimetype``)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.split(";", 1)[0].strip().lower()
