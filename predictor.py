"""The core of POST /predict, on plain values: body bytes in, response body bytes out.

The Flask route only reads the request and calls ``Predictor.predict``; everything about
the wire format of answers (field names, row and column layouts, inline errors) is here.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from lib.artifacts import Stages
from lib.errors import CellError, InputError
from lib.scorer import Scores, compile_plan, score_batch
from preprocess_input_json import BatchReader

PROBABILITY = "probability_positiveclass"
PREDICTED_CLASS = "predicted_class"
SELECTED_FEATURES = "selected_features"
ROW_ID = "id"
ROWS_FORMAT = "rows"
COLUMNS_FORMAT = "columns"
FORMATS = (ROWS_FORMAT, COLUMNS_FORMAT)


@dataclass(frozen=True)
class Prediction:
    """An answered /predict request: the encoded body and counts for metrics and logs."""

    body: bytes
    n_rows: int
    n_invalid: int
    n_positive: int
    rejected_columns: list[str]


class Predictor:
    """Scores request bodies with the plan compiled from verified stages; one per process."""

    def __init__(self, stages: Stages, max_rows: int):
        self.plan = compile_plan(stages)
        self.reader = BatchReader(self.plan.consumed_columns, max_rows)
        self.selected_features = sorted(self.plan.consumed_columns)

    def predict(self, body: bytes, mimetype: str | None, fmt: str = ROWS_FORMAT,
                inline_errors: bool = False) -> Prediction:
        """Score every row of ``body``; raise InputError if a row is invalid and not ``inline_errors``."""
        batch = self.reader.read(body, mimetype)
        scores = score_batch(self.plan, batch)
        if scores.errors and not inline_errors:
            raise InputError(scores.errors, batch.n_rows)
        invalid = scores.invalid_rows
        encode = self._encode_columns if fmt == COLUMNS_FORMAT else self._encode_rows
        classes = scores.classes
        n_positive = int(classes.sum()) - sum(int(classes[i]) for i in invalid)
        return Prediction(
            body=encode(scores, batch.ids, invalid),
            n_rows=batch.n_rows,
            n_invalid=len(invalid),
            n_positive=n_positive,
            rejected_columns=[e.column for e in scores.errors],
        )

    def _encode_rows(self, scores: Scores, ids, invalid: set[int]) -> bytes:
        features = self.selected_features
        rows = [
            {PROBABILITY: p, SELECTED_FEATURES: features, PREDICTED_CLASS: c}
            for p, c in zip(scores.probabilities.tolist(), scores.classes.tolist(), strict=True)
        ]
        if ids is not None:
            for row, row_id in zip(rows, ids, strict=True):
                if row_id is not None:
                    row[ROW_ID] = row_id
        for index, cell_errors in _group_by_row(scores.errors, invalid).items():
            rows[index] = row_error(index, cell_errors)
        return orjson.dumps(rows)

    def _encode_columns(self, scores: Scores, ids, invalid: set[int]) -> bytes:
        probabilities = scores.probabilities.tolist()
        classes = scores.classes.tolist()
        for index in invalid:
            probabilities[index] = classes[index] = None
        out = {SELECTED_FEATURES: self.selected_features, PROBABILITY: probabilities, PREDICTED_CLASS: classes}
        if ids is not None:
            out[ROW_ID] = list(ids)
        if invalid:
            out["errors"] = [row_error(i, errs) for i, errs in _group_by_row(scores.errors, invalid).items()]
        return orjson.dumps(out)


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
