"""What one Parquet request grows a worker by: the largest honest body against the worst crafted
ones under the body limit, each on a fresh one-worker server with the default limits (MAX_ROWS
100,000, MAX_DECODED_MB).

    .venv/bin/python -m bench.decoded_budget_parquet

Growth is the worker's peak resident set (VmHWM) after the request less its peak after a one-row
warm-up request, so the import and the first scoring are not counted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import requests

from bench.memory import status_mb, worker_pids
from lib.core.schema import SCHEMA
from lib.store.versions import active_directory
from tests.support.live_server import LiveServer

ROWS = 100_000
PARQUET = "application/vnd.apache.parquet"
DATA = Path(__file__).resolve().parents[1] / "lib" / "data" / "test.json"


def parquet(table: pa.Table, **options) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue().to_pybytes()


def honest() -> bytes:
    """100,000 rows, all 100 columns: the 10,000 test rows ten times over, as pandas holds them."""
    rows = json.loads(DATA.read_text())
    frame = pd.DataFrame((rows * (ROWS // len(rows) + 1))[:ROWS])
    return parquet(pa.Table.from_pandas(frame, preserve_index=False))


def repeated(value: object, names: list[str], rows: int = ROWS) -> bytes:
    """``rows`` rows of ``names``, every cell ``value``: RLE, dictionary and ZSTD make it a few KB."""
    return parquet(pa.table({name: pa.repeat(pa.scalar(value), rows) for name in names}), compression="zstd")


def bodies() -> dict[str, bytes]:
    names = [column.name for column in SCHEMA]
    return {
        "honest: 100,000 test rows, 100 columns": honest(),
        "100,000 rows of nulls, 100 columns": repeated(None, names),
        "100,000 rows, one number in 100 columns": repeated(0.25, names),
        "100,000 rows, a 150-byte amount in x12 (just under the budget)": repeated("9" * 150, ["x12"]),
        "100,000 rows, 150 bytes of text that is no amount in x12": repeated("x" * 150, ["x12"]),
        "100,000 rows, a 600-byte amount in x12 (over the budget)": repeated("9" * 600, ["x12"]),
        "100,000 rows, a 2 KB amount in x12 (over the budget)": repeated("9" * 2048, ["x12"]),
        "100,000 rows, a 2 KB level in x5": repeated("m" * 2048, ["x5"]),
        "100,000 rows, a 150-byte id": repeated("i" * 150, ["id"]),
        "5,000,000 rows of one number (over MAX_ROWS)": repeated(0.25, ["x44"], 5_000_000),
    }


def growth(body: bytes, model_dir: str) -> tuple[int, float, float]:
    """The status of the answer, and the worker's growth in MB (peak, then resident after)."""
    with LiveServer(env={"MODEL_DIR": model_dir}, workers=1) as server:
        (worker,) = worker_pids(server.process.pid)
        requests.post(f"{server.url}/predict", data=honest_rows(1), headers={"Content-Type": PARQUET}, timeout=60)
        before = status_mb(worker, "VmHWM")
        rss = status_mb(worker, "VmRSS")
        answer = requests.post(f"{server.url}/predict", data=body, headers={"Content-Type": PARQUET}, timeout=600)
        assert worker_pids(server.process.pid) == [worker], "the worker was restarted"
        return answer.status_code, status_mb(worker, "VmHWM") - before, status_mb(worker, "VmRSS") - rss


def honest_rows(n: int) -> bytes:
    rows = json.loads(DATA.read_text())[:n]
    return parquet(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False))


def main() -> int:
    """Print one line per body: its size, the answer's status, the worker's growth."""
    model_dir = str(active_directory())
    print("| body | bytes | status | peak growth (MB) | resident after (MB) |\n|---|---:|---:|---:|---:|")
    for name, body in bodies().items():
        status, peak, after = growth(body, model_dir)
        print(f"| {name} | {len(body):,} | {status} | {peak:.0f} | {after:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
