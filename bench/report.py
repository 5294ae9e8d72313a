"""The benchmark's verdicts on the performance targets, its terminal table and docs/PERFORMANCE.md.

The document's measured part is rewritten by every run; everything from the ``<!-- notes -->``
line on is hand-written (profile notes) and kept as it is.
"""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

NOTES_MARKER = "<!-- notes -->"
DEFAULT_NOTES = """## Profile notes

Hand-written, kept when the benchmark regenerates the part above: what the profiles showed and
which changes they led to.
"""
LIBRARIES = ("Flask", "Werkzeug", "gunicorn", "orjson", "msgspec", "numpy", "pandas", "scikit-learn", "statsmodels")
#: The goals, as ratios to the floor app in the same run: a 10,000-row request at most 0.8x its time,
#: single rows at least 0.7x its throughput and p99 within 3x, per-row cost flat from 1,000 rows on
#: (largest over smallest at most 1.5), worker memory at 10,000 rows under 300 MB.
LARGE_RATIO_MAX = 0.8
THROUGHPUT_RATIO_MIN = 0.7
P99_RATIO_MAX = 3.0
FLATNESS_MAX = 1.5
FLATNESS_FROM_ROWS = 1_000
RSS_MAX_MB = 300.0
#: ?explain=3 and ?explain=all against the same 10,000-row request without explain.
EXPLAIN_RATIO_MAX = {"3": 2.0, "all": 4.0}
#: The 10,000 test rows in other forms against the floor app's JSON rows (these replaced the
#: earlier goal of 5x the reference path in process).
FORM_RATIO_MAX = {"arrow": ("Arrow IPC", 0.15), "parquet": ("Parquet", 0.2), "json columns": ("JSON columns", 0.5)}
#: An NDJSON stream's rows/s against 10,000-row JSON batches', and its per-row cost at its
#: largest size against its smallest.
STREAM_THROUGHPUT_MIN = 0.8
STREAM_GROWTH_MAX = 1.2


def machine_description() -> dict[str, str]:
    """CPU, memory, kernel, Python, library and tool versions of this machine."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return {
        "cpu": f"{models[0] if models else platform.processor() or 'unknown'}, "
               f"{len(models) or os.cpu_count()} logical CPUs ({len(os.sched_getaffinity(0))} usable)",
        "memory": f"{mem_kb / 1024**2:.1f} GiB",
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "libraries": ", ".join(f"{name} {version}" for name, version in versions.items()),
        "blas": _blas(),
        "wrk": _wrk_version(),
    }


def _blas() -> str:
    import numpy  # noqa: F401 - loads the BLAS library that threadpoolctl then describes
    from threadpoolctl import threadpool_info

    pools = [f"{p['internal_api']} {p['version']} ({p.get('architecture') or '?'})"
             for p in threadpool_info() if p["user_api"] == "blas"]
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    return ", ".join(pools) + (f"; OPENBLAS_CORETYPE={coretype}" if coretype else "")


def _wrk_version() -> str:
    try:
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed (Python load loop used)"
    return (done.stdout or done.stderr).split("Copyright")[0].strip()


def evaluate(results: dict) -> list[dict]:
    """One row per performance target: goal, served value, floor (or reference) value, ratio, verdict."""
    served, floor = results["large"]["served"], results["large"]["floor"]
    load = results["load"]
    rss = results["rss"]
    flat_s, flat_f = (flatness(results["per_row"], name) for name in ("served", "floor"))
    rows = [
        _target("10,000-row request, median end to end (ms)", f"≤ {LARGE_RATIO_MAX}× floor",
                served["p50_ms"], floor["p50_ms"], lambda r: r <= LARGE_RATIO_MAX),
        _target("single-row throughput (req/s)", f"≥ {THROUGHPUT_RATIO_MIN}× floor",
                load["served"]["requests_per_s"], load["floor"]["requests_per_s"], lambda r: r >= THROUGHPUT_RATIO_MIN),
        _target("single-row p99 latency (ms)", f"≤ {P99_RATIO_MAX}× floor",
                load["served"]["p99_ms"], load["floor"]["p99_ms"], lambda r: r <= P99_RATIO_MAX),
        {"name": f"per-row cost, slowest / fastest from {FLATNESS_FROM_ROWS:,} to {flat_s['to']:,} rows",
         "goal": f"≤ {FLATNESS_MAX}", "served": flat_s["ratio"], "floor": flat_f["ratio"], "ratio": None,
         "passed": flat_s["ratio"] <= FLATNESS_MAX},
        {"name": "worker peak RSS after 10,000-row requests (MB)", "goal": f"< {RSS_MAX_MB:.0f} MB",
         "served": rss["served"]["rows_10000_mb"], "floor": rss["floor"]["rows_10000_mb"],
         "ratio": rss["served"]["rows_10000_mb"] / rss["floor"]["rows_10000_mb"],
         "passed": rss["served"]["rows_10000_mb"] < RSS_MAX_MB},
    ]
    plain = results["explain"]["none"]["p50_ms"]
    for mode, most in EXPLAIN_RATIO_MAX.items():
        target = _target(f"10,000-row request with explain={mode}, median end to end (ms)",
                         f"≤ {most:g}× without", results["explain"][mode]["p50_ms"], plain, lambda r, m=most: r <= m)
        rows.append({**target, "floor_is": "without explain"})
    forms = results["forms"]
    for form, (label, most) in FORM_RATIO_MAX.items():
        rows.append(_target(f"10,000 rows as {label}, median end to end (ms)", f"≤ {most:g}× floor (JSON rows)",
                            forms[form]["p50_ms"], forms["floor"]["p50_ms"], lambda r, m=most: r <= m))
    rows += stream_targets(results["streams"], results["large"]["served"]["p50_ms"])
    return rows


def stream_targets(streams: dict, batch_p50_ms: float) -> list[dict]:
    """The NDJSON stream's goals: throughput against 10,000-row JSON batches to the same app,
    workers' peak RSS, and per-row cost that does not grow with the stream."""
    sizes = streams["sizes"]
    largest, smallest = sizes[-1], sizes[0]
    batches_rows_per_s = 10_000 / (batch_p50_ms / 1000)
    growth = largest["us_per_row"] / smallest["us_per_row"]
    throughput = _target(f"NDJSON, {largest['rows']:,} rows in one stream (rows/s)",
                         f"≥ {STREAM_THROUGHPUT_MIN}× 10,000-row JSON batches", largest["rows_per_s"],
                         batches_rows_per_s, lambda r: r >= STREAM_THROUGHPUT_MIN)
    return [
        {**throughput, "floor_is": "10,000-row JSON batches"},
        {"name": f"NDJSON streams up to {largest['rows']:,} rows: worker peak RSS (MB)",
         "goal": f"< {RSS_MAX_MB:.0f} MB", "served": streams["peak_rss_mb"], "floor": None, "ratio": None,
         "passed": streams["peak_rss_mb"] < RSS_MAX_MB},
        {"name": f"NDJSON per-row cost (µs), {largest['rows']:,} rows / {smallest['rows']:,} rows",
         "goal": f"≤ {STREAM_GROWTH_MAX}", "served": largest["us_per_row"], "floor": smallest["us_per_row"],
         "floor_is": f"{smallest['rows']:,} rows", "ratio": growth, "passed": growth <= STREAM_GROWTH_MAX},
    ]


def _target(name: str, goal: str, served: float, floor: float, check) -> dict:
    ratio = served / floor if floor else math.nan
    return {"name": name, "goal": goal, "served": served, "floor": floor, "ratio": ratio, "passed": bool(check(ratio))}


def flatness(per_row: list[dict], name: str) -> dict:
    """Slowest over fastest per-row cost among the sizes of at least FLATNESS_FROM_ROWS rows."""
    costs = {entry["rows"]: entry[name]["us_per_row"] for entry in per_row if entry["rows"] >= FLATNESS_FROM_ROWS}
    if not costs:
        return {"ratio": math.nan, "to": FLATNESS_FROM_ROWS}
    return {"ratio": max(costs.values()) / min(costs.values()), "to": max(costs)}


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def target_rows(targets: list[dict]) -> list[list[str]]:
    """The targets as table cells."""
    cells = []
    for t in targets:
        floor = _fmt(t["floor"], 2 if t["ratio"] is None else 1)
        if t.get("floor_is"):
            floor += f" ({t['floor_is']})"
        cells.append([t["name"], t["goal"], _fmt(t["served"], 2 if t["ratio"] is None else 1), floor,
                      _fmt(t["ratio"], 2), "PASS" if t["passed"] else "FAIL"])
    return cells


def detail_rows(results: dict) -> list[list[str]]:
    """Every other figure of the run, served beside floor."""
    large, load, rss = results["large"], results["load"], results["rss"]
    rows = [
        ["10,000-row request, p95 (ms)", _fmt(large["served"]["p95_ms"]), _fmt(large["floor"]["p95_ms"])],
        ["10,000-row answer size (MB)", _fmt(large["served"]["response_mb"], 2),
         _fmt(large["floor"]["response_mb"], 2)],
        [f"single-row p50 latency (ms, {load['tool']})", _fmt(load["served"]["p50_ms"], 2),
         _fmt(load["floor"]["p50_ms"], 2)],
    ]
    for entry in results["per_row"]:
        rows.append([f"{entry['rows']:,} rows per request: median (ms) / per row (µs)",
                     f"{_fmt(entry['served']['median_ms'], 2)} / {_fmt(entry['served']['us_per_row'], 2)}",
                     f"{_fmt(entry['floor']['median_ms'], 2)} / {_fmt(entry['floor']['us_per_row'], 2)}"])
    rows += [
        ["worker RSS when ready, before any request (MB)", _fmt(rss["served"]["idle_mb"]),
         _fmt(rss["floor"]["idle_mb"])],
        ["worker peak RSS after 100,000-row requests (MB)", _fmt(rss["served"].get("rows_100000_mb")),
         _fmt(rss["floor"].get("rows_100000_mb"))],
        ["gunicorn spawned → /ready 200, 2 workers (s)", _fmt(results["startup"]["served_s"], 2),
         _fmt(results["startup"]["floor_s"], 2)],
        ["import flaskapp + create_app(), fresh process (s)",
         f"{_fmt(results['startup']['import_s'], 2)} + {_fmt(results['startup']['factory_s'], 2)}", "–"],
        ["10,000 rows in process (ms): served path / reference path",
         f"{_fmt(results['in_process']['served_ms'])} / {_fmt(results['in_process']['reference_ms'])}", "–"],
    ]
    forms = results["forms"]
    for form, size in forms["body_mb"].items():
        floor = _fmt(forms["floor"]["p50_ms"]) if form == "json rows" else "–"
        rows.append([f"10,000 rows as {form}: body (MB) / median end to end (ms)",
                     f"{_fmt(size, 2)} / {_fmt(forms[form]['p50_ms'])}", floor])
    for entry in results["streams"]["sizes"]:
        rows.append([f"NDJSON stream of {entry['rows']:,} rows: s / rows/s / µs per row",
                     f"{_fmt(entry['seconds'], 2)} / {_fmt(entry['rows_per_s'], 0)} / {_fmt(entry['us_per_row'], 2)}",
                     "–"])
    return rows


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    # The first column (names) aligns left, the figures right.
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, align, *rows])


TARGET_HEADER = ["target", "goal", "served", "floor", "ratio", "verdict"]
DETAIL_HEADER = ["measurement", "served", "floor"]


def terminal_report(results: dict) -> str:
    """The tables printed at the end of a run."""
    return "\n\n".join([
        _text_table(TARGET_HEADER, target_rows(results["targets"])),
        _text_table(DETAIL_HEADER, detail_rows(results)),
    ])


def markdown_report(results: dict) -> str:
    """The generated part of docs/PERFORMANCE.md."""
    run, machine, load = results["run"], results["machine"], results["load"]
    quick = " **Quick mode: tiny counts, the figures mean nothing.**" if run["mode"] == "quick" else ""
    return f"""# Performance

Generated by `{run['command']}` on {run['date']} ({run['mode']} run, {run['seconds']:.0f} s).{quick}
Everything above the hidden notes marker line is rewritten by each run; hand-written notes go below it.
Raw figures: `{run['results_file']}` (git-ignored). Rerun: `.venv/bin/python -m bench.run` (needs
`wrk`, else `--load-tool python`; `--quick` for a smoke run; `--help`). Figures vary between machines and with
load: compare the ratios of one run.

## Machine

- CPU: {machine['cpu']}; memory {machine['memory']}; {machine['system']}
- Load average (1 min) at start / end of the run: {run['loadavg_start']} / {run['loadavg_end']}
- Python {machine['python']}; {machine['libraries']}
- BLAS: {machine['blas']}; load generator: {machine['wrk']}

## Targets

{_markdown_table(TARGET_HEADER, target_rows(results['targets']))}

"Served" is the real app (`gunicorn.conf.py`, `flaskapp:create_app()`), "floor" the app of
`bench/floor_app.py` (orjson decode, an answer of the same size, no scoring) under the same
gunicorn settings; both run at once with {results['workers']} workers each, and their requests are
interleaved so that both see the same machine. Ratios are served / floor, except the two
`explain` rows (the served app with `?explain` / the same request without it) and the NDJSON
rows (the stream against the served app's own 10,000-row JSON batches, and against its own
smallest stream).

## Details

{_markdown_table(DETAIL_HEADER, detail_rows(results))}

## How it is measured

- 10,000-row request: the first 10,000 rows of `lib/data/test.json`, POSTed {results['large']['requests']} times
  to each app over one connection; time from sending to the last byte of the answer.
- Single-row load: `{load['tool']}`, {load['connections']} connections, {load['threads']} thread(s),
  {load['seconds']:.0f} s per app, one row posted as a JSON object (`bench/post_row.lua`).
- Per-row cost: bodies of 1 to {results['per_row'][-1]['rows']:,} rows (test rows repeated past 10,000), each
  posted several times per app; median request time / rows.
- Worker RSS: the largest `VmHWM` (peak resident set, shared pages included) of the workers of
  each gunicorn master, read from `/proc` after the 10,000-row and after the 100,000-row requests.
- Reference path: `lib.core.reference.reference_probabilities` on `pandas.DataFrame(orjson.loads(body))`
  against `Predictor.predict(body)` (decode, score, encode), both in the benchmark process, median
  of {results['in_process']['repeats']} runs; they agree to {results['in_process']['max_abs_diff']:.1e}.
- Input forms (`bench/inputs.py`): the first 10,000 test rows as JSON rows, as JSON columns
  (`?input=columns`), and as an Arrow IPC stream and a Parquet file made from
  `pandas.DataFrame(rows)` by pyarrow; each posted {results['forms']['requests']} times to the served app,
  in turn with the JSON rows to the floor app; every answer (JSON rows) checked; medians.
- NDJSON streams: one stream of each size ({", ".join(f"{e['rows']:,}" for e in results['streams']['sizes'])} rows:
  the test rows repeated), sent in 10,000-line pieces with chunked encoding while the answer is
  read, every answer line checked, to a served app of its own (so that the peak RSS of its
  workers, read after the streams, is theirs); time from connecting to the last answer line.
- `explain`: the 10,000-row request to the served app alone, without `?explain`, with
  `?explain=3` and with `?explain=all` in turn, {results['explain']['requests']} times each over one
  connection; every answer checked, reasons counted; medians.
- Start-up: from spawning gunicorn to the first 200 of `/ready`; and, in a fresh process, the
  time to import `flaskapp` and to run `create_app()` (what a cold worker start costs; with
  `preload_app` a replacement worker is only a fork of the master).
"""


def write_document(path: Path, generated: str) -> None:
    """Write the generated part to ``path``, keeping the hand-written notes below the marker.

    A document without the marker is kept whole as the notes, so no hand-written text is lost.
    """
    notes = DEFAULT_NOTES
    if path.exists():
        old = path.read_text()
        # The marker counts only as a line of its own, not where prose quotes it.
        parts = re.split(rf"^{re.escape(NOTES_MARKER)}$", old, maxsplit=1, flags=re.MULTILINE)
        notes = parts[1].lstrip("\n") if len(parts) == 2 else old
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{generated.rstrip()}\n\n{NOTES_MARKER}\n\n{notes}")
