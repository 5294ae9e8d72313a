"""Slow clients: what the buffered worker (service/worker/buffered_worker.py) costs and what it buys, on
the real server with 2 workers.

    .venv/bin/python -m bench.slow_clients              # 3 rounds of 10 s per worker class
    .venv/bin/python -m bench.slow_clients --rounds 1 --seconds 3

- Single-row throughput under load (wrk, or the Python loop without it) with the buffered worker
  and with gunicorn's sync worker (``GUNICORN_CMD_ARGS=--worker-class=sync``), in alternating
  rounds so that a busy machine weighs on both alike.
- Latency of /health and a one-row /predict while 50 connections trickle their bodies (buffered
  worker only: the sync worker does not answer them at all until those connections time out).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench.load import default_tool, run_load
from bench.memory import worker_pids
from bench.run import model_dir
from tests.support.live_server import LiveServer
from tests.support.slow_clients import ROW_BODY, SLOW_BODY_HEAD, SlowClients, answers_while_slow

WORKER_CLASSES = {"buffered": {}, "sync": {"GUNICORN_CMD_ARGS": "--worker-class=sync"}}


def workers_cpu_seconds(server: LiveServer) -> float:
    """User and system CPU time of the server's workers so far: less disturbed than throughput by
    whatever else the machine runs."""
    total = 0
    for pid in worker_pids(server.process.pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="load rounds per worker class")
    parser.add_argument("--seconds", type=float, default=10, help="seconds of load per round")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections of the load")
    parser.add_argument("--slow", type=int, default=50, help="slow connections while /health is asked")
    args = parser.parse_args()
    tool = default_tool()
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as work:
        work_dir = Path(work)
        servers = {name: LiveServer(env={"MODEL_DIR": str(model_dir()), **env}, workers=2).start()
                   for name, env in WORKER_CLASSES.items()}
        try:
            rates: dict[str, list[float]] = {name: [] for name in servers}
            cpu: dict[str, list[float]] = {name: [] for name in servers}
            for round_ in range(args.rounds):
                for name, server in servers.items():
                    before = workers_cpu_seconds(server)
                    result = run_load(server.url, ROW_BODY, args.connections, 2, args.seconds, tool, work_dir)
                    rates[name].append(result.requests_per_s)
                    cpu[name].append((workers_cpu_seconds(server) - before) / result.requests * 1e6)
                    print(f"round {round_ + 1} {name:8s} {result.requests_per_s:8.0f} req/s  p50 {result.p50_ms:.2f} "
                          f"ms  p99 {result.p99_ms:.2f} ms  worker CPU {cpu[name][-1]:.0f} us/request  "
                          f"errors {result.errors}  ({tool})")
            for name in servers:
                print(f"{name:8s} median {_median(rates[name]):.0f} req/s, {_median(cpu[name]):.0f} us of worker CPU "
                      f"per request, over {args.rounds} rounds")
            with SlowClients(servers["buffered"].port, args.slow, SLOW_BODY_HEAD) as slow:
                slow.wait_accepted()
                latencies = answers_while_slow(servers["buffered"].url, slow)
            print(f"with {args.slow} slow connections: "
                  + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in latencies.items()))
        finally:
            for server in servers.values():
                server.stop()


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


if __name__ == "__main__":
    main()
