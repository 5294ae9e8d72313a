"""Invalid UTF-8 anywhere in a text body (JSON rows, JSON columns, CSV, NDJSON): a 400 that names
the byte, the line and the key or column, never a 500; in an NDJSON stream after its
first answer, the documented closing error line."""

from __future__ import annotations

import json

import orjson
import pytest

from lib.codecs.text import describe_invalid_csv_utf8, describe_invalid_utf8

BAD = b"\xff"


def row_body(row: dict, **cells: bytes) -> bytes:
    """``row`` as JSON with the given cells' values replaced by raw bytes (quoted)."""
    body = json.dumps({**row, **dict.fromkeys(cells, "@@")}).encode()
    for column, raw in cells.items():
        body = body.replace(f'"{column}": "@@"'.encode(), f'"{column}": "'.encode() + raw + b'"', 1)
    return body


@pytest.fixture(scope="module")
def row(test_rows) -> dict:
    return test_rows[0]


@pytest.mark.parametrize(("column", "query"), [("x5", ""), ("x12", ""), ("id", ""), ("x5", "?input=columns")])
def test_json_bodies_name_the_byte_and_key(client, row, column, query):
    if query:
        body = b'{"x44": [1], "' + column.encode() + b'": ["Mon' + BAD + b'"]}'
    else:
        body = row_body(row, **{column: b"Mon" + BAD})
    response = client.post(f"/predict{query}", data=body, content_type="application/json")
    assert response.status_code == 400, response.data
    message = response.json["message"]
    assert message.startswith("the body is not valid UTF-8: byte ")
    assert f"in the value of '{column}'" in message
    assert f"byte {body.index(BAD)} " in message


def test_a_csv_body_names_the_line_and_column(client):
    body = b"x44,x5,x12\n1,Monday,5\n2,Tue" + BAD + b",6\n"
    response = client.post("/predict", data=body, content_type="text/csv")
    assert response.status_code == 400, response.data
    assert response.json["message"] == (f"the CSV body is not valid UTF-8: byte {body.index(BAD)} "
                                        "(line 3, column 'x5') is 0xff; send text as UTF-8")


def test_a_stream_ends_with_the_error_line_after_its_answers(client, row):
    good = orjson.dumps(row)
    body = good + b"\n" + good + b"\n" + row_body(row, x5=BAD) + b"\n" + good + b"\n"
    response = client.post("/predict", data=body, content_type="application/x-ndjson")
    assert response.status_code == 200
    lines = [orjson.loads(line) for line in response.data.splitlines()]
    assert [set(line) >= {"probability_positiveclass"} for line in lines[:2]] == [True, True]
    assert len(lines) == 3
    assert lines[2]["error"] == "bad_request"
    assert lines[2]["message"].startswith("line 3: the line is not valid UTF-8: byte ")
    assert "in the value of 'x5'" in lines[2]["message"]


def test_a_stream_whose_first_line_is_not_utf8_is_a_json_400(client, row):
    response = client.post("/predict", data=row_body(row, x81=BAD) + b"\n", content_type="application/x-ndjson")
    assert response.status_code == 400
    assert "line 1: the line is not valid UTF-8" in response.json["message"]


@pytest.mark.parametrize(("content_type", "query", "make"), [
    ("application/json", "", lambda row: row_body(row, x0=BAD)),
    ("application/json", "", lambda row: row_body(row).replace(b"{", b'{"k' + BAD + b'": 1, ', 1)),
    ("application/json", "?input=columns", lambda row: b'{"x44": [1], "x0": ["' + BAD + b'"]}'),
    ("text/csv", "", lambda row: b"x44,x0\n1,a" + BAD + b"\n"),
    ("application/x-ndjson", "", lambda row: row_body(row, x0=BAD) + b"\n"),
])
def test_bytes_that_are_not_utf8_are_refused_in_columns_no_one_reads_too(client, row, content_type, query, make):
    # Not text is not guessed at, wherever it is: the same 400 as in a consumed cell.
    response = client.post(f"/predict{query}", data=make(row), content_type=content_type)
    assert response.status_code == 400, response.data
    assert "not valid UTF-8: byte " in response.json["message"]


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"a": "\xc3\x28"}', "not valid UTF-8: byte 7 (line 1, in the value of 'a') is 0xc3; send text as UTF-8"),
    (b'[{"a": 1},\n{"b": "ok", "c": "\xe2\x82"}]', "not valid UTF-8: byte 29 (line 2, in the value of 'c') is 0xe2; "
                                                   "send text as UTF-8"),
    (b'["\xff"]', "not valid UTF-8: byte 2 (line 1) is 0xff; send text as UTF-8"),
    (b'{"a": "fine"}', "not valid UTF-8: send text as UTF-8"),
])
def test_json_messages(body, expected):
    assert describe_invalid_utf8(body) == expected


def test_csv_message_past_the_last_column():
    expected = "not valid UTF-8: byte 8 (line 2) is 0xff; send text as UTF-8"
    assert describe_invalid_csv_utf8(b"a,b\n1,2,\xff\n") == expected
