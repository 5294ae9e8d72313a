"""NDJSON streamed through POST /predict (service/http/streaming.py): answers line by line in order,
errors in place, a malformed line ending the stream with its number, the stream's own limits,
and through a real gunicorn: chunks answered while the body still arrives, a client that goes
away, a stalled client, and a stream that outlasts GUNICORN_TIMEOUT."""

from __future__ import annotations

import io
import json
import time

import orjson
import pytest

from bench.ndjson_client import OpenStream, post_stream
from tests.support.forms import NDJSON, ndjson, outcomes
from tests.support.live_server import wait_for

ERROR_KEYS = {"error", "message", "rows_answered"}


def stream(client, body: bytes, query: str = ""):
    return client.post(f"/predict{'?' + query if query else ''}", data=body, content_type=NDJSON)


def test_every_line_gets_the_answer_json_rows_give_in_order(client, test_rows):
    rows = [{"id": f"r{i}", **row} for i, row in enumerate(test_rows[:500])]
    rows[7]["x5"] = "Funday"
    expected = outcomes(200, "application/json", client.post("/predict?errors=inline", json=rows).data)
    response = stream(client, ndjson(rows))
    assert response.status_code == 200
    assert response.content_type == NDJSON
    assert outcomes(200, NDJSON, response.data) == expected
    assert orjson.loads(response.data.splitlines()[7])["index"] == 7


def test_a_malformed_line_ends_the_stream_with_its_number_after_the_rows_before_it(client):
    body = b'{"x44": 1}\n\n{"x44": 2}\n{"x44": 3,}\n{"x44": 4}\n'
    lines = stream(client, body).data.splitlines()
    assert len(lines) == 3
    assert [orjson.loads(line)["predicted_class"] in (0, 1) for line in lines[:2]] == [True, True]
    final = orjson.loads(lines[2])
    assert set(final) == ERROR_KEYS
    assert final["error"] == "bad_request"
    assert final["message"].startswith("line 4: malformed JSON: ")
    assert final["rows_answered"] == 2


@pytest.mark.parametrize(("body", "message"), [
    (b"", "the body holds no rows: send one JSON object a line"),
    (b"\n \n\n", "the body holds no rows: send one JSON object a line"),
    (b"[1, 2]\n", "line 1: expected one JSON object a line (a row)"),
    (b'{"x44": 1}{"x44": 2}\n', "line 1: malformed JSON: "),
    (b'\n{"x44": 1} [2]\n', "line 2: malformed JSON: "),
])
def test_a_stream_that_fails_before_its_first_answer_gets_a_json_error(client, body, message):
    response = stream(client, body)
    assert response.status_code == 400
    assert response.content_type == "application/json"
    assert response.json["message"].startswith(message)


def test_a_last_line_without_newline_is_a_row_and_ids_and_reasons_come_through(client):
    lines = stream(client, b'{"id": 7, "x44": 1}\n{"id": "eight", "x5": "monday"}', "explain=2").data.splitlines()
    rows = [orjson.loads(line) for line in lines]
    assert [row["id"] for row in rows] == [7, "eight"]
    assert [len(row["reasons"]) for row in rows] == [2, 2]


@pytest.mark.parametrize("query", ["format=columns", "errors=reject", "input=columns", "explain=0"])
def test_options_that_do_not_apply_to_a_stream_are_refused(client, query):
    response = stream(client, b'{"x44": 1}\n', query)
    assert response.status_code == 400
    assert query.split("=")[0] in response.json["message"]


def test_the_aliases_of_ndjson_are_streamed_too(client):
    for content_type in ("application/jsonl", "application/x-jsonlines"):
        response = client.post("/predict", data=b'{"x44": 1}\n{"x44": 2}\n', content_type=content_type)
        assert response.content_type == NDJSON
        assert len(response.data.splitlines()) == 2


# Through gunicorn.

def _rows_block(test_rows, n: int) -> bytes:
    return ndjson([{"id": i, **test_rows[i % len(test_rows)]} for i in range(n)])


def test_a_stream_of_many_chunks_matches_the_batch_answers(start_server, test_rows):
    server = start_server({"STREAM_CHUNK_ROWS": "1000"})
    rows = [{"id": i, **row} for i, row in enumerate(test_rows[:2500])] * 8  # 20 chunks
    body = ndjson(rows)
    pieces = [body[i:i + 65_536] for i in range(0, len(body), 65_536)]  # lines cut across pieces
    result = post_stream(server.url, pieces)
    assert result.status == 200, result.lines[:1]
    assert result.headers["content-type"] == NDJSON
    assert result.headers["transfer-encoding"] == "chunked"
    expected = outcomes(200, "application/json", _post_json(server.url, rows[:2500]))
    assert outcomes(200, NDJSON, b"\n".join(result.lines)) == expected * 8


def _post_json(url: str, rows: list[dict]) -> bytes:
    import requests

    response = requests.post(f"{url}/predict", json=rows, timeout=60)
    response.raise_for_status()
    return response.content


def test_answers_come_while_the_body_still_arrives_and_a_client_that_leaves_stops_the_work(start_server, test_rows):
    server = start_server(workers=1)  # STREAM_CHUNK_ROWS stays 10,000: a pause answers the rows in
    block = _rows_block(test_rows, 100)
    stream = OpenStream(server.url)
    for sent in (100, 200, 300):  # the rows sent are answered before more are sent
        stream.send(block)
        assert len(stream.read_lines(sent)) == sent
    assert stream.response.status == 200
    stream.close()  # gone, without ending the body
    wait_for(lambda: _predict_lines(server), 30, "the access line")
    [entry] = _predict_lines(server)
    assert entry["rows"] == 300
    assert entry["status"] == 200
    # The only worker is free again and answers the next request.
    assert orjson.loads(_post_json(server.url, [test_rows[0]]))[0]["predicted_class"] in (0, 1)


def _predict_lines(server) -> list[dict]:
    """The access lines of POST /predict in the server's log."""
    lines = []
    for line in server.log_text().splitlines():
        if line.startswith("{") and '"path": "/predict"' in line.replace('":"', '": "'):
            lines.append(json.loads(line))
    return lines


def test_a_stalled_client_gets_a_final_error_line(start_server, test_rows):
    server = start_server({"STREAM_IDLE_SECONDS": "1", "STREAM_CHUNK_ROWS": "10"}, workers=1)

    def blocks():
        yield _rows_block(test_rows, 10)
        time.sleep(4)  # longer than STREAM_IDLE_SECONDS: the server ends the stream meanwhile

    result = post_stream(server.url, blocks())
    assert result.status == 200
    assert len(result.lines) == 11
    final = orjson.loads(result.lines[-1])
    assert final["error"] == "bad_request"
    assert final["message"] == "no data from the client for 1 s (STREAM_IDLE_SECONDS)"
    assert final["rows_answered"] == 10


def test_a_stream_over_its_body_limit_ends_with_a_413_line(start_server, test_rows):
    server = start_server({"STREAM_MAX_BODY_MB": "1", "STREAM_CHUNK_ROWS": "100"}, workers=1)
    block = _rows_block(test_rows, 100)  # about 170 kB
    result = post_stream(server.url, (block for _ in range(20)))
    final = orjson.loads(result.lines[-1])
    assert final["error"] == "too_large"
    assert final["message"] == "the stream is over the limit of 1 MB (STREAM_MAX_BODY_MB)"
    assert 100 <= final["rows_answered"] < 2000
    assert len(result.lines) == final["rows_answered"] + 1


def test_a_stream_may_outlast_the_worker_timeout(start_server, test_rows):
    # gunicorn kills a sync worker silent for GUNICORN_TIMEOUT; a stream reports after each chunk.
    server = start_server({"GUNICORN_TIMEOUT": "2", "STREAM_IDLE_SECONDS": "1", "STREAM_CHUNK_ROWS": "50"},
                          workers=1)
    block = _rows_block(test_rows, 50)

    def blocks():
        for _ in range(12):  # 6 s in all, three times the timeout
            yield block
            time.sleep(0.5)

    result = post_stream(server.url, blocks())
    assert result.status == 200
    assert result.n_lines == 600
    assert all(b'"predicted_class"' in line for line in result.lines)
    assert "WORKER TIMEOUT" not in server.log_text()


def test_a_bug_after_the_first_answer_still_ends_with_the_error_line(model_dir, test_rows, monkeypatch):
    from flaskapp import create_app
    from service.http.readers.ndjson import NdjsonReader

    read_chunk = NdjsonReader.read_chunk
    calls = []

    def fail_the_second_chunk(self, chunk, first_line):
        calls.append(first_line)
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return read_chunk(self, chunk, first_line)

    monkeypatch.setattr(NdjsonReader, "read_chunk", fail_the_second_chunk)
    client = create_app({"model_dir": model_dir, "stream_chunk_rows": 3}).test_client()
    body = ndjson(test_rows[:100])
    # The body arrives in pieces of 20 kB, each cut into a chunk of its whole lines.
    response = client.post("/predict", input_stream=Pieces(body, 20_000), content_length=len(body),
                           content_type=NDJSON)
    lines = response.data.splitlines()
    answered = len(lines) - 1
    assert len(calls) == 2 and 0 < answered < 100
    assert [set(orjson.loads(line)) >= {"probability_positiveclass"} for line in lines[:-1]] == [True] * answered
    assert orjson.loads(lines[-1]) == {"error": "internal_server_error", "rows_answered": answered,
                                       "message": "internal server error; the request id identifies it in the logs"}


class Pieces(io.BytesIO):
    """A request body that gives at most ``size`` bytes a read, as a socket may."""

    def __init__(self, body: bytes, size: int):
        super().__init__(body)
        self.size = size

    def read(self, n: int | None = -1) -> bytes:
        return super().read(self.size if n is None or n < 0 else min(n, self.size))
