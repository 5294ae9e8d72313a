"""Columns checked by name: which consumed columns a body lacks, which of its names nearly match
one, and which values lie far outside the training range.

An absent consumed column is still a missing value (imputed, or the ``_nan`` level); it is only
reported, or refused when the caller asks (``?columns=strict``, ``REQUIRE_COLUMNS``). A name
nearly matches a consumed column when it is not itself a schema column and equals it after case
folding, trimming and removing ``_``, ``-`` and spaces, or is one edit away (Levenshtein
distance 1, case folded). A value is far outside training when it lies more than ``FAR_SPANS``
training ranges beyond the range the manifest keeps (``column_stats``), or, for a manifest
without one, more than ``FAR_SCALES`` scaler scales from the scaler's mean.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import msgspec
import numpy as np

from lib.core.errors import PayloadError, ServiceError
from lib.core.schema import COLUMNS, ID_KEY

#: Training ranges (max − min) a value may lie beyond the training range before it is reported.
FAR_SPANS = 10.0
#: Scaler scales a value may lie from the scaler's mean, for a manifest without training ranges.
FAR_SCALES = 100.0
#: Names that are never near misses: every schema column, the row id and the training label.
KNOWN_NAMES = frozenset({*COLUMNS, ID_KEY, "y"})
_IGNORED = str.maketrans("", "", "_- ")
#: How much of a client's name a report shows.
MAX_NAME = 40
_UNSAFE = re.compile(r"[^\x21-\x7e ]|[,>=]")


def shown(name: str) -> str:
    """A client's name as a report shows it, safe in a header or a log line: every character
    outside printable ASCII, and ``,`` ``>`` ``=`` (the report's separators), as ``?``; cut at
    MAX_NAME characters."""
    text = _UNSAFE.sub("?", name)
    return text if len(text) <= MAX_NAME else text[:MAX_NAME - 3] + "..."


@dataclass
class ColumnReport:
    """What one body (or stream) showed: consumed columns absent from every row, names that
    nearly match one (given name → consumed column), and per column the count of values far
    outside the training range."""

    absent: tuple[str, ...] = ()
    suggestions: dict[str, str] = field(default_factory=dict)
    far: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.absent or self.suggestions or self.far)

    def describe(self) -> str:
        """One line for a person: what is absent (with "did you mean"), what is far out."""
        parts = []
        if self.absent:
            parts.append("consumed columns absent from every row (scored as missing values): "
                         + ", ".join(self.absent))
        if self.suggestions:
            parts.append("did you mean: " + ", ".join(f"{shown(given)} -> {column}"
                                                       for given, column in self.suggestions.items()))
        if self.far:
            parts.append("values far outside the training range: "
                         + ", ".join(f"{column} ({count})" for column, count in self.far.items()))
        return "; ".join(parts)


def _folded(name: str) -> str:
    return name.strip().casefold().translate(_IGNORED)


def _one_edit(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ by exactly one insertion, deletion or substitution."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:] or (len(a) == len(b) and a[i + 1:] == b[i + 1:])


def near_misses(names: Iterable[str], columns: Sequence[str], absent: Collection[str]) -> dict[str, str]:
    """Each name of ``names`` that is not a schema column but nearly matches one of ``columns``
    (see the module's docstring; a fold before one edit), mapped to that column when it is one
    of ``absent``: a variant of a column the body has (``X12`` beside ``x12``) is not reported."""
    by_fold = {_folded(column): column for column in columns}
    found = {}
    for name in names:
        if not isinstance(name, str) or name in KNOWN_NAMES:
            continue
        match = by_fold.get(_folded(name))
        if match is None:
            lowered = name.strip().casefold()
            match = next((c for c in columns if _one_edit(lowered, c)), None)
        if match in absent:
            found[name] = match
    order = {column: i for i, column in enumerate(columns)}
    return dict(sorted(found.items(), key=lambda item: (order[item[1]], item[0])))


def name_report(columns: Sequence[str], names: Collection[str] | None) -> ColumnReport:
    """The report of a body whose rows hold the names ``names`` (None: every consumed column
    is known to be present, nothing to report)."""
    if names is None:
        return ColumnReport()
    absent = tuple(c for c in columns if c not in names)
    if not absent:
        return ColumnReport()
    return ColumnReport(absent=absent, suggestions=near_misses(names, columns, absent))


def duplicated(names: Iterable[object]) -> list[str]:
    """The names given more than once, in order of their second appearance."""
    seen, twice = set(), []
    for name in names:
        if name in seen and name not in twice:
            twice.append(str(name))
        seen.add(name)
    return twice


# Keys of JSON rows and NDJSON lines: a repeated key in the first row, and the keys the rows
# hold when a consumed column is None in every row (absent, or null throughout).

def key_pattern(names: Sequence[str]) -> tuple[frozenset[str], re.Pattern]:
    """``names``, and a pattern of their JSON keys (``"x12"``) for ``check_first_row``, factored
    by first character: an alternation of every name costs four times as much to search."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names, key=len, reverse=True):
        groups.setdefault(name[:1], []).append(re.escape(name[1:]))
    alternatives = "|".join(f"{re.escape(first)}(?:{'|'.join(rests)})" for first, rests in groups.items())
    return frozenset(names), re.compile(f'"(?:{alternatives})"'.encode())


def check_first_row(data: bytes, keys: tuple[frozenset[str], re.Pattern], where: str = "row 0") -> None:
    """Refuse (PayloadError, naming the row ``where``) a first row object of ``data`` that holds
    one of ``keys`` (``key_pattern``) twice.

    The keys are found in the bytes up to the first ``}``: the first row, unless a cell holds a
    nested object, a backslash or a brace in a string, which the bytes before it show (a ``{``, a
    ``\\``, an odd count of quotes); then, as when a key is found twice (a cell may hold its
    text), the standard library reads the row and sees every pair."""
    start = data.find(b"{")
    end = data.find(b"}", start + 1)
    if start < 0 or end < 0:
        return
    plain = data.find(b"{", start + 1, end) < 0 and data.find(b"\\", start, end) < 0 \
        and data.count(b'"', start, end) % 2 == 0
    found = keys[1].findall(data, start, end) if plain else ()
    if plain and len(set(found)) == len(found):
        return
    seen: list[list[str]] = []
    text = bytes(data[start:start + _FIRST_ROW_BYTES]).decode("utf-8", "replace")
    try:
        json.JSONDecoder(object_pairs_hook=lambda pairs: seen.append([k for k, _ in pairs])).raw_decode(text)
    except (ValueError, RecursionError):
        return  # longer than the bytes looked at, or malformed: left to the decoder
    twice = [name for name in duplicated(seen[-1]) if name in keys[0]] if seen else []
    if twice:
        raise PayloadError(f"{where} holds the key {twice[0]!r} twice: give each column once")


#: How much of a body ``check_first_row`` parses to confirm a key given twice.
_FIRST_ROW_BYTES = 1 << 20


def all_none_somewhere(columns: Sequence[Sequence]) -> bool:
    """True when one of ``columns`` (non-empty) is None in every row: absent, or null throughout."""
    return any(column and column[0] is None and column.count(None) == len(column) for column in columns)


def row_keys(data: bytes, lines: bool = False) -> set[str] | None:
    """Every key of the row objects of ``data`` (one object or an array of them; with ``lines``,
    one a line), values left undecoded; None if the keys cannot be read."""
    try:
        rows = _LINE_KEYS.decode_lines(data) if lines else _ROW_KEYS.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    names: set[str] = set()
    for row in rows if isinstance(rows, list) else [rows]:
        names.update(row)
    return names


# The keys of row objects, every value skipped (not parsed: a number out of range is no error).
_ROW_KEYS = msgspec.json.Decoder(dict[str, msgspec.Raw] | list[dict[str, msgspec.Raw]])
_LINE_KEYS = msgspec.json.Decoder(dict[str, msgspec.Raw])


@dataclass(frozen=True)
class FarBounds:
    """Per numeric column (the scorer's order), the bounds beyond which a value is far outside
    training."""

    columns: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray

    @cached_property
    def bounds(self) -> tuple[list[float], list[float]]:
        """``low`` and ``high`` as Python floats, for one row."""
        return self.low.tolist(), self.high.tolist()

    @classmethod
    def from_manifest(cls, manifest: dict, columns: Sequence[str], center: np.ndarray,
                      scale: np.ndarray) -> FarBounds:
        """The bounds of ``columns`` from the manifest's training ranges, each one widened by
        FAR_SPANS ranges; a column without a range gets mean ± FAR_SCALES scales (``center``,
        ``scale``: the scaler's, in the order of ``columns``)."""
        stats = manifest.get("column_stats") or {}
        low, high = [], []
        for column, mean, std in zip(columns, center.tolist(), scale.tolist(), strict=True):
            entry = stats.get(column) or {}
            if isinstance(entry.get("min"), int | float) and isinstance(entry.get("max"), int | float):
                span = entry["max"] - entry["min"]
                low.append(entry["min"] - FAR_SPANS * span)
                high.append(entry["max"] + FAR_SPANS * span)
            else:
                low.append(mean - FAR_SCALES * std)
                high.append(mean + FAR_SCALES * std)
        return cls(tuple(columns), np.array(low, dtype=np.float64), np.array(high, dtype=np.float64))

    def count(self, numeric: np.ndarray | None) -> dict[str, int]:
        """Per column, the values of ``numeric`` (rows x columns, NaN for missing) far outside
        training; only non-zero counts."""
        if numeric is None or not self.columns or not len(numeric):
            return {}
        if len(numeric) == 1:  # plain Python: a few numpy calls on one row cost more
            return {column: 1 for column, value, low, high in zip(self.columns, numeric[0].tolist(), self.bounds[0],
                                                                    self.bounds[1], strict=True)
                    if value < low or value > high}
        with np.errstate(invalid="ignore"):
            far = (numeric < self.low) | (numeric > self.high)
        if not far.any():  # half the cost of counting per column, which only a far value needs
            return {}
        counts = far.sum(axis=0)
        return {column: n for column, n in zip(self.columns, counts.tolist(), strict=True) if n}


class ColumnError(ServiceError):
    """A body whose column report is not empty, refused on request (``?columns=strict``,
    ``REQUIRE_COLUMNS``): ``report`` says what was absent, nearly matched or far out."""

    def __init__(self, report: ColumnReport, n_rows: int):
        self.report = report
        self.n_rows = n_rows
        super().__init__(f"the columns were refused (columns=strict): {report.describe()}")
