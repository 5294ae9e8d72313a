"""The stress tool behind stress_test.sh: single-row loops and random batches against a server.

Rows come from lib/data/test.json. Every answer is checked: status 200, a JSON list with one
result per row, each probability a number in [0, 1], each class 0 or 1, and the same
probability for a test row whichever request carried it, among the answers that name the same
model version (X-Model-Version): a server may switch versions during the run. Progress lines go
to stdout while it runs, a summary per kind at the end, with the versions that answered; the
exit status is 1 if any request failed.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import PREDICT_PATH, PREDICTED_CLASS, PROBABILITY, HttpClient
from bench.ndjson_client import post_stream
from bench.stats import latency_summary

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFAULT_URL = "http://127.0.0.1:1313"
DEFAULT_DATA = PROJECT_DIR / "lib" / "data" / "test.json"
SINGLE = "single"
BATCH = "batch"
STREAM = "stream"
#: The same row must score the same in any request, to the tolerance the served and
#: reference paths agree to.
TOLERANCE = 1e-9
#: How many error messages the summary lists.
LISTED_ERRORS = 10


@dataclass(frozen=True)
class Job:
    """One request to send: its kind and the indices of the test rows in its body."""

    kind: str
    rows: tuple[int, ...]


@dataclass
class Phase:
    """What one kind of request gave: counts, latencies of answered requests, wall time."""

    kind: str
    planned: int
    sent: int = 0
    errors: int = 0
    rows_ok: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def row(self) -> dict[str, float | int | str]:
        """The summary figures of this phase."""
        seconds = self.seconds or float("nan")
        return {"kind": self.kind, "requests": self.sent, "errors": self.errors, "rows": self.rows_ok,
                "seconds": self.seconds, "req/s": self.sent / seconds, "rows/s": self.rows_ok / seconds,
                **latency_summary(self.latencies)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="stress_test.sh",
        description="Send single-row requests, then random batches of lib/data/test.json rows, to a running "
                    "prediction server; check every answer; print progress and a summary. "
                    "Exits 1 if any request failed.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="base URL of the server (default: %(default)s)")
    parser.add_argument("-n", "--requests", type=int, default=10_000, metavar="N",
                        help="single-row requests, looping over the test rows (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=None, metavar="S",
                        help="send single-row requests for S seconds instead of --requests of them")
    parser.add_argument("-b", "--batches", type=int, default=200, metavar="N",
                        help="random batches of random test rows (default: %(default)s)")
    parser.add_argument("-c", "--concurrency", type=int, default=4, metavar="N",
                        help="requests in flight at once (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=1000, metavar="ROWS",
                        help="largest batch; sizes are uniform in 1..ROWS (default: %(default)s)")
    parser.add_argument("--stream", type=int, default=0, metavar="ROWS",
                        help="then send ROWS test rows (cycling) in one NDJSON stream and check every answer "
                             "line (default: no stream)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="JSON array of rows to draw from (default: lib/data/test.json)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the batch draws (default: random)")
    parser.add_argument("--api-key", default=os.environ.get("API_KEY") or None, metavar="KEY",
                        help="send KEY as 'Authorization: Bearer KEY' (default: $API_KEY, which keeps the key out "
                             "of the process list; none if unset)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="per-request timeout (default: %(default)s)")
    parser.add_argument("--max-errors", type=int, default=100, metavar="N",
                        help="stop early after this many failed requests (default: %(default)s)")
    parser.add_argument("--progress-seconds", type=float, default=2.0, metavar="SECONDS",
                        help="interval of the progress lines (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in ("requests", "batches", "stream"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be 0 or more, got {getattr(args, name)}")
    for name in ("concurrency", "max_batch", "max_errors"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.seconds is not None and not 0 < args.seconds < float("inf"):
        parser.error(f"--seconds must be a positive number, got {args.seconds}")
    if not args.data.is_file():
        parser.error(f"{args.data} not found: ./run_api.sh generates lib/data/test.json, or pass --data")
    if args.seed is None:
        args.seed = random.randrange(2**31)
    return args


def key_headers(key: str | None) -> dict[str, str]:
    """The header that carries an API key, if one is given."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def encode_rows(path: Path) -> list[bytes]:
    """Each row of a JSON array file, encoded once as its own JSON object."""
    rows = json.loads(path.read_bytes())
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise SystemExit(f"{path} must hold a non-empty JSON array of row objects")
    return [json.dumps(row, separators=(",", ":")).encode() for row in rows]


def plan_jobs(n_rows: int, requests: int, batches: int, max_batch: int, rng: random.Random, *,
              fixed_size: bool = False) -> dict[str, list[Job]]:
    """Single-row requests cycling through the rows, and batches of random rows drawn by ``rng``.

    A batch has a random size in 1..max_batch, its rows drawn with replacement; with ``fixed_size``
    it has exactly ``max_batch`` rows, drawn without replacement when there are that many rows.
    """
    population = range(n_rows)

    def draw() -> tuple[int, ...]:
        if not fixed_size:
            return tuple(rng.choices(population, k=rng.randint(1, max_batch)))
        if max_batch <= n_rows:
            return tuple(rng.sample(population, max_batch))
        return tuple(rng.choices(population, k=max_batch))

    return {SINGLE: [Job(SINGLE, (i % n_rows,)) for i in range(requests)],
            BATCH: [Job(BATCH, draw()) for _ in range(batches)]}


def request_body(job: Job, encoded: Sequence[bytes]) -> bytes:
    """A single row is sent as a JSON object, a batch as a JSON array."""
    if job.kind == SINGLE:
        return encoded[job.rows[0]]
    return b"[" + b",".join(encoded[i] for i in job.rows) + b"]"


def check_answer(status: int, body: bytes, rows: Sequence[int], seen: dict[int, float]) -> str | None:
    """None if the answer is right for ``rows``, else what is wrong with it."""
    if status != 200:
        return f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
    try:
        results = json.loads(body)
    except ValueError as exc:
        return f"the answer is not JSON: {exc}"
    if not isinstance(results, list) or len(results) != len(rows):
        got = f"{len(results)} results" if isinstance(results, list) else f"a JSON {type(results).__name__}"
        return f"{got} for {len(rows)} rows"
    for position, (index, result) in enumerate(zip(rows, results, strict=True)):
        problem = check_result(f"result {position} (test row {index})", index, result, seen)
        if problem is not None:
            return problem
    return None


def check_result(where: str, index: int, result: object, seen: dict[int, float]) -> str | None:
    """None if ``result`` is a right answer for test row ``index``, else what is wrong with it."""
    if not isinstance(result, dict):
        return f"{where} is not an object: {str(result)[:100]}"
    probability, predicted = result.get(PROBABILITY), result.get(PREDICTED_CLASS)
    if isinstance(probability, bool) or not isinstance(probability, int | float) or not 0 <= probability <= 1:
        return f"{where}: {PROBABILITY} {probability!r} is not a number in [0, 1]"
    if isinstance(predicted, bool) or predicted not in (0, 1):
        return f"{where}: {PREDICTED_CLASS} {predicted!r} is not 0 or 1"
    earlier = seen.setdefault(index, probability)
    if abs(earlier - probability) > TOLERANCE:
        return f"{where}: {PROBABILITY} {probability!r} differs from the {earlier!r} answered before"
    return None


def stream_blocks(encoded: Sequence[bytes], n_rows: int, block_rows: int = 1000):
    """``n_rows`` test rows, cycling, as NDJSON in blocks of ``block_rows`` lines."""
    for start in range(0, n_rows, block_rows):
        yield b"".join(encoded[i % len(encoded)] + b"\n" for i in range(start, min(start + block_rows, n_rows)))


class Runner:
    """Sends jobs from a pool of threads, one HTTP connection each, and tallies the answers."""

    def __init__(self, url: str, encoded: Sequence[bytes], concurrency: int, timeout: float,
                 max_errors: int, progress_seconds: float, out: Callable[[str], None] = print,
                 headers: dict[str, str] | None = None):
        self.url, self.encoded, self.concurrency, self.timeout = url, encoded, concurrency, timeout
        self.max_errors, self.progress_seconds, self.out = max_errors, progress_seconds, out
        self.headers = headers or {}  # with every request: an API key
        self.errors = 0
        # Per model version, the probability answered for each test row.
        self.seen: dict[str | None, dict[int, float]] = {}
        self.versions: dict[str | None, int] = {}
        self._local = threading.local()
        self._clients: list[HttpClient] = []

    def _client(self) -> HttpClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = HttpClient(self.url, self.timeout, self.headers)
            self._clients.append(client)
        return client

    def _send(self, job: Job) -> tuple[float | None, str | None, str | None]:
        try:
            reply = self._client().post_json(PREDICT_PATH, request_body(job, self.encoded))
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}", None
        seen = self.seen.setdefault(reply.model_version, {})
        return reply.seconds, check_answer(reply.status, reply.body, job.rows, seen), reply.model_version

    def run(self, kind: str, jobs: Sequence[Job] | Iterable[Job], until: float | None = None) -> Phase:
        """Send every job, or (with ``until``, a ``time.perf_counter()`` value) jobs until then,
        keeping ``concurrency`` in flight, or until ``max_errors`` failures in all; return the
        phase's figures."""
        phase = Phase(kind, len(jobs) if isinstance(jobs, Sequence) and until is None else 0)
        if (until is None and not phase.planned) or self.errors >= self.max_errors:
            return phase
        started = last_report = time.perf_counter()
        pending = iter(jobs)
        in_flight: dict[Future, Job] = {}
        drained = given_up = False
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"stress-{kind}")
        try:
            while not given_up:
                while not drained and len(in_flight) < 2 * self.concurrency:
                    job = next(pending, None) if until is None or time.perf_counter() < until else None
                    if job is None:
                        drained = True
                        break
                    in_flight[pool.submit(self._send, job)] = job
                    if until is not None:
                        phase.planned += 1
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    # At max_errors the rest is dropped uncounted, answered or not.
                    given_up = given_up or self._tally(kind, phase, in_flight.pop(future), *future.result())
                now = time.perf_counter()
                if now - last_report >= self.progress_seconds:
                    last_report = now
                    self.out(_progress(phase, now - started))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            phase.seconds = time.perf_counter() - started
        self.out(_progress(phase, phase.seconds))
        return phase

    def _tally(self, kind: str, phase: Phase, job: Job, seconds: float | None, error: str | None,
               version: str | None) -> bool:
        """Count one answered job; True when the run must stop (``max_errors`` reached)."""
        phase.sent += 1
        if seconds is not None:
            self.versions[version] = self.versions.get(version, 0) + 1
            phase.latencies.append(seconds)
        if error is None:
            phase.rows_ok += len(job.rows)
            return False
        phase.errors += 1
        self.errors += 1
        if len(phase.messages) < LISTED_ERRORS:
            phase.messages.append(error)
        if self.errors >= self.max_errors:
            self.out(f"[{kind}] stopping: {self.errors} failed requests (--max-errors {self.max_errors})")
            return True
        return False

    def run_stream(self, n_rows: int) -> Phase:
        """Send ``n_rows`` test rows in one NDJSON stream, checking each answer line as it comes."""
        phase = Phase(STREAM, 1 if n_rows else 0)
        if not n_rows or self.errors >= self.max_errors:
            return phase
        started = last_report = time.perf_counter()
        position = 0

        def check(lines: list[bytes]) -> None:
            nonlocal position, last_report
            for line in lines:
                try:
                    result = json.loads(line)
                except ValueError:
                    result = line[:100].decode("utf-8", "replace")
                problem = check_result(f"line {position + 1}", position % len(self.encoded), result, self.seen)
                position += 1
                if problem is None:
                    phase.rows_ok += 1
                elif len(phase.messages) < LISTED_ERRORS:
                    phase.messages.append(problem)
            now = time.perf_counter()
            if now - last_report >= self.progress_seconds:
                last_report = now
                self.out(f"[{STREAM}] {position:,}/{n_rows:,} rows answered, {position / (now - started):,.0f} rows/s")

        try:
            result = post_stream(self.url, stream_blocks(self.encoded, n_rows), keep_lines=False,
                                 timeout=self.timeout, on_lines=check, headers=self.headers)
            version = result.headers.get("x-model-version")
            if version is not None:  # a stream is scored by one version, named once, in its header
                self.versions[version] = self.versions.get(version, 0) + position
            if result.status != 200:
                phase.messages.insert(0, f"HTTP {result.status}")
            elif position != n_rows:
                phase.messages.insert(0, f"{position:,} answer lines for {n_rows:,} rows")
        except (OSError, http.client.HTTPException) as exc:
            phase.messages.insert(0, f"{type(exc).__name__}: {exc}")
        phase.seconds = time.perf_counter() - started
        phase.sent = 1
        phase.latencies.append(phase.seconds)
        if phase.messages:
            phase.errors = 1
            self.errors += 1
        self.out(f"[{STREAM}] {position:,}/{n_rows:,} rows answered in {phase.seconds:.1f} s")
        return phase

    def close(self) -> None:
        """Close every thread's connection."""
        for client in self._clients:
            client.close()


def _progress(phase: Phase, elapsed: float) -> str:
    rate = phase.sent / elapsed if elapsed else 0.0
    return (f"[{phase.kind}] {phase.sent}/{phase.planned} requests, {phase.errors} errors, "
            f"{rate:,.0f} req/s, {elapsed:.1f} s")


def format_summary(phases: Sequence[Phase]) -> str:
    """The summary table: one line per kind and a total."""
    total = Phase("total", sum(p.planned for p in phases), sum(p.sent for p in phases),
                  sum(p.errors for p in phases), sum(p.rows_ok for p in phases), sum(p.seconds for p in phases))
    header = (f"{'kind':<8}{'requests':>10}{'errors':>8}{'rows':>10}{'seconds':>9}{'req/s':>9}{'rows/s':>10}"
              f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    lines = [header]
    for phase in [*phases, total]:
        r = phase.row()
        latency = "".join(f"{r[q]:>9.1f}" for q in ("p50", "p95", "p99")) if phase is not total else ""
        lines.append(f"{r['kind']:<8}{r['requests']:>10}{r['errors']:>8}{r['rows']:>10}{r['seconds']:>9.2f}"
                     f"{r['req/s']:>9,.0f}{r['rows/s']:>10,.0f}{latency}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        HttpClient(args.url, timeout=5).request("GET", "/health")
    except (OSError, http.client.HTTPException) as exc:
        print(f"FAILED: cannot reach {args.url} ({type(exc).__name__}: {exc}); is the server running?")
        return 1
    encoded = encode_rows(args.data)
    jobs = plan_jobs(len(encoded), args.requests, args.batches, args.max_batch, random.Random(args.seed))
    stream = f", a stream of {args.stream:,} rows" if args.stream else ""
    singles = f"{args.requests}" if args.seconds is None else f"{args.seconds:g} s of"
    print(f"stress test of {args.url}: {singles} single-row requests, {args.batches} batches of "
          f"1..{args.max_batch} rows{stream}, concurrency {args.concurrency}, {len(encoded)} rows from {args.data}, "
          f"seed {args.seed}", flush=True)
    runner = Runner(args.url, encoded, args.concurrency, args.timeout, args.max_errors, args.progress_seconds,
                    out=lambda line: print(line, flush=True), headers=key_headers(args.api_key))
    try:
        if args.seconds is None:
            phases = [runner.run(SINGLE, jobs[SINGLE])]
        else:
            singles = (Job(SINGLE, (i % len(encoded),)) for i in itertools.count())
            phases = [runner.run(SINGLE, singles, until=time.perf_counter() + args.seconds)]
        phases.append(runner.run(BATCH, jobs[BATCH]))
        if args.stream:
            phases.append(runner.run_stream(args.stream))
    finally:
        runner.close()
    print("\nsummary")
    print(format_summary(phases))
    print("model versions: " + ", ".join(f"{version} ({count} answers)" for version, count in runner.versions.items()))
    unsent = sum(p.planned - p.sent for p in phases)
    if runner.errors or unsent:
        print(f"\nFAILED: {runner.errors} failed requests, {unsent} not sent")
        for phase in phases:
            for message in phase.messages:
                print(f"  [{phase.kind}] {message}")
        return 1
    print(f"\nOK: {sum(p.sent for p in phases)} requests, {sum(p.rows_ok for p in phases)} rows, 0 errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
