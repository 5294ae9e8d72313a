"""Scale-out files: the balancers' configs, compose, Kubernetes, the Dockerfile, and failover.

The last tests start the local topology (deploy/local_cluster.sh: 3 real replicas behind nginx)
and SIGKILL one replica under load: no client request may fail. The containers themselves run
in tests/deploy/test_containers.py.
"""

import contextlib
import fnmatch
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import yaml

from bench.ndjson_client import OpenStream
from tests.support import raw_http
from tests.support.balancer_checks import admitted_until_limited, check_limited, check_own_budgets, self_signed
from tests.support.live_server import successful_predictions, wait_for, without_service_settings
from tests.support.slow_clients import SLOW_BODY_HEAD, SLOW_HEADER_HEAD, SlowClients, answers_while_slow

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RENDER = DEPLOY / "render_nginx.py"
CLUSTER = DEPLOY / "local_cluster.sh"
HAPROXY_CONF = DEPLOY / "haproxy" / "haproxy.cfg"
K8S = DEPLOY / "k8s"

NGINX = shutil.which("nginx")
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian/Ubuntu: apt-get install -y nginx)"
)
HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not installed (Debian/Ubuntu: apt-get install -y haproxy)"
)

REPLICAS = 3
BIG_EVERY = 5  # one 10,000-row request in every five, the rest single rows
CLIENTS = 4
LOAD_DEADLINE_S = 45
AFTER_KILL_REQUESTS = 40
SLOW_CONNECTIONS = 50


def render(*args, output):
    subprocess.run([sys.executable, str(RENDER), *args, "-o", str(output)], check=True)
    return output.read_text()


def render_local(run_dir, listen, servers, *extra):
    (run_dir / "nginx-temp").mkdir(parents=True, exist_ok=True)
    server_args = [arg for server in servers for arg in ("--server", server)]
    return render(
        "local",
        "--run-dir",
        str(run_dir),
        "--listen",
        str(listen),
        *server_args,
        *extra,
        output=run_dir / "nginx.conf",
    )


def load_yaml(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose():
    (doc,) = load_yaml(ROOT / "docker-compose.yaml")
    return doc


# --- balancers ---------------------------------------------------------------------------------


def haproxy_env():
    """The environment compose gives the balancer, with its documented defaults."""
    env = compose()["services"]["lb"]["environment"]
    return {name: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)) for name, value in env.items()}


def haproxy_lines(prefix):
    """The lines of haproxy.cfg that start with ``prefix`` (indentation ignored)."""
    return [line.strip() for line in HAPROXY_CONF.read_text().splitlines() if line.strip().startswith(prefix)]


@needs_haproxy
@pytest.mark.parametrize("retries", ["3", "0"])
def test_haproxy_config_passes_haproxy_c(retries):
    env = {**os.environ, **haproxy_env(), "LB_RETRIES": retries}
    result = subprocess.run([HAPROXY, "-c", "-f", str(HAPROXY_CONF)], env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


def haproxy_check(env, tls_dir=None):
    """``haproxy -c`` of the shipped config with compose's defaults and ``env``; ``tls_dir`` stands
    for the container's certificate directory."""
    config = HAPROXY_CONF.read_text()
    if tls_dir:
        config = config.replace("/usr/local/etc/haproxy/tls/", f"{tls_dir}/")
    return subprocess.run([HAPROXY, "-c", "-f", "/dev/stdin"], input=config, env={**os.environ, **haproxy_env(), **env},
                          capture_output=True, text=True, check=False)


@needs_haproxy
@pytest.mark.parametrize("env", [{"RATE_LIMIT_RPS": "10"}, {"RATE_LIMIT_RPS": "10", "API_KEYS_FILE": "/k/keys.txt"},
                                 {"TLS_CERT": "server.pem"}, {"TLS_CERT": "server.pem", "TLS_ONLY": "1"}],
                         ids=["rate-by-address", "rate-by-key", "tls", "tls-only"])
def test_haproxy_config_passes_with_each_option(env, tmp_path):
    pem, _ = self_signed(tmp_path)
    result = haproxy_check(env, tls_dir=pem.parent)
    assert result.returncode == 0, result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


@needs_haproxy
def test_haproxy_refuses_tls_only_without_a_certificate():
    result = haproxy_check({"TLS_ONLY": "1"})
    assert result.returncode != 0 and "TLS_ONLY=1 needs a certificate" in result.stderr


@needs_haproxy
def test_haproxy_config_needs_its_variables():
    env = {name: value for name, value in os.environ.items() if name not in haproxy_env()}
    result = subprocess.run([HAPROXY, "-c", "-f", str(HAPROXY_CONF)], env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0 and "retries" in result.stderr


def test_haproxy_finds_and_checks_replicas_through_docker_dns():
    (template,) = haproxy_lines("server-template")
    assert template.split()[1:4] == ["api", "1-16", "api:1313"]
    assert {"check", "resolvers", "docker"} <= set(template.split())
    assert haproxy_lines("http-check send") == ["http-check send meth GET uri /ready"]
    (defaults,) = haproxy_lines("default-server")
    assert "on-error mark-down" in defaults
    # A draining replica must be out of rotation before it closes its socket.
    inter = int(re.search(r"\binter (\d+)s\b", defaults).group(1))
    fall = int(re.search(r"\bfall (\d+)\b", defaults).group(1))
    assert int(compose()["services"]["api"]["environment"]["DRAIN_SECONDS"]) > inter * fall


def test_limits_agree_between_balancer_and_api():
    api = compose()["services"]["api"]["environment"]
    assert haproxy_env()["MAX_BODY_MB"] == api["MAX_BODY_MB"]
    assert any("${MAX_BODY_MB}" in line for line in haproxy_lines("http-request deny deny_status 413"))
    for side in ("client", "server"):
        (line,) = haproxy_lines(f"timeout {side} ")
        assert int(line.split()[-1].rstrip("s")) > int(api["GUNICORN_TIMEOUT"])
    assert haproxy_lines("retry-on") == ["retry-on conn-failure empty-response 503"]
    assert haproxy_lines("retries") == ['retries "${LB_RETRIES}"']


RATE_LIMITS = {
    "off": [],
    "address": ["--rate-limit-rps", "5", "--rate-limit-burst", "10"],
    "key": ["--rate-limit-rps", "5", "--rate-limit-burst", "10", "--rate-key", "key"],
}


@needs_nginx
@pytest.mark.parametrize("rate_limit", RATE_LIMITS)
def test_local_rendering_passes_nginx_t(tmp_path, rate_limit):
    text = render_local(tmp_path, 18999, [f"127.0.0.1:{port}" for port in (18001, 18002, 18003)],
                        *RATE_LIMITS[rate_limit])
    zones = re.findall(r"^\s*limit_req_zone (\S+) zone=per_client:10m rate=5r/s;", text, re.M)
    assert zones == {"off": [], "address": ["$binary_remote_addr"], "key": ["$rate_limit_key"]}[rate_limit]
    assert bool(re.search(r"^\s*limit_req zone=per_client burst=10 nodelay;", text, re.M)) == (rate_limit != "off")
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_rendering_refuses_a_negative_rate(tmp_path):
    (tmp_path / "nginx-temp").mkdir()
    result = subprocess.run([sys.executable, str(RENDER), "local", "--run-dir", str(tmp_path), "--listen", "1",
                             "--server", "127.0.0.1:2", "--rate-limit-rps", "-1"], capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0 and "must not be negative" in result.stderr


# --- docker compose -----------------------------------------------------------------------------


def test_compose_api_service_is_scalable_and_health_checked():
    api = compose()["services"]["api"]
    assert api["build"]["context"] == "."
    assert set(api["build"]["args"]) == {"PYTHON_IMAGE", "PIP_NO_INDEX"}
    assert "additional_contexts" not in api["build"], "Compose v1 rejects named build contexts"
    assert "ports" not in api, "replicas must not publish a host port: --scale would collide"
    assert "container_name" not in api
    assert [str(port) for port in api["expose"]] == ["1313"]
    assert "/ready" in " ".join(api["healthcheck"]["test"])
    assert api["environment"]["WEB_CONCURRENCY"] == api["deploy"]["resources"]["limits"]["cpus"]
    grace = int(api["stop_grace_period"].rstrip("s"))
    assert grace > int(api["environment"]["DRAIN_SECONDS"]) + int(api["environment"]["GRACEFUL_TIMEOUT"])


def test_compose_balancer_publishes_1313_with_the_shipped_config():
    lb = compose()["services"]["lb"]
    assert lb["image"] == "${LB_IMAGE:-haproxy:2.6}"
    assert lb["ports"] == ["${LB_PUBLISH:-1313}:1313", "${LB_TLS_PUBLISH:-1443}:1443"]
    assert lb["stop_signal"] == "SIGUSR1"
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in lb["volumes"])
    assert mounts == {"./deploy/haproxy/haproxy.cfg": "/usr/local/etc/haproxy/haproxy.cfg",
                      "${TLS_CERT_DIR:-./deploy/tls}": "/usr/local/etc/haproxy/tls"}
    assert all(volume.endswith(":ro") for volume in lb["volumes"])


def test_compose_keys_reach_replicas_and_balancer_alike():
    services = compose()["services"]
    assert services["api"]["environment"]["API_KEYS_FILE"] == services["lb"]["environment"]["API_KEYS_FILE"]
    assert services["lb"]["environment"]["API_KEYS_FILE"] == "${API_KEYS_FILE:-}"
    # The directory, read-only: a keys file replaced on the host is seen by the replicas.
    assert "${API_KEYS_DIR:-./deploy/keys}:/etc/batch-predict/keys:ro" in services["api"]["volumes"]


@pytest.mark.parametrize("directory", ["keys", "tls"])
def test_secrets_directories_stay_out_of_git_and_the_image(directory):
    ignored = subprocess.run(["git", "check-ignore", "-q", f"deploy/{directory}/secret.pem"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"deploy/{directory}/ does not ignore what is put there"
    tracked = subprocess.run(["git", "check-ignore", "-q", f"deploy/{directory}/README.md"], cwd=ROOT, check=False)
    assert tracked.returncode == 1
    # .dockerignore is an allow-list (test_dockerignore_lets_in_only_what_the_image_needs): no
    # line lets deploy/ back in.
    allowed = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert not any(fnmatch.fnmatch(f"deploy/{directory}/x", pattern.rstrip("/") + "*") or
                   fnmatch.fnmatch("deploy", pattern.rstrip("/")) for pattern in allowed)


# --- Kubernetes -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.27.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("manifest", ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "model-store.yaml",
                                      "jobs/models-use.yaml"])
def test_k8s_manifest_validates(manifest, version):
    for resource in load_yaml(K8S / manifest):
        kubernetes_validate.validate(resource, version, strict=True)


def k8s(kind):
    return next(doc for path in sorted(K8S.glob("*.yaml")) for doc in load_yaml(path) if doc["kind"] == kind)


def test_k8s_deployment_sizes_workers_to_cpus_and_probes_readiness():
    deployment = k8s("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    assert resources["limits"]["cpu"] == env["WEB_CONCURRENCY"]
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    pre_stop_s = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + int(env["GRACEFUL_TIMEOUT"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[next(n for n, p in mounts.items() if p == "/tmp")]


def test_k8s_pods_share_the_model_store_read_only_and_the_job_switches_it():
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    claim = k8s("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (container,) = pod["containers"]
    (store_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/app/lib/model_store"]
    assert store_mount["readOnly"] is True
    assert volumes[store_mount["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    # The seed container writes the same claim, from the image's store, as the app user.
    (seed,) = pod["initContainers"]
    (seed_mount,) = seed["volumeMounts"]
    assert volumes[seed_mount["name"]] == volumes[store_mount["name"]] and not seed_mount.get("readOnly")
    assert seed["command"] == ["python", "-m", "lib.store", "--store", seed_mount["mountPath"], "seed",
                               "/app/lib/model_store"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    (job,) = load_yaml(K8S / "jobs" / "models-use.yaml")
    job_pod = job["spec"]["template"]["spec"]
    (models,) = job_pod["containers"]
    assert models["command"][:5] == ["python", "-m", "lib.store", "--store", models["volumeMounts"][0]["mountPath"]]
    assert models["command"][5] == "use"
    assert job_pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert models["image"] == container["image"]


def test_compose_replicas_share_the_model_store_volume():
    document = compose()
    mount, _keys = document["services"]["api"]["volumes"]
    assert mount == "${MODEL_STORE_VOLUME:-model-store}:/app/lib/model_store"
    assert "model-store" in document["volumes"]
    # One container seeds the volume from the image before the replicas mount it: replicas created
    # at once would race in Docker's copy of the image's store into the empty volume.
    seed = document["services"]["store-seed"]
    assert seed["volumes"] == [mount] and seed["image"] == document["services"]["api"]["image"]
    assert document["services"]["api"]["depends_on"] == {"store-seed": {"condition": "service_completed_successfully"}}


def test_k8s_service_hpa_and_pdb_select_the_deployment():
    deployment = k8s("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert k8s("Service")["spec"]["selector"].items() <= labels.items()
    assert k8s("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = k8s("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_stages():
    """Stage name -> (base, [(instruction, arguments)]), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arguments.strip(), flags=re.I)
            current = match.group(2) or f"stage{len(stages)}"
            stages[current] = (match.group(1), [])
        elif current is not None:
            stages[current][1].append((instruction, arguments.strip()))
    return stages


def final_image_instructions():
    """Every instruction that shapes the final image, following FROM <earlier stage>."""
    stages = dockerfile_stages()
    name = list(stages)[-1]
    chain = []
    while name in stages:
        base, instructions = stages[name]
        chain = instructions + chain
        name = base
    return name, chain


def test_dockerfile_trains_in_its_own_stage_and_serves_without_training_packages():
    stages = dockerfile_stages()
    assert set(stages) == {"builder", "artifacts", "runtime", "app"}
    runs = {name: " ".join(a for i, a in instructions if i == "RUN") for name, (_, instructions) in stages.items()}
    assert "pip install -r requirements.txt" in runs["builder"]
    assert "requirements-train.txt" not in runs["builder"]
    assert "pip install -r requirements-train.txt" in runs["artifacts"]
    assert "python -m lib.training.synth && python -m lib.training.train" in runs["artifacts"]
    _, app = stages["app"]
    assert app == [("COPY", "--from=artifacts /app/lib/model_store /app/lib/model_store")]
    _, runtime = stages["runtime"]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime


def test_dockerfile_builds_offline_without_pulling_a_frontend():
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax=", text, flags=re.M | re.I), "a syntax line makes BuildKit pull"
    assert "--from=shared" not in text
    builder = dockerfile_stages()["builder"][1]
    assert ("ARG", "PIP_NO_INDEX=0") in builder
    environment = " ".join(arguments for instruction, arguments in builder if instruction == "ENV")
    assert "PIP_FIND_LINKS=/wheels" in environment and "PIP_NO_INDEX=${PIP_NO_INDEX}" in environment
    assert ("COPY", "wheels/ /wheels/") in builder


def test_dockerfile_final_image_is_non_root_slim_and_health_checked():
    base, instructions = final_image_instructions()
    assert base in ("python:3.11-slim", "${PYTHON_IMAGE}")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", (ROOT / "Dockerfile").read_text(), re.M)
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (healthcheck,) = [arguments for instruction, arguments in instructions if instruction == "HEALTHCHECK"]
    assert "/health" in healthcheck and "urllib" in healthcheck and "curl" not in healthcheck
    assert ("EXPOSE", "1313") in instructions
    cmd = [json.loads(arguments) for instruction, arguments in instructions if instruction == "CMD"]
    assert cmd[-1] == ["gunicorn", "-c", "gunicorn.conf.py", "flaskapp:create_app()"]
    runs = " ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    for build_tool in ("apt-get install", "build-essential", "gcc", "pip install"):
        assert build_tool not in runs


def test_dockerignore_lets_in_only_what_the_image_needs():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "an allow-list: everything else stays out of the build context"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == {"wheels/", "requirements.txt", "requirements-train.txt", "gunicorn.conf.py", "*.py", "service/",
                       "lib/"}
    assert {"lib/data/", "lib/model_store/", "lib/model_components/"} <= set(lines)


# --- local topology ----------------------------------------------------------------------------


@pytest.mark.parametrize(("variable", "looked_for"), [("MODEL_DIR", "manifest.json"), ("MODEL_STORE", "active.json")])
def test_local_cluster_refuses_without_artifacts(tmp_path, variable, looked_for):
    env = {**without_service_settings(os.environ), variable: str(tmp_path / "absent"), "CLUSTER_DIR": str(tmp_path)}
    result = subprocess.run(["bash", str(CLUSTER), "start", "1"], env=env, capture_output=True, text=True, check=False)
    if NGINX is None:
        assert "nginx is not installed" in result.stderr
    else:
        assert f"no model artifacts: no {tmp_path / 'absent' / looked_for}" in result.stderr
        assert "lib.training.train" in result.stderr
    assert result.returncode != 0


def test_local_cluster_refuses_without_nginx(tmp_path):
    # A PATH holding only what the script needs before its nginx check.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "realpath"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {**os.environ, "PATH": str(bin_dir), "CLUSTER_DIR": str(tmp_path)}
    result = subprocess.run(
        [shutil.which("bash"), str(CLUSTER), "start"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "nginx is not installed" in result.stderr


def free_ports(count):
    """A listening port for the balancer and ``count`` consecutive free ports after it.

    Drawn below the kernel's ephemeral range: the port-0 binds of other servers (LiveServer) and
    the local ends of outgoing connections only ever take ports inside it, so none of them can
    take these between this check and local_cluster.sh binding them.
    """
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    draw = random.SystemRandom()
    for _ in range(50):
        first = draw.randrange(10_000, max(ephemeral_low - count - 1, 10_001))
        try:
            for port in range(first, first + count + 1):
                with socket.socket() as candidate:
                    candidate.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first, first + 1
    pytest.fail("no run of free ports found")


def predict_count(port):
    """Successful POST /predict requests counted by one replica's own /metrics."""
    return successful_predictions(f"http://127.0.0.1:{port}")


def group_members(pgid):
    """Live (non-zombie) processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


@contextlib.contextmanager
def started_cluster(model_dir, run_dir, replicas=REPLICAS, env=None):
    """``replicas`` replicas behind nginx via deploy/local_cluster.sh on free ports (``env`` added
    to its environment), always stopped."""
    balancer_port, base_port = free_ports(replicas)
    env = {
        **os.environ,
        "PORT": str(balancer_port),
        "BASE_PORT": str(base_port),
        "CLUSTER_DIR": str(run_dir),
        "MODEL_DIR": str(model_dir),
        "WEB_CONCURRENCY": "1",  # single-worker replicas share two cores
        "GRACEFUL_TIMEOUT": "10",
        **(env or {}),
    }
    started = subprocess.run(
        ["bash", str(CLUSTER), "start", str(replicas)],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    try:
        assert started.returncode == 0, started.stderr
        yield {
            "url": f"http://127.0.0.1:{balancer_port}",
            "port": balancer_port,
            "run_dir": run_dir,
            "ports": [base_port + i for i in range(replicas)],
            "pgids": [int((run_dir / f"replica-{i + 1}.pid").read_text()) for i in range(replicas)],
        }
    finally:
        try:
            subprocess.run(["bash", str(CLUSTER), "stop"], env=env, capture_output=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            pass  # whatever is left is killed below
        for pid_file in run_dir.glob("*.pid"):
            pgid = int(pid_file.read_text())
            if group_members(pgid):
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(model_dir, tmp_path_factory):
    """3 replicas behind nginx, shared by the module's tests."""
    with started_cluster(model_dir, tmp_path_factory.mktemp("cluster")) as running:
        yield running


def cluster_predictions(cluster):
    """Successful predictions answered by the cluster's live replicas together (a test here kills one)."""
    return sum(predict_count(port) for port, pgid in zip(cluster["ports"], cluster["pgids"], strict=True)
               if group_members(pgid))


@needs_nginx
@pytest.mark.server
def test_balancer_forwards_or_generates_request_id(cluster, test_rows):
    row = test_rows[0]
    given = requests.post(f"{cluster['url']}/predict", json=[row], headers={"X-Request-ID": "abc-123"}, timeout=30)
    assert given.status_code == 200
    assert given.headers["X-Request-ID"] == "abc-123"
    generated = requests.post(f"{cluster['url']}/predict", json=[row], timeout=30)
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    assert generated.json() == given.json()


class Load:
    """CLIENTS threads posting single rows and 10,000-row batches until told to stop."""

    def __init__(self, url, rows, big_body):
        self.url = f"{url}/predict"
        self.rows = rows
        self.big_body = big_body
        self.expected_big = None
        self.lock = threading.Lock()
        self.sent = 0
        self.done = []  # (finish time, rows, failure or None)
        self.stop = threading.Event()

    def post(self, index):
        big = index % BIG_EVERY == 0
        body = self.big_body if big else json.dumps([self.rows[index % len(self.rows)]]).encode()
        expected_rows = len(self.rows) if big else 1
        try:
            response = requests.post(self.url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
        except requests.RequestException as error:
            return expected_rows, f"request {index}: {type(error).__name__}: {error}"
        if response.status_code != 200:
            return expected_rows, f"request {index}: HTTP {response.status_code}: {response.text[:200]}"
        answer = response.json()
        if len(answer) != expected_rows:
            return expected_rows, f"request {index}: {len(answer)} results for {expected_rows} rows"
        if big:
            with self.lock:
                self.expected_big = self.expected_big or answer
            if answer != self.expected_big:
                return expected_rows, f"request {index}: the 10,000-row answer changed"
        return expected_rows, None

    def client(self, deadline):
        while not self.stop.is_set() and time.monotonic() < deadline:
            with self.lock:
                index = self.sent
                self.sent += 1
            rows, failure = self.post(index)
            with self.lock:
                self.done.append((time.monotonic(), rows, failure))

    def finished_after(self, moment):
        with self.lock:
            return [entry for entry in self.done if entry[0] > moment]


@needs_nginx
@pytest.mark.server
def test_killed_replica_costs_no_request(cluster, test_rows, test_body):
    load = Load(cluster["url"], test_rows, test_body)
    victim_port, *survivor_ports = cluster["ports"]
    victim = cluster["pgids"][0]
    baseline = [predict_count(port) for port in cluster["ports"]]
    deadline = time.monotonic() + LOAD_DEADLINE_S

    with ThreadPoolExecutor(CLIENTS) as pool:
        clients = [pool.submit(load.client, deadline) for _ in range(CLIENTS)]
        try:
            # The balancer spreads the load: every replica has served some before the kill.
            wait_for(
                lambda: all(predict_count(p) > b for p, b in zip(cluster["ports"], baseline, strict=True)),
                20,
                "not every replica served a request",
            )
            at_kill = [predict_count(port) for port in survivor_ports]
            assert os.getpgid(victim) == victim and len(group_members(victim)) >= 2
            os.killpg(victim, signal.SIGKILL)  # the gunicorn master and its worker
            killed_at = time.monotonic()
            wait_for(
                lambda: len(load.finished_after(killed_at)) >= AFTER_KILL_REQUESTS,
                LOAD_DEADLINE_S,
                "the balancer stopped answering after the kill",
            )
        finally:
            load.stop.set()
            for client in clients:
                client.result()

    failures = [failure for _, _, failure in load.done if failure]
    assert failures == []
    after_kill = load.finished_after(killed_at)
    assert sum(1 for _, n_rows, _ in after_kill if n_rows > 1) >= 2, "too few large requests after the kill"
    assert group_members(victim) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{victim_port}/health", timeout=2)
    # The two survivors carried the load after the kill.
    assert all(predict_count(p) > before for p, before in zip(survivor_ports, at_kill, strict=True))
    # The failover path was taken: some request went to the dead replica and was replayed.
    access_log = (cluster["run_dir"] / "nginx-access.log").read_text()
    replayed = re.findall(rf"upstream=127\.0\.0\.1:{victim_port}, 127\.0\.0\.1:\d+ ", access_log)
    assert replayed, "no request was retried away from the killed replica"


@needs_nginx
@pytest.mark.server
def test_a_stream_goes_through_nginx_unbuffered_both_ways(cluster, test_rows):
    # Each piece of rows is answered before the next is sent (the replica answers what it has when
    # the client pauses): nginx holds back neither the body nor the answer.
    block = b"".join(json.dumps({"id": i, **test_rows[i]}).encode() + b"\n" for i in range(100))
    with OpenStream(cluster["url"], "explain=1") as stream:
        for sent in (100, 200, 300):
            stream.send(block)
            assert len(stream.read_lines(sent)) == sent
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type") == "application/x-ndjson"
        stream.end()
        assert len(stream.read_lines(301)) == 300  # and the answer ends with the body
    answers = [json.loads(line) for line in stream.lines]
    assert [answer["id"] for answer in answers] == list(range(100)) * 3
    assert all(len(answer["reasons"]) == 1 for answer in answers)


# --- the balancer's edges: smuggling, slow clients, rate limits ----------------------------------


@needs_nginx
@pytest.mark.server
@pytest.mark.parametrize("framing", [raw_http.cl_te, raw_http.duplicate_cl, raw_http.identical_cl])
def test_nginx_refuses_a_request_framed_two_ways(cluster, framing):
    # nginx refuses Content-Length with Transfer-Encoding, and any second Content-Length line,
    # even of the same value; the smuggled request after it never reaches a replica.
    refused = raw_http.smuggling_refused("127.0.0.1", cluster["port"], framing(), lambda: cluster_predictions(cluster))
    assert refused.json() == {"error": "malformed HTTP request"}
    assert refused.headers["content-type"] == "application/json"


@needs_nginx
@pytest.mark.server
def test_nginx_limits_each_address(model_dir, tmp_path):
    env = {"RATE_LIMIT_RPS": "1", "RATE_LIMIT_BURST": "9"}
    with started_cluster(model_dir, tmp_path, replicas=1, env=env) as limited:
        admitted, refused = admitted_until_limited(limited["url"])
        check_limited(refused)
        # Keys off: another key from the same address shares its budget (three tries: one more
        # may have been let in as the second went by, three cannot).
        others = [requests.get(f"{limited['url']}/health", headers={"X-API-Key": f"other{i}"}, timeout=10).status_code
                  for i in range(3)]
        assert 429 in others, others
        # Only the admitted ones reached the replica.
        wait_for(lambda: cluster_predictions(limited) >= admitted, 10, "the admitted predictions counted")
        assert cluster_predictions(limited) == admitted
        print(f"\n[nginx] RATE_LIMIT_RPS=1 RATE_LIMIT_BURST=9: {admitted} admitted before the first 429")


@needs_nginx
@pytest.mark.server
def test_nginx_limits_each_key_and_logs_none(model_dir, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("")  # keys on: the renderer only looks whether API_KEYS_FILE is set
    env = {"RATE_LIMIT_RPS": "1", "RATE_LIMIT_BURST": "9", "API_KEYS_FILE": str(keys)}
    secrets = ["first-key-a8Jd2k", "second-key-Q0pz7x"]
    with started_cluster(model_dir, tmp_path / "run", replicas=1, env=env) as limited:
        # Two keys from one address, each by one of the two headers: a whole budget each.
        admitted, again = check_own_budgets(limited["url"], {"Authorization": f"Bearer {secrets[0]}"},
                                            {"X-API-Key": secrets[1]})
        # No key: the address's own budget, untouched by the keys'.
        assert requests.get(f"{limited['url']}/health", timeout=10).status_code == 200
        logs = "".join(path.read_text() for path in limited["run_dir"].glob("nginx*.log"))
    assert logs and not any(secret in logs for secret in secrets)
    print(f"\n[nginx] per key, RATE_LIMIT_RPS=1 RATE_LIMIT_BURST=9: {admitted} then {again} admitted")


@needs_nginx
@pytest.mark.server
@pytest.mark.parametrize(("head", "kind"), [(SLOW_BODY_HEAD, "body"), (SLOW_HEADER_HEAD, "headers")])
def test_fifty_slow_connections_to_nginx_leave_health_and_predict_answering(cluster, head, kind):
    # nginx reads a body whole before it picks a replica, and a head before that: the slow
    # connections wait on nginx, and the replicas' single workers stay free.
    port = int(cluster["url"].rsplit(":", 1)[1])
    with SlowClients(port, SLOW_CONNECTIONS, head) as slow:
        slow.wait_accepted()
        latencies = answers_while_slow(cluster["url"], slow)
        assert slow.answered() == 0
    print(f"\n{SLOW_CONNECTIONS} connections trickling their {kind}, through nginx (3 one-worker replicas): "
          + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in latencies.items()))
