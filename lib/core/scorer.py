"""The served scoring path: a plan compiled once from the verified stages, applied with numpy.

The plan holds only what the model consumes: for each numeric variable its fill value
(imputer mean), centre and scale (scaler), and coefficient; for each categorical column a
table of coefficients indexed by level code, the missing code last. Scoring a batch is then
a few array operations, with no pandas and no per-row Python.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from lib.core.artifacts import Stages, load_artifacts
from lib.core.errors import ArtifactError, CellError, InvalidValue
from lib.core.features import NAN_LEVEL, source_column
from lib.core.normalize import (
    OUT_OF_RANGE,
    category_code,
    normalize_categorical,
    normalize_numeric_columns,
    numeric_parser,
)
from lib.core.raw_batch import RawBatch
from lib.core.schema import COLUMNS, LEVELS, NUMERIC_COLUMNS, kind_of

#: Largest difference tolerated between the plan and the recorded golden probability.
GOLDEN_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ScoringPlan:
    """Everything needed to score raw columns, derived from the pickled stages."""

    numeric_columns: tuple[str, ...]
    fill: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    categorical_tables: dict[str, np.ndarray]
    threshold: float
    consumed_columns: tuple[str, ...]
    #: The model's dummy variables: (variable, its column, the level code that switches it on).
    dummies: tuple[tuple[str, str, int], ...] = ()

    @cached_property
    def numeric_lists(self) -> tuple[list[float], list[float], list[float], list[float]]:
        """fill, center, scale and coef as Python floats, for the one-row path."""
        return tuple(a.tolist() for a in (self.fill, self.center, self.scale, self.coef))

    @cached_property
    def numeric_parsers(self) -> tuple[Callable[[object], float], ...]:
        """The scalar parser of each numeric column, for the one-row path."""
        return tuple(map(numeric_parser, self.numeric_columns))

    @cached_property
    def term_columns(self) -> tuple[str, ...]:
        """The source column of each term of a row, in summation order."""
        return (*self.numeric_columns, *self.categorical_tables)


@dataclass(frozen=True)
class Scores:
    """Per-row results of a batch; rows listed in ``errors`` hold no meaningful score."""

    probabilities: np.ndarray
    classes: np.ndarray
    errors: list[CellError]
    numeric: np.ndarray | None = None
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    #: Seconds spent normalising the raw cells (part of the whole scoring time).
    normalise_seconds: float = 0.0

    @property
    def invalid_rows(self) -> set[int]:
        """Indices of rows with at least one invalid cell."""
        return {e.index for e in self.errors}


def count_positive(classes: np.ndarray, invalid: Collection[int]) -> int:
    """How many rows of ``classes`` are predicted positive, not counting the ``invalid`` rows
    (their class means nothing)."""
    positive = int(classes[0]) if len(classes) == 1 else int(classes.sum())  # .sum() of one costs more
    return positive - sum(int(classes[i]) for i in invalid)


def compile_plan(stages: Stages) -> ScoringPlan:
    """Derive the scoring plan from the imputer, scaler and statsmodels results."""
    variables = stages.variables
    exog_names = list(stages.model.model.exog_names)
    if exog_names != variables:
        raise ArtifactError(f"model.pkl variables {exog_names} differ from the manifest's {variables}")
    params = np.asarray(stages.model.params, dtype=np.float64)
    numeric, tables, dummies = [], {}, []
    for variable, coef in zip(variables, params, strict=True):
        if variable in NUMERIC_COLUMNS:
            numeric.append((variable, coef))
            continue
        column, level = variable.split("_", 1)
        levels = LEVELS[kind_of(column)]
        table = tables.setdefault(column, np.zeros(len(levels) + 1))
        code = len(levels) if level == NAN_LEVEL else levels.index(level)
        table[code] = coef
        dummies.append((variable, column, code))
    positions = [NUMERIC_COLUMNS.index(name) for name, _ in numeric]
    consumed = {source_column(v) for v in variables}
    return ScoringPlan(
        numeric_columns=tuple(name for name, _ in numeric),
        fill=np.asarray(stages.imputer.statistics_, dtype=np.float64)[positions],
        center=np.asarray(stages.scaler.mean_, dtype=np.float64)[positions],
        scale=np.asarray(stages.scaler.scale_, dtype=np.float64)[positions],
        coef=np.array([coef for _, coef in numeric], dtype=np.float64),
        categorical_tables=tables,
        threshold=stages.threshold,
        consumed_columns=tuple(c for c in COLUMNS if c in consumed),
        dummies=tuple(dummies),
    )


def numeric_terms(plan: ScoringPlan, numeric: np.ndarray) -> np.ndarray:
    """Rows × numeric variables: each one's term of the logit. Missing values (NaN) are imputed,
    then scaled exactly as SimpleImputer and StandardScaler do, then multiplied by the coefficient."""
    imputed = np.where(np.isnan(numeric), plan.fill, numeric)
    # Huge (finite, valid) inputs overflow to ±inf: one infinite term is a probability of 0 or 1,
    # two of opposite signs make the row unscorable (score_batch reports it).
    with np.errstate(over="ignore", invalid="ignore"):
        return np.multiply((imputed - plan.center) / plan.scale, plan.coef)


def score_batch(plan: ScoringPlan, batch: RawBatch) -> Scores:
    """Normalise the consumed columns of ``batch`` and score every row.

    Invalid cells are reported in ``Scores.errors`` (with the row's id) and scored as
    missing, so the arrays always have one entry per input row. ``Scores.numeric`` and
    ``Scores.codes`` keep the normalised values (before imputation) for drift counting.
    """
    n = batch.n_rows
    if n == 1:
        return _score_one(plan, batch)
    started = time.perf_counter()
    n_numeric = len(plan.numeric_columns)
    cell_errors: list[tuple[int, str, str]] = []
    numeric, numeric_errors = normalize_numeric_columns(
        plan.numeric_columns, [batch.columns[name] for name in plan.numeric_columns]
    )
    for name, errors in numeric_errors.items():
        cell_errors += [(i, name, message) for i, message in errors.items()]
    codes = {}
    for name in plan.categorical_tables:
        codes[name], errors = normalize_categorical(name, batch.columns[name])
        if errors:
            cell_errors += [(i, name, message) for i, message in errors.items()]
    normalised = time.perf_counter()
    # One term per variable group and row: the numeric terms impute, then scale exactly as
    # SimpleImputer and StandardScaler do; each categorical column adds its level's coefficient.
    # Column-major: each variable's terms are contiguous for the sum below.
    terms = np.empty((n, n_numeric + len(codes)), dtype=np.float64, order="F")
    terms[:, :n_numeric] = numeric_terms(plan, numeric)
    with np.errstate(over="ignore", invalid="ignore"):
        for j, (name, table) in enumerate(plan.categorical_tables.items(), start=n_numeric):
            terms[:, j] = table[codes[name]]
        # The terms added left to right, one variable at a time, whatever the batch size (a matrix
        # product or sum() may reorder them), so a row scores the same alone as in a batch.
        linear = terms[:, 0].copy() if terms.shape[1] else np.zeros(n)
        for j in range(1, terms.shape[1]):
            linear += terms[:, j]
        probabilities = 1.0 / (1.0 + np.exp(-linear))
    if np.isnan(linear).any():
        cell_errors += _unscorable(plan, terms, np.isnan(linear))
    classes = (probabilities >= plan.threshold).astype(np.int8)
    return Scores(probabilities=probabilities, classes=classes, errors=_errors(batch, cell_errors),
                  numeric=numeric, codes=codes, normalise_seconds=normalised - started)


def _score_one(plan: ScoringPlan, batch: RawBatch) -> Scores:
    """``score_batch`` for one row, in Python floats instead of 1-element arrays (a few
    microseconds instead of a hundred). The operations and their order are the batch path's:
    subtraction, division, multiplication and addition round the same way in numpy and in
    Python, and the exponential is numpy's, so the row scores bit for bit as it would inside
    a batch (tests/lib/core/test_scorer.py holds both paths to that)."""
    started = time.perf_counter()
    cell_errors: list[tuple[int, str, str]] = []
    numeric = []
    for name, parse in zip(plan.numeric_columns, plan.numeric_parsers, strict=True):
        value = batch.columns[name][0]
        if isinstance(value, np.floating):  # a table reader's float64 column: NaN is a missing cell
            value = float(value)
        if type(value) is float and -math.inf < value < math.inf:  # the common case, as parse() has it
            numeric.append(value)
            continue
        try:
            numeric.append(parse(value))
        except InvalidValue as exc:
            numeric.append(math.nan)
            cell_errors.append((0, name, str(exc)))
    codes = {}
    for name in plan.categorical_tables:
        try:
            codes[name] = category_code(name, batch.columns[name][0])
        except InvalidValue as exc:
            codes[name] = len(plan.categorical_tables[name]) - 1
            cell_errors.append((0, name, str(exc)))
    normalised = time.perf_counter()
    terms = [
        ((fill if value != value else value) - center) / scale * coef
        for value, fill, center, scale, coef in zip(numeric, *plan.numeric_lists, strict=True)
    ]
    terms += [float(table[codes[name]]) for name, table in plan.categorical_tables.items()]
    linear = 0.0
    if terms:
        linear = terms[0]
        for term in terms[1:]:
            linear += term
    if linear != linear:
        cell_errors += _unscorable(plan, np.array([terms]), np.array([True]))
    # exp overflows past _EXP_MAX, where the batch path's 1 / (1 + inf) is 0.
    probability = 0.0 if -linear > _EXP_MAX else 1.0 / (1.0 + float(np.exp(np.array([-linear]))[0]))
    return Scores(
        probabilities=np.array([probability]),
        classes=np.array([probability >= plan.threshold], dtype=np.int8),
        errors=_errors(batch, cell_errors),
        numeric=np.array([numeric], dtype=np.float64),
        codes={name: np.array([code], dtype=np.intp) for name, code in codes.items()},
        normalise_seconds=normalised - started,
    )


_EXP_MAX = float(np.log(np.finfo(np.float64).max))
_COLUMN_ORDER = {name: position for position, name in enumerate(COLUMNS)}


def _unscorable(plan: ScoringPlan, terms: np.ndarray, rows: np.ndarray) -> list[tuple[int, str, str]]:
    """Errors for rows whose terms overflowed in both directions: (row, first column, message)."""
    message = f"{OUT_OF_RANGE} for this model: the values are too large to score (its terms overflow)"
    errors = []
    for i in np.flatnonzero(rows).tolist():
        j = int(np.flatnonzero(~np.isfinite(terms[i]))[0])
        errors.append((i, plan.term_columns[j], message))
    return errors


def _errors(batch: RawBatch, cell_errors: list[tuple[int, str, str]]) -> list[CellError]:
    """The batch's own errors (ids) and the cell errors, in row order, then column order."""
    errors = list(batch.errors)
    errors += [CellError(i, column, message, batch.id_of(i)) for i, column, message in cell_errors]
    if len(errors) > 1:
        errors.sort(key=_error_order)
    return errors


def _error_order(error: CellError) -> tuple[int, int]:
    return error.index, _COLUMN_ORDER.get(error.column, -1)


def check_golden(plan: ScoringPlan, manifest: dict) -> float:
    """Score the golden row recorded at training; raise ArtifactError if it drifted."""
    golden = manifest["golden"]
    batch = RawBatch.from_records([golden["row"]], plan.consumed_columns)
    scores = score_batch(plan, batch)
    got, want = float(scores.probabilities[0]), float(golden["probability"])
    if scores.errors or not abs(got - want) <= GOLDEN_TOLERANCE:
        raise ArtifactError(f"golden row scored {got!r}, training recorded {want!r}")
    return got


def load_plan(model_dir: Path, allow_version_mismatch: bool = False) -> tuple[ScoringPlan, dict]:
    """What a server does at start, for the file command and the Spark job: load the verified
    artifacts, compile the plan, and check that it scores the golden row as recorded at training.
    Returns the plan and the manifest; raises ArtifactError."""
    return ready_plan(load_artifacts(model_dir, allow_version_mismatch))


def ready_plan(stages: Stages) -> tuple[ScoringPlan, dict]:
    """The plan of verified ``stages``, checked against the golden row; and their manifest."""
    plan = compile_plan(stages)
    check_golden(plan, stages.manifest)
    return plan, stages.manifest
