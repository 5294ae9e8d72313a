"""The benchmark cannot rot: its quick mode runs end to end, and its parts are checked one by one.

No assertion here is on speed: the quick mode's figures mean nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from bench import report
from bench.floor_app import create_app as create_floor_app
from bench.load import parse_wrk, run_python_load
from tests.support.live_server import PROJECT_DIR

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:4000/predict
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.00us  101.00us   3.20ms   80.00%
    Req/Sec     6.50k   200.00     7.00k    70.00%
  Latency Distribution
     50%  600.00us
     75%  650.00us
     90%  700.00us
     99%    1.25ms
  65123 requests in 10.01s, 10.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   6505.80
Transfer/sec:      1.00MB
"""


def test_quick_run_writes_results_and_keeps_the_notes(model_dir, tmp_path):
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text(f"# old generated part\n\n{report.NOTES_MARKER}\n\n## Profile notes\n\nmsgspec halved parsing.\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--results-dir", str(tmp_path / "results"), "--doc", str(doc)],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (results_file,) = (tmp_path / "results").glob("*-quick/results.json")
    results = json.loads(results_file.read_text())

    assert len(results["targets"]) == 13
    assert [t["name"].split(", median")[0] for t in results["targets"][5:10]] == [
        "10,000-row request with explain=3", "10,000-row request with explain=all", "10,000 rows as Arrow IPC",
        "10,000 rows as Parquet", "10,000 rows as JSON columns"]
    assert [t["name"].split(" (")[0] for t in results["targets"][10:]] == [
        "NDJSON, 20,000 rows in one stream", "NDJSON streams up to 20,000 rows: worker peak RSS",
        "NDJSON per-row cost"]
    assert [e["rows"] for e in results["streams"]["sizes"]] == [10_000, 20_000]
    assert all(e["answer_mb"] > 0 and e["rows_per_s"] > 0 for e in results["streams"]["sizes"])
    assert {mode: results["explain"][mode]["p50_ms"] > 0 for mode in ("none", "3", "all")} == {
        "none": True, "3": True, "all": True}
    assert all(t["served"] > 0 and (t["floor"] is None or t["floor"] > 0) for t in results["targets"])
    assert [e["rows"] for e in results["per_row"]] == [1, 10, 100, 1_000, 10_000]
    for name in ("served", "floor"):
        assert results["load"][name]["requests"] > 0
        assert results["load"][name]["errors"] == 0
        assert 0 < results["rss"][name]["idle_mb"] < results["rss"][name]["rows_10000_mb"]
        assert results["startup"][f"{name}_s"] > 0
    # The floor answers as much as the real service does.
    served_mb, floor_mb = results["large"]["served"]["response_mb"], results["large"]["floor"]["response_mb"]
    assert abs(served_mb - floor_mb) / served_mb < 0.05
    assert results["in_process"]["max_abs_diff"] <= 1e-9

    text = doc.read_text()
    assert "old generated part" not in text
    assert text.count(report.NOTES_MARKER) == 1
    assert text.endswith("## Profile notes\n\nmsgspec halved parsing.\n")
    assert "Quick mode" in text and "`.venv/bin/python -m bench.run --quick" in text
    for target in results["targets"]:
        assert target["name"] in text
    assert re.search(r"(?m)^target +goal +served +floor +ratio +verdict *$", done.stdout), done.stdout[-3000:]


def test_floor_answers_like_the_service(model_dir, client, test_rows):
    floor = create_floor_app({"model_dir": model_dir}).test_client()
    body = json.dumps(test_rows[:3])
    real = client.post("/predict", data=body, content_type="application/json").get_json()
    answer = floor.post("/predict", data=body, content_type="application/json").get_json()
    assert len(answer) == len(real) == 3
    assert [sorted(row) for row in answer] == [sorted(row) for row in real]
    assert answer[0]["selected_features"] == real[0]["selected_features"]
    single = floor.post("/predict", data=json.dumps(test_rows[0])).get_json()
    assert len(single) == 1
    assert floor.get("/ready").status_code == 200


def test_parse_wrk_reads_rate_latencies_and_errors():
    result = parse_wrk(WRK_OUTPUT)
    assert (result.tool, result.requests, result.seconds) == ("wrk", 65123, pytest.approx(10.01))
    assert result.requests_per_s == pytest.approx(6505.80)
    assert result.p50_ms == pytest.approx(0.6)
    assert result.p99_ms == pytest.approx(1.25)
    assert result.errors == 2 + 1 + 5


def test_parse_wrk_refuses_other_output():
    with pytest.raises(ValueError, match="wrk output has no match"):
        parse_wrk("unable to connect to 127.0.0.1:4000 Connection refused")


@pytest.mark.server
def test_python_load_loop_counts_answers(server, test_rows):
    result = run_python_load(server.url, json.dumps(test_rows[0]).encode(), connections=2, seconds=0.5)
    assert result.tool == "python"
    assert result.requests > 0 and result.errors == 0
    assert 0 < result.p50_ms <= result.p99_ms


@pytest.mark.parametrize(("old", "notes"), [
    (None, report.DEFAULT_NOTES),
    (f"generated\n{report.NOTES_MARKER}\nmine\n", "mine\n"),
    ("hand-written, no marker\n", "hand-written, no marker\n"),
])
def test_write_document_keeps_hand_written_notes(tmp_path, old, notes):
    doc = tmp_path / "PERFORMANCE.md"
    if old is not None:
        doc.write_text(old)
    report.write_document(doc, "# Performance\n\nnew table\n")
    assert doc.read_text() == f"# Performance\n\nnew table\n\n{report.NOTES_MARKER}\n\n{notes}"
    report.write_document(doc, "# Performance\n\nnewer table\n")
    assert doc.read_text() == f"# Performance\n\nnewer table\n\n{report.NOTES_MARKER}\n\n{notes}"


def test_decoder_survey_times_every_installed_variant(model_dir, capsys):
    from bench import decoders

    # The raw seconds, not the printed figures: those round to 0.0 ms on a fast run.
    result = decoders.survey(30, repeats=3)
    assert result.rows == 30 and result.body_bytes > 0 and result.columns[:2] == ("x5", "x12")
    for name in ("orjson.loads (floor app, reference path)", "served: typed struct of the consumed columns + id",
                 "msgspec struct with no field (skips every key)"):
        seconds = result.seconds[name]
        assert len(seconds) == 3 and all(s > 0 for s in seconds), (name, seconds)
    assert all((seconds is None) == name.endswith("not installed") for name, seconds in result.seconds.items())

    # The printed table: one line per variant, in the survey's order, two figures or two dashes.
    assert decoders.main(["--rows", "30", "--repeats", "2"]) == 0
    header, columns, *lines = capsys.readouterr().out.splitlines()
    assert header.startswith("body: 30 rows") and "x5, x12" in header
    assert columns.split() == ["variant", "min", "ms", "median", "ms"]
    assert [line[:decoders.WIDTH].strip() for line in lines] == list(result.seconds)
    for line, seconds in zip(lines, result.seconds.values(), strict=True):
        figures = line[decoders.WIDTH:].split()
        if seconds is None:
            assert figures == ["–", "–"], line
        else:
            assert len(figures) == 2 and all(re.fullmatch(r"\d+\.\d", f) for f in figures), line


def test_the_file_benchmark_runs_end_to_end(model_dir, data_dir, tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.files", "--rows", "2500", "--no-spark", "--work-dir",
                           str(tmp_path)], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["tool"], r["format"], r["rows"]) for r in results["runs"]] == [("lib.batch", "parquet", 2500),
                                                                              ("lib.batch", "csv", 2500)]
    assert all(r["peak_rss_mb"] > 0 and r["loop_cpu_seconds"] is not None for r in results["runs"])
    assert "| lib.batch | csv | 2,500 |" in done.stdout
