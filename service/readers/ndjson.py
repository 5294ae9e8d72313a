"""NDJSON (one JSON row object a line), read in chunks of complete lines while the body is still
arriving: the streamed request (``service/streaming.py``) hands each chunk over and scores the
batch it gets back before reading on. Blank lines are skipped; cells follow the rules of JSON rows.

A chunk is decoded in one call (msgspec's ``decode_lines``, the consumed keys only); when that
fails, or finds other than one object a line, its lines are decoded one by one: blank lines are
skipped, and the first line that is not one JSON object has its number reported, the rows
before it still returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from lib.batch import RawBatch, make_batch
from lib.codecs.limits import DecodeLimits
from lib.errors import PayloadError
from lib.schema import ID_KEY
from service.readers.json_rows import JsonRowsReader, describe_syntax_error


@dataclass(frozen=True)
class Chunk:
    """The rows of one chunk of lines, and the first malformed line's problem, if any (the
    stream ends there)."""

    batch: RawBatch
    malformed: PayloadError | None = None


class NdjsonReader:
    """Reads chunks of NDJSON lines into batches of the consumed columns; build once per process."""

    #: Read while the body arrives, in chunks, and answered as NDJSON: never whole.
    streamed = True

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self._names = (*self.columns, ID_KEY)
        row = msgspec.defstruct("Row", [(c, Any, None) for c in self._names])
        self._decoder = msgspec.json.Decoder(row)

    def read_chunk(self, chunk: bytes, first_line: int) -> Chunk:
        """Decode ``chunk`` (whole lines; line numbers from ``first_line``, counted from 1)."""
        try:
            rows = self._decoder.decode_lines(chunk)
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return self._read_line_by_line(chunk, first_line)
        if len(rows) != chunk.count(b"\n") + (not chunk.endswith(b"\n")):
            # Blank lines, or several objects on one line (which decode_lines lets through):
            # each line is checked on its own.
            return self._read_line_by_line(chunk, first_line)
        return Chunk(self._batch([[getattr(row, name) for row in rows] for name in self._names], len(rows)))

    def _read_line_by_line(self, chunk: bytes, first_line: int) -> Chunk:
        values: list[list] = [[] for _ in self._names]
        malformed = None
        for number, line in enumerate(chunk.split(b"\n"), start=first_line):
            if not line.strip():
                continue
            try:
                row = self._decode_line(line)
            except PayloadError as exc:
                malformed = PayloadError(f"line {number}: {exc}")
                break
            for cells, name in zip(values, self._names, strict=True):
                cells.append(row.get(name))
        return Chunk(self._batch(values, len(values[0])), malformed)

    def _decode_line(self, line: bytes) -> dict:
        try:
            row = self._decoder.decode(line)
            return {name: getattr(row, name) for name in self._names}
        except msgspec.ValidationError:
            # Not an object, or a number out of float range: the standard library tells which.
            decoded = JsonRowsReader.decode_generic(line)
        except msgspec.DecodeError as exc:
            raise PayloadError(f"malformed JSON: {describe_syntax_error(exc)}") from None
        except RecursionError:
            raise PayloadError("malformed JSON: nested too deeply") from None
        if not isinstance(decoded, dict):
            raise PayloadError("expected one JSON object a line (a row)")
        return decoded

    def _batch(self, values: list[list], n_rows: int) -> RawBatch:
        return make_batch(self.columns, n_rows, values[:-1], values[-1])
