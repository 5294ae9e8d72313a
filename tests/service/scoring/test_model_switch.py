"""A worker's switch between model versions (service/scoring/model_switch.py), in process: what it serves,
when it switches, what a request in flight uses, and what it does with a version it cannot load.
The same under gunicorn and load: tests/service/scoring/test_model_switch_live.py."""

from __future__ import annotations

import io
import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from flaskapp import create_app
from lib.core.artifacts import MODEL_FILE, SCALER_FILE
from lib.core.reference import reference_probabilities
from lib.store.versions import POINTER_FILE, Pointer
from service.scoring.model_switch import EXTENSION
from tests.lib.core.test_artifacts import flip_byte
from tests.support.live_server import wait_for
from tests.support.metrics_text import metric_value

ROWS = 40
TOLERANCE = 1e-9


@pytest.fixture()
def store_app(two_versions):
    """An app on the two-version store (``a`` active), and its switch."""
    app = create_app({"model_store": two_versions.store.root, "model_dir": None, "access_log": False})
    switch = app.extensions[EXTENSION]
    yield app, switch
    switch.stop()


@pytest.fixture(scope="module")
def rows(test_rows) -> list[dict]:
    return test_rows[:ROWS]


def expected(store, version, rows) -> np.ndarray:
    """The version's probabilities by the reference path (pandas and the pickled stages)."""
    return reference_probabilities(store.verify(version), pd.DataFrame(rows))


def scored(client, rows) -> tuple[str, np.ndarray]:
    reply = client.post("/predict", json=rows)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return reply.headers["X-Model-Version"], np.array([r["probability_positiveclass"] for r in reply.get_json()])


def metric(client, name: str, **labels) -> float:
    return metric_value(client.get("/metrics").get_data(as_text=True), name, **labels)


def write_pointer(store, version: str, previous: str | None = None) -> None:
    """Point the store at ``version`` by hand, as an operator editing the file would (``use``
    would refuse a bad version)."""
    (store.root / POINTER_FILE).write_bytes(Pointer(version, previous, "2026-01-01T00:00:00.000+00:00").encode())


def test_the_active_version_serves_and_names_every_answer(store_app, two_versions, rows):
    app, _ = store_app
    client = app.test_client()
    version, probabilities = scored(client, rows)
    assert version == two_versions.a
    assert np.abs(probabilities - expected(two_versions.store, two_versions.a, rows)).max() <= TOLERANCE
    for path in ("/model", "/models", "/ready", "/health", "/no/such/path"):
        assert client.get(path).headers["X-Model-Version"] == two_versions.a, path
    card = client.get("/model").get_json()
    assert card["model_version"] == two_versions.a and "golden" not in card
    assert card["lifecycle"]["active_version"] == two_versions.a and card["lifecycle"]["failed_switch"] is None
    assert card["lifecycle"]["poll_seconds"] == 2.0
    listing = client.get("/models").get_json()
    assert (listing["active_version"], listing["serving_version"]) == (two_versions.a, two_versions.a)
    assert {e["version"]: (e["active"], e["serving"]) for e in listing["versions"]} == {
        two_versions.a: (True, True), two_versions.b: (False, False)}


def test_a_switch_takes_effect_at_the_next_request(store_app, two_versions, rows):
    app, switch = store_app
    client = app.test_client()
    store, a, b = two_versions
    store.use(b)
    assert scored(client, rows)[0] == a  # not before the worker has read the pointer
    assert switch.check() is True
    version, probabilities = scored(client, rows)
    assert version == b
    assert np.abs(probabilities - expected(store, b, rows)).max() <= TOLERANCE
    assert client.get("/model").get_json()["model_version"] == b
    assert client.get("/ready").get_json() == {"status": "ready", "model_version": b}
    assert metric(client, "model_info", version=b) == 1 and metric(client, "model_info", version=a) == 0
    assert metric(client, "model_switches_total", version=b) == 1
    # Back again: the same in reverse, and an unchanged pointer loads nothing.
    store.use(a)
    assert switch.check() is True and switch.check() is False
    assert scored(client, rows)[0] == a
    assert metric(client, "model_switches_total") == 2


class SwitchingBody(io.BytesIO):
    """A request body that, while the endpoint reads it, makes the worker switch versions."""

    def __init__(self, data: bytes, switch_now):
        super().__init__(data)
        self.switch_now = switch_now

    def _first_read(self) -> None:
        if self.switch_now is not None:
            self.switch_now()
            self.switch_now = None

    def read(self, *args):
        self._first_read()
        return super().read(*args)

    def readinto(self, buffer):
        self._first_read()
        return super().readinto(buffer)


def test_a_request_in_flight_finishes_on_the_model_it_started_with(store_app, two_versions, rows):
    app, switch = store_app
    client = app.test_client()
    store, a, b = two_versions

    def switch_now():
        store.use(b)
        assert switch.check() is True

    body = json.dumps(rows).encode()
    reply = client.post("/predict", input_stream=SwitchingBody(body, switch_now),
                        headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
    assert reply.status_code == 200
    assert reply.headers["X-Model-Version"] == a
    got = np.array([r["probability_positiveclass"] for r in reply.get_json()])
    assert np.abs(got - expected(store, a, rows)).max() <= TOLERANCE
    assert scored(client, rows)[0] == b


def point_to_missing(store, b):
    shutil.rmtree(store.directory(b))
    write_pointer(store, b)
    return f"no version {b} in the model store"


def point_to_half_written(store, b):
    (store.directory(b) / MODEL_FILE).unlink()
    write_pointer(store, b)
    return f"version {b}: model.pkl is missing from the model directory"


def point_to_tampered(store, b):
    flip_byte(store.directory(b) / SCALER_FILE)
    write_pointer(store, b)
    return f"version {b}: scaler.pkl: sha256 does not match manifest.json; refusing to unpickle it"


def point_to_nonsense(store, b):
    (store.root / POINTER_FILE).write_text('{"version": ')
    return "active.json is not valid JSON"


def make_the_pointer_unreadable(store, b):
    # A directory where the file should be: reading it fails as an unreadable file would.
    (store.root / POINTER_FILE).unlink()
    (store.root / POINTER_FILE).mkdir()
    return "the pointer cannot be read (IsADirectoryError: Is a directory)"


def remove_the_pointer(store, b):
    (store.root / POINTER_FILE).unlink()
    return "the model store has no active pointer any more"


@pytest.mark.parametrize("damage", [point_to_missing, point_to_half_written, point_to_tampered, point_to_nonsense,
                                    remove_the_pointer, make_the_pointer_unreadable],
                         ids=["missing-version", "half-written", "tampered", "malformed-pointer", "no-pointer",
                              "unreadable-pointer"])
def test_a_version_that_fails_keeps_the_worker_on_its_model(store_app, two_versions, rows, damage, caplog):
    app, switch = store_app
    client = app.test_client()
    store, a, b = two_versions
    message = damage(store, b)
    with caplog.at_level(logging.ERROR, logger="predict"):
        assert switch.check() is False
    named = None if damage in (point_to_nonsense, remove_the_pointer, make_the_pointer_unreadable) else b
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot switch to model {named or '(unreadable pointer)'}: {message}"
        + caplog.records[0].getMessage().split(message, 1)[1]]
    assert caplog.records[0].getMessage().endswith(f"; still serving {a}")

    version, probabilities = scored(client, rows)
    assert version == a
    assert np.abs(probabilities - expected(store, a, rows)).max() <= TOLERANCE
    assert client.get("/ready").status_code == 200
    listing = client.get("/models").get_json()
    assert listing["serving_version"] == a and len(listing["versions"]) >= 1
    failed = client.get("/model").get_json()["lifecycle"]["failed_switch"]
    assert failed["version"] == named and failed["error"].startswith(message)
    assert str(store.root) not in failed["error"]
    assert metric(client, "model_switch_failures_total", version=named or "") == 1
    # The same pointer is not tried again (no new failure) until it changes.
    assert switch.check() is False
    assert metric(client, "model_switch_failures_total") == 1
    # Pointing back at the served version clears the failure.
    if (store.root / POINTER_FILE).is_dir():
        (store.root / POINTER_FILE).rmdir()
    store.use(a)
    assert switch.check() is False
    assert client.get("/model").get_json()["lifecycle"]["failed_switch"] is None


def test_a_failed_version_is_tried_again_when_the_pointer_is_rewritten(store_app, two_versions, tmp_path):
    app, switch = store_app
    store, a, b = two_versions
    aside = tmp_path / "aside"
    shutil.move(store.directory(b), aside)
    write_pointer(store, b, a)
    assert switch.check() is False and switch.current.version == a
    shutil.move(aside, store.root / b)  # the version arrives (copied in late)
    assert switch.check() is False, "an unchanged pointer is not read again"
    store.use(b)
    assert switch.check() is True and switch.current.version == b
    assert switch.failed is None


def test_the_watch_thread_follows_the_pointer(two_versions):
    app = create_app({"model_store": two_versions.store.root, "model_dir": None, "access_log": False,
                      "model_poll_seconds": 0.05})
    switch = app.extensions[EXTENSION]
    switch.start()
    try:
        two_versions.store.use(two_versions.b)
        wait_for(lambda: switch.current.version == two_versions.b, 20, "the watch switching to b")
        two_versions.store.use(two_versions.a)
        wait_for(lambda: switch.current.version == two_versions.a, 20, "the watch switching back to a")
    finally:
        switch.stop()


@pytest.mark.parametrize("damage", [point_to_missing, point_to_half_written, point_to_tampered, point_to_nonsense,
                                    remove_the_pointer, make_the_pointer_unreadable],
                         ids=["missing-version", "half-written", "tampered", "malformed-pointer", "no-pointer",
                              "unreadable-pointer"])
def test_a_server_does_not_start_on_a_version_it_cannot_serve(two_versions, damage):
    message = damage(two_versions.store, two_versions.b)
    if damage is remove_the_pointer:
        message = "the model store has no active version"
    with pytest.raises(SystemExit) as refused:
        create_app({"model_store": two_versions.store.root, "model_dir": None})
    assert str(refused.value).startswith(f"cannot start: {message}")
    assert str(refused.value).endswith(f"(model store {two_versions.store.root})")


def test_model_dir_serves_one_pinned_model(model_dir, stages):
    app = create_app({"model_dir": model_dir, "access_log": False})
    switch = app.extensions[EXTENSION]
    client = app.test_client()
    assert switch.check() is False
    listing = client.get("/models").get_json()
    assert listing["active_version"] == listing["serving_version"] == stages.version
    assert [(e["version"], e["active"], e["serving"]) for e in listing["versions"]] == [(stages.version, True, True)]
    assert client.get("/model").get_json()["lifecycle"]["poll_seconds"] is None
    assert client.get("/models/2020-01-01-000000000000").status_code == 404
