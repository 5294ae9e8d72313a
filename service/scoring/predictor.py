"""The core of POST /predict, on plain values: body bytes in, response body bytes out.

The endpoint only reads the request and calls ``Predictor.predict`` (a whole body) or
``Predictor.predict_batch`` (each chunk of a stream). Bodies are read by the reader the app
factory hands in (``service.http.readers.body_formats.BodyReader``), so this package never imports back up
to the root; answers are encoded by ``service.scoring.answers``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lib.codecs.media import JSON, NDJSON
from lib.core.artifacts import Stages
from lib.core.columns import ColumnError, ColumnReport, FarBounds, name_report
from lib.core.drift import DriftCounts, RangeCheck, count_drift
from lib.core.errors import ArtifactError, CellError, InputError
from lib.core.explain import Explainer
from lib.core.raw_batch import RawBatch
from lib.core.scorer import Scores, compile_plan, count_positive, score_batch
from service.scoring.answers import ROWS_FORMAT, Answers

#: ``?explain=`` value asking for every variable's contribution.
EXPLAIN_ALL = "all"
#: Timed phases of a request, in order: body to raw columns, raw cells to numbers and level
#: codes, imputation + scaling + the model, answer body.
PHASES = ("decode", "normalise", "score", "encode")


class RequestReader(Protocol):
    """Reads a request body (bytes and its media type) into a batch of the consumed columns."""

    def read(self, body: bytes, mimetype: str | None, layout: str = "rows") -> RawBatch: ...

    def streamed_reader(self, mimetype: str | None) -> object | None:
        """The chunk reader of a streamed format (``read_chunk``), None for whole bodies."""


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
    media_type: str = JSON
    #: Absent and nearly matched columns, values far outside training (lib.core.columns).
    columns: ColumnReport = field(default_factory=ColumnReport)


class Predictor:
    """Scores request bodies with the plan compiled from verified stages; one per process."""

    def __init__(self, stages: Stages, make_reader: Callable[[Sequence[str]], RequestReader], drift: bool = True):
        """``make_reader(consumed_columns)`` builds the body reader, once."""
        self.plan = compile_plan(stages)
        try:
            self.ranges = RangeCheck.from_manifest(stages.manifest, self.plan.numeric_columns,
                                                   tuple(self.plan.categorical_tables)) if drift else None
        except ArtifactError:
            # A version trained before manifests kept training ranges still serves, without the
            # drift counts; its far-outside-training check falls back on the scaler (lib.core.columns).
            self.ranges = None
        self.far = FarBounds.from_manifest(stages.manifest, self.plan.numeric_columns, self.plan.center,
                                           self.plan.scale)
        self.reader = make_reader(self.plan.consumed_columns)
        self.explainer = Explainer(self.plan)
        self.selected_features = sorted(self.plan.consumed_columns)
        self.answers = Answers(self.selected_features)

    @property
    def n_variables(self) -> int:
        """How many variables the model has: the most reasons a row can get."""
        return len(self.explainer.variables)

    def predict(self, body: bytes, mimetype: str | None, fmt: str = ROWS_FORMAT, inline_errors: bool = False,
                explain: int | None = None, layout: str = "rows", answer: str = JSON,
                strict_columns: bool = False) -> Prediction:
        """Score every row of ``body``; raise InputError if a row is invalid and not ``inline_errors``,
        ColumnError if its column report is not empty and ``strict_columns``.

        ``layout`` is how a JSON body lays out its rows (``?input=``), ``answer`` the media type
        of the answer (``Accept``) and ``fmt`` the layout of a JSON answer (``?format=``). With
        ``explain``, each scored row also gets its ``explain`` largest reasons (lib.core.explain).
        """
        started = time.perf_counter()
        batch = self.reader.read(body, mimetype, layout)
        decoded = time.perf_counter()
        scores = score_batch(self.plan, batch)
        scored = time.perf_counter()
        columns = self.column_report(batch, scores, strict_columns)
        if scores.errors and not inline_errors:
            raise InputError(scores.errors, batch.n_rows)
        invalid = scores.invalid_rows
        reasons = None if explain is None else self.explainer.reasons(scores, explain, invalid)
        answer_body = self.answers.encode(answer, fmt, scores, batch.ids, invalid, reasons, inline_errors)
        encoded = time.perf_counter()
        return self._prediction(answer_body, batch, scores, invalid, (decoded - started, scored - decoded,
                                                                       encoded - scored), answer, columns)

    def predict_batch(self, batch: RawBatch, first_index: int, explain: int | None = None,
                      strict_columns: bool = False) -> Prediction:
        """Score one chunk of a stream (already read) and answer it as NDJSON lines, an error
        object in place of each invalid row (its index counted from ``first_index``); raise
        ColumnError if the chunk's column report is not empty and ``strict_columns``."""
        started = time.perf_counter()
        scores = score_batch(self.plan, batch)
        scored = time.perf_counter()
        columns = self.column_report(batch, scores, strict_columns)
        invalid = scores.invalid_rows
        reasons = None if explain is None else self.explainer.reasons(scores, explain, invalid)
        answer_body = self.answers.lines(scores, batch.ids, invalid, reasons, first_index)
        encoded = time.perf_counter()
        return self._prediction(answer_body, batch, scores, invalid, (0.0, scored - started, encoded - scored),
                                NDJSON, columns)

    def column_report(self, batch: RawBatch, scores: Scores, strict: bool) -> ColumnReport:
        """What ``batch`` lacked or held far out (lib.core.columns); raise ColumnError if ``strict``."""
        report = name_report(self.plan.consumed_columns, batch.names)
        report.far = self.far.count(scores.numeric)
        if strict and report:
            raise ColumnError(report, batch.n_rows)
        return report

    def _prediction(self, body: bytes, batch: RawBatch, scores: Scores, invalid: set[int],
                    seconds: tuple[float, float, float], media_type: str, columns: ColumnReport) -> Prediction:
        """The answered batch with its counts; ``seconds`` are decode, normalise + score, encode."""
        decode, score, encode = seconds
        return Prediction(
            body=body,
            n_rows=batch.n_rows,
            n_invalid=len(invalid),
            n_positive=count_positive(scores.classes, invalid),
            errors=scores.errors,
            phases=dict(zip(PHASES, (decode, scores.normalise_seconds, score - scores.normalise_seconds, encode),
                            strict=True)),
            drift=None if self.ranges is None else count_drift(self.ranges, scores.numeric, scores.codes, invalid),
            media_type=media_type,
            columns=columns,
        )
