"""Normalisation of messy cell values, as scalar parsers and as column functions.

Scalar parsers (``parse_number``, ``parse_currency``, ``parse_percent``, ``parse_category``)
define the rules and produce the error messages. Column functions (``normalize_column``)
apply them to a whole column at once; they take a fast vectorised route when the column is
already clean (the common case) and fall back to the scalar parsers cell by cell only to
convert the rest and to name what is wrong.

It is kept whole: each kind's fast route must accept exactly what its scalar grammar accepts, and the
two are checked against each other best when read side by side.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lib.core.errors import InvalidValue
from lib.core.schema import (
    ALIASES,
    AMOUNT_FORMS,
    CURRENCY,
    ID_KEY,
    LEVELS,
    NULL_TOKENS,
    NUMERIC,
    PERCENT,
    PERCENT_FORMS,
    describe_kind,
    kind_of,
)

# The grammar of numbers written as text, written once: the scalar parsers below, the
# bulk routes (here and in lib/codecs/columnar.py, with Arrow's RE2) and the OpenAPI document (ECMA) all
# use these patterns, so they keep to what the three dialects read alike (ASCII classes, groups,
# counted repeats; \s, which RE2 reads as ASCII spaces only: there a unicode space is left to
# the cell-by-cell route). Digits are ASCII only.
_UNSIGNED = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"  # 5, 5., .5, 5.25, 5e3
_DECIMAL = rf"[+-]?{_UNSIGNED}"
#: A plain numeric cell: a decimal number, spaces around it.
NUMBER_PATTERN = rf"\s*{_DECIMAL}\s*"
#: An x63 cell: a decimal number, then one ``%`` at most.
PERCENT_PATTERN = rf"\s*{_DECIMAL}\s*%?\s*"
# An amount's digits: ungrouped (as a plain number, exponent included), or grouped by commas in
# threes with an optional decimal part; never a comma after the point or in a group of two.
_AMOUNT_DIGITS = rf"(?:[0-9]{{1,3}}(?:,[0-9]{{3}})+(?:\.[0-9]*)?|{_UNSIGNED})"
# One sign at most, either side of one "$" at most, or accounting parentheses (the sign) around
# the amount, "$" inside or before them; spaces may separate these tokens, never split digits.
_AMOUNT = (rf"(?:(?:[+-]\s*)?(?:\$\s*)?{_AMOUNT_DIGITS}|\$\s*[+-]\s*{_AMOUNT_DIGITS}"
           rf"|(?:\$\s*)?\(\s*{_AMOUNT_DIGITS}\s*\)|\(\s*\$\s*{_AMOUNT_DIGITS}\s*\))")
#: An x12 cell: ``5032.58``, ``5,032.58``, ``$5,032.58``, ``-$5,032.58``, ``$-5,032.58``,
#: ``($5,032.58)`` or ``$(5,032.58)``, with ``+`` for ``-``, spaces around the tokens.
AMOUNT_PATTERN = rf"\s*{_AMOUNT}\s*"
_DECIMAL_RE = re.compile(_DECIMAL)
_AMOUNT_RE = re.compile(AMOUNT_PATTERN)
_PERCENT_RE = re.compile(PERCENT_PATTERN)
_WHITESPACE_RE = re.compile(r"\s+")
_SHOWN_CHARS = 40
_NONE_TYPE = type(None)

# Why a cell is invalid, as a label of bounded cardinality (metrics), and the start of the
# messages that say so; the scorer reuses OUT_OF_RANGE for terms that overflow.
REASON_NOT_A_NUMBER = "not_a_number"
REASON_UNKNOWN_CATEGORY = "unknown_category"
REASON_OVERFLOW = "overflow"
REASON_NOT_FINITE = "not_finite"
REASON_INVALID_ID = "invalid_id"
OUT_OF_RANGE = "number out of range"
NOT_FINITE = "expected a finite number"
_MESSAGE_REASONS = ((OUT_OF_RANGE, REASON_OVERFLOW), (NOT_FINITE, REASON_NOT_FINITE))


def show_value(value: object) -> str:
    """A short, safe rendering of a client value for error messages (never the payload).

    Strings are quoted, JSON literals, arrays and objects are shown as JSON (``true``,
    ``[1]``), numbers as Python prints them; anything longer than 40 characters is cut.
    """
    if isinstance(value, (bool, list, dict)) or value is None:
        try:
            text = json.dumps(value, ensure_ascii=False, default=repr)
        except (ValueError, RecursionError):
            text = type(value).__name__
    else:
        text = repr(value)
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    if not text.isascii():
        # Unpaired surrogates (JSON "\ud800" escapes) cannot be written back as UTF-8.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def rejection_reason(column: str, message: str) -> str:
    """Why the cell of ``column`` that got ``message`` was rejected (one of the REASON_ labels)."""
    if column == ID_KEY:
        return REASON_INVALID_ID
    if kind_of(column) in LEVELS:
        return REASON_UNKNOWN_CATEGORY
    for prefix, reason in _MESSAGE_REASONS:
        if message.startswith(prefix):
            return reason
    return REASON_NOT_A_NUMBER


def is_missing(value: object) -> bool:
    """True for None, float NaN and strings that are null tokens after trimming (any case)."""
    if value is None:
        return True
    if type(value) is float:
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in NULL_TOKENS


# Amounts and percentages name the forms they accept: a value that is not one is never guessed.
_NOT_A = {CURRENCY: ("an amount", AMOUNT_FORMS), PERCENT: ("a percentage", PERCENT_FORMS)}


def _invalid(kind: str, value: object) -> InvalidValue:
    if kind in _NOT_A:
        noun, forms = _NOT_A[kind]
        return InvalidValue(f"not {noun}: {show_value(value)}; accepted: {', '.join(forms)}")
    return InvalidValue(f"expected {describe_kind(kind)}, got {show_value(value)}")


def _number(kind: str, value: object) -> float:
    """Convert a JSON number (not a bool) to a finite float, or raise InvalidValue."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(kind, value)
    try:
        number = float(value)
    except OverflowError:
        raise InvalidValue(f"{OUT_OF_RANGE}: {show_value(value)}") from None
    if not math.isfinite(number):
        raise InvalidValue(f"{NOT_FINITE}, got {show_value(value)}")
    return number


def _finite(text: str, value: object) -> float:
    """The float of ``text``, a decimal written as the grammar allows; raise for an overflow."""
    number = float(text)
    if not math.isfinite(number):
        raise InvalidValue(f"{OUT_OF_RANGE}: {show_value(value)}")
    return number


def parse_number(value: object) -> float:
    """Parse a plain numeric cell: a JSON number or a decimal string; missing → NaN."""
    if is_missing(value):
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_RE.fullmatch(text):
            raise _invalid(NUMERIC, value)
        return _finite(text, value)
    return _number(NUMERIC, value)


def parse_currency(value: object) -> float:
    """Parse x12: ``"$6,882.34 "``, ``"$-5,032.58"``, ``"-$5,032.58"``, ``"($5,032.58)"`` → float.

    Strict (AMOUNT_PATTERN): commas only between groups of three digits before the point, one
    sign, one ``$``; anything else (``"$5.547,78"``, ``"$1,00"``, ``"$$5"``) is invalid, never guessed.
    """
    if is_missing(value):
        return math.nan
    if not isinstance(value, str):
        return _number(CURRENCY, value)
    if not _AMOUNT_RE.fullmatch(value):
        raise _invalid(CURRENCY, value)
    # Well-formed: without its spaces, "$" and commas it is a decimal ("(…)" is the minus sign).
    text = _WHITESPACE_RE.sub("", value).replace("$", "").replace(",", "")
    if text.startswith("("):
        text = "-" + text[1:-1]
    return _finite(text, value)


def parse_percent(value: object) -> float:
    """Parse x63: ``"62.59%"``, ``"62.59 %"`` or ``62.59`` → 62.59 (percent points, not divided)."""
    if is_missing(value):
        return math.nan
    if not isinstance(value, str):
        return _number(PERCENT, value)
    if not _PERCENT_RE.fullmatch(value):
        raise _invalid(PERCENT, value)
    return _finite(value.strip().removesuffix("%").rstrip(), value)


def parse_category(kind: str, value: object) -> str | None:
    """Parse a categorical cell of ``kind`` to its canonical level; missing → None."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        level = ALIASES[kind].get(value.strip().lower())
        if level is not None:
            return level
    raise InvalidValue(
        f"unknown value {show_value(value)}; accepted: {', '.join(LEVELS[kind])}"
    )


_NUMERIC_PARSERS = {NUMERIC: parse_number, CURRENCY: parse_currency, PERCENT: parse_percent}


# Bulk route for string cells: the column is joined with newlines, amounts checked against
# their grammar, cleaned with C-level string methods, checked against a character class in one
# regex pass and converted with float().
# Restricted to ASCII digits, signs, points, exponents and spaces, float() accepts exactly what
# _DECIMAL accepts; anything else (a newline inside a cell, accounting parentheses, unicode
# spaces, null tokens) sends the column to the cell-by-cell route, which is the reference.
_BULK_CHARS_RE = re.compile(r"[0-9.eE+\- \t\n]*")
_CURRENCY_DELETE = str.maketrans("", "", "$, \t")
_AMOUNT_OR_BLANK_RE = re.compile(rf"\s*(?:{_AMOUNT}\s*)?")
_DIGITS_AS_ZERO = str.maketrans("123456789", "000000000")


def _bulk_floats(kind: str, strings: Sequence[str]) -> np.ndarray | None:
    """Convert a list of string cells in bulk; None when some cell needs the careful route."""
    joined = "\n".join(strings)
    if joined.count("\n") != len(strings) - 1:
        return None
    if kind == CURRENCY:
        # The clean-up glues whatever digits a cell holds: only well-formed amounts may take it.
        # The grammar treats every digit alike, so each distinct shape (digits as 0) is checked
        # once: a handful of regex matches instead of one per cell.
        if not all(map(_AMOUNT_OR_BLANK_RE.fullmatch, set(joined.translate(_DIGITS_AS_ZERO).split("\n")))):
            return None
        joined = joined.translate(_CURRENCY_DELETE)
    elif kind == PERCENT:
        joined = joined.replace("%\n", "\n").removesuffix("%")
    if not _BULK_CHARS_RE.fullmatch(joined):
        return None
    lines = joined.split("\n")
    try:
        if "" not in lines:
            return np.fromiter(map(float, lines), dtype=np.float64, count=len(lines))
        # An empty line is a missing cell only if the cell was blank ("$" alone is not).
        if any(strings[i].strip() for i, line in enumerate(lines) if not line):
            return None
        return np.array([float(line) if line else math.nan for line in lines], dtype=np.float64)
    except ValueError:  # a malformed number such as "1.2.3" or "e5"
        return None


def _fast_numeric(kind: str, values: Sequence) -> np.ndarray | None:
    """Convert a column of numbers, nulls and clean strings in bulk; None when some cell needs
    the careful route."""
    types = set(map(type, values))
    if not types <= {float, int, str, _NONE_TYPE}:
        return None
    if str not in types:
        try:
            array = np.array(values, dtype=np.float64)
        except OverflowError:
            return None
    elif types == {str}:
        array = _bulk_floats(kind, values)
    else:
        positions = [i for i, v in enumerate(values) if type(v) is str]
        parsed = _bulk_floats(kind, [values[i] for i in positions])
        if parsed is None:
            return None
        try:
            array = np.array([None if type(v) is str else v for v in values], dtype=np.float64)
        except OverflowError:
            return None
        array[positions] = parsed
    # NaN is a missing cell; infinities are invalid and go the careful route.
    return None if array is None or np.isinf(array).any() else array


def normalize_numeric(name: str, values: Sequence) -> tuple[np.ndarray, dict[int, str]]:
    """Normalise a numeric, currency or percent column to float64 (NaN = missing).

    Returns the array and ``{row index: message}`` for invalid cells (set to NaN).
    """
    kind = kind_of(name)
    if isinstance(values, np.ndarray):  # float64 from a table reader: only infinities get here
        values = values.tolist()
    array = _fast_numeric(kind, values) if len(values) else np.empty(0)
    if array is not None:
        return array, {}
    parse = _NUMERIC_PARSERS[kind]
    array = np.empty(len(values), dtype=np.float64)
    errors: dict[int, str] = {}
    for i, value in enumerate(values):
        try:
            array[i] = parse(value)
        except InvalidValue as exc:
            array[i] = math.nan
            errors[i] = str(exc)
    return array, errors


_PLAIN_NUMBER_TYPES = frozenset({float, int, _NONE_TYPE})


def _is_plain(values: Sequence) -> bool:
    if isinstance(values, np.ndarray):
        return values.dtype == np.float64
    return set(map(type, values)) <= _PLAIN_NUMBER_TYPES


def normalize_numeric_columns(
    names: Sequence[str], columns: Sequence[Sequence]
) -> tuple[np.ndarray, dict[str, dict[int, str]]]:
    """Normalise several numeric columns into one ``(rows, columns)`` float64 matrix.

    Columns of JSON numbers and nulls only (the usual case), and float64 arrays (NaN = missing)
    from table readers, are converted together in one call; the others column by column with
    ``normalize_numeric``. Returns the matrix and, per column with invalid cells,
    ``{row index: message}``.
    """
    n_rows = len(columns[0]) if columns else 0
    matrix = np.empty((n_rows, len(names)), dtype=np.float64)
    plain = [j for j, values in enumerate(columns) if _is_plain(values)]
    if plain:
        try:
            block = np.array([columns[j] for j in plain], dtype=np.float64).T
        except OverflowError:  # an integer beyond float range: let each column report it
            plain = []
        else:
            finite = ~np.isinf(block).any(axis=0)
            plain = [j for j, ok in zip(plain, finite.tolist(), strict=True) if ok]
            matrix[:, plain] = block[:, finite]
    errors: dict[str, dict[int, str]] = {}
    done = set(plain)
    for j, (name, values) in enumerate(zip(names, columns, strict=True)):
        if j not in done:
            matrix[:, j], column_errors = normalize_numeric(name, values)
            if column_errors:
                errors[name] = column_errors
    return matrix, errors


def _code_lookup(kind: str) -> dict:
    levels = LEVELS[kind]
    missing = len(levels)
    lookup: dict = dict.fromkeys((None, *NULL_TOKENS), missing)
    for alias, level in ALIASES[kind].items():
        lookup[alias] = levels.index(level)
    for code, level in enumerate(levels):
        lookup[level] = code
    return lookup


_CODE_LOOKUPS = {kind: _code_lookup(kind) for kind in LEVELS}


def numeric_parser(name: str) -> Callable[[object], float]:
    """The scalar parser of a numeric, currency or percent column (NaN for missing)."""
    return _NUMERIC_PARSERS[kind_of(name)]


def category_code(name: str, value: object) -> int:
    """The level code of one categorical cell, as ``normalize_categorical`` codes it; raise
    InvalidValue for an unknown value."""
    kind = kind_of(name)
    try:
        code = _CODE_LOOKUPS[kind].get(value)
    except TypeError:  # unhashable
        code = None
    if code is None:
        level = parse_category(kind, value)
        code = len(LEVELS[kind]) if level is None else LEVELS[kind].index(level)
    return code


@dataclass(frozen=True)
class EncodedColumn(Sequence):
    """A column as its distinct values and, for each row, the position of its value (-1 for a
    null cell): how table readers hand over dictionary-encoded columns, so that the normaliser
    looks at each distinct value once instead of at every cell."""

    values: Sequence
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, row: int) -> object:
        position = self.indices[row]
        return None if position < 0 else self.values[position]


def normalize_categorical(name: str, values: Sequence) -> tuple[np.ndarray, dict[int, str]]:
    """Normalise a categorical column to integer codes.

    Code ``i`` is ``LEVELS[kind][i]``; code ``len(LEVELS[kind])`` means missing. Returns the
    codes and ``{row index: message}`` for invalid cells (coded as missing).
    """
    if isinstance(values, EncodedColumn):
        return _normalize_encoded(name, values)
    kind = kind_of(name)
    levels = LEVELS[kind]
    lookup = _CODE_LOOKUPS[kind]
    try:
        codes = list(map(lookup.get, values))
    except TypeError:  # an unhashable cell (list, object): check each cell below
        codes = [None] * len(values)
    errors: dict[int, str] = {}
    if None in codes:
        for i, code in enumerate(codes):
            if code is None:
                try:
                    codes[i] = category_code(name, values[i])
                except InvalidValue as exc:
                    codes[i] = len(levels)
                    errors[i] = str(exc)
    return np.fromiter(codes, dtype=np.intp, count=len(codes)), errors


def _normalize_encoded(name: str, column: EncodedColumn) -> tuple[np.ndarray, dict[int, str]]:
    # The distinct values, then None last: a null cell's index, -1, picks its code.
    codes, errors = normalize_categorical(name, [*column.values, None])
    row_errors = {row: message for position, message in errors.items()
                  for row in np.flatnonzero(column.indices == position).tolist()}
    return codes[column.indices], dict(sorted(row_errors.items()))


def normalize_column(name: str, values: Sequence) -> tuple[np.ndarray, dict[int, str]]:
    """Normalise one column by its kind: floats for numeric kinds, codes for categoricals."""
    if kind_of(name) in _NUMERIC_PARSERS:
        return normalize_numeric(name, values)
    return normalize_categorical(name, values)


def decode_levels(name: str, codes: np.ndarray) -> np.ndarray:
    """Turn categorical codes back into canonical level strings (None for missing)."""
    table = np.array([*LEVELS[kind_of(name)], None], dtype=object)
    return table[codes]
