"""What every reader does with the rows it decoded: the row-count limits, and the ``RawBatch``
with its row ids checked."""

from __future__ import annotations

import math
from collections.abc import Sequence

from lib.batch import RawBatch
from lib.errors import CellError, LimitError, PayloadError
from lib.normalize import show_value
from lib.schema import ID_KEY

# Ids are echoed as JSON numbers, which the encoder writes only up to 64 bits.
_ID_INT_MIN, _ID_INT_MAX = -(2**63), 2**64 - 1


def check_row_count(n_rows: int, max_rows: int) -> None:
    """Refuse a body without rows (PayloadError) or with more than ``max_rows`` (LimitError)."""
    if n_rows == 0:
        raise PayloadError("the body holds no rows: send at least one row")
    if n_rows > max_rows:
        raise LimitError(f"{n_rows} rows is over the limit of {max_rows} rows per request (MAX_ROWS)")


def make_batch(columns: Sequence[str], n_rows: int, values: Sequence[Sequence], ids: Sequence) -> RawBatch:
    """The batch of ``values`` (one sequence per column); an invalid id becomes a cell error."""
    id_types = set(map(type, ids))
    plain = id_types <= {str, type(None)} and all(map(str.isascii, filter(None, ids)))
    problems = [] if plain else _check_ids(ids)
    if problems:
        bad = {i for i, _ in problems}
        ids = [None if i in bad else v for i, v in enumerate(ids)]
    return RawBatch(
        n_rows=n_rows,
        columns=dict(zip(columns, values, strict=True)),
        ids=list(ids) if any(v is not None for v in ids) else None,
        errors=[CellError(i, ID_KEY, msg) for i, msg in problems],
    )


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
