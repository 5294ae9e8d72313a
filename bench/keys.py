"""What API keys cost on single-row requests (the goal: within 5 % of keys off).

    .venv/bin/python -m bench.keys [--seconds 10] [--rounds 3] [--concurrency 4]

Two real 2-worker gunicorn servers, one with API keys off and one with ``API_KEYS_FILE`` (a file
of 20 keys, as a shared service might have: the check compares every stored hash), loaded in
alternating rounds by stress_test.sh's own runner (``bench.stress``: single rows, every answer
checked), the keyed one with ``Authorization: Bearer KEY``. The figure is the median of the
per-round throughput ratios, so that drift in the machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.stress import DEFAULT_DATA, SINGLE, Job, Runner, encode_rows, key_headers
from service.ops import keys
from tests.support.live_server import LiveServer

KEYS_IN_FILE = 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.keys", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of one round per server (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="rows to send (default lib/data/test.json)")
    return parser.parse_args(argv)


def single_rows(server: LiveServer, encoded: list[bytes], seconds: float, concurrency: int,
                headers: dict[str, str]) -> float:
    """Requests per second of ``seconds`` of single rows; raises if any answer was wrong."""
    runner = Runner(server.url, encoded, concurrency, timeout=30, max_errors=1, progress_seconds=3600,
                    out=lambda line: None, headers=headers)
    try:
        jobs = (Job(SINGLE, (i % len(encoded),)) for i in itertools.count())
        phase = runner.run(SINGLE, jobs, until=time.perf_counter() + seconds)
    finally:
        runner.close()
    if phase.errors:
        raise RuntimeError(f"{phase.errors} failed requests: {phase.messages[:3]}")
    return phase.sent / phase.seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    encoded = encode_rows(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as tmp:
        work = Path(tmp)
        key_file = work / "api-keys"
        issued = [keys.add(key_file, f"client-{i}")[0] for i in range(KEYS_IN_FILE)]
        servers = {
            "off": (LiveServer(workers=2, log_path=work / "off.log"), {}),
            "on": (LiveServer(env={"API_KEYS_FILE": str(key_file)}, workers=2, log_path=work / "on.log"),
                   key_headers(issued[KEYS_IN_FILE // 2])),
        }
        rates: dict[str, list[float]] = {name: [] for name in servers}
        try:
            for server, _ in servers.values():
                server.start()
            for server, headers in servers.values():  # warm-up
                single_rows(server, encoded, 2, args.concurrency, headers)
            for _ in range(args.rounds):
                for name, (server, headers) in servers.items():
                    rates[name].append(single_rows(server, encoded, args.seconds, args.concurrency, headers))
        finally:
            for server, _ in servers.values():
                server.stop()
    ratio = statistics.median(on / off for on, off in zip(rates["on"], rates["off"], strict=True))
    print(f"single rows, stress_test.sh's runner, concurrency {args.concurrency}, 2 workers each, {args.rounds} "
          f"alternating rounds of {args.seconds:g} s")
    print("  keys off: " + ", ".join(f"{rate:,.0f}" for rate in rates["off"]) + " req/s")
    print(f"  keys on ({KEYS_IN_FILE} keys in the file): " + ", ".join(f"{rate:,.0f}" for rate in rates["on"])
          + " req/s")
    print(f"  keys on / off, median of the round ratios: {ratio:.3f} (goal: at least 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
