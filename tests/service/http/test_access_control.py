"""API keys at the door of a real gunicorn server: who gets in, what a refusal looks like, that
no key is ever logged, the key file re-read without a restart, and the per-key counters and
access lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from openapi_spec_validator import validate

from service.http.openapi import SECURITY_SCHEMES
from service.ops.keys import key_hash
from tests.support.browser import Browser, chromium_path
from tests.support.live_server import PROJECT_DIR, LiveServer, wait_for
from tests.support.metrics_text import metric_samples, metric_value
from tests.support.raw_http import raw_exchange

pytestmark = pytest.mark.server

ROW = (PROJECT_DIR / "docs" / "examples" / "row.json").read_bytes()
TIMEOUT = 30


def add_key(path: Path, name: str) -> str:
    """A new key through the command users run."""
    done = subprocess.run([sys.executable, "-m", "service.ops.keys", "add", name, "--file", str(path)], cwd=PROJECT_DIR,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric(server: LiveServer, key: str, name: str, **labels: str) -> float:
    """One sample of /metrics (read with ``key``): 0 when not listed yet."""
    return metric_value(requests.get(server.url + "/metrics", headers=bearer(key), timeout=TIMEOUT).text, name,
                        **labels)


@pytest.fixture(scope="module")
def keyed(model_dir, tmp_path_factory):
    """A 2-worker server with keys on, and the keys of alice and bob."""
    directory = tmp_path_factory.mktemp("keys")
    path = directory / "api-keys"
    alice, bob = add_key(path, "alice"), add_key(path, "bob")
    live = LiveServer(env={"MODEL_DIR": str(model_dir), "API_KEYS_FILE": str(path)}, workers=2,
                      log_path=directory / "gunicorn.log").start()
    yield live, {"alice": alice, "bob": bob, "file": path}
    live.stop()


def test_a_known_key_gets_in_either_way_it_is_sent(keyed):
    server, keys = keyed
    for headers in (bearer(keys["alice"]), {"Authorization": f"bearer  {keys['bob']}"}, {"X-API-Key": keys["alice"]}):
        answer = requests.post(server.url + "/predict", data=ROW, headers=headers, timeout=TIMEOUT)
        assert answer.status_code == 200, (headers.keys(), answer.text)
        assert answer.json()[0]["probability_positiveclass"] == 0.38306861582266416


def refusals(keys: dict) -> dict[str, dict[str, str]]:
    """Every way of not having a valid key we could think of: none, an empty one, a near miss, the
    key's hash or name, the key under the wrong scheme."""
    alice = keys["alice"]
    last = "A" if alice[-1] != "A" else "B"
    return {
        "no key": {},
        "wrong key": bearer("bpk_" + "x" * 43),
        "last character differs": bearer(alice[:-1] + last),
        "a prefix of the key": bearer(alice[:-1]),
        "the key and more": bearer(alice + "x"),
        "empty bearer": {"Authorization": "Bearer "},
        "empty X-API-Key": {"X-API-Key": ""},
        "4 KB key": bearer("k" * 4096),
        "the key's hash": bearer(key_hash(alice)),
        "a key made for another key file": bearer("bpk_" + "m" * 43),
        "the key under another scheme": {"Authorization": f"Basic {alice}"},
        "the key's name": {"X-API-Key": "alice"},
    }


@pytest.mark.parametrize("path", ["/predict", "/model", "/models", "/metrics"])
def test_every_way_without_a_valid_key_gets_a_json_401_and_no_key_is_logged(keyed, path):
    server, keys = keyed
    log_start = len(server.log_text())
    for case, headers in refusals(keys).items():
        method = requests.post if path == "/predict" else requests.get
        answer = method(server.url + path, data=ROW if path == "/predict" else None, headers=headers, timeout=TIMEOUT)
        assert answer.status_code == 401, (case, answer.status_code, answer.text[:200])
        assert answer.headers["WWW-Authenticate"].startswith("Bearer"), case
        assert answer.headers["Content-Type"] == "application/json" and answer.headers["X-Request-ID"], case
        body = answer.json()
        assert body["error"] == "unauthorized" and "API key" in body["message"], case
        presented = [value.split()[-1] for value in headers.values() if value.strip() and len(value.split()[-1]) >= 8]
        assert not any(value in answer.text for value in presented), f"{case}: the answer echoes the key"
    requests.post(server.url + "/predict", data=ROW, headers=bearer(keys["alice"]), timeout=TIMEOUT)
    wait_for(lambda: any(e.get("key") == "alice" for e in server.access_lines()), 10, "the good request's line")
    log = server.log_text()[log_start:]
    # Neither a refused key nor the good one is ever written: only names.
    for value in (keys["alice"], keys["alice"][:-1], keys["alice"][4:20], "k" * 4096, "x" * 43, "m" * 43):
        assert value not in log
    refused = [e for e in server.access_lines() if e["path"] == path and e["status"] == 401]
    assert refused and all(e["key"] is None for e in refused)


def test_a_header_over_gunicorns_field_limit_is_refused_before_the_app(keyed):
    server, _ = keyed
    answer = requests.post(server.url + "/predict", data=ROW, headers=bearer("k" * 9000), timeout=TIMEOUT)
    assert answer.status_code == 431


@pytest.mark.parametrize("path", ["/health", "/ready", "/docs", "/docs/swagger-ui.css", "/openapi.json"])
def test_probes_and_docs_stay_open(keyed, path):
    server, _ = keyed
    assert requests.get(server.url + path, timeout=TIMEOUT).status_code == 200


def test_protected_pages_answer_with_a_key(keyed):
    server, keys = keyed
    for path in ("/model", "/models", "/metrics"):
        assert requests.get(server.url + path, headers=bearer(keys["bob"]), timeout=TIMEOUT).status_code == 200, path


def test_the_key_name_is_in_the_access_line_and_the_counters(keyed):
    server, keys = keyed
    for _ in range(3):
        assert requests.post(server.url + "/predict", data=ROW, headers={"X-API-Key": keys["bob"]},
                             timeout=TIMEOUT).status_code == 200
    assert requests.post(server.url + "/predict", data=ROW, headers=bearer("nope"), timeout=TIMEOUT).status_code == 401
    assert requests.post(server.url + "/predict", data=ROW, timeout=TIMEOUT).status_code == 401
    lines = [e for e in server.access_lines() if e["path"] == "/predict"]
    assert [e["key"] for e in lines[-5:]] == ["bob", "bob", "bob", None, None]
    assert [e["status"] for e in lines[-5:]] == [200, 200, 200, 401, 401]

    # The counters agree with the access lines of the whole module so far. /metrics flushes the
    # worker that answers it; the other one's counts arrive within its flush period.
    def counted() -> bool:
        text = requests.get(server.url + "/metrics", headers=bearer(keys["alice"]), timeout=TIMEOUT).text
        logged = server.access_lines()
        expected = {name: sum(e["key"] == name for e in logged) for name in ("alice", "bob")}
        expected["refusals"] = sum(e["status"] == 401 for e in logged)
        got = {name: metric_value(text, "api_key_requests_total", key=name) for name in ("alice", "bob")}
        got["refusals"] = metric_value(text, "api_key_refusals_total")
        # This scrape (alice's) is logged by the time its answer arrives, and counted after its text was made.
        expected["alice"] -= 1
        return got == expected and expected["bob"] >= 3

    wait_for(counted, 10, "the per-key and refusal counters equal to the access lines")
    text = requests.get(server.url + "/metrics", headers=bearer(keys["alice"]), timeout=TIMEOUT).text
    samples = metric_samples(text)
    assert ("api_key_refusals_total", (("reason", "missing"),)) in samples
    assert ("api_key_refusals_total", (("reason", "unknown"),)) in samples


def test_a_stream_needs_a_key_and_its_line_names_it(keyed):
    server, keys = keyed
    rows = b"".join(json.dumps(json.loads(ROW)).encode() + b"\n" for _ in range(3))
    headers = {"Content-Type": "application/x-ndjson"}
    assert requests.post(server.url + "/predict", data=rows, headers=headers, timeout=TIMEOUT).status_code == 401
    answer = requests.post(server.url + "/predict", data=rows, headers={**headers, **bearer(keys["alice"])},
                           timeout=TIMEOUT)
    assert answer.status_code == 200 and len(answer.text.splitlines()) == 3
    wait_for(lambda: any(e.get("key") == "alice" and e["rows"] == 3 for e in server.access_lines()), 10,
             "the stream's access line with its key name")


def test_a_refused_request_with_a_body_leaves_the_next_request_alone(keyed):
    """A 401 answered before the body is read: the connection closes, nothing of the body is taken
    for a request of its own."""
    server, keys = keyed
    smuggled = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-API-Key: " + keys["alice"].encode() + b"\r\n\r\n"
    answer = raw_exchange(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled, timeout=TIMEOUT)
    assert answer.startswith(b"HTTP/1.1 401") and answer.count(b"HTTP/1.1 ") == 1


def test_the_key_file_is_re_read_without_a_restart(start_server, tmp_path):
    path = tmp_path / "api-keys"
    alice = add_key(path, "alice")
    server = start_server({"API_KEYS_FILE": str(path)}, workers=2)

    def status(key: str) -> int:
        return requests.post(server.url + "/predict", data=ROW, headers=bearer(key), timeout=TIMEOUT).status_code

    def every_worker(key: str, expected: int) -> bool:
        # Eight answers in a row: both workers have answered with high probability, and each checks its file.
        return all(status(key) == expected for _ in range(8))

    carol = add_key(path, "carol")
    wait_for(lambda: every_worker(carol, 200), 15, "the new key accepted by every worker")

    # Rotation: a second key for alice, then the old one removed.
    new_alice = add_key(path, "alice")
    subprocess.run([sys.executable, "-m", "service.ops.keys", "remove", "alice", "--old", "--file", str(path)],
                   cwd=PROJECT_DIR, check=True, capture_output=True)
    wait_for(lambda: every_worker(alice, 401), 15, "the old key refused")
    assert every_worker(new_alice, 200)

    # A malformed file keeps the last good set, and says why in the log and the counter.
    good = path.read_text()
    path.write_text(good + "this line is not a key\n")
    # A worker looks at the file when it answers a request (at most once a second).
    wait_for(lambda: every_worker(carol, 200) and server.log_text().count("expected NAME:SHA256") >= 2, 15,
             "the malformed file reported by both workers")
    assert every_worker(new_alice, 200) and every_worker(carol, 200)
    assert "keeping the 2 keys read before" in server.log_text()
    assert metric(server, carol, "api_key_file_failures_total") >= 1
    path.write_text(good.replace(key_hash(carol), key_hash("bpk_replaced")))
    wait_for(lambda: every_worker(carol, 401), 15, "the repaired file read")


def test_which_paths_need_a_key_is_configurable(start_server, tmp_path):
    path = tmp_path / "api-keys"
    key = add_key(path, "ops")
    server = start_server({"API_KEYS_FILE": str(path), "API_KEYS_PATHS": "/predict"})
    assert requests.post(server.url + "/predict", data=ROW, timeout=TIMEOUT).status_code == 401
    assert requests.post(server.url + "/predict", data=ROW, headers=bearer(key), timeout=TIMEOUT).status_code == 200
    assert requests.get(server.url + "/metrics", timeout=TIMEOUT).status_code == 200
    assert requests.get(server.url + "/model", timeout=TIMEOUT).status_code == 200


def test_without_a_key_file_nothing_asks_for_a_key(server):
    for headers in ({}, bearer("anything"), {"X-API-Key": ""}):
        assert requests.post(server.url + "/predict", data=ROW, headers=headers, timeout=TIMEOUT).status_code == 200
    assert requests.get(server.url + "/metrics", timeout=TIMEOUT).status_code == 200


def test_a_missing_key_file_stops_the_server_at_start(start_server, tmp_path):
    server = start_server({"API_KEYS_FILE": str(tmp_path / "nothing")}, wait=False)
    wait_for(lambda: server.process.poll() is not None, 60, "gunicorn to exit")
    assert server.process.returncode != 0
    assert "cannot start: cannot read the API key file" in server.log_text()


# --- the OpenAPI document and /docs ------------------------------------------------------------


def test_the_openapi_document_declares_the_key_schemes(keyed, server):
    keyed_document = requests.get(keyed[0].url + "/openapi.json", timeout=TIMEOUT).json()
    open_document = requests.get(server.url + "/openapi.json", timeout=TIMEOUT).json()
    for document in (keyed_document, open_document):
        validate(document)
        assert document["components"]["securitySchemes"] == SECURITY_SCHEMES
    needs = {(path, method) for path, operations in keyed_document["paths"].items()
             for method, operation in operations.items() if "security" in operation}
    assert needs == {("/predict", "post"), ("/model", "get"), ("/models", "get"), ("/models/{version}", "get"),
                     ("/models/{version}/{picture}", "get"), ("/metrics", "get")}
    predict = keyed_document["paths"]["/predict"]["post"]
    assert predict["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}] and "401" in predict["responses"]
    # Keys off: nothing requires one.
    assert not any("security" in operation or "401" in operation["responses"]
                   for operations in open_document["paths"].values() for operation in operations.values())


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_the_docs_page_sends_the_key_it_is_given(keyed, tmp_path):
    """In a real browser: /docs, "Authorize" with the key, then "Execute" on POST /predict answers 200
    (without the key, the same gets the 401)."""
    server, keys = keyed
    before = len([e for e in server.access_lines() if e["path"] == "/predict"])
    with Browser(tmp_path / "profile") as browser:
        browser.open(server.url + "/docs")
        wait_for(lambda: browser.evaluate("!!document.querySelector('.opblock-post')"), 30, "the operations shown")

        def execute() -> str:
            """Open POST /predict, press Execute with its first example, and return the status shown."""
            browser.evaluate("""(() => {
                const toggle = document.querySelector('.opblock-post .opblock-summary-control');
                if (toggle.getAttribute('aria-expanded') !== 'true') toggle.click();
            })()""")
            wait_for(lambda: browser.evaluate("!!document.querySelector('.opblock-post .execute')"), 30,
                     "the Execute button")
            shown = ("(document.querySelector('.opblock-post .live-responses-table tbody .response-col_status') "
                     "|| {}).textContent")
            # A click that lands before the page has wired the button does nothing: press again
            # until an answer shows (a second request, if the first was only slow, changes nothing).
            for _ in range(6):
                browser.evaluate("document.querySelector('.opblock-post .execute').click()")
                try:
                    return wait_for(lambda: browser.evaluate(shown), 5, "the live response")
                except AssertionError:
                    continue
            raise AssertionError("no answer shown after pressing Execute six times")

        assert execute().strip().startswith("401")
        browser.evaluate(f"window.ui.preauthorizeApiKey('bearerAuth', {json.dumps(keys['alice'])})")
        browser.evaluate("document.querySelector('.opblock-post .btn-clear') && "
                         "document.querySelector('.opblock-post .btn-clear').click()")
        wait_for(lambda: not browser.evaluate("!!document.querySelector('.opblock-post .live-responses-table')"), 30,
                 "the previous answer cleared")
        assert execute().strip().startswith("200")
        browser.screenshot(tmp_path / "docs-with-key.png")
    lines = [e for e in server.access_lines() if e["path"] == "/predict"][before:]
    assert lines[0]["status"] == 401 and lines[0]["key"] is None
    assert lines[-1]["status"] == 200 and lines[-1]["key"] == "alice"
