"""Request body (JSON or CSV bytes) → ``RawBatch`` of the columns the model consumes.

No Flask here: the web layer passes bytes and the Content-Type and gets a batch or a
``PayloadError`` / ``UnsupportedMediaError`` / ``LimitError``.

JSON is decoded by a typed msgspec decoder that materialises only the consumed columns and
``id`` and skips every other key in C; bodies it refuses for reasons other than syntax (a
number out of float range, say) are re-read by the standard library so that every such
cell can be reported as an invalid value instead of failing the whole request.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import msgspec
import pandas as pd

from lib.batch import RawBatch
from lib.errors import CellError, LimitError, PayloadError, UnsupportedMediaError
from lib.normalize import show_value
from lib.schema import COLUMNS, ID_KEY

# Ids are echoed as JSON numbers, which the encoder writes only up to 64 bits.
_ID_INT_MIN, _ID_INT_MAX = -(2**63), 2**64 - 1

JSON = "json"
CSV = "csv"
CSV_MIMETYPES = frozenset({"text/csv", "application/csv", "text/comma-separated-values"})
_JSON_START = (b"[", b"{")
_CONTENT_RE = re.compile(rb"[^ \t\r\n]")


def detect_format(body: bytes, mimetype: str | None) -> str:
    """Decide how to read ``body``: CSV when declared, JSON when it looks like JSON.

    A JSON body is accepted whatever the Content-Type says (``curl -d`` sends
    form-urlencoded); an undeclared body whose first line is a header of schema columns
    is read as CSV; anything else is unsupported.
    """
    mimetype = (mimetype or "").lower()
    if mimetype in CSV_MIMETYPES:
        return CSV
    head = _content(body)
    if head.startswith(_JSON_START) or mimetype == "application/json" or mimetype.endswith("+json"):
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
            "send a JSON object or array, or CSV with a header row as text/csv"
        ) from None
    return JSON


class BatchReader:
    """Reads request bodies into batches of the consumed columns; build once per process."""

    def __init__(self, columns: Sequence[str], max_rows: int):
        self.columns = tuple(columns)
        self.max_rows = max_rows
        fields = [(c, Any, None) for c in self.columns] + [(ID_KEY, Any, None)]
        row = msgspec.defstruct("Row", fields)
        self._decoder = msgspec.json.Decoder(row | list[row])
        self._getters = [attrgetter(c) for c in self.columns]
        self._get_id = attrgetter(ID_KEY)

    def read(self, body: bytes, mimetype: str | None) -> RawBatch:
        """Turn a request body into a batch; raise PayloadError / UnsupportedMediaError / LimitError."""
        if _CONTENT_RE.search(body) is None:
            raise PayloadError("the body is empty: send a JSON object, a JSON array of objects, or CSV")
        if detect_format(body, mimetype) == CSV:
            return self._read_csv(body)
        return self._read_json(body)

    # JSON ------------------------------------------------------------------------------

    def _read_json(self, body: bytes) -> RawBatch:
        try:
            decoded = self._decoder.decode(body)
        except msgspec.ValidationError:  # a subclass of DecodeError: catch it first
            return self._read_json_slowly(body)
        except msgspec.DecodeError as exc:
            raise PayloadError(f"malformed JSON: {_describe_syntax_error(exc, len(body))}") from None
        except RecursionError:  # msgspec too gives up on deep nesting, even inside skipped keys
            raise PayloadError("malformed JSON: nested too deeply") from None
        rows = decoded if isinstance(decoded, list) else [decoded]
        self._check_count(len(rows))
        values = [list(map(get, rows)) for get in self._getters]
        return self._batch(len(rows), values, list(map(self._get_id, rows)))

    def _read_json_slowly(self, body: bytes) -> RawBatch:
        """Generic decode for bodies the typed decoder refused: finds the wrong shape or lets
        out-of-range numbers through as infinities for the normaliser to reject."""
        try:
            decoded = json.loads(body, parse_constant=_reject_constant, parse_int=_parse_int)
        except RecursionError:
            raise PayloadError("malformed JSON: nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(f"malformed JSON: {exc}") from None
        rows = decoded if isinstance(decoded, list) else [decoded]
        if not isinstance(decoded, (list, dict)):
            raise PayloadError(f"expected a JSON object or an array of objects, got {_json_type(decoded)}")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise PayloadError(f"row {i} is not a JSON object (got {_json_type(row)})")
        self._check_count(len(rows))
        values = [[row.get(c) for row in rows] for c in (*self.columns, ID_KEY)]
        return self._batch(len(rows), values[:-1], values[-1])

    # CSV -------------------------------------------------------------------------------

    def _read_csv(self, body: bytes) -> RawBatch:
        wanted = set(self.columns) | {ID_KEY}
        options = {"dtype": str, "keep_default_na": False, "na_filter": False, "encoding": "utf-8"}
        try:
            frame = pd.read_csv(io.BytesIO(body), usecols=lambda name: name in wanted, **options)
            if frame.columns.empty:
                # Without any wanted column pandas reads no rows either: count them on the
                # first column (each such row is all missing values).
                frame = pd.read_csv(io.BytesIO(body), usecols=[0], **options)[[]]
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise PayloadError(f"malformed CSV: {str(exc).strip()[:200]}") from None
        self._check_count(len(frame))
        n = len(frame)
        values = [frame[c].tolist() if c in frame.columns else [None] * n for c in self.columns]
        ids = frame[ID_KEY].tolist() if ID_KEY in frame.columns else [None] * n
        return self._batch(n, values, ids)

    # Shared ----------------------------------------------------------------------------

    def _check_count(self, n_rows: int) -> None:
        if n_rows == 0:
            raise PayloadError("the body holds no rows: send at least one row")
        if n_rows > self.max_rows:
            raise LimitError(f"{n_rows} rows is over the limit of {self.max_rows} rows per request (MAX_ROWS)")

    def _batch(self, n_rows: int, values: Sequence[Sequence], ids: Sequence) -> RawBatch:
        id_types = set(map(type, ids))
        plain = id_types <= {str, type(None)} and all(map(str.isascii, filter(None, ids)))
        problems = [] if plain else _check_ids(ids)
        if problems:
            bad = {i for i, _ in problems}
            ids = [None if i in bad else v for i, v in enumerate(ids)]
        return RawBatch(
            n_rows=n_rows,
            columns=dict(zip(self.columns, values, strict=True)),
            ids=list(ids) if any(v is not None for v in ids) else None,
            errors=[CellError(i, ID_KEY, msg) for i, msg in problems],
        )


def _content(body: bytes) -> bytes:
    """``body`` from its first non-whitespace byte, without copying a long body to find it."""
    start = _CONTENT_RE.search(body)
    if start is None:
        return b""
    return body[start.start():] if start.start() else body


def _check_ids(ids: Sequence) -> list[tuple[int, str]]:
    """Row ids must be strings or finite numbers; anything else is an invalid cell."""
    problems = []
    for i, value in enumerate(ids):
        if value is None or (isinstance(value, str) and (value.isascii() or _encodable(value))):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            problems.append((i, f"expected a string or a number, got {show_value(value)}"))
        elif isinstance(value, str):
            problems.append((i, "the string holds an unpaired surrogate (\\ud800-\\udfff): it is not text"))
        elif isinstance(value, int) and not _ID_INT_MIN <= value <= _ID_INT_MAX:
            problems.append((i, f"integer out of range: {show_value(value)}; send a long id as a string"))
    return problems


def _encodable(text: str) -> bool:
    # The standard library decoder (the slow route) lets unpaired surrogate escapes through.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_int(text: str) -> int | float:
    # Python refuses to convert integers of more than 4,300 digits; as a float such a number
    # is an infinity, which the normaliser reports as an invalid cell, not as malformed JSON.
    try:
        return int(text)
    except ValueError:
        return float(text)


def _describe_syntax_error(exc: Exception, n_bytes: int) -> str:
    """msgspec's syntax message, with the body length when the body was cut short."""
    message = str(exc)
    if "truncated" in message:
        return f"{message.rstrip('.')} (the body ends after {n_bytes} bytes)"
    return message


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: object) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
