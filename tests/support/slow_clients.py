"""Slow clients for tests: connections that send the start of a request and then one byte at a time."""

from __future__ import annotations

import select
import socket
import threading
from pathlib import Path

import requests

from tests.support.live_server import accepted, wait_for

PROJECT_DIR = Path(__file__).resolve().parents[2]
ROW_BODY = (PROJECT_DIR / "docs" / "examples" / "row.json").read_bytes()
#: Headers, then a body that is never all sent (a byte every DRIP_SECONDS).
SLOW_BODY_HEAD = (b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n")
#: Part of a header section that never ends (slowloris): a header value grows by a byte at a time.
SLOW_HEADER_HEAD = b"POST /predict HTTP/1.1\r\nHost: slow\r\nX-Slow: "
DRIP_SECONDS = 0.5


class SlowClients:
    """``count`` connections to ``port`` that each send ``head``, then one byte every DRIP_SECONDS
    (a space: whitespace in a JSON body, or more of a header value) until ``close``."""

    def __init__(self, port: int, count: int, head: bytes):
        self.port = port
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]
        for sock in self.socks:
            sock.sendall(head)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self) -> None:
        while not self._stop.wait(DRIP_SECONDS):
            for sock in self.socks:
                try:
                    sock.send(b" ")
                except OSError:
                    pass  # answered and closed: a test looks at that itself

    def wait_accepted(self, seconds: float = 30) -> None:
        """Until the server has accept()ed every connection (none waits in its listen backlog)."""
        wait_for(lambda: all(accepted(self.port, s.getsockname()[1]) for s in self.socks), seconds,
                 "every slow connection accepted")

    def answered(self) -> int:
        """How many connections got any byte back, or were closed, looked at without waiting."""
        readable, _, _ = select.select(self.socks, [], [], 0)
        return len(readable)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()

    def __enter__(self) -> SlowClients:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def answers_while_slow(url: str, slow: SlowClients) -> dict[str, float]:
    """Ask ``/health`` and a one-row ``/predict`` while ``slow`` hold their connections: both must
    answer 200 before any slow connection got an answer. The latencies, in seconds."""
    latencies = {}
    health = requests.get(url + "/health", timeout=(10, 60))
    latencies["health"] = health.elapsed.total_seconds()
    predict = requests.post(url + "/predict", data=ROW_BODY, headers={"Content-Type": "application/json"},
                            timeout=(10, 60))
    latencies["predict"] = predict.elapsed.total_seconds()
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert predict.status_code == 200 and len(predict.json()) == 1, predict.text[:300]
    assert slow.answered() == 0, "a slow connection was answered before its request was in"
    return latencies
