"""The core of POST /predict, on plain values: body bytes in, response body bytes out.

The endpoint only reads the request and calls ``Predictor.predict``; everything about the wire
format of answers (field names, row and column layouts, inline errors) is here. Bodies are read
by the reader the app factory hands in (``preprocess_input_json.BodyReader``), so this package
never imports back up to the root.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import orjson

from lib.artifacts import Stages
from lib.batch import RawBatch
from lib.drift import DriftCounts, RangeCheck, count_drift
from lib.errors import CellError, InputError
from lib.explain import Explainer
from lib.scorer import Scores, compile_plan, score_batch

PROBABILITY = "probability_positiveclass"
PREDICTED_CLASS = "predicted_class"
SELECTED_FEATURES = "selected_features"
ROW_ID = "id"
REASONS = "reasons"
#: ``?explain=`` value asking for every variable's contribution.
EXPLAIN_ALL = "all"
ROWS_FORMAT = "rows"
COLUMNS_FORMAT = "columns"
FORMATS = (ROWS_FORMAT, COLUMNS_FORMAT)
#: Timed phases of a request, in order: body to raw columns, raw cells to numbers and level
#: codes, imputation + scaling + the model, answer body.
PHASES = ("decode", "normalise", "score", "encode")


class RequestReader(Protocol):
    """Reads a request body (bytes and its media type) into a batch of the consumed columns."""

    def read(self, body: bytes, mimetype: str | None) -> RawBatch: ...


@dataclass(frozen=True)
class Prediction:
    """An answered /predict request: the encoded body and counts for metrics and logs."""

    body: bytes
    n_rows: int
    n_invalid: int
    n_positive: int
    errors: list[CellError]
    phases: dict[str, float] = field(default_factory=dict)
    drift: DriftCounts | None = None


class Predictor:
    """Scores request bodies with the plan compiled from verified stages; one per process."""

    def __init__(self, stages: Stages, make_reader: Callable[[Sequence[str]], RequestReader], drift: bool = True):
        """``make_reader(consumed_columns)`` builds the body reader, once."""
        self.plan = compile_plan(stages)
        self.ranges = RangeCheck.from_manifest(stages.manifest, self.plan.numeric_columns,
                                               tuple(self.plan.categorical_tables)) if drift else None
        self.reader = make_reader(self.plan.consumed_columns)
        self.explainer = Explainer(self.plan)
        self.selected_features = sorted(self.plan.consumed_columns)
        self._rows_template = RowsTemplate(self.selected_features)

    @property
    def n_variables(self) -> int:
        """How many variables the model has: the most reasons a row can get."""
        return len(self.explainer.variables)

    def predict(self, body: bytes, mimetype: str | None, fmt: str = ROWS_FORMAT,
                inline_errors: bool = False, explain: int | None = None) -> Prediction:
        """Score every row of ``body``; raise InputError if a row is invalid and not ``inline_errors``.

        With ``explain``, each scored row also gets its ``explain`` largest reasons (lib.explain).
        """
        started = time.perf_counter()
        batch = self.reader.read(body, mimetype)
        decoded = time.perf_counter()
        scores = score_batch(self.plan, batch)
        scored = time.perf_counter()
        if scores.errors and not inline_errors:
            raise InputError(scores.errors, batch.n_rows)
        invalid = scores.invalid_rows
        encode = self._encode_columns if fmt == COLUMNS_FORMAT else self._encode_rows
        classes = scores.classes
        n_positive = int(classes[0]) if len(classes) == 1 else int(classes.sum())  # .sum() of one costs more
        n_positive -= sum(int(classes[i]) for i in invalid)
        reasons = None if explain is None else self.explainer.reasons(scores, explain, invalid)
        answer = encode(scores, batch.ids, invalid, reasons)
        encoded = time.perf_counter()
        return Prediction(
            body=answer,
            n_rows=batch.n_rows,
            n_invalid=len(invalid),
            n_positive=n_positive,
            errors=scores.errors,
            phases=dict(zip(PHASES, (decoded - started, scores.normalise_seconds,
                                     scored - decoded - scores.normalise_seconds, encoded - scored), strict=True)),
            drift=None if self.ranges is None else count_drift(self.ranges, scores.numeric, scores.codes, invalid),
        )

    def _encode_rows(self, scores: Scores, ids, invalid: set[int], reasons: list | None) -> bytes:
        if ids is None and not invalid and reasons is None:
            return self._rows_template.encode(scores.probabilities, scores.classes)
        features = self.selected_features
        rows = [
            {PROBABILITY: p, SELECTED_FEATURES: features, PREDICTED_CLASS: c}
            for p, c in zip(scores.probabilities.tolist(), scores.classes.tolist(), strict=True)
        ]
        if ids is not None:
            for row, row_id in zip(rows, ids, strict=True):
                if row_id is not None:
                    row[ROW_ID] = row_id
        if reasons is not None:
            for row, row_reasons in zip(rows, reasons, strict=True):
                row[REASONS] = row_reasons
        for index, cell_errors in _group_by_row(scores.errors, invalid).items():
            rows[index] = row_error(index, cell_errors)
        return orjson.dumps(rows)

    def _encode_columns(self, scores: Scores, ids, invalid: set[int], reasons: list | None) -> bytes:
        probabilities = scores.probabilities.tolist()
        classes = scores.classes.tolist()
        for index in invalid:
            probabilities[index] = classes[index] = None
        out = {SELECTED_FEATURES: self.selected_features, PROBABILITY: probabilities, PREDICTED_CLASS: classes}
        if ids is not None:
            out[ROW_ID] = list(ids)
        if reasons is not None:
            out[REASONS] = reasons
        if invalid:
            out["errors"] = [row_error(i, errs) for i, errs in _group_by_row(scores.errors, invalid).items()]
        return orjson.dumps(out)


class RowsTemplate:
    """The default answer for a batch without ids or invalid rows, byte for byte what
    ``orjson.dumps`` writes for the list of row objects, assembled from the encoded
    probabilities and two pre-encoded separators instead of one dict per row."""

    def __init__(self, selected_features: list[str]):
        self.head = b'{"' + PROBABILITY.encode() + b'":'
        middle = b',"' + SELECTED_FEATURES.encode() + b'":' + orjson.dumps(selected_features)
        self.tails = [middle + b',"' + PREDICTED_CLASS.encode() + b'":%d}' % c for c in (0, 1)]
        self.separators = [tail + b"," + self.head for tail in self.tails]

    def encode(self, probabilities: np.ndarray, classes: np.ndarray) -> bytes:
        """``[{"probability_positiveclass": p, "selected_features": [...], "predicted_class": c}, ...]``"""
        numbers = orjson.dumps(probabilities.tolist())[1:-1].split(b",")
        labels = classes.tolist()
        parts = [b""] * (2 * len(numbers))
        parts[0::2] = numbers
        parts[1::2] = [self.separators[c] for c in labels]
        parts[-1] = self.tails[labels[-1]]
        return b"[" + self.head + b"".join(parts) + b"]"


def row_error(index: int, cell_errors: list[CellError]) -> dict:
    """The error object standing in for an invalid row (``?errors=inline``)."""
    return {
        "index": index,
        ROW_ID: cell_errors[0].id,
        "errors": [{"column": e.column, "message": e.message} for e in cell_errors],
    }


def _group_by_row(errors: list[CellError], invalid: set[int]) -> dict[int, list[CellError]]:
    grouped: dict[int, list[CellError]] = {i: [] for i in sorted(invalid)}
    for error in errors:
        grouped[error.index].append(error)
    return grouped
