"""Limits and what error answers may hold, through real gunicorn servers.

- Body size (MAX_BODY_MB) and row count (MAX_ROWS) are 413 with a JSON body naming the limit; a
  Content-Length over the limit is refused before the body is read; a chunked body cannot slip
  past the limit; a body shorter than its Content-Length is refused, not scored in part.
- gunicorn's own limits on the request line and headers answer 4xx and the server goes on.
- A request that would outlive the worker timeout is answered 504 (JSON) by the app before
  gunicorn kills the worker, and the same worker answers the next request: work sized from the
  measured rate of the server at hand to outlast its deadline. A stalled upload gets 408 instead.
- Error bodies never hold the payload, a traceback, a path or a library version; debug is off.
"""

from __future__ import annotations

import http.client
import json
import math
import platform
import re
import time
from importlib import metadata

import pytest
import requests

from bench.memory import worker_pids
from flaskapp import create_app
from service.ops.settings import Settings
from tests.support.live_server import PROJECT_DIR, LiveServer
from tests.support.raw_http import raw_exchange, status_and_body

pytestmark = pytest.mark.server

MB = 1024 * 1024
TIMEOUT = (5, 60)
ROW = {"x5": "monday", "x12": "$1,234.50", "x31": "asia", "x44": 0.3, "x81": "May", "x91": "0.7"}


@pytest.fixture(scope="module")
def small(model_dir, tmp_path_factory):
    """One worker with a 1 MB body limit and a 100-row limit."""
    env = {"MODEL_DIR": str(model_dir), "MAX_BODY_MB": "1", "MAX_ROWS": "100"}
    live = LiveServer(env=env, workers=1, log_path=tmp_path_factory.mktemp("small") / "gunicorn.log")
    try:
        yield live.start()
    finally:
        live.stop()


def json_error(status: int, body: bytes, code: str) -> str:
    """The message of a JSON error body, after checking its shape."""
    error = json.loads(body)
    assert error["error"] == code, (status, error)
    return error["message"]


def chunked(data: bytes, size: int = 64 * 1024):
    for start in range(0, len(data), size):
        yield data[start:start + size]


# -- Body size -------------------------------------------------------------------------------------


def test_content_length_over_the_limit_is_refused_before_the_body_is_sent(small):
    headers = (f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
               f"Content-Length: {2 * MB}\r\n\r\n").encode()
    # No body byte is ever sent: a server that read the body would find it short (400), not too large.
    status, body = status_and_body(raw_exchange(small.port, headers, half_close=True))
    assert status == 413
    assert "MAX_BODY_MB" in json_error(status, body, "too_large")


@pytest.mark.parametrize("size_mb", [1.001, 8, 40])
def test_bodies_over_the_limit_get_a_413_answer_not_a_reset(small, size_mb):
    body = b"[" + b" " * int(size_mb * MB) + b"]"
    response = requests.post(small.url + "/predict", data=body, timeout=TIMEOUT)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_chunked_body_over_the_limit_is_413_not_cut_short(small):
    # Without the check, werkzeug hands over the first MAX_BODY_MB bytes as if they were the
    # whole body: a CSV would be scored without its last rows, answered 200.
    lines = ["x5,x12,x44"] + [f"monday,$1.00,{i / 1e6:.6f}" for i in range(90_000)]
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) > MB
    response = requests.post(small.url + "/predict", data=chunked(body), headers={"Content-Type": "text/csv"},
                             timeout=TIMEOUT)
    assert response.status_code == 413, response.text[:300]
    assert "MAX_BODY_MB" in response.json()["message"]


def test_chunked_body_under_the_limit_is_read_whole(small, test_rows):
    body = json.dumps(test_rows[:80]).encode()
    plain = requests.post(small.url + "/predict", data=body, timeout=TIMEOUT)
    streamed = requests.post(small.url + "/predict", data=chunked(body, 1000), timeout=TIMEOUT)
    assert plain.status_code == streamed.status_code == 200
    assert streamed.json() == plain.json() and len(plain.json()) == 80


def test_body_shorter_than_its_content_length_is_refused_not_scored_in_part(small):
    csv = "x5,x44\n" + "".join(f"monday,{i}\n" for i in range(20))
    sent = csv[: csv.index("monday,10")]  # ten whole rows, then the client stops
    request = (f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: text/csv\r\n"
               f"Content-Length: {len(csv)}\r\n\r\n{sent}").encode()
    status, body = status_and_body(raw_exchange(small.port, request, half_close=True))
    assert status == 400
    assert "Content-Length" in json_error(status, body, "bad_request")


# -- Row count ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "text/csv"])
def test_rows_up_to_the_limit_pass_and_one_more_is_413(small, content_type):
    def body(n: int) -> bytes:
        if content_type == "text/csv":
            return ("x5,x44\n" + "monday,0.5\n" * n).encode()
        return json.dumps([ROW] * n).encode()

    at_limit = requests.post(small.url + "/predict", data=body(100), headers={"Content-Type": content_type},
                             timeout=TIMEOUT)
    over = requests.post(small.url + "/predict", data=body(101), headers={"Content-Type": content_type},
                         timeout=TIMEOUT)
    assert at_limit.status_code == 200 and len(at_limit.json()) == 100
    assert over.status_code == 413
    assert over.json() == {"error": "too_large",
                           "message": "101 rows is over the limit of 100 rows per request (MAX_ROWS)"}


# -- gunicorn's request line and header limits ----------------------------------------------------------


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /health?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),  # limit_request_line 4094
    (b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),  # field size 8190
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n", 400),
])
def test_gunicorn_limits_answer_4xx_and_the_server_goes_on(small, request_bytes, status):
    got, _ = status_and_body(raw_exchange(small.port, request_bytes))
    assert got == status
    assert requests.get(small.url + "/health", timeout=TIMEOUT).status_code == 200


# -- Worker timeout ---------------------------------------------------------------------------------------


# GUNICORN_TIMEOUT of the server that must answer 504: its deadline (80 %) leaves the app 0.6 s to
# answer before gunicorn would kill the worker.
SLOW_TIMEOUT = 3
SLOW_MAX_ROWS = 2_000_000  # far more rows than any machine scores within its deadline


def test_requests_past_the_worker_timeout_get_504_and_the_worker_serves_on(start_server):
    live = start_server({"GUNICORN_TIMEOUT": str(SLOW_TIMEOUT), "MAX_ROWS": str(SLOW_MAX_ROWS),
                         "CLIENT_READ_TIMEOUT": "1"}, workers=1)
    (worker,) = worker_pids(live.process.pid)
    # A client that stops sending halfway never reaches the app: the worker answers it 408 once
    # CLIENT_READ_TIMEOUT has passed (tests/service/worker/test_slow_clients.py), well before the deadline.
    stalled = (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100\r\n\r\n[{\"x5\": ")
    status, body = status_and_body(raw_exchange(live.port, stalled))
    assert status == 408 and "CLIENT_READ_TIMEOUT" in json_error(status, body, "request_timeout")
    # Work that outlives the deadline: rows whose every cell is invalid (the careful route, all of
    # it Python that the deadline can interrupt). How many rows that takes depends on the machine,
    # so each answer within the deadline (422, every row invalid) sizes the next body from its
    # rate, to three deadlines' worth, until one runs past the deadline.
    deadline = Settings(gunicorn_timeout=SLOW_TIMEOUT).deadline_seconds
    bad_row = {c: "bad" for c in ROW}
    rows, answers = 1_000, []
    while True:
        body = json.dumps([bad_row] * rows).encode()
        started = time.perf_counter()
        response = requests.post(live.url + "/predict", data=body, timeout=TIMEOUT)
        seconds = time.perf_counter() - started
        answers.append((rows, response.status_code))
        if response.status_code != 422 or rows == SLOW_MAX_ROWS:
            break
        rows = min(SLOW_MAX_ROWS, max(2 * rows, math.ceil(rows * 3 * deadline / seconds)))
    assert response.status_code == 504, (answers, response.text[:300])
    assert response.json()["error"] == "deadline_exceeded"
    after = requests.post(live.url + "/predict", json=ROW, timeout=TIMEOUT)
    assert after.status_code == 200 and len(after.json()) == 1
    assert worker_pids(live.process.pid) == [worker]
    assert "WORKER TIMEOUT" not in live.log_text()


# -- What error answers hold ---------------------------------------------------------------------------------

MARKER = "payload-marker-" + "".join(f"{i:03d}" for i in range(60))  # 195 characters
SHOWN = 40  # error messages show at most this much of a client value


def error_bodies(server) -> list[requests.Response]:
    """Error answers to bodies that carry MARKER in every place a client value can be."""
    bodies = [
        ({"x5": MARKER}, {}), ({"x44": MARKER}, {}), ({"x12": MARKER}, {}), ({"id": [MARKER]}, {}),
        ({"x81": {MARKER: MARKER}}, {}), ([{"x31": MARKER}] * 3, {"errors": "inline"}),
        (f'[{{"x5": "{MARKER}"', {}), (f'{{"{MARKER}": 1,,}}', {}), (MARKER, {}), (f"x5,x44\n{MARKER},1\n", {}),
    ]
    answers = []
    for body, params in bodies:
        data = body if isinstance(body, str) else json.dumps(body)
        content_type = "text/csv" if data.startswith("x5,") else "application/json"
        answers.append(requests.post(server.url + "/predict", data=data.encode(), params=params,
                                     headers={"Content-Type": content_type}, timeout=TIMEOUT))
    answers.append(requests.post(server.url + "/predict", data=MARKER, params={"format": MARKER}, timeout=TIMEOUT))
    answers.append(requests.post(server.url + "/predict", data=b"\x00" + MARKER.encode(),
                                 headers={"Content-Type": "x/" + MARKER}, timeout=TIMEOUT))
    answers.append(requests.get(server.url + "/" + MARKER, timeout=TIMEOUT))
    return answers


def library_versions() -> list[str]:
    names = ["flask", "werkzeug", "gunicorn", "numpy", "pandas", "scikit-learn", "scipy", "statsmodels",
             "msgspec", "orjson"]
    return [platform.python_version()] + [metadata.version(name) for name in names]


def test_error_answers_hold_no_payload_traceback_path_or_version(server):
    versions = library_versions()
    answers = error_bodies(server)
    assert [a.status_code for a in answers] == [422, 422, 422, 422, 422, 200, 400, 400, 400, 422, 400, 415, 404]
    for answer in answers:
        text = answer.text
        assert MARKER[:SHOWN + 1] not in text, text[:300]
        assert "Traceback" not in text and 'File "' not in text
        assert str(PROJECT_DIR) not in text and "site-packages" not in text and ".py" not in text
        assert not [v for v in versions if re.search(rf"(?<![\d.]){re.escape(v)}(?![\d.])", text)], text[:300]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert not re.search(r"\d", answer.headers.get("Server", "")), answer.headers["Server"]


def test_unexpected_errors_are_a_bare_500(model_dir):
    app = create_app({"model_dir": model_dir})

    @app.get("/explode")
    def explode():
        raise RuntimeError(f"{MARKER} in {PROJECT_DIR / 'flaskapp.py'}")

    response = app.test_client().get("/explode")
    assert response.status_code == 500
    assert response.json == {"error": "internal_server_error",
                             "message": "internal server error; the request id identifies it in the logs"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_debug_stays_off_whatever_the_environment_says(model_dir, monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    monkeypatch.setenv("FLASK_ENV", "development")
    app = create_app({"model_dir": model_dir})
    assert app.debug is False and app.config["DEBUG"] is False


@pytest.mark.parametrize("entry_point", ["flaskapp.py", "gunicorn.conf.py", "run_api.sh", "Dockerfile",
                                         "docker-compose.yaml", "service/ops/settings.py"])
def test_no_entry_point_turns_debug_or_reload_on(entry_point):
    text = (PROJECT_DIR / entry_point).read_text()
    assert not re.search(r"debug\s*=\s*True|FLASK_DEBUG\s*[=:]\s*\"?1|--reload|--debug|\breload\s*=\s*True"
                         r"|app\.run\(|use_debugger|loglevel\s*=\s*[\"']debug", text, flags=re.IGNORECASE)


def test_every_answer_of_a_mixed_session_says_nosniff(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    requests_made = [("GET", "/health", None), ("GET", "/ready", None), ("GET", "/model", None),
                     ("GET", "/metrics", None), ("GET", "/openapi.json", None), ("POST", "/predict", b"{}"),
                     ("POST", "/predict", b"["), ("DELETE", "/predict", None), ("GET", "/nowhere", None)]
    try:
        for method, path, body in requests_made:
            connection.request(method, path, body)
            response = connection.getresponse()
            response.read()
            assert response.getheader("X-Content-Type-Options") == "nosniff", (method, path, response.status)
    finally:
        connection.close()
