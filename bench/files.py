"""Scoring files and tables: the file command (``lib.batch.command``) and the Spark job (``lib.spark.job``).

    .venv/bin/python -m bench.files                      # 100,000 and 1,000,000 rows; Spark on local[2]
    .venv/bin/python -m bench.files --spark-breakdown    # and where the Spark job's time goes
    .venv/bin/python -m bench.files --rows 20000 --no-spark    # a smoke run

Makes the inputs from the 10,000 test rows (lib/data/test.json), repeated in a new random order each
time with every plain number perturbed (×(1 + 0.001·N(0, 1))) and the messy strings (currency,
percent, categories) kept as they are: Parquet in row groups of 100,000 rows, and CSV. They are
written once per size to ``bench/results/files/`` (git-ignored) and reused. Each run of the file
command is a child process: its wall time, the rows/s of its own summary (the scoring loop, without
the interpreter's start and the model's verification) and its peak RSS (``ru_maxrss`` of that
child, from ``os.wait4``). The Spark job runs on the same Parquet file with ``local[2]``: wall time
and the rows/s of its summary (the job, without the JVM's start); its peak RSS is the Python
driver's only (the JVM and the Python workers are its children). Prints a Markdown table and
writes the figures as JSON beside the inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from lib.core.atomic_file import AtomicFile
from tests.support.live_server import PROJECT_DIR

TEST_JSON = PROJECT_DIR / "lib" / "data" / "test.json"
WORK_DIR = PROJECT_DIR / "bench" / "results" / "files"
ROW_GROUP_ROWS = 100_000
SUMMARY_RE = re.compile(r"scored ([\d,]+) rows in ([\d,.]+) s \(([\d,]+) rows/s(?:, ([\d,.]+) s of CPU)?\)")


def perturbed_tables(rows: int, seed: int = 15):
    """``rows`` rows made from the test rows, as tables of at most 10,000 rows."""
    base = pa.Table.from_pylist(json.loads(TEST_JSON.read_bytes()))
    numbers = [i for i, field in enumerate(base.schema) if pa.types.is_floating(field.type)]
    rng = np.random.default_rng(seed)
    made = 0
    while made < rows:
        n = min(base.num_rows, rows - made)
        table = base.take(rng.permutation(base.num_rows)[:n])
        for i in numbers:
            values = table.column(i).to_numpy(zero_copy_only=False)
            noise = 1.0 + 0.001 * rng.standard_normal(n)
            table = table.set_column(i, table.field(i), pa.array(values * noise, mask=np.isnan(values)))
        ids = pa.array([f"r{made + i}" for i in range(n)])
        yield table.add_column(0, "id", ids)
        made += n


def make_inputs(rows: int, work_dir: Path) -> dict[str, Path]:
    """The Parquet and CSV inputs of ``rows`` rows (made once)."""
    paths = {"parquet": work_dir / f"rows-{rows}.parquet", "csv": work_dir / f"rows-{rows}.csv"}
    if all(path.exists() for path in paths.values()):
        return paths
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Both files appear only when complete: a run cut short is not taken for made inputs next time.
    partial = {fmt: AtomicFile(path) for fmt, path in paths.items()}
    try:
        parquet_writer = csv_writer = None
        pending: list[pa.Table] = []
        for table in perturbed_tables(rows):
            if parquet_writer is None:
                parquet_writer = pq.ParquetWriter(partial["parquet"].temporary, table.schema)
                csv_writer = pcsv.CSVWriter(partial["csv"].temporary, table.schema)
            csv_writer.write_table(table)
            pending.append(table)
            if sum(t.num_rows for t in pending) >= ROW_GROUP_ROWS:
                parquet_writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                pending = []
        if pending:
            parquet_writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
        parquet_writer.close()
        csv_writer.close()
        for file in partial.values():
            file.commit()
    finally:
        for file in partial.values():
            file.discard()
    print(f"[bench] made {rows:,} rows as Parquet and CSV in {time.perf_counter() - started:.0f} s", flush=True)
    return paths


def run_child(command: list[str], log: Path) -> dict:
    """Run ``command``; its wall time, peak RSS (MB) and the rows/s of its summary line."""
    started = time.perf_counter()
    with open(log, "wb") as output:
        child = subprocess.Popen(command, cwd=PROJECT_DIR, stdout=output, stderr=subprocess.STDOUT)
        # wait4 instead of child.wait(): the resource usage of this child alone (RUSAGE_CHILDREN
        # would be the largest over every child so far).
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}: {text[-2000:]}")
    found = SUMMARY_RE.search(text)
    if found is None:
        raise RuntimeError(f"no summary line in the output of {' '.join(command)}: {text[-2000:]}")
    return {"command": " ".join(command), "wall_seconds": wall, "rows": int(found[1].replace(",", "")),
            "loop_seconds": float(found[2].replace(",", "")), "rows_per_second": int(found[3].replace(",", "")),
            "loop_cpu_seconds": float(found[4].replace(",", "")) if found[4] else None,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def spark_breakdown(path: Path, work_dir: Path) -> list[dict]:
    """Where the Spark job's time goes, in one warm local[2] session on the Parquet input: Spark
    alone (read the consumed columns and id, write them), the same through an identity
    ``mapInArrow`` (the transfer to Python and back), then scoring, twice (cold: the Python
    workers start and verify the model; warm)."""
    import warnings

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    from lib.spark.job import ShippedModel, score_dataframe, spark_session

    spark = spark_session("local[2]", config={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"})
    spark.sparkContext.setLogLevel("ERROR")
    shipped = ShippedModel.read()
    df = spark.read.parquet(str(path)).select(*shipped.plan().consumed_columns, "id")
    steps = {
        "Spark alone: read, write": lambda: df,
        "identity mapInArrow": lambda: df.mapInArrow(lambda batches: batches, df.schema),
        "score_dataframe, cold": lambda: score_dataframe(df, shipped).select("probability_positiveclass",
                                                                             "predicted_class", "id", "error"),
        "score_dataframe, warm": lambda: score_dataframe(df, shipped).select("probability_positiveclass",
                                                                             "predicted_class", "id", "error"),
    }
    timings = []
    try:
        for name, frame in steps.items():
            started = time.perf_counter()
            frame().write.mode("overwrite").parquet(str(work_dir / "spark-breakdown"))
            timings.append({"step": name, "seconds": time.perf_counter() - started})
            print(json.dumps(timings[-1]), flush=True)
    finally:
        spark.stop()
    return timings


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--no-spark", action="store_true", help="skip the Spark job")
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR)
    parser.add_argument("--spark-breakdown", action="store_true",
                        help="also time the steps of the Spark job in one warm session (largest --rows)")
    args = parser.parse_args(argv)
    python = sys.executable
    load_at_start = os.getloadavg()[0]
    results = []
    for rows in args.rows:
        inputs = make_inputs(rows, args.work_dir)
        for fmt, path in inputs.items():
            out = args.work_dir / f"scores-{rows}-{fmt}.parquet"
            result = run_child([python, "-m", "lib.batch", str(path), "-o", str(out), "--progress-every", "1e9"],
                               out.with_suffix(".log"))
            results.append({"tool": "lib.batch", "format": fmt, **result})
            print(json.dumps(results[-1]), flush=True)
        if not args.no_spark:
            out = args.work_dir / f"spark-{rows}"
            result = run_child([python, "-m", "lib.spark", str(inputs["parquet"]), str(out), "--master", "local[2]",
                                "--overwrite"], out.with_suffix(".log"))
            results.append({"tool": "lib.spark local[2]", "format": "parquet", **result})
            print(json.dumps(results[-1]), flush=True)
    breakdown = spark_breakdown(inputs["parquet"], args.work_dir) if args.spark_breakdown else []
    load = {"load_average_start": load_at_start, "load_average_end": os.getloadavg()[0], "cpus": os.cpu_count()}
    (args.work_dir / "results.json").write_text(json.dumps({"machine": load, "runs": results,
                                                            "spark_breakdown": breakdown}, indent=2) + "\n")
    print(f"\nload average (1 min) at start / end: {load['load_average_start']:.2f} / {load['load_average_end']:.2f}")
    print("\n| tool | input | rows | rows/s (loop, wall) | rows per CPU-second (loop) | wall s (process) "
          "| peak RSS MB |\n|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        per_cpu = f"{r['rows'] / r['loop_cpu_seconds']:,.0f}" if r["loop_cpu_seconds"] else "–"
        rss = "–" if r["tool"].startswith("lib.spark.job") else f"{r['peak_rss_mb']:,.0f}"  # the driver's alone
        print(f"| {r['tool']} | {r['format']} | {r['rows']:,} | {r['rows_per_second']:,} | {per_cpu} "
              f"| {r['wall_seconds']:.1f} | {rss} |")
    for step in breakdown:
        print(f"- {step['step']}: {step['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
