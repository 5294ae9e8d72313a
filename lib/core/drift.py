"""Cheap drift signals: per consumed column, how many scored values were missing or outside
the range seen in training (the manifest's ``column_stats``).

Counting works on the arrays the scorer already normalised (``Scores.numeric`` before
imputation, ``Scores.codes``): a few numpy reductions per batch, nothing parsed twice.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from lib.core.errors import ArtifactError
from lib.core.schema import LEVELS, kind_of


@dataclass(frozen=True)
class DriftCounts:
    """Counts of one batch, only the columns with a non-zero count."""

    missing: dict[str, int]
    out_of_range: dict[str, int]


@dataclass(frozen=True)
class RangeCheck:
    """Training ranges of the numeric columns, in the scorer's column order, and the code that
    means "missing" for each categorical column."""

    numeric_columns: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    missing_codes: dict[str, int]

    @cached_property
    def bounds(self) -> list[tuple[str, float, float]]:
        """(column, low, high) per numeric column, as Python floats."""
        return list(zip(self.numeric_columns, self.low.tolist(), self.high.tolist(), strict=True))

    @classmethod
    def from_manifest(cls, manifest: dict, numeric_columns: Sequence[str],
                      categorical_columns: Sequence[str]) -> RangeCheck:
        """Build the check from ``column_stats``; raise ArtifactError naming columns without a range."""
        stats = manifest.get("column_stats", {})
        lacking = [c for c in numeric_columns if not {"min", "max"} <= set(stats.get(c, ()))]
        if lacking:
            raise ArtifactError(f"manifest.json has no training range for {lacking}: "
                                "retrain with `python -m lib.training.train`")
        return cls(
            numeric_columns=tuple(numeric_columns),
            low=np.array([stats[c]["min"] for c in numeric_columns], dtype=np.float64),
            high=np.array([stats[c]["max"] for c in numeric_columns], dtype=np.float64),
            missing_codes={c: len(LEVELS[kind_of(c)]) for c in categorical_columns},
        )


def count_drift(check: RangeCheck, numeric: np.ndarray, codes: dict[str, np.ndarray],
                invalid_rows: Collection[int] = ()) -> DriftCounts:
    """Count missing and out-of-range values per column over the valid rows of a scored batch.

    ``numeric`` is rows x ``check.numeric_columns`` with NaN for missing values (not yet
    imputed); ``codes`` maps each categorical column to its level codes. Rows in
    ``invalid_rows`` got no prediction and are left out: their bad cells are counted as
    rejections elsewhere. A missing value is never out of range (NaN compares false).
    """
    if len(numeric) == 1:
        return DriftCounts({}, {}) if invalid_rows else _count_one_row(check, numeric[0].tolist(), codes)
    keep = None
    if invalid_rows:
        keep = np.ones(len(numeric), dtype=bool)
        keep[list(invalid_rows)] = False
        numeric = numeric[keep]
    missing: dict[str, int] = {}
    out_of_range: dict[str, int] = {}
    if check.numeric_columns:
        _add_nonzero(missing, check.numeric_columns, np.isnan(numeric).sum(axis=0))
        _add_nonzero(out_of_range, check.numeric_columns,
                     ((numeric < check.low) | (numeric > check.high)).sum(axis=0))
    for column, missing_code in check.missing_codes.items():
        column_codes = codes[column] if keep is None else codes[column][keep]
        count = int(np.count_nonzero(column_codes == missing_code))
        if count:
            missing[column] = count
    return DriftCounts(missing=missing, out_of_range=out_of_range)


def _count_one_row(check: RangeCheck, values: list[float], codes: dict[str, np.ndarray]) -> DriftCounts:
    """The same counts for a single row, in plain Python: a dozen numpy calls on 1-element
    arrays would cost more than the rest of the metrics of a one-row request."""
    missing: dict[str, int] = {}
    out_of_range: dict[str, int] = {}
    for (column, low, high), value in zip(check.bounds, values, strict=True):
        if value != value:  # NaN: missing
            missing[column] = 1
        elif not low <= value <= high:
            out_of_range[column] = 1
    for column, missing_code in check.missing_codes.items():
        if codes[column].item(0) == missing_code:
            missing[column] = 1
    return DriftCounts(missing=missing, out_of_range=out_of_range)


def _add_nonzero(out: dict[str, int], columns: Sequence[str], counts: np.ndarray) -> None:
    for column, count in zip(columns, counts.tolist(), strict=True):
        if count:
            out[column] = count
