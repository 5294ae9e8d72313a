"""A real gunicorn server on a free port, for tests that must go through HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

PROJECT_DIR = Path(__file__).resolve().parents[1]


def wait_for(condition, seconds: float, what: str):
    """Poll ``condition`` until it returns something true (returned); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """gunicorn with the project's gunicorn.conf.py, bound to 127.0.0.1 on a free port."""

    def __init__(self, env: dict[str, str] | None = None, workers: int = 2, log_path: Path | None = None,
                 app: str | None = None):
        """``app`` replaces gunicorn.conf.py's ``wsgi_app`` (bench/ serves its floor app this way)."""
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Each server gets the metrics directory its gunicorn.conf.py makes, unless env names one.
        inherited = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        self.env = {**inherited, "BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": str(workers), **(env or {})}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log_file = None

    def start(self, wait: bool = True, timeout: float = 60) -> LiveServer:
        """Start gunicorn; with ``wait``, return once /ready answers 200."""
        if self.log_path:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        log = self._log_file or subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *([self.app] if self.app else [])],
            cwd=PROJECT_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
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

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
