"""The container stack for real: the shipped Dockerfile, docker-compose.yaml and balancer config on
this machine's Docker engine, with offline stand-ins for the base images (deploy/offline_images.sh).

Marked `docker`; where no engine answers, every test here is skipped and the reason is printed.
Load goes only to the 127.0.0.1 port that the balancer container publishes. Everything a test
creates (containers, networks, volumes) is removed by name; the images stay as a build cache.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bench.ndjson_client import post_stream
from service.ops.metrics import FLUSH_SECONDS
from tests.support import forms, raw_http
from tests.support.balancer_checks import admitted_until_limited, check_limited, check_own_budgets, self_signed
from tests.support.forms import outcomes
from tests.support.live_server import PROJECT_DIR, wait_for
from tests.support.metrics_text import metric_value
from tests.support.slow_clients import SLOW_BODY_HEAD, SlowClients, answers_while_slow

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

API_IMAGE = "batch-predict-api:test"
# The stand-ins deploy/offline_images.sh makes; the caller's PYTHON_IMAGE / LB_IMAGE win.
PYTHON_IMAGE = os.environ.get("PYTHON_IMAGE", "batch-predict/python:3.11-debian")
LB_IMAGE = os.environ.get("LB_IMAGE", "batch-predict/haproxy:2.6-debian")
PREFIX = f"bptest{os.getpid()}"
# How long each load run lasts, in seconds of the measured request rate: long enough that the
# event (kill, stop, scale) lands in the middle of it and a new replica has time to join.
RUN_SECONDS = {"kill": 15, "stop": 15, "scale": 30, "switch": 30}


def docker(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, **kwargs)


def compose_command() -> list[str]:
    """Compose v1 (Debian's docker-compose) if installed, else the v2 plugin."""
    return ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]


@pytest.fixture(scope="session")
def engine():
    """Skip (with the reason in the summary) where no Docker engine and compose can run."""
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed (Debian: apt-get install -y docker.io docker-compose)")
    info = docker("info", "--format", "{{.ServerVersion}}", check=False)
    if info.returncode != 0:
        pytest.skip(f"no Docker daemon answers: {info.stderr.strip()[:200]}")
    if subprocess.run([*compose_command(), "version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    return info.stdout.strip()


@pytest.fixture(scope="session")
def api_image(engine, model_dir):
    """The shipped Dockerfile, built offline from the stand-in base image and wheels/."""
    env = {**os.environ, "PYTHON_IMAGE": PYTHON_IMAGE, "LB_IMAGE": LB_IMAGE}
    subprocess.run(["bash", "deploy/offline_images.sh"], cwd=PROJECT_DIR, env=env, check=True)
    started = time.monotonic()
    build = subprocess.run(
        ["docker", "build", "-q", "--build-arg", f"PYTHON_IMAGE={PYTHON_IMAGE}", "--build-arg", "PIP_NO_INDEX=1",
         "-t", API_IMAGE, "."],
        cwd=PROJECT_DIR, env={**os.environ, "DOCKER_BUILDKIT": "0"}, capture_output=True, text=True, check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    size = int(docker("image", "inspect", "-f", "{{.Size}}", API_IMAGE).stdout)
    print(f"\n[docker] {API_IMAGE} on {PYTHON_IMAGE}: {size / 1e6:.0f} MB, built in {time.monotonic() - started:.0f} s")
    return API_IMAGE


def host_url(published: str) -> str:
    """`docker port` / `compose port` output ("127.0.0.1:49153") as a base URL."""
    address = published.strip().splitlines()[0]
    assert address.startswith("127.0.0.1:"), f"published on {address}, expected 127.0.0.1 only"
    return f"http://{address}"


def answers_ready(url: str) -> bool:
    try:
        return requests.get(url + "/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


# --- the image alone ---------------------------------------------------------------------------


@pytest.fixture()
def image_container(api_image):
    """The image run as compose runs it (read-only root, tmpfs /tmp), HEALTHCHECK every second."""
    name = f"{PREFIX}-image"
    docker("run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--health-interval", "1s",
           "-p", "127.0.0.1::1313", api_image)
    try:
        yield name, host_url(docker("port", name, "1313").stdout)
    finally:
        docker("rm", "-f", "-v", name, check=False)


def test_image_serves_the_model_read_only_as_a_non_root_user(image_container, client, test_rows):
    name, url = image_container
    wait_for(lambda: answers_ready(url), 60, "the container's /ready answering 200")
    assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
    # Read-only root: the app cannot write next to its code.
    assert docker("exec", name, "touch", "/app/x", check=False).returncode != 0
    # No training-only packages and no pip in the runtime image.
    for module in ("matplotlib", "pip"):
        probe = docker("exec", name, "python", "-c", f"import {module}", check=False)
        assert probe.returncode != 0 and f"No module named '{module}'" in probe.stderr

    body = json.dumps(test_rows[:200]).encode()
    answer = requests.post(url + "/predict", data=body, timeout=30)
    assert answer.status_code == 200
    # The image trained its own artifacts from the same generator and seed: the same model.
    expected = client.post("/predict", data=body).get_json()
    got = answer.json()
    assert [row["predicted_class"] for row in got] == [row["predicted_class"] for row in expected]
    assert max(abs(a["probability_positiveclass"] - b["probability_positiveclass"])
               for a, b in zip(got, expected, strict=True)) <= 1e-12

    # The same rows as Parquet, answered as an Arrow table: pyarrow works in the trimmed image.
    table = requests.post(url + "/predict", data=forms.parquet(test_rows[:200]), timeout=30, headers={
        "Content-Type": forms.PARQUET, "Accept": forms.ARROW})
    assert table.status_code == 200 and table.headers["Content-Type"] == forms.ARROW
    assert outcomes(200, forms.ARROW, table.content) == outcomes(200, "application/json", answer.content)

    # The workers count in the metrics directory gunicorn.conf.py makes, which /metrics reads. A
    # worker writes its counts there every FLUSH_SECONDS (and before answering /metrics itself), so
    # a /metrics answered by the other worker may come before the first's counts: wait for them.
    def predictions_counted() -> bool:
        metrics = requests.get(url + "/metrics", timeout=30).text
        return metric_value(metrics, "http_requests_total", endpoint="/predict", method="POST", status="200") >= 2
    wait_for(predictions_counted, 30, "/metrics counting the two predictions", interval=FLUSH_SECONDS)

    health = lambda: docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()  # noqa: E731
    wait_for(lambda: health() == "healthy", 60, "the HEALTHCHECK reporting healthy")


# --- the compose stack -------------------------------------------------------------------------


class Stack:
    """One compose project of the shipped docker-compose.yaml, with its own name."""

    def __init__(self, name: str, retries: int, store: Path | None = None, env: dict[str, str] | None = None):
        self.name = name
        self.env = {**os.environ, "PYTHON_IMAGE": PYTHON_IMAGE, "PIP_NO_INDEX": "1", "LB_IMAGE": LB_IMAGE,
                    "API_IMAGE": API_IMAGE, "LB_PUBLISH": "127.0.0.1:", "LB_TLS_PUBLISH": "127.0.0.1:",
                    "LB_RETRIES": str(retries), **({"MODEL_STORE_VOLUME": str(store)} if store else {}),
                    **(env or {})}
        self.url = ""  # HTTP through the balancer, or HTTPS with TLS_ONLY=1
        self.tls_url = ""  # HTTPS through the balancer, when TLS_CERT is set
        self.verify: str | bool = True  # what requests verifies the HTTPS answers with

    def compose(self, *args: str) -> str:
        result = subprocess.run([*compose_command(), "-p", self.name, "-f", "docker-compose.yaml", *args],
                                cwd=PROJECT_DIR, env=self.env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"compose {' '.join(args)}: {result.stderr[-2000:]}"
        return result.stdout

    def scale(self, replicas: int) -> None:
        self.compose("up", "-d", "--no-build", "--no-recreate", "--scale", f"api={replicas}")

    def replicas(self) -> list[str]:
        """Names of the running api containers, in compose's numbering."""
        ids = self.compose("ps", "-q", "api").split()
        names = [docker("inspect", "-f", "{{.Name}}", i).stdout.strip().lstrip("/") for i in ids]
        running = [n for n in names if docker("inspect", "-f", "{{.State.Running}}", n).stdout.strip() == "true"]
        return sorted(running)

    def logged(self, container: str) -> list[dict]:
        """The access log lines of a replica (it writes them to the container's stderr)."""
        logs = docker("logs", container)
        return [entry for entry in map(_json_line, (logs.stdout + logs.stderr).splitlines()) if entry]

    def served(self, container: str) -> list[float]:
        """When each /predict that a replica answered was logged (its access log, epoch seconds)."""
        return [entry["time"] for entry in self.logged(container) if entry.get("path") == "/predict"]

    def predictions(self) -> int:
        """Successful /predict requests answered by all the replicas, from their access logs."""
        return sum(1 for name in self.replicas() for entry in self.logged(name)
                   if entry.get("path") == "/predict" and entry.get("status") == 200)

    def balancer_log(self) -> str:
        logs = docker("logs", self.compose("ps", "-q", "lb").strip())
        return logs.stdout + logs.stderr


def _json_line(line: str) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


@pytest.fixture()
def stack(api_image, request):
    """A factory: a compose project with N replicas up and serving through the balancer; every
    container, network and volume of it is removed after the test."""
    made: list[Stack] = []

    def up(replicas: int = 3, retries: int = 3, store: Path | None = None, env: dict[str, str] | None = None,
           verify: str | bool = True) -> Stack:
        one = Stack(f"{PREFIX}{request.node.name.replace('_', '')[:20]}{len(made)}", retries, store, env)
        made.append(one)
        one.scale(replicas)
        one.verify = verify
        if one.env.get("TLS_CERT"):
            one.tls_url = host_url(one.compose("port", "lb", "1443")).replace("http://", "https://")
        one.url = one.tls_url if one.env.get("TLS_ONLY") == "1" else host_url(one.compose("port", "lb", "1313"))
        wait_for(lambda: len(one.replicas()) == replicas, 60, f"{replicas} api containers running")
        # Through the balancer until every replica has answered a request.
        def all_served():
            try:
                requests.post(one.url + "/predict", json={"x5": "monday"}, timeout=10, verify=verify)
            except requests.ConnectionError:
                pass  # the balancer not listening yet
            return all(one.served(name) for name in one.replicas())
        wait_for(all_served, 90, "every replica answering through the balancer")
        return one

    yield up
    for one in made:
        subprocess.run([*compose_command(), "-p", one.name, "-f", "docker-compose.yaml", "down", "-v",
                        "--remove-orphans", "-t", "10"], cwd=PROJECT_DIR, env=one.env, capture_output=True,
                       check=False)
        leftovers = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={one.name}").stdout.split()
        if leftovers:
            docker("rm", "-f", "-v", *leftovers, check=False)


def stress(url: str, log: Path, *, requests_: int | None = None, seconds: float | None = None,
           batches: int = 40) -> subprocess.Popen:
    """stress_test.sh's tool (bench.stress) in the background: single rows (a number of them, or
    for a time), then batches."""
    singles = ["--requests", str(requests_)] if seconds is None else ["--seconds", str(seconds)]
    with log.open("w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "bench.stress", "--url", url, *singles, "--batches", str(batches),
             "--max-batch", "500", "--concurrency", "4", "--progress-seconds", "0.5", "--seed", "13"],
            cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT,
        )


def run_with_event(stack_: Stack, tmp_path: Path, kind: str, event) -> tuple[str, float]:
    """A stress run of single rows for RUN_SECONDS[kind] (then batches); ``event`` runs once
    requests are flowing. Returns the run's output and the time the event started."""
    log = tmp_path / f"{kind}.log"
    run = stress(stack_.url, log, seconds=RUN_SECONDS[kind])
    try:
        wait_for(lambda: "[single] " in log.read_text() and run.poll() is None, 60, "the stress run under way")
        moment = time.time()
        event()
        # Timed, the run cannot end early however fast the requests go; an event that outlasts
        # its single rows (none should: docker stop takes the 3 s drain and a second) is reported.
        assert run.poll() is None, f"the {kind} took longer than the run's {RUN_SECONDS[kind]} s of single rows"
        run.wait(300)
    finally:
        if run.poll() is None:
            run.kill()
    output = log.read_text()
    assert run.returncode == 0 and "\nOK: " in output, output[-2000:]
    return output, moment


def test_three_replicas_serve_through_the_balancer(stack, tmp_path, test_rows):
    up = stack(replicas=3)
    assert len(up.replicas()) == 3
    run = stress(up.url, tmp_path / "stress.log", requests_=1000, batches=40)
    assert run.wait(300) == 0, (tmp_path / "stress.log").read_text()[-2000:]
    output = (tmp_path / "stress.log").read_text()
    assert "OK: 1040 requests" in output and " 0 errors" in output
    assert all(len(up.served(name)) > 1 for name in up.replicas())

    # The request ID travels through the balancer both ways, or the balancer makes one.
    echoed = requests.post(up.url + "/predict", json=test_rows[0], headers={"X-Request-ID": "abc-123"}, timeout=10)
    assert echoed.headers["X-Request-ID"] == "abc-123"
    made = requests.post(up.url + "/predict", json=test_rows[0], timeout=10)
    assert len(made.headers["X-Request-ID"]) >= 32

    # An NDJSON stream of 30,000 rows goes through HAProxy both ways while it is sent.
    streamed = post_stream(up.url, (forms.ndjson(test_rows) for _ in range(3)), keep_lines=False)
    assert (streamed.status, streamed.n_lines, streamed.send_error) == (200, 30_000, None)

    # A body declared over MAX_BODY_MB is refused by the balancer, in JSON, once it has read one
    # buffer of it (http-buffer-request), not after the whole body.
    host, port = up.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(400 * 1024 * 1024 + 1))
        connection.endheaders()
        connection.send(b" " * (2 * 1024 * 1024))
        refused = connection.getresponse()
        assert refused.status == 413
        assert json.loads(refused.read()) == {"error": "request body exceeds the limit of 400 MB"}
    finally:
        connection.close()


def test_killed_replica_costs_no_request(stack, tmp_path):
    up = stack(replicas=3)
    victim = up.replicas()[0]
    output, _ = run_with_event(up, tmp_path, "kill", lambda: docker("kill", victim))
    print(f"\n[docker] kill of {victim} mid-run: {output.strip().splitlines()[-1]}")


def test_stopped_replica_drains_without_balancer_retries(stack, tmp_path):
    # LB_RETRIES=0: nothing hides a refused or reset connection; only the drain can avoid them.
    up = stack(replicas=3, retries=0)
    victim = up.replicas()[1]
    output, _ = run_with_event(up, tmp_path, "stop", lambda: docker("stop", victim))
    assert victim not in up.replicas()
    print(f"\n[docker] stop of {victim} mid-run, balancer retries off: {output.strip().splitlines()[-1]}")


def test_scaled_up_replica_gets_traffic(stack, tmp_path):
    up = stack(replicas=3)
    before = set(up.replicas())
    output, moment = run_with_event(up, tmp_path, "scale", lambda: up.scale(4))
    (added,) = set(up.replicas()) - before
    served = up.served(added)
    assert served, f"{added} got no request in the {RUN_SECONDS['scale']} s run after scaling"
    print(f"\n[docker] scale to 4 mid-run: {added} answered {len(served)} requests, the first "
          f"{min(served) - moment:.1f} s after the scale command; {output.strip().splitlines()[-1]}")


# --- the model store -----------------------------------------------------------------------------


def replica_version(container: str) -> str | None:
    """The model version a replica's /ready names (None while it does not answer 200)."""
    probe = docker("exec", container, "python", "-c",
                   "import json, urllib.request; print(json.load(urllib.request.urlopen("
                   "'http://127.0.0.1:1313/ready', timeout=4))['model_version'])", check=False)
    return probe.stdout.strip() if probe.returncode == 0 else None


def test_the_store_volume_is_seeded_from_the_image_and_only_root_may_switch(stack):
    up = stack(replicas=2)
    first = up.replicas()[0]
    listed = up.compose("exec", "-T", "--user", "0", "api", "python", "-m", "lib.store", "list")
    (active,) = [line.split()[1] for line in listed.splitlines() if line.startswith("* ")]
    assert {replica_version(name) for name in up.replicas()} == {active}
    # The app user reads the store but cannot move its pointer.
    refused = docker("exec", first, "python", "-m", "lib.store", "use", active, check=False)
    assert refused.returncode == 1 and "Permission denied" in refused.stderr
    assert up.compose("exec", "-T", "--user", "0", "api", "python", "-m", "lib.store", "verify", active).startswith(
        f"version {active}: verified")


def test_one_pointer_switches_every_replica_under_load(stack, two_versions, tmp_path):
    # The host's store, bind-mounted (MODEL_STORE_VOLUME): replicas run as another user.
    store, a, b = two_versions
    up = stack(replicas=2, store=store.root)
    assert {replica_version(name) for name in up.replicas()} == {a}

    def switch_there_and_back() -> None:
        for version in (b, a):
            used = time.monotonic()
            subprocess.run([sys.executable, "-m", "lib.store", "--store", str(store.root), "use", version],
                           cwd=PROJECT_DIR, check=True, capture_output=True)
            wait_for(lambda v=version: {replica_version(n) for n in up.replicas()} == {v}, 60,
                     f"every replica serving {version}")
            print(f"\n[docker] every replica served {version} {time.monotonic() - used:.1f} s after `use`")

    output, _ = run_with_event(up, tmp_path, "switch", switch_there_and_back)
    versions = dict(re.findall(r"(\S+) \((\d+) answers\)", output.split("model versions: ", 1)[1]))
    assert set(versions) == {a, b}, output[-500:]
    print(f"[docker] switch a->b->a through the balancer: {output.strip().splitlines()[-1]}; answers by version: "
          + ", ".join(f"{v} {n}" for v, n in versions.items()))


# --- the balancer's edges: TLS, smuggling, slow clients, rate limits -------------------------------


def tls_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A directory for TLS_CERT_DIR holding a self-signed server.pem; and the certificate alone,
    which the clients verify against."""
    directory = tmp_path / "tls"
    directory.mkdir()
    directory.chmod(0o755)  # the balancer's user must reach the file through the bind mount
    _, cert = self_signed(directory)
    return directory, cert


def address(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].split(":")
    return host, int(port)


def test_haproxy_serves_https_refuses_smuggling_and_outlasts_slow_clients(stack, tmp_path):
    certs, cert = tls_dir(tmp_path)
    up = stack(replicas=2, env={"TLS_CERT": "server.pem", "TLS_CERT_DIR": str(certs)}, verify=str(cert))
    host, port = address(up.url)

    # HTTPS on its own port, verified against the certificate; HTTP on 1313 still answers.
    secure = requests.post(up.tls_url + "/predict", data=raw_http.ROW, verify=str(cert), timeout=30,
                           headers={"Content-Type": "application/json"})
    assert secure.status_code == 200 and len(secure.json()) == 1
    assert requests.get(up.url + "/health", timeout=10).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(up.tls_url + "/health", timeout=10)  # not trusted without the certificate

    # Two different Content-Length lines: HAProxy's own 400 (its built-in HTML page: 2.6 answers
    # its parser's errors without the configured ones), the connection closed.
    raw_http.smuggling_refused(host, port, raw_http.duplicate_cl(), up.predictions)
    tls_host, tls_port = address(up.tls_url)
    context = ssl.create_default_context(cafile=str(cert))
    raw_http.smuggling_refused(tls_host, tls_port, raw_http.duplicate_cl(), up.predictions, tls=context)

    # Content-Length with Transfer-Encoding: HAProxy 2.6 does not refuse it. It drops the length,
    # reads the body as chunked (empty here), forwards that, answers, and closes the connection:
    # the request hidden after the chunked end is never read as one.
    before = up.predictions()
    with raw_http.Connection(host, port) as connection:
        connection.send(raw_http.cl_te())
        first = connection.read_response()
        assert connection.closed_by_server(), "HAProxy kept the connection of a CL+TE request open"
    assert first.status == 400 and "error" in first.json()  # the replica's answer to an empty body
    follow_up = raw_http.request(host, port, raw_http.predict_request())
    assert follow_up.status == 200
    wait_for(lambda: up.predictions() >= before + 1, 10, "the follow-up logged")
    assert up.predictions() == before + 1, "the smuggled prediction reached a replica"

    # Two identical Content-Length lines are one length to HAProxy: answered, and the connection
    # goes on with the next request.
    before = up.predictions()
    with raw_http.Connection(host, port) as connection:
        connection.send(raw_http.identical_cl())
        assert connection.read_response().status == 200
        connection.send(raw_http.predict_request())
        assert connection.read_response().status == 200
    wait_for(lambda: up.predictions() >= before + 2, 10, "both logged")
    assert up.predictions() == before + 2

    # 50 clients trickling their bodies hold no replica: HAProxy buffers a body before it picks one.
    with SlowClients(port, 50, SLOW_BODY_HEAD) as slow:
        latencies = answers_while_slow(up.url, slow)
    print("\n[docker] HAProxy with 50 slow clients: " + ", ".join(
        f"{name} {seconds * 1000:.0f} ms" for name, seconds in latencies.items()))


def test_haproxy_tls_only_and_rate_limit_per_address(stack, tmp_path):
    certs, cert = tls_dir(tmp_path)
    env = {"TLS_CERT": "server.pem", "TLS_CERT_DIR": str(certs), "TLS_ONLY": "1",
           "RATE_LIMIT_RPS": "1", "RATE_LIMIT_BURST": "9"}
    up = stack(replicas=1, env=env, verify=str(cert))
    # TLS only: nothing answers on 1313 (published by Docker, refused inside the container).
    plain = host_url(up.compose("port", "lb", "1313"))
    with pytest.raises(requests.ConnectionError):
        requests.get(plain + "/health", timeout=10)

    admitted, refused = admitted_until_limited(up.url, verify=str(cert))
    check_limited(refused)
    # Keys off: each address is one client, whatever key it sends (three tries: a slot may free
    # as the first goes by, not three).
    others = [requests.get(up.url + "/health", headers={"X-API-Key": f"other{i}"}, verify=str(cert),
                           timeout=10).status_code for i in range(3)]
    assert 429 in others, others
    print(f"\n[docker] HAProxy RATE_LIMIT_RPS=1 RATE_LIMIT_BURST=9: {admitted} admitted before the first 429")


def test_haproxy_with_keys_on_passes_keyed_requests_and_limits_each_key(stack, tmp_path):
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    keys_dir.chmod(0o755)  # the replicas' user reads the file through the bind mount
    made = [subprocess.run([sys.executable, "-m", "service.ops.keys", "add", name,
                            "--file", str(keys_dir / "keys.txt")],
                           cwd=PROJECT_DIR, capture_output=True, text=True, check=True).stdout.strip()
            for name in ("alice", "bob")]
    alice, bob = made
    env = {"API_KEYS_DIR": str(keys_dir), "API_KEYS_FILE": "/etc/batch-predict/keys/keys.txt",
           "RATE_LIMIT_RPS": "1", "RATE_LIMIT_BURST": "9"}
    up = stack(replicas=1, env=env)

    keyed = requests.post(up.url + "/predict", data=raw_http.ROW, timeout=30,
                          headers={"Content-Type": "application/json", "Authorization": f"Bearer {alice}"})
    assert keyed.status_code == 200 and len(keyed.json()) == 1
    refused = requests.post(up.url + "/predict", data=raw_http.ROW, headers={"Content-Type": "application/json"},
                            timeout=30)
    assert refused.status_code == 401 and "error" in refused.json()

    # Two keys from one address, each by one of the two headers: a whole budget each.
    admitted, again = check_own_budgets(up.url, {"Authorization": f"Bearer {alice}"}, {"X-API-Key": bob})
    # Without a key, the address's own budget, untouched by the keys'.
    assert requests.get(up.url + "/health", timeout=10).status_code == 200
    log = up.balancer_log()
    assert "/health" in log and alice not in log and bob not in log
    print(f"\n[docker] HAProxy per key, RATE_LIMIT_RPS=1 RATE_LIMIT_BURST=9: {admitted} then {again} admitted")
