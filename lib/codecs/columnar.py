"""Arrow tables to the scorer: a table's consumed columns as a ``RawBatch`` (scores go back as a
table in ``lib.codecs.answer_table``; text cells are checked in ``lib.codecs.text_cells``).

One conversion for every columnar source: the API's Arrow and Parquet bodies, the file command
(``lib.batch.command``) and the Spark job (``lib.spark.job``). Cells follow the rules of JSON rows:

- a column of numbers (any integer or floating type; nulls are missing) feeding a numeric,
  currency or percent variable is taken as float64 in one step, exactly the doubles JSON
  numbers decode to; decimals as the doubles their text parses to (as a JSON number's);
- a column of strings (``string``, ``large_string``, ``string_view``), plain or
  dictionary-encoded, holds the messy forms (``"$5,547.78"``, ``"36.29%"``, ``"Monday"``) and
  goes through the same normaliser as JSON strings; so do numbers in a categorical column (and
  are refused, as in JSON). A text cell over MAX_CELL_TEXT bytes is refused unread; text that
  is not UTF-8 is a PayloadError naming the column;
- a dictionary-encoded column (any index type, values of any usable type) is converted through
  its dictionary: each distinct value once, then taken by index, never a value per row;
- a column of any other type (booleans, binary, dates, timestamps, durations, lists, structs,
  maps, extension types, ...) is an invalid cell in every row where it is not null, naming the
  column and the type; a column of the null type is missing values;
- only the consumed columns and ``id`` are ever converted; the others stay untouched buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lib.codecs.text_cells import LongText, check_utf8, chunks_of, clean_floats, short_text
from lib.core.errors import PayloadError
from lib.core.normalize import EncodedColumn, normalize_numeric
from lib.core.raw_batch import RawBatch, make_batch
from lib.core.schema import ID_KEY, LEVELS, kind_of

_CellProblems = list[tuple[int, str, str]]
# Integer ids an answer holds: JSON numbers up to 64 bits, as lib.core.raw_batch checks them.
_ID_MIN, _ID_MAX = -(2**63), 2**64 - 1
#: Distinct values past which a categorical column goes to the normaliser cell by cell (its
#: encoded route looks each invalid distinct value up among all rows: quadratic in both).
_MAX_ENCODED_VALUES = 1000
# An extension type is refused whether pyarrow knows it (an ExtensionType) or not (its storage
# type, with the name in the field's metadata): its storage (bool8's int8, say) is not its meaning.
_EXTENSION_NAME = b"ARROW:extension:name"


def _is_text(data_type: pa.DataType) -> bool:
    return (pa.types.is_string(data_type) or pa.types.is_large_string(data_type)
            or pa.types.is_string_view(data_type))


def _is_number(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type)


def _is_usable(data_type: pa.DataType) -> bool:
    """Text, numbers and decimals: what a cell may hold (other types are refused cell by cell)."""
    return _is_text(data_type) or _is_number(data_type) or pa.types.is_decimal(data_type)


def _values_type(data_type: pa.DataType) -> pa.DataType:
    return data_type.value_type if pa.types.is_dictionary(data_type) else data_type


def column_values(array: pa.ChunkedArray | pa.Array, name: str) -> tuple[Sequence, _CellProblems]:
    """The raw cells of one consumed column, and ``(row, column, message)`` for each cell of an
    unusable type (or too long a text). Numbers for a numeric variable come as a float64 array
    (NaN = missing); a dictionary-encoded column is converted through its dictionary (each
    distinct value once, then taken by index), never expanded to a value per row. Raise
    PayloadError for text that is not UTF-8 or a dictionary index out of range."""
    data_type = array.type
    values_type = _values_type(data_type)
    if isinstance(data_type, pa.BaseExtensionType) or not (_is_usable(values_type) or pa.types.is_null(values_type)):
        return unsupported_cells(array, name, str(data_type))
    if pa.types.is_null(values_type):
        return [None] * len(array), []
    if kind_of(name) in LEVELS:
        return _encoded(array, name)
    if pa.types.is_dictionary(data_type):
        return _dictionary_floats(array, name)
    return _plain_numbers(array, name)


def unsupported_cells(array: pa.ChunkedArray | pa.Array, name: str, type_name: str) -> tuple[list, _CellProblems]:
    """Every present cell of a column of a type no variable takes, as an invalid cell naming it."""
    message = f"unsupported Arrow type {type_name}: send numbers or strings"
    present = np.flatnonzero(pc.is_valid(array).to_numpy(zero_copy_only=False)).tolist()
    return [None] * len(array), [(i, name, message) for i in present]


def _plain_numbers(array: pa.ChunkedArray | pa.Array, name: str) -> tuple[Sequence, _CellProblems]:
    """A column (not dictionary-encoded) of a numeric kind: float64 in one step for numbers and
    decimals, Arrow's kernels for clean text, else the text for the normaliser's careful route."""
    data_type = array.type
    if _is_number(data_type):
        return pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False), []
    if pa.types.is_decimal(data_type):
        return _exact_floats(array).to_numpy(zero_copy_only=False), []
    text, long_cells = short_text(array, name)
    numbers = clean_floats(text, kind_of(name))
    values = text.to_pylist() if numbers is None else numbers
    if not long_cells:
        return values, []
    # Every cell for the normaliser's careful route, the long ones as LongText (it refuses them).
    cells: list = [None] * len(array)
    short_rows = np.ones(len(array), dtype=bool)
    short_rows[list(long_cells)] = False
    if isinstance(values, np.ndarray):  # NaN was a missing cell: None, as the careful route takes it
        values = [None if value != value else value for value in values.tolist()]
    for row, value in zip(np.flatnonzero(short_rows).tolist(), values, strict=True):
        cells[row] = value
    for row, cell in long_cells.items():
        cells[row] = cell
    return cells, []


def _exact_floats(array: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Decimals as the doubles their text parses to, as a JSON number's does (correctly rounded;
    Arrow's own decimal-to-double cast is not)."""
    return pc.cast(pc.cast(array, pa.string()), pa.float64())


def _encoded(array: pa.ChunkedArray | pa.Array, name: str) -> tuple[Sequence, _CellProblems]:
    """A categorical column as its distinct values and each row's position among them: a few
    values to normalise instead of a string per row (dictionary-encoded columns, as Parquet
    stores them, are never decoded; batches sharing a dictionary share its values). A column of
    more distinct values than _MAX_ENCODED_VALUES goes as a list instead (its cells refer to the
    same Python values)."""
    values: list = []
    starts: dict[tuple, int] = {}  # a dictionary's identity -> where its values start in ``values``
    kept = []  # the dictionaries seen, alive until the end: their addresses are their identities
    indices = []
    for chunk in chunks_of(array):
        long_cells: dict[int, LongText] = {}
        if pa.types.is_dictionary(chunk.type):
            encoded = chunk
        else:
            text, long_cells = short_text(chunk, name) if _is_text(chunk.type) else (chunk, {})
            encoded = pc.dictionary_encode(text)
        kept.append(encoded.dictionary)
        start = starts.setdefault(_identity(encoded.dictionary), len(values))
        if start == len(values):
            values += _distinct_cells(encoded.dictionary, name)
        positions = _indices(encoded, name)
        positions = np.where(positions >= 0, positions + start, -1)
        if long_cells:  # the short rows' positions, then one value per long cell
            every = np.empty(len(chunk), dtype=np.intp)
            short_rows = np.ones(len(chunk), dtype=bool)
            short_rows[list(long_cells)] = False
            every[short_rows] = positions
            every[list(long_cells)] = np.arange(len(values), len(values) + len(long_cells))
            values += long_cells.values()
            positions = every
        indices.append(positions)
    rows = np.concatenate(indices) if indices else np.empty(0, dtype=np.intp)
    if len(values) > _MAX_ENCODED_VALUES:
        return np.array([*values, None], dtype=object)[rows].tolist(), []
    return EncodedColumn(values, rows), []


def _dictionary_floats(array: pa.ChunkedArray | pa.Array, name: str) -> tuple[np.ndarray, _CellProblems]:
    """A dictionary-encoded column of a numeric kind: its distinct values normalised once (the
    errors are the normaliser's, as for JSON cells), then taken by index."""
    converted: dict[tuple, tuple[np.ndarray, dict[int, str]]] = {}
    kept, parts, problems, offset = [], [], [], 0
    for chunk in chunks_of(array):
        kept.append(chunk.dictionary)
        key = _identity(chunk.dictionary)
        if key not in converted:
            floats, errors = normalize_numeric(name, _plain_numbers(chunk.dictionary, name)[0])
            converted[key] = (np.append(floats, np.nan), errors)  # the NaN for a null index, -1
        floats, errors = converted[key]
        positions = _indices(chunk, name)
        parts.append(floats[positions])
        if errors:
            invalid = np.zeros(len(floats), dtype=bool)
            invalid[list(errors)] = True
            rows = np.flatnonzero(invalid[positions])
            problems += [(offset + row, name, errors[position])
                         for row, position in zip(rows.tolist(), positions[rows].tolist(), strict=True)]
        offset += len(chunk)
    return (np.concatenate(parts) if parts else np.empty(0)), problems


def _identity(dictionary: pa.Array) -> tuple:
    """The same for every batch holding one dictionary (an IPC stream's batches share theirs)."""
    return (*(0 if buffer is None else buffer.address for buffer in dictionary.buffers()),
            dictionary.offset, len(dictionary))


def _indices(encoded: pa.Array, name: str) -> np.ndarray:
    """Each row's position in its dictionary (-1 for a null), whatever the index type; raise
    PayloadError for an index outside the dictionary (a table reader that did not validate)."""
    bounds = pc.min_max(encoded.indices)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    size = len(encoded.dictionary)
    if low is not None and (low < 0 or high >= size):
        bad = low if low < 0 else high
        raise PayloadError(f"column {name!r}: dictionary index {bad} is out of range "
                           f"(the dictionary has {size} values)")
    positions = pc.fill_null(pc.cast(encoded.indices, pa.int64()), -1)
    return positions.to_numpy(zero_copy_only=False).astype(np.intp, copy=False)


def _distinct_cells(dictionary: pa.Array, name: str) -> list:
    """A dictionary's values as Python cells: text as str, numbers as int or float, decimals as
    the doubles of their text."""
    if pa.types.is_decimal(dictionary.type):
        return _exact_floats(dictionary).to_pylist()
    if _is_text(dictionary.type):
        check_utf8(dictionary, name)
    return dictionary.to_pylist()


def batch_from_table(table: pa.Table | pa.RecordBatch, columns: Sequence[str]) -> RawBatch:
    """The batch of ``columns`` (and ``id``) of ``table``, taken by name; absent columns are
    missing values. Raise PayloadError for a column name that appears more than once, text that
    is not UTF-8, a dictionary index out of range."""
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
        metadata = table.schema.field(name).metadata or {}
        if _EXTENSION_NAME in metadata:
            extension = metadata[_EXTENSION_NAME].decode("utf-8", "replace")[:60]
            cells, column_problems = unsupported_cells(table.column(name), name, f"extension<{extension}>")
        else:
            cells, column_problems = column_values(table.column(name), name)
        values.append(cells)
        problems += column_problems
    return make_batch(columns, n_rows, values[:-1], values[-1], problems)


def _id_values(array: pa.ChunkedArray | pa.Array) -> list:
    """The ids as Python values: text as str (checked to be UTF-8), numbers as int or float,
    decimals exactly (an integer as int within the 64 bits an answer holds, else as its text).
    make_batch refuses the rest (booleans, dates, ...) cell by cell."""
    data_type = array.type
    if pa.types.is_dictionary(data_type):
        ids = []
        for chunk in chunks_of(array):
            values = np.array([*_id_values(chunk.dictionary), None], dtype=object)
            ids += values[_indices(chunk, ID_KEY)].tolist()
        return ids
    if _is_text(data_type):
        check_utf8(array, ID_KEY)
        return array.to_pylist()
    if pa.types.is_decimal(data_type):
        if data_type.scale > 0:
            return pc.cast(array, pa.string()).to_pylist()
        return [None if value is None else _integer_id(int(value)) for value in array.to_pylist()]
    return array.to_pylist()


def _integer_id(value: int) -> int | str:
    return value if _ID_MIN <= value <= _ID_MAX else str(value)


