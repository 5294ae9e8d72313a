"""Single-row load at a fixed concurrency for a fixed time: wrk, or a Python loop without it."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.client import PREDICT_PATH, HttpClient
from bench.stats import percentile

WRK_SCRIPT = Path(__file__).with_name("post_row.lua")
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"


@dataclass(frozen=True)
class LoadResult:
    """Throughput and latency of one load run; ``errors`` counts non-2xx answers and socket errors."""

    tool: str
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk_available() -> bool:
    """Whether wrk is on PATH (Debian/Ubuntu: apt-get install wrk)."""
    return shutil.which("wrk") is not None


def parse_wrk(text: str) -> LoadResult:
    """Read the figures of ``wrk --latency`` output."""
    def find(pattern: str) -> re.Match:
        match = re.search(pattern, text)
        if match is None:
            raise ValueError(f"wrk output has no match for {pattern!r}:\n{text}")
        return match

    def latency_ms(percent: str) -> float:
        value, unit = find(rf"\n\s+{percent}%\s+{_DURATION}").groups()
        return float(value) * _UNIT_MS[unit]

    done = find(rf"(\d+) requests in {_DURATION}")
    seconds = float(done.group(2)) * _UNIT_MS[done.group(3)] / 1e3
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return LoadResult(
        tool="wrk", requests=int(done.group(1)), seconds=seconds,
        requests_per_s=float(find(r"Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=latency_ms("50"), p99_ms=latency_ms("99"), errors=errors,
    )


def run_wrk(url: str, body_file: Path, connections: int, threads: int, seconds: float) -> LoadResult:
    """``wrk --latency`` posting the body in ``body_file`` to URL/predict."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
               "--timeout", "10s", "-s", str(WRK_SCRIPT), url + PREDICT_PATH, "--", str(body_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def run_python_load(url: str, body: bytes, connections: int, seconds: float) -> LoadResult:
    """The same load from Python threads, for machines without wrk (slower client, same shape)."""
    deadline = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    def loop(slot: int) -> None:
        client = HttpClient(url, timeout=10)
        try:
            while time.perf_counter() < deadline:
                try:
                    reply = client.post_json(PREDICT_PATH, body)
                except (OSError, http.client.HTTPException):
                    errors[slot] += 1
                    continue
                latencies[slot].append(reply.seconds)
                errors[slot] += reply.status != 200
        finally:
            client.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(slot,), daemon=True) for slot in range(connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    every = [s for slot in latencies for s in slot]
    return LoadResult(
        tool="python", requests=len(every), seconds=elapsed, requests_per_s=len(every) / elapsed,
        p50_ms=percentile(every, 50) * 1000, p99_ms=percentile(every, 99) * 1000, errors=sum(errors),
    )


def default_tool() -> str:
    """The load generator to use when none is asked for: wrk if installed, else the Python loop."""
    return "wrk" if wrk_available() else "python"


def run_load(url: str, body: bytes, connections: int, threads: int, seconds: float, tool: str,
             work_dir: Path) -> LoadResult:
    """Post ``body`` with ``tool`` ("wrk" or "python"); wrk reads it from a file written in ``work_dir``.

    ``threads`` only matters to wrk.
    """
    if tool == "python":
        return run_python_load(url, body, connections, seconds)
    if tool != "wrk":
        raise ValueError(f"unknown load tool {tool!r}: 'wrk' or 'python'")
    body_file = work_dir / "single_row.json"
    body_file.write_bytes(body)
    return run_wrk(url, body_file, connections, threads, seconds)
