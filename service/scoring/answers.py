"""Answer bodies of ``POST /predict``, in every format: JSON rows (the default) or columns
(``?format=columns``), an Arrow IPC stream or a Parquet file when ``Accept`` asks for one, and
NDJSON lines for a streamed request. Field names are the original service's, which clients rely
on; the table columns are ``lib.codecs.columnar``' so that the file command and the Spark job write the
same ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from lib.codecs.answer_table import PREDICTED_CLASS, PROBABILITY, REASONS, ROW_ID, result_table
from lib.codecs.media import ALIASES, ARROW, JSON, PARQUET
from lib.core.errors import CellError
from lib.core.scorer import Scores

SELECTED_FEATURES = "selected_features"
ROWS_FORMAT = "rows"
COLUMNS_FORMAT = "columns"
#: ``?format=`` values: the layout of a JSON answer.
FORMATS = (ROWS_FORMAT, COLUMNS_FORMAT)
#: What ``Accept`` may ask for, first the default; ``application/x-parquet`` is another name.
ANSWER_TYPES = (JSON, ARROW, PARQUET)
#: (An Arrow *file* is not what an Arrow answer is: the stream format.)
ANSWER_ALIASES = {alias: media for alias, media in ALIASES.items() if media == PARQUET}


class Answers:
    """Encodes scored batches; one per process (per model)."""

    def __init__(self, selected_features: list[str]):
        self.selected_features = selected_features
        self._array = RowsTemplate(selected_features, b",")
        self._lines = RowsTemplate(selected_features, b"\n")

    def encode(self, media_type: str, fmt: str, scores: Scores, ids: Sequence | None, invalid: set[int],
               reasons: list | None, inline_errors: bool) -> bytes:
        """The answer body in ``media_type`` (JSON in the ``fmt`` layout, Arrow, Parquet)."""
        if media_type in (ARROW, PARQUET):
            return self.table(media_type, scores, ids, invalid, reasons, inline_errors)
        if fmt == COLUMNS_FORMAT:
            return self.columns(scores, ids, invalid, reasons)
        if ids is None and not invalid and reasons is None:
            return b"[" + self._array.encode(scores.probabilities, scores.classes) + b"]"
        return orjson.dumps(self.row_objects(scores, ids, invalid, reasons))

    def lines(self, scores: Scores, ids: Sequence | None, invalid: set[int], reasons: list | None,
              first_index: int = 0) -> bytes:
        """NDJSON: one row object a line, an error object in place of an invalid row (its
        ``index`` counted from ``first_index``, the chunk's place in the stream)."""
        if ids is None and not invalid and reasons is None:
            return self._lines.encode(scores.probabilities, scores.classes) + b"\n"
        rows = self.row_objects(scores, ids, invalid, reasons, first_index)
        return b"\n".join(map(orjson.dumps, rows)) + b"\n"

    def row_objects(self, scores: Scores, ids: Sequence | None, invalid: set[int], reasons: list | None,
                    first_index: int = 0) -> list[dict]:
        """One object per row: its probability, the selected features and its class, with its
        ``id`` and ``reasons`` when there are; the error object in place of an invalid row."""
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
            rows[index] = row_error(first_index + index, cell_errors)
        return rows

    def columns(self, scores: Scores, ids: Sequence | None, invalid: set[int], reasons: list | None) -> bytes:
        """``?format=columns``: one object of parallel arrays (null for invalid rows)."""
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

    @staticmethod
    def table(media_type: str, scores: Scores, ids: Sequence | None, invalid: set[int], reasons: list | None,
              inline_errors: bool) -> bytes:
        """An Arrow IPC stream or a Parquet file of ``lib.codecs.answer_table.result_table``; reasons, whose
        values mix numbers and levels, come as each row's JSON text."""
        if reasons is not None:
            reasons = [None if r is None else orjson.dumps(r).decode() for r in reasons]
        table = result_table(scores.probabilities, scores.classes, invalid, ids,
                             scores.errors if inline_errors else None, reasons)
        sink = pa.BufferOutputStream()
        if media_type == PARQUET:
            pq.write_table(table, sink)
        else:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
        return sink.getvalue().to_pybytes()


class RowsTemplate:
    """Row objects for a batch without ids or invalid rows, byte for byte what ``orjson.dumps``
    writes for each, joined by ``separator`` (``,`` inside a JSON array, a newline for NDJSON),
    assembled from the encoded probabilities and pre-encoded pieces instead of one dict per row."""

    def __init__(self, selected_features: list[str], separator: bytes):
        self.head = b'{"' + PROBABILITY.encode() + b'":'
        middle = b',"' + SELECTED_FEATURES.encode() + b'":' + orjson.dumps(selected_features)
        self.tails = [middle + b',"' + PREDICTED_CLASS.encode() + b'":%d}' % c for c in (0, 1)]
        self.separators = [tail + separator + self.head for tail in self.tails]

    def encode(self, probabilities: np.ndarray, classes: np.ndarray) -> bytes:
        """``{"probability_positiveclass": p, "selected_features": [...], "predicted_class": c}``
        for each row, joined by the separator."""
        numbers = orjson.dumps(probabilities.tolist())[1:-1].split(b",")
        labels = classes.tolist()
        parts = [b""] * (2 * len(numbers))
        parts[0::2] = numbers
        parts[1::2] = [self.separators[c] for c in labels]
        parts[-1] = self.tails[labels[-1]]
        return self.head + b"".join(parts)


def row_error(index: int, cell_errors: list[CellError]) -> dict:
    """The error object standing in for an invalid row (``?errors=inline``, NDJSON)."""
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
