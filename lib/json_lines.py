"""NDJSON (one JSON object per line) decoded by the rules of the API's JSON rows.

A typed msgspec decoder materialises only the wanted keys (the consumed columns, ``id`` and any
columns to keep) and skips every other key in C. Lines it refuses for reasons other than syntax
(a number out of float range, a line that is not an object) are read again one by one by the
standard library, as the API reads such a body: an out-of-range number becomes an infinity, which
the normaliser reports as an invalid cell, and a line that is not an object is named.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from lib.errors import PayloadError


class LinesDecoder:
    """Decodes lines of NDJSON into columns of raw values; build once per file."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(dict.fromkeys(names))
        # Attribute names of our own: the keys are any text (a kept column may be "my col").
        attributes = [f"f{i}" for i in range(len(self.names))]
        row = msgspec.defstruct("Row", [(a, Any, None) for a in attributes],
                                rename=dict(zip(attributes, self.names, strict=True)))
        self._decoder = msgspec.json.Decoder(row)
        self._attributes = attributes

    def decode(self, lines: Sequence[bytes], first_line: int) -> dict[str, list]:
        """The wanted keys of the objects on ``lines`` (file line ``first_line`` first; blank lines
        skipped), one list per name, None where a row has no such key. Raise PayloadError naming
        the line for malformed JSON or a line that is not a JSON object."""
        try:
            rows = self._decoder.decode_lines(b"".join(lines))
        except msgspec.DecodeError:  # ValidationError too: the standard library finds out which line
            return self._decode_slowly(lines, first_line)
        except RecursionError:
            return self._decode_slowly(lines, first_line)
        return {name: [getattr(row, a) for row in rows] for name, a in zip(self.names, self._attributes, strict=True)}

    def _decode_slowly(self, lines: Sequence[bytes], first_line: int) -> dict[str, list]:
        rows = []
        for number, line in enumerate(lines, start=first_line):
            if not line.strip():
                continue
            try:
                row = json.loads(line, parse_constant=reject_constant, parse_int=parse_int)
            except RecursionError:
                raise PayloadError(f"line {number}: malformed JSON: nested too deeply") from None
            except (ValueError, UnicodeDecodeError) as exc:
                raise PayloadError(f"line {number}: malformed JSON: {exc}") from None
            if not isinstance(row, dict):
                raise PayloadError(f"line {number} is not a JSON object (got {json_type(row)})")
            rows.append(row)
        return {name: [row.get(name) for row in rows] for name in self.names}


def parse_int(text: str) -> int | float:
    """``json.loads``' ``parse_int``: an integer, or an infinity beyond Python's digit limit."""
    # Python refuses to convert integers of more than 4,300 digits; as a float such a number is an
    # infinity, which the normaliser reports as an invalid cell, as the API does.
    try:
        return int(text)
    except ValueError:
        return float(text)


def reject_constant(name: str) -> None:
    """``json.loads``' ``parse_constant``: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")
