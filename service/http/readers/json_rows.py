"""JSON rows: one object, or an array of objects, keyed by column name.

A typed msgspec decoder materialises only the consumed columns and ``id`` and skips every other
key in C. Bodies it refuses for reasons other than syntax (a number out of float range, say) are
re-read by the standard library, so that every such cell can be reported as an invalid value
instead of failing the whole request.

Column names (``lib.core.columns``): a null and an absent key both decode to None, so the keys the
rows hold are collected (a generic decode) only when a consumed column is None in every row.
A consumed key or ``id`` given twice in a row is a 400; msgspec keeps the last one silently, so
it is looked for in the first row only (``lib.core.columns.check_first_row``): looking in every row
costs more than the decode itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import msgspec

from lib.codecs.json_values import decode_generic, describe_syntax_error, json_type
from lib.codecs.limits import DecodeLimits
from lib.codecs.text import require_utf8
from lib.core.columns import all_none_somewhere, check_first_row, key_pattern, row_keys
from lib.core.errors import PayloadError
from lib.core.raw_batch import RawBatch, make_batch
from lib.core.schema import ID_KEY


class JsonRowsReader:
    """Reads JSON row bodies into batches of the consumed columns; build once per process."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self.limits = limits
        fields = [(c, Any, None) for c in self.columns] + [(ID_KEY, Any, None)]
        row = msgspec.defstruct("Row", fields)
        self._decoder = msgspec.json.Decoder(row | list[row])
        self._getters = [attrgetter(c) for c in self.columns]
        self._get_id = attrgetter(ID_KEY)
        self._keys = key_pattern((*self.columns, ID_KEY))

    def read(self, body: bytes) -> RawBatch:
        """Turn a JSON body into a batch; raise PayloadError / LimitError."""
        require_utf8(body)  # every byte: the skipped keys' too
        try:
            decoded = self._decoder.decode(body)
        except msgspec.ValidationError:  # a subclass of DecodeError: catch it first
            return self._read_slowly(body)
        except msgspec.DecodeError as exc:
            raise PayloadError(f"malformed JSON: {describe_syntax_error(exc, len(body))}") from None
        except RecursionError:  # msgspec too gives up on deep nesting, even inside skipped keys
            raise PayloadError("malformed JSON: nested too deeply") from None
        rows = decoded if isinstance(decoded, list) else [decoded]
        self.limits.check_rows(len(rows))
        check_first_row(body, self._keys)
        values = [list(map(get, rows)) for get in self._getters]
        batch = make_batch(self.columns, len(rows), values, list(map(self._get_id, rows)))
        if all_none_somewhere(values):
            batch.names = row_keys(body)
        return batch

    def _read_slowly(self, body: bytes) -> RawBatch:
        """Generic decode for bodies the typed decoder refused: finds the wrong shape or lets
        out-of-range numbers through as infinities for the normaliser to reject."""
        decoded = decode_generic(body)
        rows = decoded if isinstance(decoded, list) else [decoded]
        if not isinstance(decoded, (list, dict)):
            raise PayloadError(f"expected a JSON object or an array of objects, got {json_type(decoded)}")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise PayloadError(f"row {i} is not a JSON object (got {json_type(row)})")
        self.limits.check_rows(len(rows))
        check_first_row(body, self._keys)
        values = [[row.get(c) for row in rows] for c in (*self.columns, ID_KEY)]
        batch = make_batch(self.columns, len(rows), values[:-1], values[-1])
        if all_none_somewhere(values[:-1]):
            batch.names = {key for row in rows for key in row}
        return batch

