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
from lib.normalize import AMOUNT_PATTERN, PERCENT_PATTERN, EncodedColumn
from lib.schema import CURRENCY, ID_KEY, LEVELS, NUMERIC, PERCENT, kind_of

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
    dictionary = pa.types.is_dictionary(data_type)
    usable = dictionary and (_is_text(data_type.value_type) or _is_number(data_type.value_type))
    if kind_of(name) in LEVELS and (usable or _is_text(data_type)):
        return _encoded(array), []
    if usable:
        array = array.cast(data_type.value_type)
        data_type = data_type.value_type
    if pa.types.is_null(data_type):
        return [None] * len(array), []
    if _is_number(data_type):
        if kind_of(name) in LEVELS:
            return array.to_pylist(), []
        return pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False), []
    if _is_text(data_type):
        numbers = _clean_floats(array, kind_of(name))
        return (array.to_pylist() if numbers is None else numbers), []
    message = f"unsupported Arrow type {data_type}: send numbers or strings"
    present = np.flatnonzero(pc.is_valid(array).to_numpy(zero_copy_only=False)).tolist()
    return [None] * len(array), [(i, name, message) for i in present]


# Amounts and percentages: every cell that is not blank must be well-formed before the clean-up,
# which would glue a malformed amount into a number ("$1,00" → 100). RE2 reads lib.normalize's
# patterns as they are written (its \s is narrower: a unicode space goes the careful route).
_GRAMMARS = {CURRENCY: f"^(?:{AMOUNT_PATTERN})$", PERCENT: f"^(?:{PERCENT_PATTERN})$"}


def _clean_floats(array: pa.ChunkedArray | pa.Array, kind: str) -> np.ndarray | None:
    """A text column of a numeric kind converted by Arrow's kernels when every cell is a plain
    decimal in the kind's accepted form, or blank (missing); else None, and the normaliser's
    cell-by-cell route decides (a malformed amount, a null token, accounting parentheses,
    unicode, an overflow) and names what is wrong.

    Amounts and percentages are first matched against their grammar (lib.normalize's patterns);
    the clean-up is then lib.normalize's (numbers trimmed; amounts without ``$``, ``,`` and
    spaces; percent points trimmed, without a trailing ``%``); Arrow's parser then refuses every
    text that is not a decimal, except the names of NaN and infinity, which are sent back to the
    normaliser. Both parsers round correctly: the doubles are the same."""
    if kind not in (NUMERIC, CURRENCY, PERCENT):
        return None
    try:
        trimmed = pc.utf8_trim(array, " \t")
        blank = pc.equal(trimmed, "")
        if kind in _GRAMMARS:
            well_formed = pc.or_kleene(blank, pc.match_substring_regex(trimmed, _GRAMMARS[kind]))
            if not pc.all(well_formed, skip_nulls=True, min_count=0).as_py():
                return None
        text = trimmed
        if kind == CURRENCY:
            for character in "$, \t":  # spaces inside an amount too; a pass only if needed
                if pc.any(pc.match_substring(text, character)).as_py():
                    text = pc.replace_substring(text, character, "")
        elif kind == PERCENT:
            text = pc.utf8_rtrim(pc.if_else(pc.ends_with(text, "%"), pc.utf8_slice_codeunits(text, 0, -1), text),
                                 " \t")
        numbers = pc.cast(pc.if_else(blank, pa.scalar(None, text.type), text), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    values = numbers.to_numpy(zero_copy_only=False)
    missing = pc.fill_null(blank, True).to_numpy(zero_copy_only=False)
    # NaN from a cell that was not missing ("nan", a null token) and infinities ("1e999": out of
    # range, "inf": not a decimal) are the normaliser's to judge and report.
    if not np.array_equal(np.isnan(values), missing) or np.isinf(values).any():
        return None
    return values


def _encoded(array: pa.ChunkedArray | pa.Array) -> EncodedColumn:
    """A categorical column as its distinct values and each row's position among them: a few
    hundred values to normalise instead of a string per row (dictionary-encoded columns, as
    Parquet stores them, are never decoded)."""
    values: list = []
    indices = []
    for chunk in array.chunks if isinstance(array, pa.ChunkedArray) else [array]:
        encoded = chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
        positions = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.intp)
        indices.append(np.where(positions >= 0, positions + len(values), -1))
        values += encoded.dictionary.to_pylist()
    return EncodedColumn(values, np.concatenate(indices) if indices else np.empty(0, dtype=np.intp))


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
    """Ids keep their type; a mix of numbers and strings (possible in JSON) becomes strings."""
    try:
        return pa.array(ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in ids], type=pa.string())


def _row_messages(n_rows: int, errors: Sequence[CellError]) -> list[str | None]:
    messages: list[str | None] = [None] * n_rows
    for error in errors:
        text = f"{error.column}: {error.message}"
        messages[error.index] = text if messages[error.index] is None else f"{messages[error.index]}\n{text}"
    return messages
