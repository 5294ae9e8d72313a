"""Shared fixtures: artifacts, the Flask app, a live gunicorn server, the test rows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from lib.artifacts import load_artifacts
from tests.live_server import PROJECT_DIR, LiveServer

MODEL_DIR = PROJECT_DIR / "lib" / "model_components"
DATA_DIR = PROJECT_DIR / "lib" / "data"
TEST_JSON = DATA_DIR / "test.json"


def _build_artifacts() -> None:
    """run_tests.sh builds them; this covers a bare `pytest` on a fresh clone."""
    if not (DATA_DIR / "train.csv").exists():
        subprocess.run([sys.executable, "-m", "lib.synth"], cwd=PROJECT_DIR, check=True)
    subprocess.run([sys.executable, "-m", "lib.train"], cwd=PROJECT_DIR, check=True)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The project's trained artifacts (built once if absent)."""
    if not (MODEL_DIR / "manifest.json").exists():
        _build_artifacts()
    return MODEL_DIR


@pytest.fixture(scope="session")
def stages(model_dir):
    """The verified, unpickled stages."""
    return load_artifacts(model_dir)


@pytest.fixture(scope="session")
def test_body(model_dir) -> bytes:
    """lib/data/test.json as bytes."""
    return TEST_JSON.read_bytes()


@pytest.fixture(scope="session")
def test_rows(test_body) -> list[dict]:
    """The 10,000 generated test rows (lib/data/test.json)."""
    return json.loads(test_body)


@pytest.fixture(scope="module")
def http():
    """A requests session for the tests of one module."""
    with requests.Session() as session:
        yield session


@pytest.fixture()
def model_copy(model_dir, tmp_path) -> Path:
    """A private copy of the artifacts that a test may damage."""
    target = tmp_path / "model_components"
    shutil.copytree(model_dir, target)
    return target


@pytest.fixture(scope="session")
def app(model_dir):
    """The Flask app on the project's artifacts."""
    from flaskapp import create_app

    return create_app({"model_dir": model_dir})


@pytest.fixture()
def client(app):
    """Flask's test client (for fast, in-process checks)."""
    return app.test_client()


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory):
    """A real gunicorn server (2 workers) on a free port, shared by the session."""
    log = tmp_path_factory.mktemp("server") / "gunicorn.log"
    live = LiveServer(env={"MODEL_DIR": str(model_dir)}, workers=2, log_path=log).start()
    yield live
    live.stop()


@pytest.fixture()
def start_server(model_dir, tmp_path):
    """A factory of private gunicorn servers (env overrides the defaults); each one is stopped
    after the test, passed or failed, even if it never became ready."""
    started: list[LiveServer] = []

    def start(env: dict[str, str] | None = None, workers: int = 1, wait: bool = True) -> LiveServer:
        live = LiveServer(env={"MODEL_DIR": str(model_dir), **(env or {})}, workers=workers,
                          log_path=tmp_path / f"gunicorn-{len(started)}.log")
        started.append(live)
        return live.start(wait=wait)

    yield start
    for live in started:
        live.stop()
