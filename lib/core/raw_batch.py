"""The raw batch handed from a reader (of a request body, a file, a Spark partition) to the
scorer, and how readers build it with the row ids checked."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from lib.core.errors import CellError
from lib.core.normalize import show_value
from lib.core.schema import ID_KEY

# Ids are echoed as JSON numbers, which the encoder writes only up to 64 bits.
_ID_INT_MIN, _ID_INT_MAX = -(2**63), 2**64 - 1


@dataclass
class RawBatch:
    """Rows as raw (not yet normalised) columns.

    ``columns`` maps each consumed column to its ``n_rows`` raw values (absent keys as None);
    ``ids`` holds the client's row ids (None where a row has none); ``errors`` holds problems
    already found while reading the rows (an invalid ``id``, say); ``names`` the column names or
    keys the rows hold, for the column report (``lib.core.columns``): None when the reader knows that
    every consumed column is present and did not collect them.
    """

    n_rows: int
    columns: dict[str, Sequence]
    ids: Sequence | None = None
    errors: list[CellError] = field(default_factory=list)
    names: Collection[str] | None = None

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


def make_batch(columns: Sequence[str], n_rows: int, values: Sequence[Sequence], ids: Sequence,
               cell_errors: Sequence[tuple[int, str, str]] = ()) -> RawBatch:
    """The batch of ``values`` (one sequence per column); an invalid id becomes a cell error, as
    does each ``(row, column, message)`` a reader found itself (a column of an unusable type)."""
    id_types = set(map(type, ids))
    plain = id_types <= {str, type(None)} and all(map(str.isascii, filter(None, ids)))
    problems = [] if plain else _check_ids(ids)
    if problems:
        bad = {i for i, _ in problems}
        ids = [None if i in bad else v for i, v in enumerate(ids)]
    return RawBatch(
        n_rows=n_rows,
        columns=dict(zip(columns, values, strict=True)),
        ids=list(ids) if _any_present(ids) else None,
        errors=[CellError(i, ID_KEY, msg) for i, msg in problems]
        + [CellError(i, column, msg, ids[i]) for i, column, msg in cell_errors],
    )


def _any_present(ids: Sequence) -> bool:
    # A list is counted in C: most bodies send no ids, and a generator costs 2 ms a 10,000 rows.
    if isinstance(ids, list):
        return ids.count(None) != len(ids)
    return any(v is not None for v in ids)


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
