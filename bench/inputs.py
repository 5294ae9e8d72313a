"""The input-form measurements of ``bench.run``: the 10,000 test rows in each input form, end to
end over HTTP, against the floor app's JSON rows; and NDJSON streams of up to 1,000,000 rows.

Every answer is checked as the other measurements check theirs: one result per row, and the same
probability for a test row whichever form carried it.
"""

from __future__ import annotations

import http.client
import io
import time
from collections.abc import Callable, Sequence

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.client import PREDICT_PATH, HttpClient
from bench.memory import peak_worker_rss_mb
from bench.ndjson_client import post_stream
from bench.stats import latency_summary
from bench.stress import check_answer, check_result, stream_blocks

#: form -> (query, Content-Type) of its request.
FORMS = {
    "json rows": ("", "application/json"),
    "json columns": ("?input=columns", "application/json"),
    "arrow": ("", "application/vnd.apache.arrow.stream"),
    "parquet": ("", "application/vnd.apache.parquet"),
}
STREAM_SIZES = (10_000, 100_000, 1_000_000)


def form_bodies(rows: Sequence[bytes]) -> dict[str, bytes]:
    """The rows in each form, as a data team holding them in pandas would send them."""
    records = [orjson.loads(row) for row in rows]
    frame = pd.DataFrame(records)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    arrow = pa.BufferOutputStream()
    with pa.ipc.new_stream(arrow, table.schema) as writer:
        writer.write_table(table)
    parquet = io.BytesIO()
    pq.write_table(table, parquet)
    columns = {name: [record.get(name) for record in records] for name in frame.columns}
    return {
        "json rows": b"[" + b",".join(rows) + b"]",
        "json columns": orjson.dumps(columns),
        "arrow": arrow.getvalue().to_pybytes(),
        "parquet": parquet.getvalue(),
    }


def time_forms(served: HttpClient, floor: HttpClient, rows: Sequence[bytes], repeats: int,
               seen: dict[int, float], fail: Callable[[str], Exception]) -> dict:
    """Each form ``repeats`` times to the served app, the JSON rows as often to the floor app,
    interleaved in turn; medians and body sizes."""
    bodies = form_bodies(rows)
    indices = tuple(range(len(rows)))
    seconds: dict[str, list[float]] = {name: [] for name in (*FORMS, "floor")}
    order = [*FORMS, "floor"]
    for i in range(repeats):
        for name in order if i % 2 == 0 else reversed(order):
            client, (query, content_type) = (floor, FORMS["json rows"]) if name == "floor" else (served, FORMS[name])
            body = bodies["json rows" if name == "floor" else name]
            try:
                reply = client.request("POST", PREDICT_PATH + query, body, {"Content-Type": content_type})
            except (OSError, http.client.HTTPException) as exc:
                raise fail(f"{name}: {type(exc).__name__}: {exc}") from None
            problem = check_answer(reply.status, reply.body, indices, seen if name != "floor" else {})
            if problem:
                raise fail(f"{name}: {problem}")
            seconds[name].append(reply.seconds)
    return {"rows": len(rows), "requests": repeats,
            "body_mb": {name: len(body) / 1e6 for name, body in bodies.items()},
            **{name: {"p50_ms": latency_summary(values)["p50"]} for name, values in seconds.items()}}


def time_streams(url: str, master_pid: int, rows: Sequence[bytes], sizes: Sequence[int],
                 seen: dict[int, float], fail: Callable[[str], Exception],
                 log: Callable[[str], None]) -> dict:
    """One NDJSON stream of each size, every answer line checked; rows/s, µs per row, and the
    workers' peak RSS after all of them."""
    entries = []
    for n_rows in sizes:
        log(f"NDJSON stream of {n_rows:,} rows")
        entries.append(_time_stream(url, rows, n_rows, seen, fail))
    return {"sizes": entries, "peak_rss_mb": peak_worker_rss_mb(master_pid)}


def _time_stream(url: str, rows: Sequence[bytes], n_rows: int, seen: dict[int, float],
                 fail: Callable[[str], Exception]) -> dict:
    position = 0

    def check(lines: list[bytes]) -> None:
        nonlocal position
        for line in lines:
            problem = check_result(f"line {position + 1}", position % len(rows), orjson.loads(line), seen)
            if problem:
                raise fail(f"stream of {n_rows:,} rows: {problem}")
            position += 1

    started = time.perf_counter()
    result = post_stream(url, stream_blocks(rows, n_rows, 10_000), keep_lines=False, timeout=600, on_lines=check)
    seconds = time.perf_counter() - started
    if result.status != 200 or position != n_rows:
        raise fail(f"stream of {n_rows:,} rows: HTTP {result.status}, {position:,} answer lines")
    return {"rows": n_rows, "seconds": seconds, "rows_per_s": n_rows / seconds, "us_per_row": seconds * 1e6 / n_rows,
            "body_mb": result.bytes_sent / 1e6, "answer_mb": result.bytes_received / 1e6}
