"""Answers leave a gunicorn worker in one write: header and body together."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from service.worker.one_write_response import OneWriteResponse
from tests.support.live_server import PROJECT_DIR, without_service_settings


class RecordingSocket:
    def __init__(self):
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def _response(method: str = "POST", version=(1, 1)) -> tuple[OneWriteResponse, RecordingSocket]:
    sock = RecordingSocket()
    request = SimpleNamespace(version=version, method=method, headers=[], should_close=lambda: True)
    return OneWriteResponse(request, sock, Config()), sock


@pytest.mark.parametrize("body", [b'[{"probability_positiveclass":0.5}]', b"x" * 100_000])
def test_header_and_body_go_out_in_one_write(body):
    response, sock = _response()
    response.start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    response.write(body)
    response.close()
    (written,) = sock.writes
    head, _, rest = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: %d" % len(body) in head
    assert rest == body


def test_an_answer_without_body_bytes_still_sends_its_header():
    response, sock = _response(method="HEAD")
    response.start_response("200 OK", [("Content-Length", "10")])
    response.close()
    (written,) = sock.writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and written.endswith(b"\r\n\r\n")


def test_chunked_answers_keep_gunicorns_framing():
    response, sock = _response()
    response.start_response("200 OK", [("Content-Type", "text/plain")])
    response.write(b"abc")
    response.close()
    assert b"".join(sock.writes).endswith(b"3\r\nabc\r\n0\r\n\r\n")


def test_gunicorn_conf_installs_it(tmp_path):
    # In a child process: gunicorn.conf.py also sets environment variables. Given a metrics
    # directory, it makes none of its own (which only a server's exit would remove).
    check = ("exec(open('gunicorn.conf.py').read()); from gunicorn.http import wsgi; "
             "from service.worker import one_write_response; "
             "print(wsgi.Response is one_write_response.OneWriteResponse)")
    env = {**without_service_settings(os.environ), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", check], cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "True", result.stderr[-2000:]
