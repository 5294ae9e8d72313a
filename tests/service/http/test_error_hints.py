"""Errors that help: the common mistakes are told what to do.

CSV or NDJSON whose line breaks ``curl -d`` removed, NDJSON sent as JSON, JSON columns without
``?input=columns``: each a 400 naming the fix, never echoing the body. A wrong method is a 405
naming the method to use, with ``Allow``; ``GET /`` points to the documentation.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest
import requests

from service.http.openapi import openapi_document

SENTINEL = "payload-sentinel-5e1d"  # in an unconsumed column: it must never be echoed
CSV_FIX = "curl --data-binary @file.csv -H 'Content-Type: text/csv'"
NDJSON_FIX = "curl --data-binary @file.ndjson -H 'Content-Type: application/x-ndjson'"
FORM = "application/x-www-form-urlencoded"  # what curl -d sends without -H


@pytest.fixture(scope="module")
def rows(test_rows) -> list[dict]:
    return [{**row, "x0": SENTINEL} for row in test_rows[:3]]


def _csv(rows: list[dict]) -> bytes:
    return pd.DataFrame(rows).to_csv(index=False).encode()


def _ndjson(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def _columns(rows: list[dict]) -> bytes:
    return json.dumps({name: [row.get(name) for row in rows] for name in rows[0]}).encode()


def _flattened(body: bytes) -> bytes:
    """What ``curl -d @file`` sends of a file: its carriage returns and newlines removed."""
    return body.replace(b"\r", b"").replace(b"\n", b"")


def _refused(response, status: int = 400) -> str:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    answer = response.json
    assert set(answer) == {"error", "message"}  # a whole-body error: no list of cell errors
    assert SENTINEL not in answer["message"]
    return answer["message"]


@pytest.mark.parametrize("content_type", [FORM, "text/csv", None])
def test_csv_without_its_line_breaks_is_told_to_use_data_binary(client, rows, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    message = _refused(client.post("/predict", data=_flattened(_csv(rows)), headers=headers))
    assert message.startswith("the body looks like CSV whose line breaks were removed")
    assert CSV_FIX in message


@pytest.mark.parametrize("content_type", ["application/json", FORM, None])
def test_ndjson_without_its_content_type_is_told_to_send_it(client, rows, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    message = _refused(client.post("/predict", data=_ndjson(rows), headers=headers))
    assert message.startswith("the body looks like NDJSON (one JSON object a line)")
    assert "Content-Type: application/x-ndjson" in message and "JSON array" in message


def test_ndjson_without_its_line_breaks_is_told_to_use_data_binary(client, rows):
    message = _refused(client.post("/predict", data=_flattened(_ndjson(rows)), headers={"Content-Type": FORM}))
    assert message.startswith("the body looks like NDJSON whose line breaks were removed")
    assert NDJSON_FIX in message


def test_ndjson_with_input_columns_is_told_to_send_it_as_ndjson(client, rows):
    message = _refused(client.post("/predict?input=columns", data=_ndjson(rows), content_type="application/json"))
    assert message.startswith("the body looks like NDJSON (one JSON object a line)")


@pytest.mark.parametrize("n_rows", [1, 3])
def test_json_columns_without_input_columns_are_told_to_add_it(client, rows, n_rows):
    body = _columns(rows[:n_rows])
    message = _refused(client.post("/predict", data=body, content_type="application/json"))
    assert message.startswith("the body looks like JSON columns (one object of column name → array of cells)")
    assert "?input=columns" in message
    fixed = client.post("/predict?input=columns", data=body, content_type="application/json")
    assert fixed.status_code == 200 and len(fixed.json) == n_rows


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [
    # A header without rows, an object followed by other text, and broken JSON keep their own errors.
    (b"x44,x12,x5\n", "text/csv", 400, "the body holds no rows: send at least one row"),
    (b'{"x44": 1} trailing', "application/json", 400, "malformed JSON: trailing characters (byte 12)"),
    (b'{"x44": 1}\n[{"x44": 2}]', "application/json", 400, "malformed JSON: trailing characters (byte 12)"),
    (b'{"x44": 1', "application/json", 400, "malformed JSON: Input data was truncated (the body ends after 9 bytes)"),
    (b"a;b;c", None, 415, "the body is neither JSON nor CSV"),
])
def test_other_mistakes_keep_their_own_errors(client, body, content_type, status, message):
    headers = {"Content-Type": content_type} if content_type else {}
    assert _refused(client.post("/predict", data=body, headers=headers), status).startswith(message)


def test_a_row_with_one_array_cell_is_still_a_row_with_an_invalid_cell(client, rows):
    response = client.post("/predict", json={**rows[0], "x44": [1.5]})
    assert response.status_code == 422
    assert [(e["column"], e["index"]) for e in response.json["errors"]] == [("x44", 0)]


def test_a_row_object_and_an_array_of_column_like_rows_are_not_taken_for_columns(client, rows):
    assert client.post("/predict", json=rows[0]).status_code == 200
    response = client.post("/predict", json=[{"x44": [1.5], "x12": ["$1"]}])
    assert response.status_code == 422 and len(response.json["errors"]) == 2


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize(("name", "encode", "fix"), [("rows.csv", _csv, CSV_FIX), ("rows.ndjson", _ndjson, NDJSON_FIX)])
def test_curl_d_gets_the_fix(server, rows, tmp_path, name, encode, fix):
    path = tmp_path / name
    path.write_bytes(encode(rows))
    run = subprocess.run(["curl", "-sS", "-d", f"@{path}", "-w", "\n%{http_code}", f"{server.url}/predict"],
                         capture_output=True, check=True, timeout=30)
    answer, status = run.stdout.rsplit(b"\n", 1)
    assert status == b"400"
    assert fix in json.loads(answer)["message"]


# -- Methods and the root ---------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "use", "allow"), [
    ("GET", "/predict", "POST", "POST, OPTIONS"),
    ("PUT", "/predict", "POST", "POST, OPTIONS"),
    ("DELETE", "/health", "GET", "GET, HEAD, OPTIONS"),
    ("POST", "/model", "GET", "GET, HEAD, OPTIONS"),
    ("POST", "/docs", "GET", "GET, HEAD, OPTIONS"),
    ("POST", "/", "GET", "GET, HEAD, OPTIONS"),
])
def test_a_wrong_method_is_a_405_naming_the_method_to_use_with_allow(client, method, path, use, allow):
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.json == {"error": "method_not_allowed", "message": f"{method} is not allowed on {path}: use {use}"}


def test_head_and_options_stay_sane(client):
    head = client.head("/predict")
    assert head.status_code == 405 and head.headers["Allow"] == "POST, OPTIONS" and head.data == b""
    assert client.head("/health").status_code == 200
    options = client.options("/predict")
    assert options.status_code == 200 and set(options.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


def test_get_predict_on_a_live_server_says_post(server):
    response = requests.get(f"{server.url}/predict", timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "POST, OPTIONS"
    assert response.json()["message"] == "GET is not allowed on /predict: use POST"


def test_the_root_points_to_the_docs_and_the_routes(client):
    response = client.get("/")
    assert response.status_code == 200
    links = response.json["links"]
    assert links == {"docs": "/docs", "openapi": "/openapi.json", "predict": "/predict", "health": "/health",
                     "ready": "/ready", "model": "/model"}
    assert "/docs" in response.json["message"]
    for name, path in links.items():
        assert client.get(path).status_code == (405 if name == "predict" else 200), path


def test_a_browser_at_the_root_is_sent_to_the_docs(client):
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = client.get("/", headers={"Accept": browser})
    assert response.status_code == 302 and response.headers["Location"] == "/docs"
    assert client.get("/", headers={"Accept": "*/*"}).status_code == 200


def test_the_openapi_document_lists_the_root_and_each_paths_405_with_allow(client):
    document = openapi_document(10, 1, ("reject", "inline"), 10)
    assert set(document["paths"]["/"]["get"]["responses"]) == {"200", "302", "405"}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            refused = operation["responses"]["405"]
            assert "Allow" in refused["headers"], path
            if "{" not in path:  # the documented Allow is the one sent
                sent = client.open(path, method="DELETE" if "post" in operations else "PATCH").headers["Allow"]
                assert refused["headers"]["Allow"]["description"] == f"`{sent}`"
