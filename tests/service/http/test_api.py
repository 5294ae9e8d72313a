"""The HTTP contract of POST /predict and the other endpoints through a real gunicorn server on a
free port."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pandas as pd
import pytest

from lib.core.example_row import EXAMPLE_ROW
from lib.core.reference import reference_classes, reference_probabilities
from lib.core.schema import COLUMNS
from service.scoring.answers import PREDICTED_CLASS as CLASS
from service.scoring.answers import PROBABILITY
from service.scoring.answers import SELECTED_FEATURES as FEATURES
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.server


# The row the original service documents, also the example of /docs.
DOCUMENTED_ROW = EXAMPLE_ROW


def predict(http, server, body, *, params=None, headers=None, content_type="application/json"):
    """POST /predict with ``body`` (an object to JSON-encode, or raw bytes/str)."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    all_headers = {"Content-Type": content_type, **(headers or {})}
    return http.post(server.url + "/predict", data=data, params=params, headers=all_headers, timeout=120)


def probabilities(response) -> list[float]:
    assert response.status_code == 200, response.text[:500]
    return [row[PROBABILITY] for row in response.json()]


def assert_json_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "message"} and body["message"]
    if code:
        assert body["error"] == code
    return body


# -- Answers --------------------------------------------------------------------------------


def test_one_row_as_object_and_as_list_give_the_same_answer(http, server, stages):
    as_object = predict(http, server, DOCUMENTED_ROW)
    as_list = predict(http, server, [DOCUMENTED_ROW])
    assert as_object.status_code == as_list.status_code == 200
    assert as_object.json() == as_list.json()
    (row,) = as_list.json()
    assert list(row) == [PROBABILITY, FEATURES, CLASS]
    assert row[FEATURES] == sorted(stages.manifest["consumed_columns"])
    expected = reference_probabilities(stages, pd.DataFrame([DOCUMENTED_ROW]))[0]
    assert row[PROBABILITY] == pytest.approx(expected, abs=1e-9)
    assert row[CLASS] == int(row[PROBABILITY] >= stages.threshold)


def test_ten_thousand_rows_come_back_in_input_order(http, server, stages, test_rows, test_body):
    response = predict(http, server, test_body)
    got = np.array(probabilities(response))
    assert len(got) == len(test_rows) == 10_000
    expected = reference_probabilities(stages, pd.DataFrame(test_rows))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    classes = [row[CLASS] for row in response.json()]
    assert classes == reference_classes(stages, expected).tolist()


def test_csv_body_answers_as_the_same_rows_in_json(http, server, test_rows):
    rows = test_rows[:300]
    csv = pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False)
    from_csv = predict(http, server, csv, content_type="text/csv")
    assert from_csv.status_code == 200, from_csv.text[:500]
    assert from_csv.json() == predict(http, server, rows).json()


def test_csv_body_in_the_train_layout_is_read_without_a_content_type(http, server, test_rows):
    frame = pd.DataFrame(test_rows[:50], columns=COLUMNS)
    frame.insert(0, "y", 0)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    response = predict(http, server, buffer.getvalue(), content_type="")
    assert probabilities(response) == probabilities(predict(http, server, test_rows[:50]))


def test_same_answers_one_per_request_in_one_batch_and_in_random_batches(http, server, test_rows):
    rows = random.Random(3).sample(test_rows, 200)
    one_batch = probabilities(predict(http, server, rows))
    one_by_one = [probabilities(predict(http, server, row))[0] for row in rows]
    splits = random.Random(5)
    in_pieces, start = [], 0
    while start < len(rows):
        size = splits.randint(1, 40)
        in_pieces += probabilities(predict(http, server, rows[start:start + size]))
        start += size
    assert one_by_one == one_batch == in_pieces


def test_columns_format_answers_parallel_arrays(http, server, test_rows, stages):
    rows = [dict(test_rows[0], id="a"), test_rows[1], dict(test_rows[2], id=7)]
    by_rows = predict(http, server, rows).json()
    by_columns = predict(http, server, rows, params={"format": "columns"}).json()
    assert by_columns[FEATURES] == sorted(stages.manifest["consumed_columns"])
    assert by_columns[PROBABILITY] == [r[PROBABILITY] for r in by_rows]
    assert by_columns[CLASS] == [r[CLASS] for r in by_rows]
    assert by_columns["id"] == ["a", None, 7]


def test_row_ids_are_echoed_in_their_rows(http, server, test_rows):
    rows = [dict(test_rows[0], id="first"), test_rows[1], dict(test_rows[2], id=3)]
    answer = predict(http, server, rows).json()
    assert answer[0]["id"] == "first" and "id" not in answer[1] and answer[2]["id"] == 3


# -- Normalisation through HTTP: each variant answers as its canonical form --------

EQUIVALENT_CELLS = [
    ("x12", 5547.78, ["$5,547.78", " $5,547.78 ", "5547.78", "5,547.78"]),
    ("x12", -5032.58, ["$-5,032.58", "-$5,032.58", "($5,032.58)", "-5032.58"]),
    ("x5", "monday", ["Monday", "MONDAY", " mon ", "Mon"]),
    ("x5", "sunday", ["sun", "Sunday "]),
    ("x81", "September", ["september", "SEPT", "sep", " Sept "]),
    ("x81", "May", ["may", "MAY"]),
    ("x31", "germany", ["Germany", " GERMANY "]),
    ("x31", "japan", ["JAPAN"]),
    ("x44", 0.25, ["0.25", " 0.25 ", "2.5e-1", "+0.25"]),
    ("x91", -1.0, ["-1", "-1.0", -1]),
]
MISSING_CELLS = [None, "", "   ", "nan", "NaN", "null", "NULL", "None", "na", "N/A", "n/a"]


def _answer(http, server, row) -> float:
    return probabilities(predict(http, server, row))[0]


@pytest.mark.parametrize(("column", "canonical", "variants"), EQUIVALENT_CELLS)
def test_variants_answer_as_the_canonical_value(http, server, column, canonical, variants):
    expected = _answer(http, server, dict(DOCUMENTED_ROW, **{column: canonical}))
    for variant in variants:
        assert _answer(http, server, dict(DOCUMENTED_ROW, **{column: variant})) == expected, variant


@pytest.mark.parametrize("column", ["x5", "x12", "x31", "x44", "x81"])
def test_missing_tokens_and_absent_keys_answer_as_null(http, server, column):
    expected = _answer(http, server, dict(DOCUMENTED_ROW, **{column: None}))
    absent = {k: v for k, v in DOCUMENTED_ROW.items() if k != column}
    assert _answer(http, server, absent) == expected
    for token in MISSING_CELLS:
        assert _answer(http, server, dict(DOCUMENTED_ROW, **{column: token})) == expected, token
    assert _answer(http, server, DOCUMENTED_ROW) != expected


def test_unconsumed_columns_and_unknown_keys_change_nothing(http, server, stages):
    unconsumed = [c for c in COLUMNS if c not in stages.manifest["consumed_columns"]]
    noisy = dict(DOCUMENTED_ROW, **{c: "not a number" for c in unconsumed}, extra={"a": [1]}, x100=1)
    assert _answer(http, server, noisy) == _answer(http, server, DOCUMENTED_ROW)


@pytest.mark.parametrize(
    ("column", "value", "expected_in_message"),
    [
        ("x12", "$5,547.78.00", "5,547.78.00"),
        ("x12", "five dollars", "five dollars"),
        ("x5", "mondays", "monday"),
        ("x81", "Octobre", "October"),
        ("x31", "france", "germany"),
        ("x44", True, "true"),
        ("x44", [1], "[1]"),
        ("x53", {"v": 1}, "got"),
        ("x91", "1.2.3", "1.2.3"),
        ("x58", "Infinity", "Infinity"),
    ],
)
def test_invalid_cells_are_rejected_with_422_naming_column_and_value(http, server, column, value, expected_in_message):
    response = predict(http, server, [DOCUMENTED_ROW, dict(DOCUMENTED_ROW, id="r1", **{column: value})])
    body = assert_json_error(response, 422, "invalid_rows")
    assert body["invalid_row_count"] == 1 and body["error_count"] == 1
    (error,) = body["errors"]
    assert error["index"] == 1 and error["id"] == "r1" and error["column"] == column
    assert expected_in_message in error["message"]


def test_numbers_beyond_float_range_are_invalid_cells_not_malformed_json(http, server):
    body = json.dumps([DOCUMENTED_ROW]).replace('"x62": 0.0748487158', '"x62": 1e400')
    error = assert_json_error(predict(http, server, body), 422)["errors"][0]
    assert error["column"] == "x62" and "inf" in error["message"]


# -- Errors -------------------------------------------------------------------------------


def test_every_invalid_row_is_listed_with_a_capped_list_and_counts(http, server, test_rows):
    rows = [dict(row) for row in test_rows[:400]]
    for index in range(0, 400, 2):
        rows[index]["x5"] = "someday"
    rows[1]["x31"] = "mars"
    rows[1]["x81"] = "Smarch"
    body = assert_json_error(predict(http, server, rows), 422)
    assert body["invalid_row_count"] == 201
    assert body["error_count"] == 202
    assert body["errors_truncated"] is True
    assert len(body["errors"]) == 100
    assert [e["index"] for e in body["errors"][:4]] == [0, 1, 1, 2]


def test_inline_errors_keep_order_and_count(http, server, test_rows):
    rows = [dict(row) for row in test_rows[:50]]
    rows[3]["x12"] = "lots"
    rows[17] = dict(rows[17], id="bad", x5="funday", x31="pluto")
    response = predict(http, server, rows, params={"errors": "inline"})
    answer = response.json()
    assert response.status_code == 200 and len(answer) == 50
    assert answer[3] == {"index": 3, "id": None,
                         "errors": [{"column": "x12", "message": answer[3]["errors"][0]["message"]}]}
    assert answer[17]["id"] == "bad" and [e["column"] for e in answer[17]["errors"]] == ["x5", "x31"]
    valid = [i for i in range(50) if i not in (3, 17)]
    alone = probabilities(predict(http, server, [rows[i] for i in valid]))
    assert [answer[i][PROBABILITY] for i in valid] == alone


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b'[{"x5": "monday",', "application/json", 400, "malformed JSON"),
        (b'{"x5": mon}', "application/json", 400, "byte"),
        (b"[]", "application/json", 400, "no rows"),
        (b"", "application/json", 400, "empty"),
        (b"[1, 2]", "application/json", 400, "row 0 is not a JSON object"),
        (b'"row"', "application/json", 400, "expected a JSON object"),
        (b"[[1]]", "application/json", 400, "array"),
        (b"hello there", "text/plain", 415, "neither JSON nor CSV"),
        (b"x5,x12\nmonday,", "text/csv", 200, None),
    ],
)
def test_malformed_bodies_get_their_status_and_a_json_message(http, server, body, content_type, status, fragment):
    response = predict(http, server, body, content_type=content_type)
    if status == 200:
        assert response.status_code == 200 and len(response.json()) == 1
        return
    assert fragment in assert_json_error(response, status)["message"]


def test_bad_query_parameters_are_400(http, server):
    for name in ("format", "errors"):
        response = predict(http, server, DOCUMENTED_ROW, params={name: "xml"})
        assert name in assert_json_error(response, 400)["message"]


def test_unknown_paths_and_methods_answer_json(http, server):
    assert_json_error(http.get(server.url + "/nowhere"), 404)
    for method in ("GET", "PUT", "DELETE", "PATCH"):  # POST /predict is answered in front of Flask
        response = http.request(method, server.url + "/predict", data=DOCUMENTED_ROW)
        assert_json_error(response, 405)
        assert response.headers["X-Content-Type-Options"] == "nosniff" and response.headers["X-Request-ID"]
    assert_json_error(http.delete(server.url + "/health"), 405)
    assert_json_error(http.post(server.url + "/predict/", data=DOCUMENTED_ROW), 404)
    assert_json_error(http.post(server.url + "/predict/x", data=DOCUMENTED_ROW), 404)
    options = http.options(server.url + "/predict")
    assert options.status_code == 200 and set(options.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}


def test_limits_are_413_naming_the_limit(model_dir, tmp_path, http):
    env = {"MODEL_DIR": str(model_dir), "MAX_ROWS": "3", "MAX_BODY_MB": "1"}
    with LiveServer(env=env, workers=1, log_path=tmp_path / "log") as small:
        too_many = predict(http, small, [DOCUMENTED_ROW] * 4)
        assert "MAX_ROWS" in assert_json_error(too_many, 413, "too_large")["message"]
        assert predict(http, small, [DOCUMENTED_ROW] * 3).status_code == 200
        too_big = predict(http, small, b"[" + b" " * (1024 * 1024 + 10) + b"]")
        assert "MAX_BODY_MB" in assert_json_error(too_big, 413, "too_large")["message"]


# -- Headers and other endpoints ---------------------------------------------------------------


def test_request_id_is_echoed_or_generated_and_version_is_sent(http, server, stages):
    given = predict(http, server, DOCUMENTED_ROW, headers={"X-Request-ID": "abc-123"})
    generated = predict(http, server, DOCUMENTED_ROW)
    error = predict(http, server, b"[", headers={"X-Request-ID": "err-1"})
    assert given.headers["X-Request-ID"] == "abc-123"
    assert error.headers["X-Request-ID"] == "err-1"
    assert len(generated.headers["X-Request-ID"]) >= 16
    for response in (given, generated, error, http.get(server.url + "/health")):
        assert response.headers["X-Model-Version"] == stages.version
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_health_ready_and_model(http, server, stages):
    assert http.get(server.url + "/health").json() == {"status": "ok"}
    assert http.get(server.url + "/ready").json() == {"status": "ready", "model_version": stages.version}
    card = http.get(server.url + "/model").json()
    assert card["model_version"] == stages.version
    assert [v["name"] for v in card["variables"]] == [v["name"] for v in stages.manifest["variables"]]
    assert card["limits"]["max_rows"] == 100_000


@pytest.mark.parametrize("victim", ["model.pkl", "manifest.json"])
def test_ready_turns_503_when_artifacts_on_disk_go_bad(model_copy, tmp_path, http, victim):
    with LiveServer(env={"MODEL_DIR": str(model_copy)}, workers=1, log_path=tmp_path / "log") as live:
        assert http.get(live.url + "/ready").status_code == 200
        path = model_copy / victim
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        body = assert_json_error(http.get(live.url + "/ready"), 503, "not_ready")
        assert victim in body["message"] or "manifest" in body["message"]
        assert http.get(live.url + "/health").status_code == 200
