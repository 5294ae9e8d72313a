"""Request body → ``RawBatch`` of the columns the model consumes: the front of the readers.

It decides which wire format a body is in, then hands it to that format's reader
(``service/readers/``, one module per format, registered by media type). No Flask here: the web
layer passes bytes and the Content-Type and gets a batch or a ``PayloadError`` /
``UnsupportedMediaError`` / ``LimitError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from lib.batch import RawBatch
from lib.codecs.limits import DecodeLimits
from lib.errors import PayloadError, UnsupportedMediaError
from lib.schema import COLUMNS, ID_KEY
from service.readers import ALIASES, CSV, JSON, JSON_COLUMNS, READERS, media_types

_JSON_START = (b"[", b"{")
_CONTENT_RE = re.compile(rb"[^ \t\r\n]")


def declared_format(mimetype: str | None) -> str:
    """The registered media type a Content-Type value names (aliases resolved), else the value."""
    mimetype = (mimetype or "").lower()
    return ALIASES.get(mimetype, mimetype)


def detect_format(body: bytes, mimetype: str | None, layout: str = "rows") -> str:
    """The registered format to read ``body`` as.

    A declared registered type wins, except that a JSON body is accepted whatever the
    Content-Type says (``curl -d`` sends form-urlencoded); an undeclared body whose first line is
    a header of schema columns is read as CSV; anything else is unsupported. A JSON body with
    ``layout`` "columns" (``?input=columns``) is read as JSON columns; other formats refuse it.
    """
    found = _detect_format(body, mimetype)
    if layout == "columns":
        if found != JSON:
            raise PayloadError(f"input=columns applies to JSON bodies, not to {found}")
        return JSON_COLUMNS
    return found


def _detect_format(body: bytes, mimetype: str | None) -> str:
    mimetype = (mimetype or "").lower()
    declared = declared_format(mimetype)
    if declared in READERS and declared != JSON:
        return declared
    head = _content(body)
    if head.startswith(_JSON_START) or declared == JSON or mimetype.endswith("+json"):
        return JSON
    first_line = head.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    names = [n.strip().strip('"') for n in first_line.split(",")]
    if len(names) > 1 and set(names) <= set(COLUMNS) | {ID_KEY, "y"}:
        return CSV
    try:
        json.loads(head)
    except (ValueError, RecursionError):
        raise UnsupportedMediaError(
            f"the body is neither JSON nor CSV (Content-Type {mimetype[:40] or 'absent'}); "
            f"send one of: {', '.join(media_types())} (CSV with a header row)"
        ) from None
    return JSON


class BodyReader:
    """Reads request bodies of every registered format; build once per process."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self.readers = {media_type: reader(self.columns, limits) for media_type, reader in READERS.items()}

    def streamed_reader(self, mimetype: str | None):
        """The reader of a format read in chunks while the body arrives (NDJSON), else None."""
        reader = self.readers.get(declared_format(mimetype))
        return reader if getattr(reader, "streamed", False) else None

    def read(self, body: bytes, mimetype: str | None, layout: str = "rows") -> RawBatch:
        """Turn a whole request body into a batch; raise PayloadError / UnsupportedMediaError / LimitError."""
        if self.streamed_reader(mimetype) is not None:
            raise PayloadError(f"{declared_format(mimetype)} bodies are streamed: they are not read whole")
        if _CONTENT_RE.search(body) is None:
            raise PayloadError("the body is empty: send a JSON object, a JSON array of objects, or CSV")
        return self.readers[detect_format(body, mimetype, layout)].read(body)


def _content(body: bytes) -> bytes:
    """``body`` from its first non-whitespace byte, without copying a long body to find it."""
    start = _CONTENT_RE.search(body)
    if start is None:
        return b""
    return body[start.start():] if start.start() else body
