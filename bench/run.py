"""The performance benchmark in one command: the served app against the floor app, same inputs.

    .venv/bin/python -m bench.run            # full run, < 5 minutes; writes docs/PERFORMANCE.md
    .venv/bin/python -m bench.run --quick    # tiny counts, a few seconds of load: a smoke test

It starts the real server and the floor app (bench/floor_app.py) with the project's
gunicorn.conf.py (2 workers each, on free ports of 127.0.0.1), measures both, stops them,
times the reference path in process, prints the tables, and writes the raw figures as JSON to
bench/results/ and the report to docs/PERFORMANCE.md (keeping its hand-written notes).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench import inputs, report
from bench.client import PREDICT_PATH, HttpClient
from bench.load import default_tool, run_load, wrk_available
from bench.memory import peak_worker_rss_mb
from bench.stats import latency_summary, percentile
from bench.stress import BATCH, Job, check_answer, request_body
from lib.codecs.limits import DecodeLimits
from lib.core.errors import ArtifactError
from lib.store.versions import DEFAULT_STORE, ModelStore
from tests.support.live_server import PROJECT_DIR, LiveServer

TEST_JSON = PROJECT_DIR / "lib" / "data" / "test.json"
RESULTS_DIR = PROJECT_DIR / "bench" / "results"
DOCUMENT = PROJECT_DIR / "docs" / "PERFORMANCE.md"
SERVED, FLOOR = "served", "floor"
FLOOR_APP = "bench.floor_app:create_app()"
WORKERS = 2
LARGE_ROWS = 10_000
#: ``?explain=`` values the explained request is timed with -> reasons per row (None: no explain).
EXPLAIN_MODES = {"none": None, "3": 3, "all": 25}
HUGE_ROWS = 100_000


class BenchError(RuntimeError):
    """A measurement could not be taken as intended (a wrong answer, a server that would not start)."""


def model_dir() -> Path:
    """The directory of the model store's active version: the model every measurement serves."""
    try:
        return ModelStore(DEFAULT_STORE).active()[1]
    except ArtifactError as exc:
        raise BenchError(f"{exc}; or run scripts/bootstrap.sh requirements-dev.txt (or ./run_tests.sh) first") from None


@dataclass(frozen=True)
class Profile:
    """How much of everything a run does."""

    mode: str
    large_requests: int
    load_seconds: float
    # Rows per request → how many requests of that size each app gets.
    per_row_requests: dict[int, int]
    in_process_repeats: int
    # Rows of each NDJSON stream, one stream per size.
    stream_sizes: tuple[int, ...] = inputs.STREAM_SIZES


FULL = Profile("full", large_requests=20, load_seconds=10,
               per_row_requests={1: 200, 10: 200, 100: 100, 1_000: 30, 10_000: 10, 100_000: 3},
               in_process_repeats=5)
QUICK = Profile("quick", large_requests=2, load_seconds=1,
                per_row_requests={1: 10, 10: 5, 100: 3, 1_000: 2, 10_000: 1}, in_process_repeats=1,
                stream_sizes=(10_000, 20_000))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny counts, 1 s of load; figures mean nothing")
    parser.add_argument("--connections", type=int, default=4, help="single-row load: concurrent connections")
    parser.add_argument("--threads", type=int, default=1, help="single-row load: wrk threads")
    parser.add_argument("--load-tool", choices=("wrk", "python"), default=None,
                        help="single-row load generator (default: wrk if installed, else a Python loop)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    parser.add_argument("--doc", type=Path, default=None,
                        help="report to write (default: docs/PERFORMANCE.md; none with --quick)")
    parser.add_argument("--no-doc", action="store_true", help="write no report")
    args = parser.parse_args(argv)
    args.command = shlex.join([".venv/bin/python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    if args.doc is None and not args.quick and not args.no_doc:
        args.doc = DOCUMENT
    if args.no_doc:
        args.doc = None
    if args.load_tool is None:
        args.load_tool = default_tool()
    if args.load_tool == "wrk" and not wrk_available():
        parser.error("wrk is not installed (apt-get install wrk); use --load-tool python")
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def batch_job(n_rows: int, n_test_rows: int) -> Job:
    """A batch of ``n_rows`` test rows in file order, repeating them past the end of the file."""
    return Job(BATCH, tuple(i % n_test_rows for i in range(n_rows)))


class Bench:
    """Both servers, the test rows, and the measurements taken on them."""

    def __init__(self, servers: dict[str, LiveServer], rows: list[bytes], profile: Profile):
        self.servers = servers
        self.rows = rows
        self.profile = profile
        self.clients = {name: HttpClient(server.url, timeout=600) for name, server in servers.items()}
        # Answers seen per app and test row: the same row must score the same in every request.
        self.seen: dict[str, dict[int, float]] = {name: {} for name in servers}

    def timed_posts(self, n_rows: int, count: int) -> dict[str, dict]:
        """POST a body of ``n_rows`` rows ``count`` times to each app, interleaved; check every answer."""
        job = batch_job(n_rows, len(self.rows))
        body = request_body(job, self.rows)
        seconds: dict[str, list[float]] = {name: [] for name in self.servers}
        sizes: dict[str, int] = {}
        for i in range(count):
            # Alternate who goes first so that neither app always follows the other.
            for name in (list(self.servers) if i % 2 == 0 else list(reversed(self.servers))):
                try:
                    reply = self.clients[name].post_json(PREDICT_PATH, body)
                except (OSError, http.client.HTTPException) as exc:
                    raise BenchError(f"{name} app, {n_rows} rows: {type(exc).__name__}: {exc}") from None
                problem = check_answer(reply.status, reply.body, job.rows, self.seen[name])
                if problem:
                    raise BenchError(f"{name} app, {n_rows} rows: {problem}")
                seconds[name].append(reply.seconds)
                sizes[name] = len(reply.body)
        return {name: {"seconds": values, "response_bytes": sizes[name]} for name, values in seconds.items()}

    def large(self) -> dict:
        """End-to-end latency of the 10,000-row request."""
        timed = self.timed_posts(LARGE_ROWS, self.profile.large_requests)
        out: dict = {"rows": LARGE_ROWS, "requests": self.profile.large_requests}
        for name, entry in timed.items():
            summary = latency_summary(entry["seconds"])
            out[name] = {"p50_ms": summary["p50"], "p95_ms": summary["p95"],
                         "response_mb": entry["response_bytes"] / 1e6, "seconds": entry["seconds"]}
        return out

    def explained(self) -> dict:
        """The served app's 10,000-row request without ``explain``, with ``explain=3`` and with
        ``explain=all``, interleaved; every answer checked, and each row's reasons counted."""
        job = batch_job(LARGE_ROWS, len(self.rows))
        body = request_body(job, self.rows)
        client, seen = self.clients["served"], self.seen["served"]
        seconds: dict[str, list[float]] = {mode: [] for mode in EXPLAIN_MODES}
        for i in range(self.profile.large_requests):
            for mode, reasons in (EXPLAIN_MODES.items() if i % 2 == 0 else reversed(EXPLAIN_MODES.items())):
                path = PREDICT_PATH + (f"?explain={mode}" if reasons is not None else "")
                try:
                    reply = client.post_json(path, body)
                except (OSError, http.client.HTTPException) as exc:
                    raise BenchError(f"served app, explain={mode}: {type(exc).__name__}: {exc}") from None
                problem = check_answer(reply.status, reply.body, job.rows, seen)
                if not problem and reasons is not None:
                    counts = {len(r.get("reasons", ())) for r in orjson.loads(reply.body)}
                    problem = None if counts == {reasons} else f"rows with {sorted(counts)} reasons, not {reasons}"
                if problem:
                    raise BenchError(f"served app, explain={mode}: {problem}")
                seconds[mode].append(reply.seconds)
        return {"rows": LARGE_ROWS, "requests": self.profile.large_requests,
                **{mode: {"p50_ms": latency_summary(values)["p50"]} for mode, values in seconds.items()}}

    def forms(self) -> dict:
        """The 10,000 test rows in each input form to the served app, JSON rows to the floor app."""
        return inputs.time_forms(self.clients[SERVED], self.clients[FLOOR], self.rows[:LARGE_ROWS],
                                 self.profile.large_requests, self.seen[SERVED], BenchError)

    def per_row(self) -> list[dict]:
        """Median request time and cost per row at each size of the profile."""
        entries = []
        for n_rows, count in self.profile.per_row_requests.items():
            log(f"per-row cost: {n_rows:,} rows x {count} per app")
            timed = self.timed_posts(n_rows, count)
            entry: dict = {"rows": n_rows, "requests": count}
            for name, values in timed.items():
                median = percentile(values["seconds"], 50)
                entry[name] = {"median_ms": median * 1000, "us_per_row": median * 1e6 / n_rows}
            entries.append(entry)
        return entries

    def load(self, tool: str, connections: int, threads: int, work_dir: Path) -> dict:
        """Single-row throughput and latency at a fixed concurrency, one app at a time."""
        out: dict = {"tool": tool, "connections": connections, "threads": threads,
                     "seconds": self.profile.load_seconds}
        for name, server in self.servers.items():
            log(f"single-row load on the {name} app: {tool}, {connections} connections, "
                f"{self.profile.load_seconds:g} s")
            result = run_load(server.url, self.rows[0], connections, threads, self.profile.load_seconds, tool,
                              work_dir)
            if result.errors:
                raise BenchError(f"{name} app: {result.errors} failed requests under single-row load")
            out[name] = vars(result)
        return out

    def peak_rss(self) -> dict[str, float]:
        """The largest worker peak RSS of each app, in MB."""
        return {name: peak_worker_rss_mb(server.process.pid) for name, server in self.servers.items()}

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def start_servers(stack: ExitStack, work_dir: Path) -> tuple[dict[str, LiveServer], dict[str, float]]:
    """Start the served and the floor app one after the other; time each from spawn to /ready."""
    servers, startup = {}, {}
    stack.callback(stop_servers, servers)
    for name, app in ((SERVED, None), (FLOOR, FLOOR_APP)):
        server = LiveServer(env={"MODEL_DIR": str(model_dir())}, workers=WORKERS,
                            log_path=work_dir / f"{name}.log", app=app)
        servers[name] = server
        started = time.perf_counter()
        try:
            server.start(timeout=120)
        except RuntimeError as exc:
            raise BenchError(f"the {name} app did not start: {exc}") from None
        startup[f"{name}_s"] = time.perf_counter() - started
        log(f"{name} app ready on {server.url} in {startup[f'{name}_s']:.2f} s")
    return servers, startup


def stop_servers(servers: dict[str, LiveServer]) -> None:
    """Stop every server at once: each graceful stop mostly waits for its workers to notice."""
    with ThreadPoolExecutor(max_workers=len(servers) or 1) as pool:
        list(pool.map(LiveServer.stop, servers.values()))


def streams(rows: list[bytes], sizes: Sequence[int], work_dir: Path) -> dict:
    """NDJSON streams to a served app of their own, so that its workers' peak RSS is theirs."""
    server = LiveServer(env={"MODEL_DIR": str(model_dir())}, workers=WORKERS, log_path=work_dir / "streams.log")
    try:
        server.start(timeout=120)
    except RuntimeError as exc:
        raise BenchError(f"the app for streams did not start: {exc}") from None
    try:
        return inputs.time_streams(server.url, server.process.pid, rows, sizes, {}, BenchError, log)
    finally:
        server.stop()


def factory_time() -> dict[str, float]:
    """Import and factory time of the real app in a fresh process (a cold worker's start)."""
    code = ("import json, time; t0 = time.perf_counter(); import flaskapp; t1 = time.perf_counter(); "
            "flaskapp.create_app(); t2 = time.perf_counter(); "
            "print(json.dumps({'import_s': t1 - t0, 'factory_s': t2 - t1}))")
    env = {**os.environ, "MODEL_DIR": str(model_dir()), "LOG_LEVEL": "warning"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"create_app() failed in a fresh process: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def in_process(rows: list[bytes], repeats: int) -> dict:
    """The served path (Predictor.predict) against the reference path on the same 10,000 rows."""
    import pandas as pd

    from lib.core.artifacts import load_artifacts
    from lib.core.reference import reference_probabilities
    from service.http.readers.body_formats import BodyReader
    from service.scoring.answers import PROBABILITY
    from service.scoring.predictor import Predictor

    body = request_body(batch_job(LARGE_ROWS, len(rows)), rows)
    stages = load_artifacts(model_dir())
    predictor = Predictor(stages, lambda columns: BodyReader(columns, DecodeLimits(LARGE_ROWS)))
    served, reference = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = predictor.predict(body, "application/json")
        served.append(time.perf_counter() - started)
        started = time.perf_counter()
        expected = reference_probabilities(stages, pd.DataFrame(orjson.loads(body)))
        reference.append(time.perf_counter() - started)
    got = [row[PROBABILITY] for row in orjson.loads(answer.body)]
    return {"rows": LARGE_ROWS, "repeats": repeats, "served_ms": percentile(served, 50) * 1000,
            "reference_ms": percentile(reference, 50) * 1000,
            "max_abs_diff": float(max(abs(a - b) for a, b in zip(got, expected, strict=True)))}


def run(args: argparse.Namespace) -> dict:
    """Take every measurement; return the results (without verdicts)."""
    profile = QUICK if args.quick else FULL
    if not TEST_JSON.exists():
        raise BenchError(f"{TEST_JSON.relative_to(PROJECT_DIR)} is missing: run scripts/bootstrap.sh "
                         "requirements-dev.txt (or ./run_tests.sh) first")
    model_dir()
    started = time.perf_counter()
    stamp = datetime.now(UTC)
    run_id = stamp.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    work_dir = args.results_dir / run_id
    work_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "run": {"id": run_id, "date": stamp.strftime("%Y-%m-%d %H:%M UTC"), "mode": profile.mode,
                "command": args.command, "loadavg_start": loadavg()},
        "machine": report.machine_description(),
        "workers": WORKERS,
    }
    rows = [orjson.dumps(row) for row in orjson.loads(TEST_JSON.read_bytes())]
    log(f"{profile.mode} run {run_id}; {len(rows):,} test rows; files in {work_dir}")
    with ExitStack() as stack:
        servers, results["startup"] = start_servers(stack, work_dir)
        bench = Bench(servers, rows, profile)
        stack.callback(bench.close)
        idle = bench.peak_rss()
        log(f"10,000-row request x {profile.large_requests} per app")
        results["large"] = bench.large()
        at_large = bench.peak_rss()
        log(f"10,000-row request with explain=3 and explain=all x {profile.large_requests}")
        results["explain"] = bench.explained()
        log(f"10,000 rows as JSON rows and columns, Arrow and Parquet x {profile.large_requests}")
        results["forms"] = bench.forms()
        results["load"] = bench.load(args.load_tool, args.connections, args.threads, work_dir)
        results["per_row"] = bench.per_row()
        at_huge = bench.peak_rss() if HUGE_ROWS in profile.per_row_requests else {}
        results["rss"] = {name: {"idle_mb": idle[name], "rows_10000_mb": at_large[name],
                                 "rows_100000_mb": at_huge.get(name)} for name in servers}
    results["streams"] = streams(rows, profile.stream_sizes, work_dir)
    log("servers stopped; start-up and in-process timings")
    results["startup"].update(factory_time())
    results["in_process"] = in_process(rows, profile.in_process_repeats)
    results["run"]["loadavg_end"] = loadavg()
    results["run"]["seconds"] = time.perf_counter() - started
    results["run"]["results_file"] = str(_shown(work_dir / "results.json"))
    return results


def _shown(path: Path) -> Path:
    try:
        return path.resolve().relative_to(PROJECT_DIR)
    except ValueError:
        return path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 1
    results["targets"] = report.evaluate(results)
    results_file = PROJECT_DIR / results["run"]["results_file"]
    results_file.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print()
    print(report.terminal_report(results))
    print()
    if args.doc:
        report.write_document(args.doc, report.markdown_report(results))
        log(f"wrote {_shown(args.doc)}")
    log(f"results in {_shown(results_file)}; command: {args.command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
