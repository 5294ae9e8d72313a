"""Arrow tables and the scorer: a table's consumed columns as a ``RawBatch``, and scores as a table.

One conversion for every columnar source: the API's Arrow and Parquet bodies, the file command
(``lib.score``) and the Spark job (``lib.spark``). Cells follow the JSON rules (SPEC §5):

- a column of numbers (any integer or floating type; nulls are missing) feeding a numeric,
  currency or percent variable is taken as float64 in one step, exactly the doubles JSON
  numbers decode to;
- a column of strings, plain or dictionary-encoded, holds the messy forms (``"$5,547.78"``,
  ``"36.29%"``, ``"Monday"``) and goes through the same normaliser as JSON strings; so do
  numbers in a categorical column (and are refused, as in JSON);
- a column of any other type (booleans, dates, lists, binary, ...) is an invalid cell in every
  row where it is not null, naming the column and the type;
- only the consumed columns and ``id`` are ever converted; the others stay untouched buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lib.batch import RawBatch, make_batch
from lib.errors import CellError, PayloadError
from lib.schema import ID_KEY, LEVELS, kind_of

PROBABILITY = "probability_positiveclass"
PREDICTED_CLASS = "predicted_class"
ROW_ID = "id"
#: The nullable column of a table answer that says why a row was not scored.
ERROR = "error"
REASONS = "reasons"

_CellProblems = list[tuple[int, str, str]]


def _is_text(data_type: pa.DataType) -> bool:
    return (pa.types.is_string(data_type) or pa.types.is_large_string(data_type)
            or pa.types.is_string_view(data_type))


def _is_number(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type)


def column_values(array: pa.ChunkedArray | pa.Array, name: str) -> tuple[Sequence, _CellProblems]:
    """The raw cells of one consumed column, and ``(row, column, message)`` for each cell of an
    unusable type. Numbers for a numeric variable come as a float64 array (NaN = missing)."""
    data_type = array.type
    if pa.types.is_dictionary(data_type) and (_is_text(data_type.value_type) or _is_number(data_type.value_type)):
        array = array.cast(data_type.value_type)
        data_type = data_type.value_type
    if pa.types.is_null(data_type):
        return [None] * len(array), []
    if _is_number(data_type):
        if kind_of(name) in LEVELS:
            return array.to_pylist(), []
        return pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False), []
    if _is_text(data_type):
        return array.to_pylist(), []
    message = f"unsupported Arrow type {data_type}: send numbers or strings"
    present = np.flatnonzero(pc.is_valid(array).to_numpy(zero_copy_only=False)).tolist()
    return [None] * len(array), [(i, name, message) for i in present]


def batch_from_table(table: pa.Table | pa.RecordBatch, columns: Sequence[str]) -> RawBatch:
    """The batch of ``columns`` (and ``id``) of ``table``, taken by name; absent columns are
    missing values. Raise PayloadError for a column name that appears more than once."""
    names = table.schema.names
    n_rows = table.num_rows
    values, problems = [], []
    for name in (*columns, ID_KEY):
        found = names.count(name)
        if found > 1:
            raise PayloadError(f"column {name!r} appears {found} times in the table: send it once")
        if not found:
            values.append([None] * n_rows)
            continue
        if name == ID_KEY:
            values.append(_id_values(table.column(name)))
            continue
        cells, column_problems = column_values(table.column(name), name)
        values.append(cells)
        problems += column_problems
    return make_batch(columns, n_rows, values[:-1], values[-1], problems)


def _id_values(array: pa.ChunkedArray | pa.Array) -> list:
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    # make_batch refuses what is not a string or a number (booleans, dates, ...), cell by cell.
    return array.to_pylist()


def result_table(probabilities: np.ndarray, classes: np.ndarray, invalid: set[int] | None = None,
                 ids: Sequence | None = None, errors: Sequence[CellError] | None = None,
                 reasons: Sequence | None = None) -> pa.Table:
    """Scores as a table: ``probability_positiveclass`` (float64) and ``predicted_class`` (int8),
    null for the ``invalid`` rows; ``id`` when ``ids`` are given; ``error`` (null for scored rows,
    else each invalid cell as ``column: message``, joined by ``; ``) when ``errors`` are given;
    ``reasons`` (a list of reason structs per row) when given."""
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
    """Ids keep their type; a mix of numbers and strings (possible in JSON) becomes strings."""
    try:
        return pa.array(ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in ids], type=pa.string())


def _row_messages(n_rows: int, errors: Sequence[CellError]) -> list[str | None]:
    messages: list[str | None] = [None] * n_rows
    for error in errors:
        text = f"{error.column}: {error.message}"
        messages[error.index] = text if messages[error.index] is None else f"{messages[error.index]}; {text}"
    return messages
