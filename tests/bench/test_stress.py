"""stress_test.sh: passes against the real server, fails on a down or wrong one, checks answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.stress import check_answer
from tests.support.live_server import PROJECT_DIR

STRESS = PROJECT_DIR / "stress_test.sh"
SMALL_RUN = ["--requests", "120", "--batches", "8", "--max-batch", "300", "--concurrency", "3", "--seed", "7"]


def stress(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(STRESS), *args], capture_output=True, text=True, timeout=120, check=False)


def summary_line(output: str, kind: str) -> dict[str, float]:
    """The figures of one line of the summary table."""
    header, *lines = output.split("\nsummary\n", 1)[1].splitlines()
    names = re.split(r"\s{2,}", header.strip())
    line = next(line for line in lines if line.startswith(kind + " "))
    values = line.split()
    return {name: float(value.replace(",", "")) for name, value in zip(names[1:], values[1:], strict=True)}


@pytest.mark.server
def test_small_run_against_the_real_server_passes_with_a_summary(server):
    done = stress("--url", server.url, *SMALL_RUN)
    assert done.returncode == 0, done.stdout + done.stderr
    single, batch = summary_line(done.stdout, "single"), summary_line(done.stdout, "batch")
    assert (single["requests"], single["errors"], single["rows"]) == (120, 0, 120)
    assert (batch["requests"], batch["errors"]) == (8, 0)
    assert 8 <= batch["rows"] <= 8 * 300
    for figures in (single, batch):
        # Printed with one decimal, a fast run's latency may read 0.0: only their order survives rounding.
        assert figures["p50 ms"] <= figures["p95 ms"] <= figures["p99 ms"]
    assert "[single] 120/120 requests, 0 errors" in done.stdout
    assert re.search(r"^OK: 128 requests, \d+ rows, 0 errors$", done.stdout, re.MULTILINE)


def test_help_names_every_argument():
    done = stress("--help")
    assert done.returncode == 0
    for option in ("--url", "--requests", "--batches", "--concurrency", "--max-batch", "--data", "--seed", "--stream"):
        assert option in done.stdout


def test_refuses_a_server_that_is_down(refused_url):
    done = stress("--url", refused_url, *SMALL_RUN)
    assert done.returncode == 1
    assert "FAILED: cannot reach" in done.stdout


def test_refuses_bad_arguments():
    done = stress("--concurrency", "0")
    assert done.returncode == 2
    assert "--concurrency must be at least 1, got 0" in done.stderr


def _answer(n_rows: int, probability: object = 0.25) -> list[dict]:
    return [{"probability_positiveclass": probability, "selected_features": ["x5"], "predicted_class": 0}] * n_rows


# How a wrong server answers a body of n rows: (status, body).
WRONG_SERVERS = {
    "status 500": lambda n: (500, b'{"error": "internal"}'),
    "one result short": lambda n: (200, json.dumps(_answer(n - 1)).encode()),
    "probability above 1": lambda n: (200, json.dumps(_answer(n, 1.5)).encode()),
    "not JSON": lambda n: (200, b"<html>"),
}


@pytest.fixture(scope="module")
def few_rows(test_rows, tmp_path_factory):
    """50 test rows, enough for runs that only need to fail."""
    path = tmp_path_factory.mktemp("stress") / "rows.json"
    path.write_text(json.dumps(test_rows[:50]))
    return str(path)


@contextmanager
def fake_server(answer_post):
    """A server that answers /health, and each POST with ``answer_post(handler) -> (status,
    content type, body)``; closes every connection after its answer."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self._send(200, "application/json", b'{"status": "ok"}')

        def do_POST(self):
            self._send(*answer_post(self))

        def _send(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(params=sorted(WRONG_SERVERS))
def wrong_server(request):
    """A server that answers /health but gets /predict wrong in one way."""
    answer = WRONG_SERVERS[request.param]

    def post(handler):
        rows = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        status, body = answer(len(rows) if isinstance(rows, list) else 1)
        return status, "application/json", body

    with fake_server(post) as url:
        yield url


def test_fails_on_every_wrong_answer(wrong_server, few_rows):
    done = stress("--url", wrong_server, "--data", few_rows, "--requests", "20", "--batches", "5", "--max-batch", "50",
                  "--concurrency", "2", "--seed", "3")
    assert done.returncode == 1, done.stdout
    assert summary_line(done.stdout, "single")["errors"] == 20
    assert summary_line(done.stdout, "batch")["errors"] == 5
    assert "FAILED: 25 failed requests, 0 not sent" in done.stdout


@pytest.mark.parametrize("wrong_server", ["status 500"], indirect=True)
def test_stops_early_after_max_errors(wrong_server, few_rows):
    done = stress("--url", wrong_server, "--data", few_rows, "--requests", "500", "--batches", "5",
                  "--concurrency", "1", "--max-errors", "10")
    assert done.returncode == 1
    assert "stopping: 10 failed requests (--max-errors 10)" in done.stdout
    assert re.search(r"FAILED: 10 failed requests, \d+ not sent", done.stdout)


def _body(*probabilities, predicted=0) -> bytes:
    return json.dumps([{"probability_positiveclass": p, "predicted_class": predicted} for p in probabilities]).encode()


@pytest.mark.parametrize(("status", "body", "rows", "problem"), [
    (200, _body(0.0, 1.0), [0, 1], None),
    (200, _body(0.5), [2], None),
    (422, b'{"error": "invalid_rows"}', [0], 'HTTP 422: {"error": "invalid_rows"}'),
    (200, b"[1,", [0], "the answer is not JSON"),
    (200, b'{"a": 1}', [0], "a JSON dict for 1 rows"),
    (200, _body(0.5), [0, 1], "1 results for 2 rows"),
    (200, b"[3]", [0], "result 0 (test row 0) is not an object"),
    (200, _body(-0.1), [0], "probability_positiveclass -0.1 is not a number in [0, 1]"),
    (200, _body("0.5"), [0], "probability_positiveclass '0.5' is not a number in [0, 1]"),
    (200, _body(True), [0], "probability_positiveclass True is not a number in [0, 1]"),
    (200, _body(0.5, predicted=2), [0], "predicted_class 2 is not 0 or 1"),
    (200, _body(0.5, predicted=True), [0], "predicted_class True is not 0 or 1"),
    (200, _body(0.3), [1], "result 0 (test row 1): probability_positiveclass 0.3 differs from the 1.0 answered"),
])
def test_check_answer(status, body, rows, problem):
    # Answers already recorded for rows 0 and 1, except where a good answer must record them.
    seen = {} if problem is None else {0: 0.0, 1: 1.0}
    result = check_answer(status, body, rows, seen)
    if problem is None:
        assert result is None
        assert seen[rows[-1]] == json.loads(body)[-1]["probability_positiveclass"]
    else:
        assert result is not None and problem in result


@pytest.mark.server
def test_a_stream_run_checks_every_answer_line(server):
    done = stress("--url", server.url, "--requests", "30", "--batches", "0", "--stream", "25000", "--seed", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    stream = summary_line(done.stdout, "stream")
    assert (stream["requests"], stream["errors"], stream["rows"]) == (1, 0, 25000)
    assert "[stream] 25,000/25,000 rows answered" in done.stdout
    # The stream's rows count for the version its header names, with the 30 single rows.
    assert re.search(r"^model versions: \S+ \(25030 answers\)$", done.stdout, re.MULTILINE), done.stdout


@pytest.fixture()
def short_stream_server():
    """A server that answers any POST with three NDJSON lines, whatever the body holds."""
    lines = b"".join(json.dumps(row).encode() + b"\n" for row in _answer(3))
    with fake_server(lambda handler: (200, "application/x-ndjson", lines)) as url:
        yield url


def test_a_stream_with_missing_answer_lines_fails(short_stream_server, few_rows):
    done = stress("--url", short_stream_server, "--data", few_rows, "--requests", "0", "--batches", "0",
                  "--stream", "100")
    assert done.returncode == 1, done.stdout
    assert summary_line(done.stdout, "stream")["errors"] == 1
    assert "[stream] 3 answer lines for 100 rows" in done.stdout


@pytest.mark.server
def test_a_timed_run_sends_single_rows_for_its_seconds(server):
    done = stress("--url", server.url, "--seconds", "1.5", "--batches", "2", "--max-batch", "50", "--seed", "9")
    assert done.returncode == 0, done.stdout + done.stderr
    single = summary_line(done.stdout, "single")
    assert single["errors"] == 0 and single["requests"] == single["rows"] > 0
    assert single["seconds"] >= 1.5
    assert "1.5 s of single-row requests" in done.stdout


def test_refuses_a_run_of_no_time():
    done = stress("--seconds", "0")
    assert done.returncode == 2
    assert "--seconds must be a positive number, got 0.0" in done.stderr


@pytest.mark.server
def test_a_run_with_an_api_key_passes_and_without_one_fails(start_server, tmp_path):
    """--api-key (or API_KEY) sends the key with every request, streams included."""
    from service.ops.keys import add

    key, _ = add(tmp_path / "api-keys", "stress")
    server = start_server({"API_KEYS_FILE": str(tmp_path / "api-keys")}, workers=2)
    run = ["--url", server.url, "--requests", "40", "--batches", "3", "--max-batch", "20", "--stream", "500",
           "--seed", "3"]
    done = stress(*run, "--api-key", key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^OK: 44 requests, \d+ rows, 0 errors$", done.stdout, re.MULTILINE)
    by_env = subprocess.run([str(STRESS), *run], capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "API_KEY": key})
    assert by_env.returncode == 0, by_env.stdout
    refused = stress(*run, "--api-key", key[:-1])
    assert refused.returncode == 1 and "HTTP 401" in refused.stdout
    assert key not in refused.stdout + done.stdout, "the key is never printed"
