"""Life cycle of a gunicorn server.

- SIGTERM to the master while a 10,000-row request is in flight: the request gets its whole
  answer, then the server exits 0.
- DRAIN_SECONDS: SIGTERM first turns /ready to 503 while requests are still answered, then stops.
- SIGKILL of a worker: the master starts another, and requests go on being answered.
- The port opens only once the artifacts are verified and loaded; /ready follows the files.
- Damaged, missing or version-mismatched artifacts: gunicorn exits non-zero without serving,
  its log naming the problem, and nothing unverified is unpickled.
- bench/soak.py runs (a tiny count; the real run is recorded in docs/SOAK.md).
"""

from __future__ import annotations

import http.client
import json
import os
import pickle
import signal
import subprocess
import sys

import pytest
import requests

from bench.memory import worker_pids
from tests.lib.core.test_artifacts import reseal
from tests.support.live_server import PROJECT_DIR, accepted, wait_for

pytestmark = pytest.mark.server

TIMEOUT = (5, 120)
ROW = {"x5": "friday", "x12": "$-5,032.58", "x31": "japan", "x44": 0.1, "x81": "Sept", "x91": 0.4}


# -- Signals ---------------------------------------------------------------------------------------


def test_sigterm_during_a_10000_row_request_lets_it_finish(start_server, server, test_body):
    expected = requests.post(server.url + "/predict", data=test_body, timeout=TIMEOUT).json()
    live = start_server(workers=1)
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=120)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(test_body)))
        connection.endheaders()
        half = len(test_body) // 2
        connection.send(test_body[:half])
        client_port = connection.sock.getsockname()[1]
        wait_for(lambda: accepted(live.port, client_port), 30, "the worker accepting the request")
        # The worker has the request and waits for the rest of its body when the master is told to stop.
        live.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "Handling signal: term" in live.log_text(), 30, "the master handling SIGTERM")
        connection.send(test_body[half:])
        response = connection.getresponse()
        status, body = response.status, response.read()
    finally:
        connection.close()
    assert status == 200
    assert json.loads(body) == expected and len(expected) == 10_000
    assert live.process.wait(30) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(live.url + "/health", timeout=TIMEOUT)


def test_a_killed_worker_is_replaced_and_requests_go_on(start_server):
    live = start_server(workers=2)

    def workers(without: int | None = None) -> list[int] | None:
        pids = worker_pids(live.process.pid)
        return pids if len(pids) == 2 and without not in pids else None

    before = wait_for(workers, 30, "two workers")
    os.kill(before[0], signal.SIGKILL)
    # The other worker answers meanwhile.
    for _ in range(5):
        assert requests.post(live.url + "/predict", json=ROW, timeout=TIMEOUT).status_code == 200
    after = wait_for(lambda: workers(without=before[0]), 30, "a replacement worker")
    assert before[1] in after
    answers = [requests.post(live.url + "/predict", json=[ROW] * 3, timeout=TIMEOUT) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    assert len({a.text for a in answers}) == 1
    assert requests.get(live.url + "/ready", timeout=TIMEOUT).status_code == 200
    assert f"(pid:{before[0]}) was sent SIGKILL" in live.log_text()


def test_sigterm_with_drain_seconds_turns_ready_503_while_requests_are_still_answered(start_server):
    live = start_server({"DRAIN_SECONDS": "8"}, workers=2)
    wait_for(lambda: len(worker_pids(live.process.pid)) == 2 or None, 30, "two workers")
    assert requests.get(live.url + "/ready", timeout=TIMEOUT).status_code == 200
    live.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining for 8 s" in live.log_text(), 30, "the master starting its drain")
    # The master set the flag; the workers that answer see it (shared memory made before the fork).
    ready = [requests.get(live.url + "/ready", timeout=TIMEOUT) for _ in range(6)]
    assert [(r.status_code, r.json()["message"]) for r in ready] == [(503, "draining: this server is stopping")] * 6
    assert requests.get(live.url + "/health", timeout=TIMEOUT).status_code == 200
    assert requests.post(live.url + "/predict", json=ROW, timeout=TIMEOUT).status_code == 200
    assert live.process.wait(60) == 0


# -- Readiness ---------------------------------------------------------------------------------------


def test_port_opens_only_after_the_artifacts_are_verified_and_ready_follows_the_files(start_server, model_copy):
    live = start_server({"MODEL_DIR": str(model_copy)}, workers=1, wait=False)
    answers = []

    def ready() -> bool:
        try:
            answers.append(requests.get(live.url + "/ready", timeout=TIMEOUT).status_code)
        except requests.ConnectionError:
            return False
        return answers[-1] == 200

    wait_for(ready, 60, "/ready answering 200")
    assert answers == [200]  # never an answer before the artifacts were verified
    log = live.log_text()
    assert log.index(" loaded from ") < log.index("Listening at")
    # A file going missing takes the server out of rotation; putting it back brings it in.
    scaler = model_copy / "scaler.pkl"
    data = scaler.read_bytes()
    scaler.unlink()
    gone = requests.get(live.url + "/ready", timeout=TIMEOUT)
    assert gone.status_code == 503 and "scaler.pkl" in gone.json()["message"]
    assert str(model_copy) not in gone.text and "/" not in gone.json()["message"]  # no file path
    assert requests.get(live.url + "/health", timeout=TIMEOUT).status_code == 200
    scaler.write_bytes(data)
    assert requests.get(live.url + "/ready", timeout=TIMEOUT).status_code == 200


# -- Artifact integrity at start -------------------------------------------------------------------------


class CreatesFile:
    """A pickle that, when loaded, creates a file: what a substituted artifact could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def older_numpy(model_dir):
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["library_versions"]["numpy"] = "1.0.0"
    reseal(model_dir, manifest)


DAMAGES = {
    "tampered": (lambda d: flip_a_byte(d / "model.pkl"), "model.pkl: sha256 does not match"),
    "truncated": (lambda d: (d / "scaler.pkl").write_bytes((d / "scaler.pkl").read_bytes()[:100]),
                  "scaler.pkl: sha256 does not match"),
    "missing stage": (lambda d: (d / "imputer.pkl").unlink(), "imputer.pkl is missing"),
    "missing manifest": (lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
    "edited manifest": (lambda d: (d / "manifest.json").write_text(
        (d / "manifest.json").read_text().replace('"threshold": ', '"threshold": 0.1, "was": ', 1)),
        "manifest.json does not match its own checksum"),
    "version mismatch": (older_numpy, "artifacts were built with other library versions: numpy 1.0.0"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_artifacts_stop_the_start_naming_the_problem(start_server, model_copy, damage):
    spoil, message = DAMAGES[damage]
    spoil(model_copy)
    live = start_server({"MODEL_DIR": str(model_copy)}, wait=False)
    assert live.process.wait(60) != 0
    log = live.log_text()
    assert f"cannot start: {message}" in log, log[-2000:]
    assert "Listening at" not in log and "Booting worker" not in log


def test_substituted_pickle_is_refused_without_being_unpickled(start_server, model_copy, tmp_path):
    marker = tmp_path / "unpickled"
    (model_copy / "model.pkl").write_bytes(pickle.dumps(CreatesFile(marker)))
    live = start_server({"MODEL_DIR": str(model_copy)}, wait=False)
    assert live.process.wait(60) != 0
    assert "cannot start: model.pkl: sha256 does not match manifest.json" in live.log_text()
    assert not marker.exists()


def test_version_mismatch_may_be_overridden_explicitly(start_server, model_copy):
    older_numpy(model_copy)
    live = start_server({"MODEL_DIR": str(model_copy), "ALLOW_VERSION_MISMATCH": "1"})
    assert requests.post(live.url + "/predict", json=ROW, timeout=TIMEOUT).status_code == 200


# -- Soak: the script runs; its real figures are in docs/SOAK.md -----------------------------------


def test_soak_script_runs_a_tiny_soak(server, tmp_path):
    figures_path = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--url", server.url, "--master-pid", str(server.process.pid),
         "--singles", "200", "--batches", "4", "--batch-rows", "300", "--segments", "2", "--warmup-singles", "20",
         "--warmup-batches", "2", "--max-growth", "1", "--json", str(figures_path)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(figures_path.read_text())
    assert figures["errors"] == 0 and figures["unsent"] == 0 and not figures["workers_replaced"]
    assert [s["after"] for s in figures["samples"]] == ["warm-up", "segment 1", "segment 2"]
    assert figures["samples"][-1]["singles"] == 200 and figures["samples"][-1]["batches"] == 4
    assert len(figures["growth"]) == 2
