"""What metrics and access logs cost on single-row requests (the goal: at most 5 %).

    .venv/bin/python -m bench.overhead [--seconds 5] [--rounds 3] [--connections 8]

Two measurements, each comparing the service with METRICS_ENABLED and ACCESS_LOG on
(the default) against both off:

- in process: the Flask app called as WSGI, no server and no client, so that the figure is the
  CPU time of one request in a worker (the strictest ratio: nothing else dilutes it);
- over HTTP: two real 2-worker gunicorn servers under a fixed-concurrency load (wrk when
  installed, else Python threads), in alternating rounds so that drift in machine load hits
  both alike.

Prometheus runs in multiprocess mode in both, as under gunicorn, so every sample is a write
to a memory-mapped file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from bench.load import default_tool, run_load

PROJECT_DIR = Path(__file__).resolve().parents[1]
OFF = {"METRICS_ENABLED": "0", "ACCESS_LOG": "0"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="length of one HTTP load round (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per variant (default 3)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections (default 8)")
    parser.add_argument("--calls", type=int, default=300, help="in-process calls per block (default 300)")
    parser.add_argument("--blocks", type=int, default=40, help="in-process blocks per variant (default 40)")
    parser.add_argument("--skip-http", action="store_true", help="only the in-process measurement")
    return parser.parse_args(argv)


@contextmanager
def stderr_to(path: Path):
    """Send fd 2 (where the access log goes, as under gunicorn) to a file for the block."""
    saved = os.dup(2)
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def in_process(body: bytes, calls: int, blocks: int, log_path: Path) -> dict[str, float]:
    """CPU microseconds per request of the WSGI app with observability on and off (medians).

    CPU time of this process, not wall time, in many short alternating blocks: other load on
    the machine then shifts both variants alike, and the median of the paired differences
    ignores the blocks it disturbed most.
    """
    from werkzeug.test import EnvironBuilder

    from flaskapp import create_app

    apps = {"on": create_app(), "off": create_app({"metrics_enabled": False, "access_log": False})}
    base = EnvironBuilder(path="/predict", method="POST", data=body, content_type="application/json").get_environ()

    def call(app) -> None:
        environ = dict(base, **{"wsgi.input": io.BytesIO(body)})
        for _ in app(environ, lambda status, headers, exc_info=None: None):
            pass

    def block(app) -> float:
        started = time.process_time()
        for _ in range(calls):
            call(app)
        return (time.process_time() - started) / calls * 1e6

    times: dict[str, list[float]] = {name: [] for name in apps}
    with stderr_to(log_path):
        for app in apps.values():  # warm-up
            block(app)
        for _ in range(blocks):
            for name, app in apps.items():
                times[name].append(block(app))
    return {
        "on": statistics.median(times["on"]),
        "off": statistics.median(times["off"]),
        "cost": statistics.median(on - off for on, off in zip(times["on"], times["off"], strict=True)),
    }


def over_http(body: bytes, tool: str, seconds: float, rounds: int, connections: int,
              work_dir: Path) -> dict[str, list[float]]:
    """Requests/s of single-row load by ``tool`` on two live servers, observability on and off, per round."""
    from tests.support.live_server import LiveServer

    servers = {
        "on": LiveServer(workers=2, log_path=work_dir / "on.log"),
        "off": LiveServer(env=OFF, workers=2, log_path=work_dir / "off.log"),
    }
    rates: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start()
        for _ in range(rounds):
            for name, server in servers.items():
                result = run_load(server.url, body, connections, threads=2, seconds=seconds, tool=tool,
                                  work_dir=work_dir)
                if result.errors:
                    raise RuntimeError(f"{result.errors} failed requests against the {name} server")
                rates[name].append(result.requests_per_s)
    finally:
        for server in servers.values():
            server.stop()
    return rates


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print the overhead of metrics and logs."""
    args = parse_args(argv)
    from lib.core.example_row import EXAMPLE_ROW

    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        tmp_dir = Path(tmp)
        metrics_dir = tmp_dir / "metrics"
        metrics_dir.mkdir()
        # Must be set before prometheus_client is imported (by flaskapp) to pick multiprocess values.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        body = json.dumps(EXAMPLE_ROW).encode()

        micro = in_process(body, args.calls, args.blocks, tmp_dir / "access.log")
        print(f"in process ({args.blocks} alternating blocks of {args.calls} calls): median {micro['on']:.1f} µs "
              f"of CPU per request with metrics and logs, {micro['off']:.1f} µs without; median paired cost "
              f"{micro['cost']:+.1f} µs ({micro['cost'] / micro['off']:+.1%} of a request's CPU time)")
        if args.skip_http:
            return 0
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR")  # each server makes its own
        tool = default_tool()
        rates = over_http(body, tool, args.seconds, args.rounds, args.connections, tmp_dir)
        # Each round runs "on" right before "off": the median of the round ratios cancels most of
        # the drift in what else the machine is doing.
        loss = 1 - statistics.median(on / off for on, off in zip(rates["on"], rates["off"], strict=True))
        label = "python threads" if tool == "python" else tool
        print(f"over HTTP ({label}, {args.connections} connections, 2 workers, {args.rounds} rounds of "
              f"{args.seconds:g} s): median {statistics.median(rates['on']):.0f} req/s with, "
              f"{statistics.median(rates['off']):.0f} req/s without: {loss:+.1%} throughput cost "
              f"(median of round ratios; budget 5 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
