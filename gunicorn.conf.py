"""gunicorn settings for the prediction API; values come from service/ops/settings.py (environment)."""

import fcntl
import os
import shutil
import tempfile

# Every worker writes its Prometheus samples here; /metrics adds them up. It must be set before
# prometheus_client is first imported (it picks its value class then), so before the service's
# modules below: service.http.streaming imports the metrics, and without the directory every worker
# would count in its own memory while /metrics read an empty directory.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="predict-metrics-")


def _claim_metrics_dir(path: str) -> None:
    """Lock ``path`` for this server, or refuse to start: two servers counting in one directory
    would add up each other's samples, and each would empty it at start. A POSIX lock: the
    master's own, held while it lives (its descriptor stays open, unnamed), and taken again
    without conflict when SIGHUP makes it read this file anew."""
    os.makedirs(path, exist_ok=True)
    if "GUNICORN_PID" in os.environ:  # a USR2 re-exec: the directory is its old master's, the same server's
        return
    lock = os.open(os.path.join(path, "server.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        raise SystemExit(f"cannot start: PROMETHEUS_MULTIPROC_DIR={path} is in use by another running server; "
                         "give each server a directory of its own, or leave it unset (each server then "
                         "makes its own)") from None


# Claimed before the app is loaded: the master's preloaded metrics write their files there.
_claim_metrics_dir(os.environ["PROMETHEUS_MULTIPROC_DIR"])

from service.ops.settings import settings_or_exit  # noqa: E402 - after the variable above
from service.seams import gunicorn_internals  # noqa: E402
from service.worker import buffered_worker, drain, one_write_response  # noqa: E402

# Read once, here: a bad value stops the server before anything starts, every problem on stderr
# with exit status 2. The worker class is built from this object and the app factory, loaded in
# this process, gets the same one (Settings.from_env parses one environment once).
_settings = settings_or_exit()
# Header and body of an answer in one write (see service/worker/one_write_response.py).
one_write_response.install()

# numpy must not start BLAS threads: scoring is a small matrix-vector product and the
# workers already use every core.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

wsgi_app = "flaskapp:create_app()"
bind = _settings.bind_address
# Synchronous workers, one per CPU: scoring is CPU-bound, so more workers than cores only queue.
workers = _settings.web_concurrency
# gunicorn's sync worker, but a request is received without blocking before it is served: a slow
# or idle client holds no worker (service/worker/buffered_worker.py, the CLIENT_* settings).
worker_class = buffered_worker.configured(_settings)
# Load the artifacts once in the master; workers inherit them by fork (copy-on-write).
preload_app = True
# Sized for the largest allowed batch (100,000 rows, 170-260 MB of JSON) with room to spare.
timeout = _settings.gunicorn_timeout
# SIGTERM lets in-flight requests (a 10,000-row batch takes well under a second) finish.
graceful_timeout = _settings.graceful_timeout
# Our app writes one JSON access line per request; gunicorn's own access log stays off.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level
# Temporary worker heartbeat files in memory, not on a possibly slow container disk (each one
# made by mkstemp and unlinked at once: nothing another server could meet).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# No control socket (gunicornc): its default path, ~/.gunicorn/gunicorn.ctl or
# $XDG_RUNTIME_DIR/gunicorn.ctl, is one per user, so a second server on the host would replace
# the first's socket and its stop would remove the second's. Nothing here uses it: signals to
# the master do its work (README "Operating it").
control_socket_disable = True


def on_starting(server):
    """Start from an empty metrics directory so counts of an earlier run do not leak in."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def when_ready(server):
    """Behind a balancer that checks /ready, DRAIN_SECONDS makes SIGTERM drain first (drain.py).
    Its flag is made here, in the master before it forks, and handed to the preloaded app, which
    every worker inherits (and which a SIGHUP's new workers inherit too: the app is not reloaded)."""
    if _settings.drain_seconds > 0:
        flag = drain.Drain()
        flag.install(server, _settings.drain_seconds)
        extensions = getattr(gunicorn_internals.loaded_app(server), "extensions", None)
        if extensions is not None:  # None for another app (bench/floor_app.py has no /ready of ours)
            extensions[drain.EXTENSION] = flag


def post_worker_init(worker):
    """Per worker, after the fork: a stream may outlast GUNICORN_TIMEOUT, so it reports to the
    arbiter after each chunk (the app's heartbeat, service/http/streaming.py); and a thread follows the
    model store's pointer (service/scoring/model_switch.py; made here since a forked process keeps only
    the thread that forked)."""
    from service.http.streaming import HEARTBEAT_EXTENSION
    from service.scoring.model_switch import EXTENSION  # here: prometheus_client must see the variable above

    extensions = getattr(worker.wsgi, "extensions", {})
    heartbeat = extensions.get(HEARTBEAT_EXTENSION)
    if heartbeat is not None:  # None for another app (bench/floor_app.py)
        heartbeat.connect(worker.notify)
    switch = extensions.get(EXTENSION)
    if switch is not None:
        switch.start()


def pre_request(worker, req):
    """Restart the worker's heartbeat at each request: an idle sync worker beats only every
    timeout / 2 seconds, so a request could otherwise get half of GUNICORN_TIMEOUT."""
    worker.notify()


def child_exit(server, worker):
    """Let prometheus_client drop the live gauges of a dead worker."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory if we created it."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(path).startswith("predict-metrics-"):
        shutil.rmtree(path, ignore_errors=True)
