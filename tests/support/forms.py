"""The same rows in every input form of POST /predict, and the probabilities and errors of any
answer, for the parity tests (tests/service/http/test_inputs.py, tests/service/http/test_streaming.py)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lib.core.schema import ID_KEY

JSON = "application/json"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
NDJSON = "application/x-ndjson"
PROBABILITY = "probability_positiveclass"
PREDICTED_CLASS = "predicted_class"


def dumps(value: object) -> bytes:
    """JSON as orjson writes it; integers beyond 64 bits (which orjson refuses) by the standard library."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def column_names(rows: Sequence[dict]) -> list[str]:
    """Every key of ``rows``, in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row))


def json_columns(rows: Sequence[dict]) -> bytes:
    """``{"column": [cell, ...]}``, an absent key as null."""
    return dumps({name: [row.get(name) for row in rows] for name in column_names(rows)})


def ndjson(rows: Sequence[dict]) -> bytes:
    return b"".join(dumps(row) + b"\n" for row in rows)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def arrow_column(values: list) -> pa.Array:
    """The column a data team would hold: numbers as int64 or float64, text as strings; a column
    mixing numbers and text (possible in JSON only) as the numbers' text."""
    present = [v for v in values if v is not None]
    if present and all(_is_number(v) for v in present):
        if all(isinstance(v, int) and -(2**63) <= v < 2**63 for v in present):
            return pa.array(values, type=pa.int64())
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    if all(isinstance(v, str) for v in present):
        return pa.array(values, type=pa.string())
    return pa.array([None if v is None else dumps(v).decode() if not isinstance(v, str) else v
                     for v in values], type=pa.string())


def table(rows: Sequence[dict]) -> pa.Table:
    return pa.table({name: arrow_column([row.get(name) for row in rows]) for name in column_names(rows)})


def arrow_stream(rows_or_table: Sequence[dict] | pa.Table) -> bytes:
    data = rows_or_table if isinstance(rows_or_table, pa.Table) else table(rows_or_table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write_table(data)
    return sink.getvalue().to_pybytes()


def parquet(rows_or_table: Sequence[dict] | pa.Table) -> bytes:
    data = rows_or_table if isinstance(rows_or_table, pa.Table) else table(rows_or_table)
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink)
    return sink.getvalue().to_pybytes()


def csv(rows: Sequence[dict]) -> bytes:
    """CSV with a header row; numbers as Python writes them, a missing cell blank."""
    frame = pd.DataFrame({name: [row.get(name) for row in rows] for name in column_names(rows)}, dtype=object)
    return frame.to_csv(index=False).encode()


#: form -> (query, Content-Type, encoder)
FORMS = {
    "json rows": ("", JSON, dumps),
    "json columns": ("input=columns", JSON, json_columns),
    "ndjson": ("", NDJSON, ndjson),
    "arrow": ("", ARROW, arrow_stream),
    "parquet": ("", PARQUET, parquet),
    "csv": ("", CSV, csv),
}


def outcomes(status: int, content_type: str, body: bytes) -> list[tuple]:
    """Each row's outcome from a 200 answer in any layout: ``("scored", probability, class, id)``
    or ``("invalid", ((column, message), ...), id)``."""
    assert status == 200, body[:500]
    if content_type.startswith(NDJSON):
        return [_row_outcome(orjson.loads(line)) for line in body.splitlines()]
    if content_type.startswith((ARROW, PARQUET)):
        if content_type.startswith(ARROW):
            data = pa.ipc.open_stream(body).read_all()
        else:
            data = pq.read_table(io.BytesIO(body))
        columns = data.to_pydict()
        results = []
        for i, probability in enumerate(columns[PROBABILITY]):
            row_id = columns[ID_KEY][i] if ID_KEY in columns else None
            if probability is None:
                cells = tuple(tuple(part.split(": ", 1)) for part in columns["error"][i].split("\n"))
                results.append(("invalid", cells, row_id))
            else:
                results.append(("scored", probability, columns[PREDICTED_CLASS][i], row_id))
        return results
    return [_row_outcome(row) for row in orjson.loads(body)]


def _row_outcome(row: dict) -> tuple:
    if "errors" in row:
        return "invalid", tuple((e["column"], e["message"]) for e in row["errors"]), row.get(ID_KEY)
    return "scored", row[PROBABILITY], row[PREDICTED_CLASS], row.get(ID_KEY)
