"""Request smuggling straight against gunicorn (the replicas' own server), over raw sockets: a
request framed by both Content-Length and Transfer-Encoding, or by two Content-Length lines, is
refused with a 400 and its connection closed, so the request hidden after it is never read.
The same requests through the balancers: tests/deploy/test_deploy.py (nginx), tests/deploy/test_containers.py
(HAProxy)."""

import pytest

from tests.support import raw_http
from tests.support.live_server import successful_predictions

pytestmark = pytest.mark.server


@pytest.mark.parametrize("framing", [raw_http.cl_te, raw_http.duplicate_cl, raw_http.identical_cl])
def test_gunicorn_refuses_a_request_framed_two_ways(server, framing):
    # Identical Content-Length lines too: gunicorn accepts one Content-Length line only.
    host, port = server.url.removeprefix("http://").split(":")
    refused = raw_http.smuggling_refused(host, int(port), framing(), lambda: successful_predictions(server.url))
    assert b"Content-Length" in refused.body or b"CONTENT-LENGTH" in refused.body
