"""NDJSON: one JSON object a line, decoded by the rules of JSON rows, for the API's streamed
requests and the file command alike.

A run of lines is decoded in one call (msgspec's ``decode_lines``, the wanted keys only, every
other key skipped in C). When that fails, or finds other than one object a line (blank lines, two
objects on one line), the lines are decoded one by one: blank lines are skipped, numbers out of
float range come through the standard library as infinities for the normaliser to reject, and
the first line that is not one JSON object (or not UTF-8, anywhere in it) ends the run, its
number reported, the rows before it kept.

Column names as for JSON rows (``lib.core.columns``): the keys of a run are collected only when a
wanted column is None in every line of it (then every line is decoded whole once more), and a
key given twice is looked for in the first line of each run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from lib.codecs.json_values import decode_generic, describe_syntax_error, json_type
from lib.codecs.text import require_utf8
from lib.core.columns import all_none_somewhere, check_first_row, key_pattern, row_keys
from lib.core.errors import PayloadError

_GENERIC = msgspec.json.Decoder()


@dataclass(frozen=True)
class Lines:
    """The wanted keys of a run of lines, one list per name (None where a row lacks the key), the
    number of rows, and the first malformed line's problem, if any (the rows stop before it)."""

    values: dict[str, list]
    n_rows: int
    malformed: PayloadError | None = None
    #: The keys the lines hold; None when every wanted column is known to be present.
    names: set[str] | None = None


class LinesDecoder:
    """Decodes runs of NDJSON lines into columns of raw values; build once per process or file."""

    def __init__(self, names: Sequence[str], reported: Sequence[str] | None = None):
        self.names = tuple(dict.fromkeys(names))
        # The names whose absence the column report tells (the consumed columns; not ``id``, which
        # most bodies leave out): the lines' keys are collected only when one of them is None
        # throughout a run.
        self._reported = [i for i, name in enumerate(self.names) if reported is None or name in reported]
        # Attribute names of our own: the keys are any text (a kept column may be "my col").
        self._attributes = [f"f{i}" for i in range(len(self.names))]
        row = msgspec.defstruct("Row", [(a, Any, None) for a in self._attributes],
                                rename=dict(zip(self._attributes, self.names, strict=True)))
        self._decoder = msgspec.json.Decoder(row)
        self._keys = key_pattern(self.names)

    def decode(self, chunk: bytes, first_line: int) -> Lines:
        """Decode ``chunk`` (whole lines; line numbers from ``first_line``, counted from 1)."""
        if not chunk.isascii():
            try:
                chunk.decode("utf-8")  # every byte, not only the wanted keys' values
            except UnicodeDecodeError:
                return self._decode_line_by_line(chunk, first_line)
        try:
            rows = self._decoder.decode_lines(chunk)
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return self._decode_line_by_line(chunk, first_line)
        if len(rows) != chunk.count(b"\n") + (not chunk.endswith(b"\n")):
            # Blank lines, or several objects on one line (which decode_lines lets through):
            # each line is checked on its own.
            return self._decode_line_by_line(chunk, first_line)
        check_first_row(chunk, self._keys, f"line {first_line}")
        values = {name: [getattr(row, a) for row in rows] for name, a in zip(self.names, self._attributes, strict=True)}
        columns = list(values.values())
        names = row_keys(chunk, lines=True) if all_none_somewhere([columns[i] for i in self._reported]) else None
        return Lines(values, len(rows), names=names)

    def _decode_line_by_line(self, chunk: bytes, first_line: int) -> Lines:
        values: dict[str, list] = {name: [] for name in self.names}
        n_rows, malformed, names = 0, None, set()
        for number, line in enumerate(chunk.split(b"\n"), start=first_line):
            if not line.strip():
                continue
            try:
                row = self._decode_line(line)
            except PayloadError as exc:
                malformed = PayloadError(f"line {number}: {exc}")
                break
            names.update(row)
            for name, cells in values.items():
                cells.append(row.get(name))
            n_rows += 1
        return Lines(values, n_rows, malformed, names)

    def _decode_line(self, line: bytes) -> dict:
        require_utf8(line, "the line", one_line=True)
        try:
            self._decoder.decode(line)
            # This route is taken for a run that is not one row a line: every key is kept, for names.
            decoded = _GENERIC.decode(line)
        except msgspec.ValidationError:
            # Not an object, or a number out of float range: the standard library tells which.
            decoded = decode_generic(line, one_line=True)
        except msgspec.DecodeError as exc:
            raise PayloadError(f"malformed JSON: {describe_syntax_error(exc)}") from None
        except RecursionError:
            raise PayloadError("malformed JSON: nested too deeply") from None
        if not isinstance(decoded, dict):
            raise PayloadError(f"expected one JSON object a line (a row), got {json_type(decoded)}")
        check_first_row(line, self._keys, "the row")
        return decoded
