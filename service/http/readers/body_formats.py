"""Request body → ``RawBatch`` of the columns the model consumes: the front of the readers.

It decides which wire format a body is in, then hands it to that format's reader (the other
modules of ``service/http/readers/``, one per format, registered by media type). No Flask here: the web
layer passes bytes and the Content-Type and gets a batch or a ``PayloadError`` /
``UnsupportedMediaError`` / ``LimitError``.

A body refused in one format that looks like another (CSV or NDJSON whose line breaks ``curl -d``
removed, NDJSON sent as JSON, JSON columns without ``?input=columns``) is told what to send
instead of what its reader tripped on; that look is taken only once a body is refused (or, for
JSON columns, is one row of array cells), so well-formed bodies never pay for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from lib.codecs.limits import DecodeLimits
from lib.codecs.media import ALIASES, CSV, JSON, JSON_COLUMNS, NDJSON
from lib.core.errors import PayloadError, UnsupportedMediaError
from lib.core.raw_batch import RawBatch
from lib.core.schema import COLUMNS, ID_KEY
from service.http.readers import READERS, media_types

_JSON_START = (b"[", b"{")
_HEADER_NAMES = frozenset(COLUMNS) | {ID_KEY, "y"}
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
    if len(names) > 1 and set(names) <= _HEADER_NAMES:
        return CSV
    try:
        json.loads(head)
    except (ValueError, RecursionError):
        if _is_flattened_csv(head):
            raise PayloadError(FLATTENED_CSV) from None
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
        found = detect_format(body, mimetype, layout)
        try:
            batch = self.readers[found].read(body)
        except PayloadError:
            # Only a body already refused is looked at again, for a likelier cause to name.
            hint = misread_format(body, found)
            if hint is not None:
                raise PayloadError(hint) from None
            raise
        if found == JSON and batch.n_rows == 1 and self._holds_columns(batch) and _content(body)[:1] == b"{":
            raise PayloadError(JSON_COLUMNS_AS_ROW)
        return batch

    @staticmethod
    def _holds_columns(batch: RawBatch) -> bool:
        """Whether a one-row batch's consumed cells are all arrays: a JSON columns body read as a row
        (a real row stops this at its first scalar cell)."""
        present = False
        for cells in batch.columns.values():
            if cells[0] is not None:
                if type(cells[0]) is not list:
                    return False
                present = True
        return present


#: What a body that looks like another format than the one it was read as is told (never the body).
FLATTENED_CSV = ("the body looks like CSV whose line breaks were removed (curl -d strips them): send the file "
                 "with curl --data-binary @file.csv -H 'Content-Type: text/csv'")
FLATTENED_NDJSON = ("the body looks like NDJSON whose line breaks were removed (curl -d strips them): send the "
                    f"file with curl --data-binary @file.ndjson -H 'Content-Type: {NDJSON}'")
NDJSON_AS_JSON = (f"the body looks like NDJSON (one JSON object a line): send it with Content-Type: {NDJSON}, "
                  "or send the rows as one JSON array")
JSON_COLUMNS_AS_ROW = ("the body looks like JSON columns (one object of column name → array of cells): add "
                       "?input=columns to the URL, or send a JSON array of row objects")
_WHITESPACE_RE = re.compile(r"[ \t\r\n]*")


def misread_format(body: bytes, found: str) -> str | None:
    """What to say when ``body``, refused as ``found``, looks like another format, else None.

    Called on the error path only: a well-formed body never pays for it.
    """
    head = _content(body)
    if found == CSV and _is_flattened_csv(head):
        return FLATTENED_CSV
    if found in (JSON, JSON_COLUMNS) and head[:1] == b"{":
        return _ndjson_hint(head)
    return None


def _is_flattened_csv(head: bytes) -> bool:
    """A header of schema columns run on into values on one line: what curl -d makes of a CSV file."""
    text = head.rstrip()
    if b"\n" in text or b"\r" in text:
        return False
    # Cut short: the header is all that is looked at (100 names fit in well under 4 KB).
    cells = [cell.strip().strip('"') for cell in text[:4096].decode("utf-8", "replace").split(",")]
    names = next((i for i, cell in enumerate(cells) if cell not in _HEADER_NAMES), len(cells))
    return 2 <= names < len(cells)


def _ndjson_hint(head: bytes) -> str | None:
    """The NDJSON hint when ``head`` is a JSON object followed by another object, else None."""
    text = head.decode("utf-8", "replace")
    try:
        first, end = json.JSONDecoder().raw_decode(text)
    except (ValueError, RecursionError):
        return None
    gap = _WHITESPACE_RE.match(text, end)
    if not isinstance(first, dict) or text[gap.end():gap.end() + 1] != "{":
        return None
    return NDJSON_AS_JSON if "\n" in gap.group() else FLATTENED_NDJSON


def _content(body: bytes) -> bytes:
    """``body`` from its first non-whitespace byte, without copying a long body to find it."""
    start = _CONTENT_RE.search(body)
    if start is None:
        return b""
    return body[start.start():] if start.start() else body
