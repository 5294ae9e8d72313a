"""API keys at the door: a WSGI layer in front of the whole app that lets a request to a protected
path through only with a known key (``service.ops.keys``), and answers any other with a JSON 401.

Only installed when ``API_KEYS_FILE`` is set; without it nothing checks keys and nothing costs.
A key comes as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. The name of the key that
matched goes on in the WSGI environ (``KEY_NAME``) for the access line and the per-key counter;
the key itself is never logged, stored or echoed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import orjson

from service.http.errors import error_payload
from service.http.request_steps import Exchange, Recorder, request_id
from service.ops.keys import KeyFile
from service.ops.metrics import Metrics

#: Where the name of a request's key is kept in its WSGI environ.
KEY_NAME = "predict.api_key_name"
CHALLENGE = ("WWW-Authenticate", 'Bearer realm="batch-predict"')
MISSING, UNKNOWN = "missing", "unknown"
_MESSAGES = {
    MISSING: "this path needs an API key: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
    UNKNOWN: "the API key is not valid",
}


def presented_key(environ: dict) -> str:
    """The key a request presents: the Bearer token of Authorization, else X-API-Key; '' if none."""
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return environ.get("HTTP_X_API_KEY", "").strip()


def protected(path: str, paths: tuple[str, ...]) -> str | None:
    """The entry of ``paths`` that covers ``path`` (the path itself or a parent), else None."""
    for prefix in paths:
        if path == prefix or path.startswith(prefix + "/") or prefix == "/":
            return prefix
    return None


class KeyCheck:
    """WSGI middleware: protected paths need a key that the key file knows."""

    def __init__(self, app: Callable, keys: KeyFile, paths: tuple[str, ...], metrics: Metrics, recorder: Recorder):
        self.app = app
        self.keys = keys
        self.paths = paths
        self.metrics = metrics
        self.recorder = recorder

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        guarded = protected(path, self.paths)
        if guarded is None:
            return self.app(environ, start_response)
        key = presented_key(environ)
        name = self.keys.ring().identify(key) if key else None
        if name is None:
            return self._refuse(environ, start_response, guarded, MISSING if not key else UNKNOWN)
        environ[KEY_NAME] = name
        return self.app(environ, start_response)

    def _refuse(self, environ: dict, start_response: Callable, guarded: str, reason: str) -> Iterable[bytes]:
        started = time.perf_counter()
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        body = orjson.dumps(error_payload(401, _MESSAGES[reason]))
        self.metrics.observe_refusal(reason)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), CHALLENGE]
        # The path as the metrics label is the protected entry: a client cannot mint label values.
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        exchange = Exchange(request_id=rid, started=started, method=method, path=path, endpoint=guarded, status=401,
                            bytes_in=0, bytes_out=len(body))
        headers += self.recorder.finish(exchange, model_version=None)
        start_response("401 Unauthorized", headers)
        return [body]
