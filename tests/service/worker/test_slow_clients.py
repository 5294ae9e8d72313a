"""Slow clients hold no worker: service/worker/buffered_worker.py, through real gunicorn.

- 50 connections that sent their headers and trickle their bodies, or trickle their headers,
  stay open while /health and a one-row /predict answer on a two-worker server.
- A request that does not arrive within CLIENT_READ_TIMEOUT gets a JSON 408 with an access line
  and a count; a larger body that stops arriving gets the app's JSON 408 (CLIENT_IDLE_SECONDS).
- What arrives slowly but whole is scored exactly as when sent at once (pieces, chunked, Expect:
  100-continue); streams still answer before their body ends; gunicorn still refuses what it
  refused (400, 431); a graceful stop serves what arrives in time and answers the rest 503.
- ``Arrival`` (service/worker/request_complete.py) decides with gunicorn's own parser: its verdicts on raw bytes.
"""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
import requests
from gunicorn.config import Config

from service.ops.access_log import FIELDS
from service.ops.settings import Settings, SettingsError
from service.worker.request_complete import Arrival
from tests.support.live_server import LiveServer, accepted, wait_for
from tests.support.metrics_text import metric_value
from tests.support.slow_clients import ROW_BODY, SLOW_BODY_HEAD, SLOW_HEADER_HEAD, SlowClients, answers_while_slow

TIMEOUT = (5, 60)
SLOW_CONNECTIONS = 50
MB = 1024 * 1024


@pytest.fixture(scope="module")
def roomy(model_dir, tmp_path_factory):
    """Two workers with the default client limits."""
    live = LiveServer(env={"MODEL_DIR": str(model_dir)}, workers=2,
                      log_path=tmp_path_factory.mktemp("roomy") / "gunicorn.log")
    try:
        yield live.start()
    finally:
        live.stop()


@pytest.fixture(scope="module")
def strict(model_dir, tmp_path_factory):
    """One worker that gives a request 1 s to arrive, and a larger body 1 s per piece."""
    env = {"MODEL_DIR": str(model_dir), "CLIENT_READ_TIMEOUT": "1", "CLIENT_IDLE_SECONDS": "1",
           "CLIENT_BUFFER_MB": "1"}
    live = LiveServer(env=env, workers=1, log_path=tmp_path_factory.mktemp("strict") / "gunicorn.log")
    try:
        yield live.start()
    finally:
        live.stop()


def exchange(port: int, pieces, gap: float = 0.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``pieces`` on a new connection, ``gap`` s apart; the final answer's status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for piece in pieces:
            sock.sendall(piece)
            if gap:
                time.sleep(gap)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read until the server closes; the last answer's status, headers and body."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    while data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
        data = data[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ", 2)[1]), headers, body


def post_head(length: int, content_type: str = "application/json", extra: str = "") -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
            f"{extra}\r\n").encode()


def access_lines(live: LiveServer) -> list[dict]:
    return [json.loads(line) for line in live.log_text().splitlines() if line.startswith('{"time"')]


# -- Many slow connections, a worker still answers ------------------------------------------------------


@pytest.mark.server
@pytest.mark.parametrize(("head", "kind"), [(SLOW_BODY_HEAD, "body"), (SLOW_HEADER_HEAD, "headers")])
def test_fifty_slow_connections_leave_health_and_predict_answering(roomy, head, kind):
    with SlowClients(roomy.port, SLOW_CONNECTIONS, head) as slow:
        slow.wait_accepted()
        latencies = answers_while_slow(roomy.url, slow)
        # Still open, still unanswered: the answers above came while every one was pending.
        assert slow.answered() == 0
    print(f"\n{SLOW_CONNECTIONS} connections trickling their {kind}, directly to gunicorn (2 workers): "
          + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in latencies.items()))


# -- Timeouts ----------------------------------------------------------------------------------------------


@pytest.mark.server
def test_a_request_that_does_not_arrive_in_time_gets_a_json_408_an_access_line_and_a_count(strict):
    head = post_head(100, extra="X-Request-ID: idle-client-1\r\n")
    status, headers, body = exchange(strict.port, [head, b"[{"])
    assert status == 408
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    assert headers["x-request-id"] == "idle-client-1"
    assert json.loads(body) == {"error": "request_timeout",
                                "message": "the request did not arrive within 1 s (CLIENT_READ_TIMEOUT)"}
    line = wait_for(lambda: next((x for x in access_lines(strict) if x["request_id"] == "idle-client-1"), None),
                    10, "the access line of the 408")
    assert set(line) == set(FIELDS)
    assert (line["method"], line["path"], line["status"], line["bytes_in"]) == ("POST", "/predict", 408, len(head) + 2)

    def counted() -> bool:
        text = requests.get(strict.url + "/metrics", timeout=TIMEOUT).text
        return metric_value(text, "http_requests_total", endpoint="unread", method="POST", status="408") >= 1

    wait_for(counted, 10, "the 408 counted in http_requests_total")


@pytest.mark.server
def test_a_connection_that_sends_nothing_gets_the_408_too(strict):
    with socket.create_connection(("127.0.0.1", strict.port), timeout=30) as sock:
        status, headers, body = read_answer(sock)
    assert status == 408 and json.loads(body)["error"] == "request_timeout"


@pytest.mark.server
def test_a_larger_body_that_stops_arriving_gets_the_apps_408_and_the_worker_serves_on(strict):
    # Past CLIENT_BUFFER_MB the worker reads the rest itself, waiting CLIENT_IDLE_SECONDS per piece.
    with socket.create_connection(("127.0.0.1", strict.port), timeout=30) as sock:
        sock.sendall(post_head(3 * MB, extra="X-Request-ID: stalled-body-1\r\n") + b" " * (MB + MB // 2))
        status, _, body = read_answer(sock)
    error = json.loads(body)
    assert status == 408 and error["error"] == "request_timeout", body[:300]
    assert "CLIENT_IDLE_SECONDS" in error["message"]
    assert requests.get(strict.url + "/health", timeout=TIMEOUT).status_code == 200
    line = wait_for(lambda: next((x for x in access_lines(strict) if x["request_id"] == "stalled-body-1"), None),
                    10, "the access line of the stalled body")
    assert (line["path"], line["status"]) == ("/predict", 408)


# -- Whatever arrives whole is scored as before -------------------------------------------------------------


@pytest.mark.server
def test_a_body_in_many_small_pieces_scores_exactly_as_sent_at_once(roomy, test_rows):
    body = json.dumps(test_rows[:50]).encode()
    at_once = requests.post(roomy.url + "/predict", data=body, headers={"Content-Type": "application/json"},
                            timeout=TIMEOUT)
    step = len(body) // 40 + 1
    pieces = [post_head(len(body))] + [body[i:i + step] for i in range(0, len(body), step)]
    status, _, piecewise = exchange(roomy.port, pieces, gap=0.02)
    assert at_once.status_code == status == 200
    assert piecewise == at_once.content and len(json.loads(piecewise)) == 50


@pytest.mark.server
def test_a_chunked_json_body_arriving_slowly_scores_as_sent_at_once(roomy, test_rows):
    body = json.dumps(test_rows[:30]).encode()

    def slow_chunks():
        for start in range(0, len(body), 500):
            time.sleep(0.01)
            yield body[start:start + 500]

    plain = requests.post(roomy.url + "/predict", data=body, timeout=TIMEOUT)
    chunked = requests.post(roomy.url + "/predict", data=slow_chunks(), timeout=TIMEOUT)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert plain.status_code == chunked.status_code == 200
    assert chunked.content == plain.content


@pytest.mark.server
def test_expect_100_continue_gets_one_interim_answer_and_the_body_is_scored(roomy):
    with socket.create_connection(("127.0.0.1", roomy.port), timeout=30) as sock:
        sock.sendall(post_head(len(ROW_BODY), extra="Expect: 100-continue\r\n"))
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(ROW_BODY)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in rest
    assert len(json.loads(rest.partition(b"\r\n\r\n")[2])) == 1


@pytest.mark.server
def test_a_stream_that_arrives_in_a_burst_answers_its_rows_before_its_body_ends(roomy, test_rows):
    rows = b"".join(json.dumps(row).encode() + b"\n" for row in test_rows[:60])  # well over 8 KiB
    head = (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with socket.create_connection(("127.0.0.1", roomy.port), timeout=30) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (len(rows), rows))
        received = b""
        while _dechunk(received.partition(b"\r\n\r\n")[2]).count(b"\n") < 60:  # every row answered...
            chunk = sock.recv(65536)
            assert chunk, received[-300:]
            received += chunk
        sock.sendall(b"0\r\n\r\n")  # ...before the body ends
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")
    decoded = [json.loads(line) for line in _dechunk(received.partition(b"\r\n\r\n")[2]).splitlines()]
    assert len(decoded) == 60 and all("probability_positiveclass" in line for line in decoded)


def _dechunk(data: bytes) -> bytes:
    """The payload of the complete chunks at the start of ``data`` (chunked transfer encoding)."""
    out = b""
    while b"\r\n" in data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0 or len(rest) < size + 2:
            break
        out, data = out + rest[:size], rest[size + 2:]
    return out


# -- What gunicorn refused, it still refuses ----------------------------------------------------------------


@pytest.mark.server
@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n[]", 400),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
])
@pytest.mark.parametrize("gap", [0.0, 0.05])
def test_what_gunicorn_refused_it_still_refuses(roomy, request_bytes, status, gap):
    pieces = [request_bytes[i:i + 1000] for i in range(0, len(request_bytes), 1000)]
    got, _, _ = exchange(roomy.port, pieces, gap=gap)
    assert got == status


# -- Graceful stop --------------------------------------------------------------------------------------------


@pytest.mark.server
def test_a_graceful_stop_serves_what_arrives_and_answers_the_rest_503(start_server):
    live = start_server({"GRACEFUL_TIMEOUT": "6"}, workers=1)
    late = socket.create_connection(("127.0.0.1", live.port), timeout=30)
    late.sendall(post_head(len(ROW_BODY)) + ROW_BODY[:10])
    with SlowClients(live.port, 5, SLOW_BODY_HEAD) as slow:
        slow.wait_accepted()
        wait_for(lambda: accepted(live.port, late.getsockname()[1]), 30, "the late connection accepted")
        live.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the stop is under way (no condition to poll from outside)
        late.sendall(ROW_BODY[10:])
        status, _, body = read_answer(late)
        assert status == 200 and len(json.loads(body)) == 1
        late.close()
        wait_for(lambda: slow.answered() == 5, 30, "every slow connection answered")
        for sock in slow.socks:
            sock.settimeout(10)
            status, headers, body = read_answer(sock)
            assert status == 503 and json.loads(body)["error"] == "not_ready"
    assert live.process.wait(30) == 0


# -- Arrival: when a request is ready, by gunicorn's parser ---------------------------------------------------


def arrival(max_body: int = 10 * MB) -> Arrival:
    return Arrival(Config(), ("127.0.0.1", 5000), buffer_bytes=MB, max_body_bytes=max_body)


def feed(pieces) -> list[bool]:
    it = arrival()
    return [it.add(piece) for piece in pieces]


def test_arrival_waits_for_the_head_and_the_body_of_its_content_length():
    request = post_head(10) + b"[{}, {}, 1]"[:10]
    assert feed([request[i:i + 1] for i in range(len(request))]) == [False] * (len(request) - 1) + [True]
    assert feed([b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"]) == [True]


def test_arrival_waits_for_the_body_a_client_announced_with_expect_100_continue():
    it = arrival()
    assert not it.add(post_head(10, extra="Expect: 100-continue\r\n"))
    assert it.expects_continue
    assert it.add(b"[{}, {}, 1]"[:10])


def test_arrival_waits_for_the_last_chunk_of_a_chunked_body():
    head = b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert feed([head, b"2\r\n[]\r\n", b"0\r\n", b"\r\n"]) == [False, False, False, True]


def test_arrival_hands_a_stream_over_with_its_head():
    head = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/jsonl; charset=utf-8\r\n"
    assert feed([head, b"Transfer-Encoding: chunked\r\n\r\n"]) == [False, True]


def test_arrival_hands_over_a_larger_body_once_a_buffer_of_it_is_in():
    assert feed([post_head(3 * MB), b" " * (MB - 1), b" "]) == [False, False, True]
    assert arrival(max_body=MB).add(post_head(MB + 1))  # refused unread by the app


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: -2\r\n\r\n",
    b"NOT HTTP AT ALL\r\n",
    b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET /" + b"a" * 5000,
])
def test_arrival_hands_over_at_once_what_gunicorn_refuses(request_bytes):
    assert arrival().add(request_bytes)


def test_arrival_hands_over_a_head_too_long_for_gunicorn_before_it_ends():
    it = arrival()
    assert not it.add(b"GET / HTTP/1.1\r\n")
    while not it.add(b"X-A: b\r\n" * 1000):
        assert len(it.data) <= it.head_limit
    assert len(it.data) > it.head_limit


@pytest.mark.parametrize("name", ["client_read_timeout", "client_idle_seconds", "client_buffer_mb",
                                  "client_max_pending"])
def test_client_settings_below_one_are_refused_naming_the_variable(name):
    with pytest.raises(SettingsError, match=f"{name.upper()}=0: must be at least 1"):
        Settings(**{name: 0})
