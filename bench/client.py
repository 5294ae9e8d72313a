"""A small HTTP/1.1 client on http.client: one connection per thread, timed requests.

The stress tool and the benchmark use it instead of requests so that they run on the
runtime requirements alone and add as little client-side cost as possible to the timings.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

JSON_HEADERS = {"Content-Type": "application/json"}
# The service's wire format as a client sees it; service/scoring/predictor.py is the server's side.
PREDICT_PATH = "/predict"
PROBABILITY = "probability_positiveclass"
SELECTED_FEATURES = "selected_features"
PREDICTED_CLASS = "predicted_class"
#: The model version that scored an answer (it changes when the server switches versions).
MODEL_VERSION_HEADER = "X-Model-Version"
# On a kept-alive connection these usually mean the server (or a proxy) closed it while idle.
# Such a failure is retried once on a new connection (POST /predict is idempotent); on a new
# connection it is a real error. gunicorn's sync workers close after every answer, so against
# them no request is ever retried.
_STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass(frozen=True)
class Reply:
    """A finished exchange: status, the whole body, the seconds from send to last byte, and the
    model version the answer names."""

    status: int
    body: bytes
    seconds: float
    model_version: str | None = None


class HttpClient:
    """Requests to one base URL over one reusable connection (not thread-safe: one per thread)."""

    def __init__(self, url: str, timeout: float = 60.0, headers: dict[str, str] | None = None):
        """``headers`` go with every request (an API key: ``{"Authorization": "Bearer KEY"}``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"URL must be http://host[:port][/prefix], got {url!r}")
        connection = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._connection = connection(parts.hostname, parts.port, timeout=timeout)
        self._prefix = parts.path.rstrip("/")
        self._headers = dict(headers or {})
        self._used = False

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        """Send one request and read the whole answer; connection errors propagate as OSError."""
        try:
            return self._exchange(method, path, body, headers)
        except _STALE_CONNECTION:
            if not self._used:
                raise
            self.close()
            return self._exchange(method, path, body, headers)

    def post_json(self, path: str, body: bytes) -> Reply:
        """POST a JSON body."""
        return self.request("POST", path, body, JSON_HEADERS)

    def _exchange(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> Reply:
        started = time.perf_counter()
        try:
            self._connection.request(method, self._prefix + path, body, {**self._headers, **(headers or {})})
            response = self._connection.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        seconds = time.perf_counter() - started
        # gunicorn's sync workers close after every answer; http.client then reconnects itself.
        self._used = not response.will_close
        return Reply(response.status, data, seconds, response.getheader(MODEL_VERSION_HEADER))

    def close(self) -> None:
        """Drop the connection; the next request opens a new one."""
        self._connection.close()
        self._used = False
