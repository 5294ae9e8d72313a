"""JSON columns: one object of column name → array of cells, all arrays of one length
(``pandas.DataFrame.to_dict(orient="list")``). Selected by ``?input=columns``, never guessed.

The body is first decoded as column name → ``msgspec.Raw`` (each array skipped in C, left as a
view of the body's bytes); only the arrays of the consumed columns and ``id`` are then decoded:
no per-row key lookups, as rows need. Cells follow the rules of JSON rows.

A name given twice is a 400: msgspec keeps the last array, and the first one's bytes then lie
between two kept arrays, where only a key belongs; so the bytes between the kept arrays are
checked (a hundred short gaps), and the body's names are known for the column report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from lib.codecs.json_values import decode_generic, describe_syntax_error
from lib.codecs.limits import DecodeLimits
from lib.codecs.text import require_utf8
from lib.core.errors import PayloadError
from lib.core.raw_batch import RawBatch, make_batch
from lib.core.schema import ID_KEY


class JsonColumnsReader:
    """Reads JSON column bodies into batches of the consumed columns; build once per process."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self.limits = limits
        self._names = (*self.columns, ID_KEY)
        self._decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
        self._cells = msgspec.json.Decoder(Any)

    def read(self, body: bytes) -> RawBatch:
        """Turn a JSON columns body into a batch; raise PayloadError / LimitError."""
        require_utf8(body)  # every byte: the skipped keys' too
        try:
            raws = self._decoder.decode(body)
            twice = duplicated_name(body, raws)
            if twice is not None:
                raise PayloadError(f"with input=columns the column {twice!r} is given twice: give each column once")
            arrays = {name: self._cells.decode(raws[name]) if name in raws else None for name in self._names}
        except msgspec.ValidationError:
            return self._read_slowly(body)
        except msgspec.DecodeError as exc:
            raise PayloadError(f"malformed JSON: {describe_syntax_error(exc, len(body))}") from None
        except RecursionError:
            raise PayloadError("malformed JSON: nested too deeply") from None
        batch = self._batch(arrays)
        batch.names = raws.keys()
        return batch

    def _read_slowly(self, body: bytes) -> RawBatch:
        # Out-of-range numbers and the like: the careful route of every JSON codec.
        decoded = decode_generic(body)
        if not isinstance(decoded, dict):
            raise PayloadError("with input=columns the body must be one JSON object of column name → array of "
                               f"cells, got {'an array' if isinstance(decoded, list) else 'a scalar'}")
        batch = self._batch({name: decoded.get(name) for name in self._names})
        batch.names = decoded.keys()
        return batch

    def _batch(self, arrays: dict[str, object]) -> RawBatch:
        lengths = {}
        for name, cells in arrays.items():
            if cells is None:
                continue
            if not isinstance(cells, list):
                raise PayloadError(f"with input=columns column {name!r} must be an array of cells, one per row")
            lengths[name] = len(cells)
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{name}: {n}" for name, n in lengths.items())
            raise PayloadError(f"with input=columns every array must have one length (one cell per row); got {shown}")
        n_rows = next(iter(lengths.values()), 0)
        self.limits.check_rows(n_rows)
        values = [arrays[name] if arrays[name] is not None else [None] * n_rows for name in self._names]
        return make_batch(self.columns, n_rows, values[:-1], values[-1])


#: What may stand between two arrays of a JSON columns body: one key (and the brace or comma).
_GAP = re.compile(rb'\s*[{,]\s*"(?:[^"\\]|\\.)*"\s*:\s*')
_FIRST_KEY = re.compile(rb'\s*[{,]\s*("(?:[^"\\]|\\.)*")')


def duplicated_name(body: bytes, raws: dict[str, msgspec.Raw]) -> str | None:
    """The first name given twice in the JSON object ``body`` decoded as ``raws`` (views of
    ``body``), else None: a lost array's bytes lie in a gap between two kept ones."""
    base = _address(body)
    spans = sorted((_address(raw) - base, len(raw)) for raw in raws.values())
    end = 0
    for start, length in spans:
        if not 0 <= start <= len(body) - length:
            return None  # not views of the body (msgspec copied it): nothing to compare
        if not _GAP.fullmatch(body, end, start):
            key = _FIRST_KEY.match(body, end, start)
            return json.loads(key.group(1)) if key else "?"
        end = start + length
    return None


def _address(buffer) -> int:
    return np.frombuffer(buffer, dtype=np.uint8).ctypes.data
