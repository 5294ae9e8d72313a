"""gunicorn's sync worker sends the status line and headers in one write and the body in
another. A worker killed between the two leaves the balancer holding a header it has already
passed on, so it cannot replay the request on another replica, and the client gets a cut
answer. ``OneWriteResponse`` sends the header together with the first body bytes (one
``sendall``: one-row answers go out in one TCP segment, which also saves a syscall per request).

gunicorn.conf.py calls ``install()``; the worker builds its responses from the class gunicorn
looks up at each request, so replacing it is the whole change. Chunked and sendfile answers keep
gunicorn's own behaviour. The class and its replacement rely on gunicorn's internals, so both
live in ``service.seams.gunicorn_internals``.
"""

from __future__ import annotations

from service.seams.gunicorn_internals import OneWriteResponse, use_response_class


def install() -> None:
    """Make gunicorn's workers answer with ``OneWriteResponse``."""
    use_response_class(OneWriteResponse)
