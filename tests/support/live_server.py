"""A real gunicorn server on a port of its own, for tests that must go through HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from service.ops.settings import Settings
from tests.support.metrics_text import metric_value

PROJECT_DIR = Path(__file__).resolve().parents[2]
#: What the service reads from its environment: service/ops/settings.py's variables, and what gunicorn.conf.py
#: and gunicorn themselves read. A test server gets only the values its test names: a
#: developer's shell (MAX_ROWS=..., GUNICORN_CMD_ARGS=...) must not change what a test sees.
SERVICE_VARIABLES = frozenset(set(Settings.variables().values())
                              | {"PROMETHEUS_MULTIPROC_DIR", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                 "MKL_NUM_THREADS"})
SERVICE_PREFIXES = ("GUNICORN_", "FLASK_")


def wait_for(condition, seconds: float, what: str, interval: float = 0.05):
    """Poll ``condition`` every ``interval`` s until it returns something true (returned); fail
    after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def successful_predictions(url: str) -> float:
    """The successful ``POST /predict`` requests a server counted in its own /metrics."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    return metric_value(text, "http_requests_total", endpoint="/predict", method="POST", status="200")


def without_service_settings(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` less every variable the service reads (SERVICE_VARIABLES, SERVICE_PREFIXES)."""
    return {k: v for k, v in environ.items() if k not in SERVICE_VARIABLES and not k.startswith(SERVICE_PREFIXES)}


def accepted(server_port: int, client_port: int) -> bool:
    """Whether a server on 127.0.0.1:``server_port`` has accept()ed the connection from ``client_port``.

    Linux shows a connection still waiting in the listen backlog in /proc/net/tcp with inode 0: it
    gets a socket (and an inode) only when a process accepts it.
    """
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cells = line.split()
        local, remote, inode = cells[1], cells[2], int(cells[9])
        if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
            return inode != 0
    return False


class LiveServer:
    """gunicorn with the project's gunicorn.conf.py on 127.0.0.1, on a port no other server can take.

    ``start`` binds a socket to a port the kernel picks and hands it to gunicorn (``BIND=fd://N``):
    the port is this server's from the moment it is chosen, so whatever answers on it is this
    server. The socket is bound but not listening, so the port still opens only when gunicorn
    listens, after it has loaded the app. Each server gets a Prometheus metrics directory of its
    own, removed by ``stop`` (unless ``env`` names one).
    """

    def __init__(self, env: dict[str, str] | None = None, workers: int = 2, log_path: Path | None = None,
                 app: str | None = None, metrics_dir: bool = True):
        """``app`` replaces gunicorn.conf.py's ``wsgi_app`` (bench/ serves its floor app this way);
        ``metrics_dir`` false leaves the metrics directory to gunicorn.conf.py, as run_api.sh does."""
        self.app = app
        self.own_metrics_dir = metrics_dir
        self.env = {**without_service_settings(os.environ), "WEB_CONCURRENCY": str(workers), **(env or {})}
        self.port: int | None = None
        self.url: str | None = None
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log_file = None
        self._metrics_dir: str | None = None

    def start(self, wait: bool = True, timeout: float = 60) -> LiveServer:
        """Start gunicorn; with ``wait``, return once /ready answers 200."""
        if self.log_path:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        log = self._log_file or subprocess.DEVNULL
        env = dict(self.env)
        if self.own_metrics_dir and not env.get("PROMETHEUS_MULTIPROC_DIR"):
            self._metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="live-server-metrics-")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            self.url = f"http://127.0.0.1:{self.port}"
            env["BIND"] = f"fd://{sock.fileno()}"
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *([self.app] if self.app else [])],
                cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                pass_fds=(sock.fileno(),),
            )
        if wait:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop()  # never leave a server behind that did not come up
                raise
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Poll /ready until 200; fail with the server log if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}: {self.log_text()[-2000:]}")
            try:
                if requests.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout} s: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        """What the server wrote so far (empty if not logged to a file)."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def access_lines(self) -> list[dict]:
        """The app's JSON access lines in the log so far (service/ops/access_log.py), in order."""
        lines = []
        for text in self.log_text().splitlines():
            try:
                entry = json.loads(text) if text.startswith("{") else None
            except ValueError:  # a message of gunicorn's or the app's that happens to start with "{"
                continue
            if isinstance(entry, dict) and "request_id" in entry:
                lines.append(entry)
        return lines

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the master (graceful), then SIGKILL the group if it lingers; return the exit code."""
        try:
            if self.process is None or self.process.poll() is not None:
                return self.process.returncode if self.process else 0
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                return self.process.wait(5)
        finally:
            if self._log_file:
                self._log_file.close()
                self._log_file = None
            if self._metrics_dir and (self.process is None or self.process.poll() is not None):
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
                self._metrics_dir = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
