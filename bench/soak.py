"""Soak test: many single-row requests and 10,000-row batches against one server, worker RSS watched.

Starts its own gunicorn (the project's gunicorn.conf.py on a free 127.0.0.1 port) unless given
``--url`` and ``--master-pid`` of a running one. After a warm-up it samples the resident memory
(VmRSS) of every worker, then sends the load in segments, each one singles then batches, and
samples again after each segment. Every answer is checked as bench/stress.py checks it (one
result per row, probabilities in [0, 1], a row scores the same in any request).

Exits 1 if a request failed, a worker was replaced, or a worker's RSS grew by more than
``--max-growth`` from the warm-up sample to the end. The last result is in docs/SOAK.md:

    .venv/bin/python -m bench.soak --json soak.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.memory import status_mb, worker_pids
from bench.stress import BATCH, DEFAULT_DATA, SINGLE, Job, Phase, Runner, encode_rows, format_summary, plan_jobs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running server (default: start one)")
    parser.add_argument("--master-pid", type=int, help="pid of that server's gunicorn master (with --url)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the server started here (default: 2)")
    parser.add_argument("--singles", type=int, default=50_000, help="single-row requests (default: %(default)s)")
    parser.add_argument("--batches", type=int, default=200, help="batch requests (default: %(default)s)")
    parser.add_argument("--batch-rows", type=int, default=10_000, help="rows per batch (default: %(default)s)")
    parser.add_argument("--segments", type=int, default=10, help="RSS samples after warm-up (default: %(default)s)")
    parser.add_argument("--warmup-singles", type=int, default=2_000, help="(default: %(default)s)")
    parser.add_argument("--warmup-batches", type=int, default=10, help="(default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default: %(default)s)")
    parser.add_argument("--max-growth", type=float, default=0.10,
                        help="largest accepted RSS growth per worker, as a fraction (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=26, help="seed of the batch row draws (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSON array of rows (default: test.json)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if (args.url is None) != (args.master_pid is None):
        parser.error("--url and --master-pid go together")
    if min(args.singles, args.batches, args.warmup_singles, args.warmup_batches) < 0:
        parser.error("counts must be 0 or more")
    if min(args.segments, args.concurrency, args.batch_rows, args.workers) < 1:
        parser.error("--segments, --concurrency, --batch-rows and --workers must be at least 1")
    return args


def split(jobs: list[Job], parts: int) -> list[list[Job]]:
    """``jobs`` cut into ``parts`` consecutive pieces of (almost) equal size."""
    bounds = [len(jobs) * k // parts for k in range(parts + 1)]
    return [jobs[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def rss_mb(master_pid: int) -> dict[int, float]:
    """VmRSS of every worker of ``master_pid``, in MB."""
    return {pid: status_mb(pid, "VmRSS") for pid in worker_pids(master_pid)}


def soak(args: argparse.Namespace, url: str, master_pid: int) -> dict:
    """Run the warm-up and the segments; return the figures."""
    encoded = encode_rows(args.data)
    rng = random.Random(args.seed)
    runner = Runner(url, encoded, args.concurrency, timeout=300.0, max_errors=100, progress_seconds=30.0,
                    out=lambda line: print(line, flush=True))
    phases: list[Phase] = []
    samples = []
    started = time.perf_counter()
    try:
        warm_up = plan_jobs(len(encoded), args.warmup_singles, args.warmup_batches, args.batch_rows, rng,
                            fixed_size=True)
        runner.run(SINGLE, warm_up[SINGLE])
        runner.run(BATCH, warm_up[BATCH])
        baseline = rss_mb(master_pid)
        samples.append({"after": "warm-up", "singles": 0, "batches": 0, "rss_mb": baseline})
        print(f"warm-up done; worker RSS (MB): {_show(baseline)}", flush=True)
        jobs = plan_jobs(len(encoded), args.singles, args.batches, args.batch_rows, rng, fixed_size=True)
        sent_singles = sent_batches = 0
        for k, (some_singles, some_batches) in enumerate(
                zip(split(jobs[SINGLE], args.segments), split(jobs[BATCH], args.segments), strict=True), 1):
            phases += [runner.run(SINGLE, some_singles), runner.run(BATCH, some_batches)]
            sent_singles += len(some_singles)
            sent_batches += len(some_batches)
            sample = rss_mb(master_pid)
            samples.append({"after": f"segment {k}", "singles": sent_singles, "batches": sent_batches,
                            "rss_mb": sample})
            print(f"segment {k}/{args.segments}: {sent_singles} singles, {sent_batches} batches; "
                  f"worker RSS (MB): {_show(sample)}", flush=True)
    finally:
        runner.close()
    end = samples[-1]["rss_mb"]
    replaced = set(end) != set(baseline)
    growth = {pid: end[pid] / baseline[pid] - 1 for pid in baseline if pid in end}
    return {
        "url": url, "seconds": round(time.perf_counter() - started, 1), "concurrency": args.concurrency,
        "singles": args.singles, "batches": args.batches, "batch_rows": args.batch_rows,
        "errors": runner.errors, "unsent": sum(p.planned - p.sent for p in phases),
        "workers_replaced": replaced, "max_growth": max(growth.values(), default=0.0),
        "growth": {str(pid): round(g, 4) for pid, g in growth.items()},
        "samples": [{**s, "rss_mb": {str(p): round(v, 1) for p, v in s["rss_mb"].items()}} for s in samples],
        "summary": format_summary(_merge(phases)),
    }


def _merge(phases: Sequence[Phase]) -> list[Phase]:
    """One phase per kind, adding up the segments."""
    merged: dict[str, Phase] = {}
    for phase in phases:
        total = merged.setdefault(phase.kind, Phase(phase.kind, 0))
        total.planned += phase.planned
        total.sent += phase.sent
        total.errors += phase.errors
        total.rows_ok += phase.rows_ok
        total.seconds += phase.seconds
        total.latencies += phase.latencies
    return list(merged.values())


def _show(rss: dict[int, float]) -> str:
    return ", ".join(f"{pid}: {mb:.1f}" for pid, mb in sorted(rss.items()))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = None
    if args.url is None:
        from tests.support.live_server import LiveServer  # the same launcher the tests use

        log = Path(tempfile.mkdtemp(prefix="soak-")) / "gunicorn.log"
        server = LiveServer(workers=args.workers, log_path=log).start()
        url, master_pid = server.url, server.process.pid
        print(f"started gunicorn {master_pid} with {args.workers} workers at {url}, log {log}", flush=True)
    else:
        url, master_pid = args.url.rstrip("/"), args.master_pid
    try:
        figures = soak(args, url, master_pid)
    finally:
        if server is not None:
            server.stop()
    print("\n" + figures["summary"])
    print("\nworker RSS growth from warm-up to end: "
          + ", ".join(f"{pid}: {g:+.1%}" for pid, g in figures["growth"].items()))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    problems = []
    if figures["errors"] or figures["unsent"]:
        problems.append(f"{figures['errors']} failed requests, {figures['unsent']} not sent")
    if figures["workers_replaced"]:
        problems.append("a worker was replaced during the run")
    if figures["max_growth"] > args.max_growth:
        problems.append(f"worker RSS grew {figures['max_growth']:.1%} (limit {args.max_growth:.0%})")
    if problems:
        print("FAILED: " + "; ".join(problems))
        return 1
    print(f"OK: {args.singles} single-row requests and {args.batches} batches of {args.batch_rows} rows, "
          f"0 errors, largest worker RSS growth {figures['max_growth']:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
