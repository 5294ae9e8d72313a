"""Scores as an Arrow table: the answer the API sends as Arrow or Parquet, and the rows the file
command and the Spark job write."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from lib.core.errors import CellError

PROBABILITY = "probability_positiveclass"
PREDICTED_CLASS = "predicted_class"
ROW_ID = "id"
#: The nullable column of a table answer that says why a row was not scored.
ERROR = "error"
REASONS = "reasons"


def result_table(probabilities: np.ndarray, classes: np.ndarray, invalid: set[int] | None = None,
                 ids: Sequence | None = None, errors: Sequence[CellError] | None = None,
                 reasons: Sequence | None = None) -> pa.Table:
    """Scores as a table: ``probability_positiveclass`` (float64) and ``predicted_class`` (int8),
    null for the ``invalid`` rows; ``id`` when ``ids`` are given; ``error`` (null for scored rows,
    else each invalid cell as ``column: message``, one a line) when ``errors`` are given;
    ``reasons`` when given."""
    mask = None
    if invalid:
        mask = np.zeros(len(probabilities), dtype=bool)
        mask[sorted(invalid)] = True
    data = {
        PROBABILITY: pa.array(probabilities, type=pa.float64(), mask=mask),
        PREDICTED_CLASS: pa.array(np.asarray(classes, dtype=np.int8), type=pa.int8(), mask=mask),
    }
    if ids is not None:
        data[ROW_ID] = _id_array(ids)
    if errors is not None:
        data[ERROR] = pa.array(_row_messages(len(probabilities), errors), type=pa.string())
    if reasons is not None:
        data[REASONS] = pa.array(reasons)
    return pa.table(data)


def _id_array(ids: Sequence) -> pa.Array:
    """Ids keep their type and value: integers as int64, or uint64 past it; a mix of numbers and
    strings (possible in JSON), or integers no 64-bit type holds together, become strings."""
    for data_type in (None, pa.uint64()):
        try:
            return pa.array(ids, type=data_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            continue
    return pa.array([None if v is None else str(v) for v in ids], type=pa.string())


def _row_messages(n_rows: int, errors: Sequence[CellError]) -> list[str | None]:
    messages: list[str | None] = [None] * n_rows
    for error in errors:
        text = f"{error.column}: {error.message}"
        messages[error.index] = text if messages[error.index] is None else f"{messages[error.index]}\n{text}"
    return messages
