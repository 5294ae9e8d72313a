"""Switching model versions under load, for real: gunicorn with two workers on a model store,
a stress loop of single rows and batches at concurrency 4, switches from A to B and back to A.

- No request fails, every answer names A or B, and every answer's probabilities and classes are
  those of the version it names (each row rescored by the reference path of both versions).
- After each switch every worker answers with the new version within SWITCH_SECONDS (README
  "Models": MODEL_POLL_SECONDS, 2 s by default, plus the time to load and verify the version),
  and no request sent later than that gets the old one.
- A worker that starts after a switch (a replacement for a killed one, or after SIGHUP) serves
  the active version from its first request.
- A pointer to a version that is not there leaves both workers on their model, ready, with the
  failure logged, counted and shown.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import requests

from bench.client import HttpClient
from bench.memory import worker_pids
from lib.core.reference import reference_probabilities
from lib.store.versions import POINTER_FILE, Pointer
from tests.support.live_server import LiveServer, wait_for
from tests.support.metrics_text import metric_value

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

#: The documented bound (README "Models"): a worker serves a new active version at most
#: MODEL_POLL_SECONDS (2 s by default) plus 3 s to load and verify it after `use` returns.
POLL_SECONDS = 2
SWITCH_SECONDS = POLL_SECONDS + 3
CONCURRENCY = 4
#: The rows the load draws from (their probabilities under both versions are computed up front).
POOL = 2000
MAX_BATCH = 200
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Answer:
    """One request of the load and what came back."""

    request_id: str
    sent: float
    received: float
    rows: tuple[int, ...]
    version: str | None
    problem: str | None


class Load:
    """CONCURRENCY threads sending single rows (two thirds) and batches of 2..MAX_BATCH random
    rows, each answer checked against the probabilities and classes of the version it names."""

    def __init__(self, url: str, rows: list[dict], expected: dict[str, tuple[np.ndarray, float]]):
        self.url, self.expected = url, expected
        self.encoded = [json.dumps(row).encode() for row in rows]
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(seed,)) for seed in range(CONCURRENCY)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _loop(self, seed: int) -> None:
        rng, client = random.Random(seed), HttpClient(self.url, timeout=60)
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                single = rng.random() < 2 / 3
                rows = (rng.randrange(POOL),) if single else tuple(rng.choices(range(POOL),
                                                                               k=rng.randint(2, MAX_BATCH)))
                body = self.encoded[rows[0]] if single else b"[" + b",".join(self.encoded[i] for i in rows) + b"]"
                request_id = f"load-{seed}-{n}"
                sent = time.time()
                try:
                    reply = client.request("POST", "/predict", body, {"Content-Type": "application/json",
                                                                       "X-Request-ID": request_id})
                except OSError as exc:
                    self.answers.append(Answer(request_id, sent, time.time(), rows, None, repr(exc)))
                    continue
                problem = self._check(reply.status, reply.body, rows, reply.model_version)
                self.answers.append(Answer(request_id, sent, time.time(), rows, reply.model_version, problem))
        finally:
            client.close()

    def _check(self, status: int, body: bytes, rows: tuple[int, ...], version: str | None) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        if version not in self.expected:
            return f"X-Model-Version {version!r} is neither version"
        probabilities, threshold = self.expected[version]
        results = json.loads(body)
        got = np.array([r["probability_positiveclass"] for r in results])
        want = probabilities[list(rows)]
        if len(got) != len(rows) or np.abs(got - want).max() > TOLERANCE:
            return f"probabilities are not those of {version}"
        if [r["predicted_class"] for r in results] != (want >= threshold).astype(int).tolist():
            return f"classes are not those of {version}"
        return None


def served_by(server: LiveServer) -> dict[str, int]:
    """Request id -> the pid of the worker that answered it, from the access log."""
    return {entry["request_id"]: entry["pid"] for entry in server.access_lines()}


def switch_log_times(server: LiveServer, version: str) -> dict[int, float]:
    """When each worker logged its switch to ``version`` (epoch seconds), by pid."""
    times = {}
    for line in server.log_text().splitlines():
        if "predict: switched from model" in line and line.split(" to ")[1].startswith(version):
            stamp, pid = line[:23], int(line.split("[", 1)[1].split("]", 1)[0])
            times[pid] = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return times


@pytest.fixture()
def store_server(two_versions, tmp_path):
    """gunicorn, two workers, on the two-version store (``a`` active), the default poll interval."""
    live = LiveServer(env={"MODEL_STORE": str(two_versions.store.root)}, workers=2,
                      log_path=tmp_path / "gunicorn.log").start()
    yield live
    live.stop()


@pytest.fixture()
def expected(two_versions, test_rows) -> dict[str, tuple[np.ndarray, float]]:
    """Each version's probabilities of the first POOL test rows (reference path) and threshold."""
    frame = pd.DataFrame(test_rows[:POOL])
    out = {}
    for version in (two_versions.a, two_versions.b):
        stages = two_versions.store.verify(version)
        out[version] = (reference_probabilities(stages, frame), stages.threshold)
    assert np.abs(out[two_versions.a][0] - out[two_versions.b][0]).min() > 1e-6, "the versions must differ"
    return out


def test_switching_under_load_loses_no_request_and_mixes_no_versions(store_server, two_versions, expected,
                                                                       test_rows):
    store, a, b = two_versions
    assert requests.get(store_server.url + "/model", timeout=10).json()["lifecycle"]["poll_seconds"] == POLL_SECONDS
    workers = wait_for(lambda: worker_pids(store_server.process.pid) if len(worker_pids(
        store_server.process.pid)) == 2 else None, 30, "two workers")
    switches = []
    with Load(store_server.url, test_rows[:POOL], expected) as load:

        def answered(after: float, version: str) -> set[int]:
            pids = served_by(store_server)
            return {pids[x.request_id] for x in list(load.answers)
                    if x.sent > after and x.version == version and x.request_id in pids}

        wait_for(lambda: answered(0, a) >= set(workers), 60, "both workers answering with a")
        for version, command in ((b, b), (a, "previous")):
            used = time.time()
            store.use(store.resolve(command))
            wait_for(lambda v=version, t=used: answered(t, v) >= set(workers), SWITCH_SECONDS + 30,
                     f"both workers answering with {version}")
            # Load goes on past the bound, so that requests sent after it are there to check.
            wait_for(lambda t=used: len([x for x in load.answers if x.sent > t + SWITCH_SECONDS]) >= 200,
                     SWITCH_SECONDS + 60, "200 answers after the bound")
            switches.append((version, used))

    answers = load.answers
    failed = [x for x in answers if x.problem]
    assert failed == [], f"{len(failed)} of {len(answers)} requests failed: {failed[:5]}"
    assert {x.version for x in answers} == {a, b}
    for (version, used), (_, following) in zip(switches, [*switches[1:], (None, float("inf"))], strict=True):
        stale = [x for x in answers if used + SWITCH_SECONDS < x.sent < following and x.version != version]
        assert stale == [], f"{len(stale)} answers from the old version after the bound: {stale[:3]}"
        logged = switch_log_times(store_server, version)
        assert set(logged) == set(workers), logged
        last_old = max((x.received for x in answers if used < x.sent < following and x.version != version),
                       default=used)
        delays = ", ".join(f"{t - used:.2f}" for t in sorted(logged.values()))
        print(f"\n[switch] to {version} under load: workers switched {delays} s after `use`; "
              f"last answer from the old version {last_old - used:.2f} s after it")
    singles = sum(len(x.rows) == 1 for x in answers)
    print(f"[switch] {len(answers)} requests ({singles} single rows, {len(answers) - singles} batches, "
          f"{sum(len(x.rows) for x in answers)} rows), 0 failed; answers by version: "
          + ", ".join(f"{v} {sum(x.version == v for x in answers)}" for v in (a, b)))


def test_a_worker_started_after_a_switch_serves_the_active_version(store_server, two_versions):
    store, a, b = two_versions
    master = store_server.process.pid
    workers = wait_for(lambda: worker_pids(master) if len(worker_pids(master)) == 2 else None, 30, "two workers")
    store.use(b)
    wait_for(lambda: set(switch_log_times(store_server, b)) == set(workers), SWITCH_SECONDS + 30,
             "both workers switching to b")

    def versions_by_worker(pids: set[int], count: int = 40) -> dict[int, set[str]]:
        seen: dict[int, set[str]] = {}
        for n in range(count):
            rid = f"probe-{time.monotonic_ns()}-{n}"
            reply = requests.post(store_server.url + "/predict", json={"x5": "monday"}, headers={"X-Request-ID": rid},
                                  timeout=30)
            assert reply.status_code == 200
            seen.setdefault(served_by(store_server).get(rid), set()).add(reply.headers["X-Model-Version"])
        return {pid: versions for pid, versions in seen.items() if pid in pids}

    # A killed worker's replacement is forked from the master, which preloaded a.
    os.kill(workers[0], signal.SIGKILL)
    replaced = wait_for(lambda: set(worker_pids(master)) - set(workers) if len(worker_pids(master)) == 2 else None,
                        30, "a replacement worker")
    answered = wait_for(lambda: versions_by_worker(replaced), 60, "the replacement answering")
    assert answered == {pid: {b} for pid in replaced}
    # SIGHUP: gunicorn replaces every worker; the new ones read the pointer before serving.
    before = set(worker_pids(master))
    store_server.process.send_signal(signal.SIGHUP)
    fresh = wait_for(lambda: set(worker_pids(master)) if len(worker_pids(master)) == 2 and not
                     set(worker_pids(master)) & before else None, 60, "two new workers after SIGHUP")
    answered = wait_for(lambda: (lambda seen: seen if set(seen) == fresh else None)(versions_by_worker(fresh)), 60,
                        "both new workers answering")
    assert answered == {pid: {b} for pid in fresh}


def test_a_pointer_to_a_missing_version_keeps_every_worker_on_its_model(store_server, two_versions):
    store, a, _ = two_versions
    missing = "2020-01-01-000000000000"
    (store.root / POINTER_FILE).write_bytes(Pointer(missing, a, "2026-01-01T00:00:00.000+00:00").encode())
    message = f"cannot switch to model {missing}: no version {missing} in the model store"
    wait_for(lambda: store_server.log_text().count(message) == 2, SWITCH_SECONDS + 30, "both workers refusing")
    for _ in range(10):
        reply = requests.post(store_server.url + "/predict", json={"x5": "monday"}, timeout=30)
        assert reply.status_code == 200 and reply.headers["X-Model-Version"] == a
    assert requests.get(store_server.url + "/ready", timeout=10).json() == {"status": "ready", "model_version": a}
    card = requests.get(store_server.url + "/model", timeout=10).json()
    assert card["model_version"] == a
    assert card["lifecycle"]["active_version"] == missing
    assert card["lifecycle"]["failed_switch"]["version"] == missing
    assert card["lifecycle"]["failed_switch"]["error"].startswith(f"no version {missing} in the model store")
    metrics = requests.get(store_server.url + "/metrics", timeout=10).text
    assert metric_value(metrics, "model_switch_failures_total", version=missing) == 2
