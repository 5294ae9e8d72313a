"""JSON columns: one object of column name → array of cells, all arrays of one length
(``pandas.DataFrame.to_dict(orient="list")``). Selected by ``?input=columns``, never guessed.

A typed msgspec decoder materialises the arrays of the consumed columns and ``id`` only, and
skips the other columns' arrays in C: no per-row key lookups, as rows need. Cells follow the
rules of JSON rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from lib.batch import RawBatch, make_batch
from lib.codecs.json_values import decode_generic, describe_syntax_error
from lib.codecs.limits import DecodeLimits
from lib.codecs.text import require_utf8
from lib.errors import PayloadError
from lib.schema import ID_KEY


class JsonColumnsReader:
    """Reads JSON column bodies into batches of the consumed columns; build once per process."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self.limits = limits
        self._names = (*self.columns, ID_KEY)
        table = msgspec.defstruct("Columns", [(c, Any, None) for c in self._names])
        self._decoder = msgspec.json.Decoder(table)

    def read(self, body: bytes) -> RawBatch:
        """Turn a JSON columns body into a batch; raise PayloadError / LimitError."""
        require_utf8(body)  # every byte: the skipped keys' too
        try:
            decoded = self._decoder.decode(body)
        except msgspec.ValidationError:
            return self._read_slowly(body)
        except msgspec.DecodeError as exc:
            raise PayloadError(f"malformed JSON: {describe_syntax_error(exc, len(body))}") from None
        except RecursionError:
            raise PayloadError("malformed JSON: nested too deeply") from None
        return self._batch({name: getattr(decoded, name) for name in self._names})

    def _read_slowly(self, body: bytes) -> RawBatch:
        # Out-of-range numbers and the like: the careful route of every JSON codec.
        decoded = decode_generic(body)
        if not isinstance(decoded, dict):
            raise PayloadError("with input=columns the body must be one JSON object of column name → array of "
                               f"cells, got {'an array' if isinstance(decoded, list) else 'a scalar'}")
        return self._batch({name: decoded.get(name) for name in self._names})

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
