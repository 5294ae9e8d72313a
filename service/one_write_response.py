"""gunicorn's sync worker sends the status line and headers in one write and the body in
another. A worker killed between the two leaves the balancer holding a header it has already
passed on, so it cannot replay the request on another replica, and the client gets a cut
answer. ``OneWriteResponse`` sends the header together with the first body bytes (one
``sendall``: one-row answers go out in one TCP segment, which also saves a syscall per request).

gunicorn.conf.py calls ``install()``; the worker builds its responses from
``gunicorn.http.wsgi.Response``, so replacing that name is the whole change. Chunked and
sendfile answers keep gunicorn's own behaviour.
"""

from __future__ import annotations

from gunicorn import util
from gunicorn.http import wsgi


class OneWriteResponse(wsgi.Response):
    """A gunicorn response that holds its header back until the first body write."""

    _pending_header: bytes | None = None

    def write(self, arg):
        if not self.headers_sent and not self.chunked:
            # The same header gunicorn's send_headers() builds, kept for _emit_body().
            lines = self.default_headers()
            lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
            self._pending_header = util.to_bytestring("".join(lines) + "\r\n", "latin-1")
            self.headers_sent = True
        super().write(arg)

    def _emit_body(self, data):
        if self._pending_header is not None:
            data, self._pending_header = self._pending_header + data, None
        super()._emit_body(data)

    def close(self):
        if self._pending_header is not None:  # no body bytes were written (HEAD, 204, empty)
            header, self._pending_header = self._pending_header, None
            util.write(self.sock, header)
        super().close()


def install() -> None:
    """Make gunicorn's workers answer with ``OneWriteResponse``."""
    wsgi.Response = OneWriteResponse
