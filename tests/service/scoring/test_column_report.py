"""Columns checked by name: absent consumed columns, names that nearly match one and values far
outside training are reported (headers, metric, access line) and refused on request
(``?columns=strict``, ``REQUIRE_COLUMNS``); a name given twice is a 400 in every form. Bodies are
built here, in every wire format, from the README's example row."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from lib.batch import command as score
from lib.core.columns import FAR_SCALES, FarBounds, near_misses
from service.http.readers.body_formats import BodyReader
from service.ops.settings import Settings
from service.scoring.column_report import FAR_HEADER, MISSING_HEADER, SUGGESTIONS_HEADER
from service.scoring.predictor import Predictor
from tests.support.live_server import PROJECT_DIR, LiveServer, wait_for
from tests.support.metrics_text import metric_samples

pytestmark = pytest.mark.server

ROW = json.loads((PROJECT_DIR / "docs" / "examples" / "row.json").read_text())
#: Misspelt names (case, a separator, spaces, one edit) and the consumed column each stands for.
RENAMED = {"X12": "x12", "x_5": "x5", " x31 ": "x31", "x441": "x44"}
ABSENT = "x5, x12, x31, x44"  # in the schema's column order
FORMS = ("json", "columns", "csv", "arrow", "parquet", "ndjson")
MEDIA = {"json": "application/json", "columns": "application/json", "csv": "text/csv",
         "arrow": "application/vnd.apache.arrow.stream", "parquet": "application/vnd.apache.parquet",
         "ndjson": "application/x-ndjson"}
THIRTY_EIGHT_DIGITS = "12345678901234567890123456789012345678"


def misnamed(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k not in RENAMED.values()}
    out.update({given: row[column] for given, column in RENAMED.items()})
    return out


def without_renamed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in RENAMED.values()}


def body_of(form: str, rows: list[dict]) -> bytes:
    """``rows`` (with the same keys) as a body of ``form``; every cell as text for CSV."""
    names = list(rows[0])
    if form == "json":
        return json.dumps(rows).encode()
    if form == "columns":
        return json.dumps({name: [row[name] for row in rows] for name in names}).encode()
    if form == "ndjson":
        return b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    if form == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if row[n] is None else row[n] for n in names] for row in rows])
        return out.getvalue().encode()
    return table_body(form, pa.Table.from_pylist(rows))


def table_body(form: str, table: pa.Table) -> bytes:
    """``table`` as a Parquet file or an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    if form == "parquet":
        pq.write_table(table, sink)
    else:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue().to_pybytes()


def post(server: LiveServer, form: str, body: bytes, query: str = "", rid: str | None = None) -> requests.Response:
    params = [query] if query else []
    if form == "columns":
        params.append("input=columns")
    url = f"{server.url}/predict" + ("?" + "&".join(params) if params else "")
    headers = {"Content-Type": MEDIA[form], "X-Request-ID": rid or uuid.uuid4().hex}
    return requests.post(url, data=body, headers=headers, timeout=60)


def probabilities(answer: requests.Response) -> list[float]:
    lines = answer.text.splitlines() if answer.headers["Content-Type"].startswith("application/x-ndjson") \
        else None
    rows = [json.loads(line) for line in lines] if lines is not None else answer.json()
    return [row["probability_positiveclass"] for row in rows]


def suggestions(header: str) -> dict[str, str]:
    return dict(item.split(" -> ") for item in header.split(", "))


def column_problems(server: LiveServer) -> dict[tuple[str, str], float]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return {(dict(labels)["column"], dict(labels)["problem"]): value
            for (name, labels), value in metric_samples(text).items() if name == "predict_column_problems_total"}


def access_line(server: LiveServer, rid: str) -> dict:
    return wait_for(lambda: next((e for e in server.access_lines() if e["request_id"] == rid), None), 10,
                    f"the access line of {rid}")


@pytest.fixture(scope="module")
def live(model_dir, tmp_path_factory):
    """One worker: its metrics are read back without waiting on another worker's flush."""
    server = LiveServer(env={"MODEL_DIR": str(model_dir)}, workers=1,
                        log_path=tmp_path_factory.mktemp("columns") / "gunicorn.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict_live(model_dir, tmp_path_factory):
    server = LiveServer(env={"MODEL_DIR": str(model_dir), "REQUIRE_COLUMNS": "true"}, workers=1,
                        log_path=tmp_path_factory.mktemp("strict") / "gunicorn.log").start()
    yield server
    server.stop()


@pytest.mark.parametrize("form", FORMS)
def test_misnamed_columns_are_reported_and_scored_as_missing(live, form):
    before = column_problems(live)
    rid = uuid.uuid4().hex
    answer = post(live, form, body_of(form, [misnamed(ROW), misnamed(ROW)]), rid=rid)
    assert answer.status_code == 200, answer.text
    assert answer.headers[MISSING_HEADER] == ABSENT
    assert suggestions(answer.headers[SUGGESTIONS_HEADER]) == RENAMED
    assert FAR_HEADER not in answer.headers
    # Still missing values, as before: the same probabilities as rows without those columns.
    reference = post(live, "json", body_of("json", [without_renamed(ROW)] * 2))
    assert probabilities(answer) == probabilities(reference)
    assert probabilities(answer)[0] != probabilities(post(live, "json", body_of("json", [ROW])))[0]
    line = access_line(live, rid)
    assert line["columns"] == {"absent": ABSENT.split(", "), "suggestions": RENAMED, "far": {}}

    def counted():
        after = column_problems(live)
        return all(after.get((c, p), 0) - before.get((c, p), 0) >= 1
                   for c in RENAMED.values() for p in ("absent", "near_miss"))
    wait_for(lambda: counted() or None, 10, "the column counters")


@pytest.mark.parametrize("form", FORMS)
def test_strict_refuses_misnamed_columns(live, strict_live, form):
    body = body_of(form, [misnamed(ROW)])
    for answer in (post(live, form, body, "columns=strict"), post(strict_live, form, body)):
        assert answer.status_code == 422, answer.text
        refusal = answer.json()
        assert refusal["error"] == "invalid_columns"
        assert refusal["absent_columns"] == ABSENT.split(", ")
        assert {s["given"]: s["column"] for s in refusal["suggestions"]} == RENAMED
        assert "did you mean" in refusal["message"]


def test_an_empty_object_is_reported(live):
    answer = post(live, "json", b"{}")
    assert answer.status_code == 200
    assert answer.headers[MISSING_HEADER] == "x5, x12, x31, x44, x53, x56, x58, x62, x81, x91"
    assert post(live, "json", b"{}", "columns=strict").status_code == 422


def test_a_number_out_of_range_in_an_unused_key_still_gets_its_report(live):
    # The keys are read without parsing the values: 1e400 is no error where it is not used.
    answer = post(live, "json", b'[{"x0": 1e400, "x5": "monday"}, {"x0": 1}]')
    assert answer.status_code == 200, answer.text
    assert answer.headers[MISSING_HEADER] == "x12, x31, x44, x53, x56, x58, x62, x81, x91"


def test_a_full_row_reports_nothing(live):
    for form in FORMS:
        rid = uuid.uuid4().hex
        answer = post(live, form, body_of(form, [ROW]), rid=rid)
        assert answer.status_code == 200, (form, answer.text)
        assert not {MISSING_HEADER, SUGGESTIONS_HEADER, FAR_HEADER} & set(answer.headers), form
        assert access_line(live, rid)["columns"] is None
        assert post(live, form, body_of(form, [ROW]), "columns=strict").status_code == 200


DUPLICATES = {
    "json": b'{"x5": "monday", "x12": 1, "x12": 2}',
    "json_array": b'[{"x5": "monday", "x12": 1, "x12": 2}, {"x5": "monday"}]',
    "json_nested": b'[{"x0": {"a": "}"}, "x12": 1, "x12": 2}]',
    "columns": b'{"x12": [1], "x5": ["monday"], "x12": [2]}',
    "csv": b"x5,x12,x12\nmonday,1,2\n",
    "ndjson": b'{"x5": "monday", "x12": 1, "x12": 2}\n{"x5": "monday", "x12": 1}\n',
}


def _table_twice(form: str) -> bytes:
    return table_body(form, pa.table([pa.array(["monday"]), pa.array([1.0]), pa.array([2.0])],
                                     names=["x5", "x12", "x12"]))


@pytest.mark.parametrize("form", [*DUPLICATES, "arrow", "parquet"])
def test_a_column_given_twice_is_a_400(live, form):
    body = DUPLICATES.get(form) or _table_twice(form)
    wire = "json" if form.startswith("json") else form
    answer = post(live, wire, body)
    assert answer.status_code == 400, answer.text
    assert "'x12'" in answer.json()["message"]


@pytest.mark.parametrize("value", [b"1e308", THIRTY_EIGHT_DIGITS.encode()])
def test_values_far_outside_training_are_reported_and_refused_in_strict_mode(live, strict_live, value):
    row = json.dumps({**ROW, "x12": "PLACEHOLDER"}).encode().replace(b'"PLACEHOLDER"', value)
    rid = uuid.uuid4().hex
    answer = post(live, "json", row, rid=rid)
    assert answer.status_code == 200, answer.text
    assert answer.headers[FAR_HEADER] == "x12=1"
    assert access_line(live, rid)["columns"]["far"] == {"x12": 1}
    for refused in (post(live, "json", row, "columns=strict"), post(strict_live, "json", row)):
        assert refused.status_code == 422, refused.text
        assert refused.json()["far_outside_training"] == {"x12": 1}


def test_a_stream_reports_what_its_first_chunk_shows(live):
    rid = uuid.uuid4().hex
    answer = post(live, "ndjson", body_of("ndjson", [misnamed(ROW)] * 3), rid=rid)
    assert answer.status_code == 200
    assert answer.headers[MISSING_HEADER] == ABSENT
    assert len(answer.text.splitlines()) == 3
    assert access_line(live, rid)["columns"]["absent"] == ABSENT.split(", ")


def test_near_misses_skip_schema_columns_and_present_ones():
    consumed = ("x5", "x12", "x44")
    assert near_misses(["x13", "X12", "x-5", "id", "y"], consumed, {"x12", "x5"}) == {"X12": "x12", "x-5": "x5"}
    # X12 beside x12 is a variant of a column the body has: not a suggestion for another one.
    assert near_misses(["X12"], consumed, {"x44"}) == {}


def test_a_manifest_without_training_ranges_still_serves(stages):
    old = dataclasses.replace(stages, manifest={k: v for k, v in stages.manifest.items() if k != "column_stats"})
    predictor = Predictor(old, lambda columns: BodyReader(columns, Settings().decode_limits))
    assert predictor.far.high.tolist() == (predictor.plan.center + FAR_SCALES * predictor.plan.scale).tolist()
    prediction = predictor.predict(json.dumps({**ROW, "x12": 1e308}).encode(), "application/json")
    assert prediction.columns.far == {"x12": 1}
    bounds = FarBounds.from_manifest(stages.manifest, ("x12",), np.array([0.0]), np.array([1.0]))
    stats = stages.manifest["column_stats"]["x12"]
    assert bounds.high[0] == stats["max"] + 10 * (stats["max"] - stats["min"])


def test_the_file_command_warns(tmp_path, model_dir):
    source = tmp_path / "rows.csv"
    source.write_bytes(body_of("csv", [misnamed(ROW)]))
    err = io.StringIO()
    assert score.main([str(source), "--model-dir", str(model_dir)], stderr=err) == 0
    warning = next(line for line in err.getvalue().splitlines() if line.startswith("lib.batch: warning:"))
    assert "x5, x12, x31, x44" in warning and "X12 -> x12" in warning
