"""What the balancer tests of both topologies (tests/deploy/test_deploy.py: nginx, tests/deploy/test_containers.py:
HAProxy in compose) check alike: certificates for HTTPS, and rate-limited answers."""

import subprocess

import pytest
import requests

from tests.support import raw_http


def self_signed(directory):
    """A self-signed certificate for localhost and 127.0.0.1: (the PEM HAProxy loads, holding the
    certificate then its key; the certificate alone, for clients to verify against)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    pem = directory / "server.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    pem.chmod(0o644)  # read by the balancer's own user in its container
    return pem, cert


def admitted_until_limited(url, headers=None, most=200, verify=True, path="/predict"):
    """Requests sent one after another until the first 429: one-row predictions, or GETs of
    ``path`` (an open endpoint such as /health, which answers with keys on or off). Returns how
    many were answered 200, and the 429."""
    for sent in range(most):
        if path == "/predict":
            answer = requests.post(f"{url}/predict", data=raw_http.ROW, timeout=30, verify=verify,
                                   headers={"Content-Type": "application/json", **(headers or {})})
        else:
            answer = requests.get(f"{url}{path}", headers=headers, timeout=30, verify=verify)
        if answer.status_code == 429:
            return sent, answer
        assert answer.status_code == 200, answer.text[:300]
    pytest.fail(f"no 429 in {most} requests")


def check_own_budgets(url, first, second, verify=True):
    """Per-key limits: once ``first`` (request headers) is limited, ``second``, sent from the
    same address, still gets a whole budget of its own."""
    admitted, refused = admitted_until_limited(url, first, verify=verify, path="/health")
    check_limited(refused)
    again, refused = admitted_until_limited(url, second, verify=verify, path="/health")
    check_limited(refused)
    # A budget of its own admits RATE_LIMIT_RPS + RATE_LIMIT_BURST (the tests use 1 + 9) before the
    # first 429, more if the requests are slow; a budget shared with ``first``, just exhausted,
    # admits none or the one or two that its window freed meanwhile.
    assert admitted > 0 and again >= 5, (admitted, again)
    return admitted, again


def check_limited(answer):
    """A rate-limited answer: the balancer's JSON error, when to retry, and a request ID."""
    assert answer.json() == {"error": "rate limit exceeded, retry later"}
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["Retry-After"] == "1"
    assert answer.headers["X-Request-ID"]
