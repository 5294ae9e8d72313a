"""Two servers on one host: each keeps the files it writes to itself.

The servers here get a HOME and a TMPDIR of the test's own and no XDG_RUNTIME_DIR, so any file
a server writes outside its own directories shows up in them; their metrics directories come
from gunicorn.conf.py, as with run_api.sh.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.live_server import LiveServer, successful_predictions, wait_for

pytestmark = pytest.mark.server


def _host_env(model_dir: Path, tmp_path: Path) -> dict[str, str]:
    """One host's environment: a HOME and TMPDIR of the test's, gunicorn's socket default in HOME."""
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    return {"MODEL_DIR": str(model_dir), "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"),
            "XDG_RUNTIME_DIR": ""}


def _probability(url: str, row: dict) -> float:
    answer = requests.post(f"{url}/predict", json=row, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()[0]["probability_positiveclass"]


def _counted(server: LiveServer, expected: int) -> None:
    wait_for(lambda: successful_predictions(server.url) == expected, 10, f"a count of {expected} scored requests")


def test_two_servers_start_serve_and_stop_without_touching_each_other(model_dir, test_rows, tmp_path):
    env = _host_env(model_dir, tmp_path)
    home, tmp = Path(env["HOME"]), Path(env["TMPDIR"])
    servers = [LiveServer(env, workers=1, log_path=tmp_path / f"gunicorn-{i}.log", metrics_dir=False)
               for i in range(2)]
    first, second = servers
    try:
        for server in servers:
            server.start()
        expected = _probability(first.url, test_rows[0])
        assert _probability(second.url, test_rows[0]) == expected
        # gunicorn's control socket would be HOME/.gunicorn/gunicorn.ctl for both.
        assert not (home / ".gunicorn").exists()
        assert len(list(tmp.glob("predict-metrics-*"))) == 2  # a metrics directory each

        assert first.stop() == 0
        assert _probability(second.url, test_rows[0]) == expected
        _counted(second, 2)
        assert second.stop() == 0
    finally:
        for server in servers:
            server.stop()
    assert sorted(home.rglob("*")) == []
    assert sorted(tmp.rglob("*")) == []  # each removed its metrics directory and left nothing else


def test_a_second_server_refuses_a_metrics_directory_in_use(model_dir, test_rows, tmp_path):
    (tmp_path / "metrics").mkdir()
    env = {**_host_env(model_dir, tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    first = LiveServer(env, workers=1, log_path=tmp_path / "first.log", metrics_dir=False)
    second = LiveServer(env, workers=1, log_path=tmp_path / "second.log", metrics_dir=False)
    try:
        first.start()
        _probability(first.url, test_rows[0])
        _counted(first, 1)
        with pytest.raises(RuntimeError, match="exited with 1"):
            second.start(timeout=60)
        assert "PROMETHEUS_MULTIPROC_DIR=" in second.log_text()
        assert "in use by another running server" in second.log_text()
        # The first server's samples are still there: the second did not empty the directory.
        _probability(first.url, test_rows[0])
        _counted(first, 2)
        assert first.stop() == 0
    finally:
        first.stop()
        second.stop()
