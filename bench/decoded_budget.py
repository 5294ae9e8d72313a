"""How much one Arrow request grows a worker: the largest honest body against the worst crafted
ones under the body limit (the decoded-size budget, MAX_DECODED_MB).

    .venv/bin/python -m bench.decoded_budget [--only NAME ...]

Each body is sent to a fresh 1-worker server (gunicorn, the project's config, the active model),
after one small warm-up request; the figure is the worker's peak resident set (VmHWM) after the
body less before it, with the answer's status. Bodies: the honest 100,000 rows of all 100
columns (lib/data/test.json repeated), plain and ZSTD; and the bombs of tests/support/arrow_bodies.py at
their worst under MAX_DECODED_MB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import requests

from bench.memory import status_mb, worker_pids
from tests.support import arrow_bodies, forms
from tests.support.live_server import PROJECT_DIR, LiveServer

ROWS = 100_000
MB = 1024 * 1024


def bodies(rows: list[dict], budget_mb: int) -> dict[str, bytes]:
    """name -> body: the honest ones first, then the crafted ones."""
    honest = arrow_bodies.rows_table(rows, ROWS)
    under = budget_mb * MB // ROWS - 64  # bytes per cell: the column just under the budget
    return {
        "honest, 100,000 rows x 100 columns": arrow_bodies.stream(honest),
        "honest, the same, ZSTD": arrow_bodies.stream(honest, compression="zstd"),
        "unused column, ZSTD, 1.4 GB decoded": arrow_bodies.unused_column_bomb(rows[:777], 1400),
        "consumed x12, 2 KB text x 100,000, dictionary, ZSTD": arrow_bodies.consumed_text_bomb("x12", ROWS, 2048, True),
        "consumed x12, 2 KB text x 100,000, ZSTD": arrow_bodies.consumed_text_bomb("x12", ROWS, 2048, False),
        f"consumed x12, {under:,} B text x 100,000 (just under the budget), ZSTD":
            arrow_bodies.consumed_text_bomb("x12", ROWS, under, False),
        f"consumed x5, {under:,} B text x 100,000, ZSTD": arrow_bodies.consumed_text_bomb("x5", ROWS, under, False),
        f"consumed x12, string_view, {under:,} B shared by 100,000 views":
            arrow_bodies.view_text_bomb("x12", ROWS, under),
        "consumed id, 2 KB text x 100,000, dictionary, ZSTD": arrow_bodies.consumed_text_bomb("id", ROWS, 2048, True),
    }


def growth(body: bytes, log: Path, budget_mb: int) -> tuple[int, float, int]:
    """(status, worker VmHWM growth in MB, body bytes) of one body on a fresh 1-worker server."""
    with LiveServer(env={"MAX_DECODED_MB": str(budget_mb)}, workers=1, log_path=log) as live:
        (worker,) = worker_pids(live.process.pid)
        warm = requests.post(live.url + "/predict", data=forms.arrow_stream([{"x44": 1.0}]),
                             headers={"Content-Type": forms.ARROW}, timeout=60)
        assert warm.status_code == 200, warm.text[:200]
        before = status_mb(worker, "VmHWM")
        answer = requests.post(live.url + "/predict", data=body, headers={"Content-Type": forms.ARROW}, timeout=600)
        after = status_mb(worker, "VmHWM")
        assert worker_pids(live.process.pid) == [worker], "the worker was replaced"
        return answer.status_code, after - before, len(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decoded_budget", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="run the bodies whose name holds one of these")
    parser.add_argument("--budget-mb", type=int, default=96, help="MAX_DECODED_MB of the server (default 96)")
    args = parser.parse_args(argv)
    rows = json.loads((PROJECT_DIR / "lib" / "data" / "test.json").read_bytes())
    with tempfile.TemporaryDirectory(prefix="decoded-budget-") as work:
        for name, body in bodies(rows, args.budget_mb).items():
            if args.only and not any(part in name for part in args.only):
                continue
            status, grown, size = growth(body, Path(work) / "server.log", args.budget_mb)
            print(f"| {name} | {size / 1024:,.0f} KB | {status} | +{grown:,.0f} MB |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
