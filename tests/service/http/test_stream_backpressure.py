"""NDJSON streams to a client that sends its whole body before it reads a byte of the answer, as
Python's ``requests`` does (service/http/answer_hold.py): the answers the socket will not take are
held while the body is read, all come out in order, past STREAM_HOLD_MB the stream ends with its
final error line, and the temporary file they spill to is gone when the request ends."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from service.http.answer_hold import MEMORY_BYTES, AnswerHold
from service.ops.settings import Settings, SettingsError
from tests.support.forms import NDJSON, ndjson
from tests.support.live_server import wait_for

DISTINCT_ROWS = 1000
BLOCK_ROWS = 10_000


@pytest.fixture(scope="module")
def distinct(test_rows, app) -> tuple[list[dict], list[dict]]:
    """1,000 test rows reduced to the columns the model consumes (what others hold changes nothing
    and would make 500,000 rows a 950 MB body), and their answers to one JSON batch request."""
    client = app.test_client()
    consumed = client.post("/predict", json=test_rows[:1]).json[0]["selected_features"]
    rows = [{name: row.get(name) for name in consumed} for row in test_rows[:DISTINCT_ROWS]]
    response = client.post("/predict", json=rows)
    assert response.status_code == 200
    return rows, response.json


@pytest.fixture()
def spool(tmp_path) -> Path:
    """The servers' TMPDIR: where the held answers spill to."""
    path = tmp_path / "tmp"
    path.mkdir()
    return path


def _blocks(rows: list[dict], total: int) -> Iterator[bytes]:
    """``total`` rows with ids 0, 1, ..., made of ``rows`` in turn, in blocks of BLOCK_ROWS lines."""
    for start in range(0, total, BLOCK_ROWS):
        yield ndjson([{"id": i, **rows[i % len(rows)]} for i in range(start, min(total, start + BLOCK_ROWS))])


def _post(url: str, data) -> requests.Response:
    """A stream sent as ``requests`` sends it: the whole body first, then the answer is read."""
    return requests.post(f"{url}/predict", data=data, headers={"Content-Type": NDJSON}, stream=True, timeout=120)


def _mismatches(lines: Iterator[bytes], answers: list[dict]) -> tuple[int, list]:
    """How many lines came, and the first few that differ from the batch answer of their row
    (with their id: line i answers the row of id i)."""
    count, wrong = 0, []
    for count, line in enumerate(lines, 1):
        got = orjson.loads(line)
        if got != {**answers[(count - 1) % len(answers)], "id": count - 1} and len(wrong) < 3:
            wrong.append((count - 1, got))
    return count, wrong


def _worker_files(server, directory: Path) -> list[str]:
    """The files under ``directory`` that the server's only worker has open."""
    pid = int(Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()[0])
    paths = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith(str(directory)):
            paths.append(target)
    return paths


def test_a_client_that_sends_everything_first_gets_every_answer_in_order(start_server, distinct, spool):
    rows, answers = distinct
    server = start_server({"TMPDIR": str(spool)})
    total = 500_000
    response = _post(server.url, _blocks(rows, total))
    assert response.status_code == 200
    count, wrong = _mismatches(response.iter_lines(), answers)
    assert wrong == []
    assert count == total
    [entry] = wait_for(lambda: [line for line in server.access_lines() if line["path"] == "/predict"], 10,
                       "the access line")
    assert (entry["status"], entry["rows"]) == (200, total)
    # The held answers went to a temporary file (over 70 MB of them), closed at the end.
    wait_for(lambda: not _worker_files(server, spool), 10, "the temporary file closed")


def test_answers_past_the_hold_limit_end_the_stream_with_a_line_naming_the_setting(start_server, distinct):
    rows, answers = distinct
    server = start_server({"STREAM_HOLD_MB": "1", "STREAM_IDLE_SECONDS": "1", "STREAM_CHUNK_ROWS": "1000"})
    # A Content-Length body this time. Its answers are about 32 MB: more than the socket buffers
    # take (a few MB each way) and the 1 MB held.
    body = b"".join(_blocks(rows, 200_000))
    response = _post(server.url, body)
    assert response.status_code == 200
    lines = list(response.iter_lines())
    final = orjson.loads(lines[-1])
    assert final["error"] == "too_large"
    assert "over 1 MB of them waited for it (STREAM_HOLD_MB)" in final["message"]
    assert 1000 <= final["rows_answered"] < 200_000
    assert len(lines) == final["rows_answered"] + 1
    count, wrong = _mismatches(iter(lines[:-1]), answers)
    assert (count, wrong) == (final["rows_answered"], [])


def test_the_temporary_file_of_held_answers_is_gone_when_the_client_leaves(start_server, distinct, spool):
    rows, _ = distinct

    def blocks() -> Iterator[bytes]:
        for sent, block in enumerate(_blocks(rows, 200_000), 1):
            yield block
            if sent * BLOCK_ROWS == 150_000:  # 24 MB of answers: more than the 8 MB held in memory
                wait_for(lambda: _worker_files(server, spool), 30, "a temporary file of held answers")
                raise ConnectionAbortedError("the client goes away before its body ends")

    server = start_server({"TMPDIR": str(spool)})
    with pytest.raises(requests.ConnectionError):
        _post(server.url, blocks())
    wait_for(lambda: not _worker_files(server, spool), 10, "the temporary file closed after the client left")
    assert list(spool.iterdir()) == []


def test_what_the_peer_does_not_read_is_held_and_comes_out_whole_and_in_order():
    server, client = socket.socketpair()
    with server, client:
        hold = AnswerHold(server, limit_bytes=1 << 20, idle_seconds=0.5)
        pieces = [bytes([i % 251]) * 100_003 for i in range(3 * MEMORY_BYTES // 100_003)]  # spills to a file
        for piece in pieces:
            hold.sendall(piece)  # nobody reads yet: this must not wait
        assert hold.held > MEMORY_BYTES
        assert hold.make_room(1, lambda: None) is False  # over the limit, and the peer takes nothing
        received = bytearray()

        def read() -> None:
            while data := client.recv(1 << 20):
                received.extend(data)

        reader = threading.Thread(target=read)
        reader.start()
        hold.finish(float("inf"), lambda: None)
        server.shutdown(socket.SHUT_WR)
        reader.join(30)
    assert hold.held == 0
    assert received == b"".join(pieces)


@pytest.mark.parametrize("value", ["0", "-5"])
def test_the_hold_limit_is_at_least_one_mb(value):
    with pytest.raises(SettingsError, match=f"STREAM_HOLD_MB={value}: must be at least 1"):
        Settings.from_env({"STREAM_HOLD_MB": value})
