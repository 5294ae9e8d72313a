"""The raw batch handed from the request decoder to the scorer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lib.errors import CellError


@dataclass
class RawBatch:
    """Rows as raw (not yet normalised) columns.

    ``columns`` maps each consumed column to its ``n_rows`` raw values (absent keys as None);
    ``ids`` holds the client's row ids (None where a row has none); ``errors`` holds problems
    already found while reading the rows (an invalid ``id``, say).
    """

    n_rows: int
    columns: dict[str, Sequence]
    ids: Sequence | None = None
    errors: list[CellError] = field(default_factory=list)

    def id_of(self, index: int) -> object:
        """The client id of row ``index``, or None."""
        return None if self.ids is None else self.ids[index]

    @classmethod
    def from_records(cls, records: Sequence[dict], columns: Sequence[str]) -> RawBatch:
        """Build a batch from row dicts (absent keys are missing values); ids are not read."""
        return cls(
            n_rows=len(records),
            columns={c: [r.get(c) for r in records] for c in columns},
        )
