"""The file command (``python -m lib.batch``): the API's numbers and errors from every file format,
written whole or not at all, with progress and a summary, and clear exits for a user's mistakes."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from lib.batch import command as score
from lib.batch.writers import ERROR_FIELDS
from lib.codecs.answer_table import ERROR, PREDICTED_CLASS, PROBABILITY
from lib.core.schema import ID_KEY
from tests.conftest import TABLE_FORMATS, api_answer, api_cell_errors, write_rows
from tests.support.live_server import PROJECT_DIR

README = (PROJECT_DIR / "README.md").read_text()


def run_score(*args: object) -> tuple[int, str]:
    """Run the command in process; its exit code and what it wrote to stderr."""
    stderr = io.StringIO()
    code = score.main([str(a) for a in args], stderr=stderr)
    return code, stderr.getvalue()


def read_output(path: Path) -> pa.Table:
    """An output file of any format as a table (CSV cells typed as the writer typed them)."""
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        types = {PROBABILITY: pa.float64(), PREDICTED_CLASS: pa.int8(), ID_KEY: pa.string(), ERROR: pa.string()}
        return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=True))
    return pa.Table.from_pylist([json.loads(line) for line in path.read_text().splitlines()])


@pytest.mark.parametrize("output_format", TABLE_FORMATS)
@pytest.mark.parametrize("input_format", TABLE_FORMATS)
def test_the_test_rows_score_bit_for_bit_as_in_the_api(table_files, api_scores, tmp_path, input_format,
                                                        output_format):
    output = tmp_path / f"scores.{output_format}"
    code, stderr = run_score(table_files[input_format], "-o", output, "--chunk-rows", 3000)
    assert code == 0, stderr
    table = read_output(output)
    assert table.column_names == [PROBABILITY, PREDICTED_CLASS, ID_KEY, ERROR]
    probabilities = np.array(table.column(PROBABILITY).to_pylist(), dtype=np.float64)
    # Bit for bit: the same doubles, not merely close ones.
    assert probabilities.tobytes() == np.array(api_scores[PROBABILITY], dtype=np.float64).tobytes()
    assert table.column(PREDICTED_CLASS).to_pylist() == api_scores[PREDICTED_CLASS]
    assert table.column(ID_KEY).to_pylist() == api_scores[ID_KEY]
    assert table.column(ERROR).null_count == table.num_rows


def test_the_default_output_sits_beside_the_input(table_files, tmp_path):
    source = tmp_path / "rows.parquet"
    source.write_bytes(table_files["parquet"].read_bytes())
    code, stderr = run_score(source, "--output-format", "csv")
    assert code == 0, stderr
    assert (tmp_path / "rows.scores.csv").is_file()
    assert f"wrote {tmp_path / 'rows.scores.csv'}" in stderr


@pytest.mark.parametrize("input_format", TABLE_FORMATS)
def test_messy_and_invalid_cells_get_the_api_answers_and_errors(app, messy_rows, tmp_path, input_format):
    source = write_rows(messy_rows, tmp_path / f"messy.{input_format}")
    errors_file = tmp_path / "errors.csv"
    code, stderr = run_score(source, "-o", tmp_path / "out.parquet", "--errors", errors_file, "--chunk-rows", 7)
    assert code == 0, stderr
    # CSV as the API reads a CSV body; NDJSON and Parquet (strings) as it reads the same JSON rows.
    expected = api_answer(app, messy_rows, as_csv=input_format == "csv")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column(PROBABILITY).to_pylist() == expected[PROBABILITY]
    assert table.column(PREDICTED_CLASS).to_pylist() == expected[PREDICTED_CLASS]
    with errors_file.open(newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == list(ERROR_FIELDS)
    cells = api_cell_errors(expected)
    assert [(int(i), row_id, column, message) for i, row_id, column, message in lines[1:]] == cells
    assert {i for i, *_ in cells} == {2, 4, 5, 7}
    by_row = {}
    for index, _, column, message in cells:
        by_row[index] = f"{by_row[index]}\n{column}: {message}" if index in by_row else f"{column}: {message}"
    assert table.column(ERROR).to_pylist() == [by_row.get(i) for i in range(len(messy_rows))]
    assert "8 invalid" not in stderr and "; 4 invalid;" in stderr


def test_json_values_in_ndjson_lines_are_judged_as_in_a_json_body(app, id_rows, tmp_path):
    rows = [dict(row) for row in id_rows[:6]]
    rows[0]["x44"] = True
    rows[1]["x12"] = [5032.58]
    rows[2]["x53"] = {"value": 1}
    rows[3]["x5"] = 3
    rows[4][ID_KEY] = False
    source = tmp_path / "rows.ndjson"
    lines = [orjson.dumps(row) for row in rows] + [b'{"id": "huge", "x44": 1e400}', b"", b'{"id": 12, "x12": 1000}']
    source.write_bytes(b"\n".join(lines) + b"\n")
    code, stderr = run_score(source, "-o", tmp_path / "out.ndjson", "--errors", tmp_path / "errors.csv")
    assert code == 0, stderr
    expected = api_answer(app, b"[" + b",".join(line for line in lines if line) + b"]")
    written = [json.loads(line) for line in (tmp_path / "out.ndjson").read_text().splitlines()]
    assert [row[PROBABILITY] for row in written] == expected[PROBABILITY]
    # Ids keep their JSON type in NDJSON output.
    assert [row[ID_KEY] for row in written] == [*(row[ID_KEY] for row in rows), "huge", 12]
    with (tmp_path / "errors.csv").open(newline="") as handle:
        lines = [tuple(line) for line in csv.reader(handle)][1:]
    assert [(int(i), *rest) for i, *rest in lines] == api_cell_errors(expected)
    assert {line[2] for line in lines} == {"x44", "x12", "x53", "x5", "id"}


def test_strict_stops_at_the_first_invalid_cell_and_writes_nothing(id_rows, tmp_path):
    rows = [dict(row) for row in id_rows[:500]]
    rows[450]["x31"] = "atlantis"
    source = write_rows(rows, tmp_path / "rows.csv")
    output = tmp_path / "out.parquet"
    output.write_bytes(b"the previous run's output")
    code, stderr = run_score(source, "-o", output, "--strict", "--chunk-rows", 100)
    assert code == score.EXIT_INVALID
    assert "row 450 (id 't450'), x31: unknown value 'atlantis'" in stderr
    assert "nothing was written" in stderr
    assert output.read_bytes() == b"the previous run's output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet", "rows.csv"]


def test_strict_writes_no_error_column_when_every_row_is_valid(table_files, api_scores, tmp_path):
    code, stderr = run_score(table_files["ndjson"], "-o", tmp_path / "out.parquet", "--strict")
    assert code == 0, stderr
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == [PROBABILITY, PREDICTED_CLASS, ID_KEY]
    assert table.column(PROBABILITY).to_pylist() == api_scores[PROBABILITY]


def test_a_file_that_breaks_midway_leaves_no_output(id_rows, tmp_path):
    source = write_rows(id_rows[:300], tmp_path / "rows.ndjson")
    with source.open("ab") as handle:
        handle.write(b'{"id": "broken", "x5": "monday"\n')
    code, stderr = run_score(source, "-o", tmp_path / "out.csv", "--errors", tmp_path / "e.csv", "--chunk-rows", 100)
    assert code == score.EXIT_UNREADABLE
    assert "line 301: malformed JSON" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.ndjson"]


def test_plain_progress_lines_when_not_a_terminal(table_files, tmp_path):
    code, stderr = run_score(table_files["csv"], "-o", tmp_path / "out.csv", "--chunk-rows", 2500,
                             "--progress-every", 0)
    assert code == 0, stderr
    lines = stderr.splitlines()
    progress = [re.match(r"scored ([\d,]+) of ~[\d,]+ rows \(\d+ %\), [\d,]+ rows/s, about [\d,]+ s left", line)
                for line in lines]
    assert [found[1] for found in progress if found] == ["2,500", "5,000", "7,500", "10,000"]
    assert re.fullmatch(r"scored 10,000 rows in [\d.]+ s \([\d,]+ rows/s, [\d.]+ s of CPU\); 0 invalid; "
                        r"positive share \d+\.\d\d % of 10,000 scored", lines[-2])
    assert lines[-1] == f"wrote {tmp_path / 'out.csv'}"


def test_a_progress_bar_on_a_terminal(table_files, tmp_path):
    controller, terminal = pty.openpty()
    # A new pseudo-terminal is 0 columns wide: give it a terminal's size.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    done = subprocess.run([sys.executable, "-m", "lib.batch", str(table_files["parquet"]), "-o",
                           str(tmp_path / "out.parquet"), "--chunk-rows", "2000"],
                          cwd=PROJECT_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
                          timeout=120, check=False)
    os.close(terminal)
    screen = b""
    while chunk := _read_available(controller):
        screen += chunk
    os.close(controller)
    text = screen.decode(errors="replace")
    assert done.returncode == 0, text
    assert "10.0k/10.0k" in text and "rows/s" in text and "100%" in text
    assert "scored 10,000 rows" in text


def _read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal's other end is closed and everything was read
        return b""


def test_the_summary_counts_invalid_rows_and_the_positive_share(app, messy_rows, tmp_path):
    source = write_rows(messy_rows, tmp_path / "messy.parquet")
    code, stderr = run_score(source, "-o", tmp_path / "out.csv")
    assert code == 0, stderr
    expected = api_answer(app, messy_rows)
    scored = [c for c, p in zip(expected[PREDICTED_CLASS], expected[PROBABILITY], strict=True) if p is not None]
    share = 100 * sum(scored) / len(scored)
    assert "scored 40 rows in " in stderr
    assert f"; 4 invalid; positive share {share:.2f} % of 36 scored" in stderr


def test_keep_copies_chosen_columns_in_their_input_types(id_rows, tmp_path):
    rows = [{**row, "y": i % 2, "note": None if i == 3 else f"n{i}"} for i, row in enumerate(id_rows[:20])]
    parquet = write_rows(rows, tmp_path / "rows.parquet")
    code, stderr = run_score(parquet, "-o", tmp_path / "out.parquet", "--keep", "y,note")
    assert code == 0, stderr
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == [PROBABILITY, PREDICTED_CLASS, "y", "note", ERROR]
    assert table.column("y").to_pylist() == [i % 2 for i in range(20)]
    assert table.schema.field("y").type == pa.int64()
    assert table.column("note").to_pylist()[2:5] == ["n2", None, "n4"]

    ndjson = write_rows(rows, tmp_path / "rows.ndjson")
    code, stderr = run_score(ndjson, "-o", tmp_path / "out.ndjson", "--keep", "id,y")
    assert code == 0, stderr
    written = [json.loads(line) for line in (tmp_path / "out.ndjson").read_text().splitlines()]
    assert [list(row) for row in written[:1]] == [[PROBABILITY, PREDICTED_CLASS, ID_KEY, "y", ERROR]]
    assert [row["y"] for row in written] == [i % 2 for i in range(20)]

    code, stderr = run_score(ndjson, "-o", tmp_path / "out.csv", "--keep", "y")
    assert code == 0, stderr
    assert pcsv.read_csv(tmp_path / "out.csv").column("y").to_pylist()[:3] == [0, 1, 0]


def test_an_input_without_ids_gets_no_id_column(test_rows, tmp_path):
    source = write_rows(test_rows[:10], tmp_path / "rows.csv")
    code, stderr = run_score(source, "-o", tmp_path / "out.parquet")
    assert code == 0, stderr
    assert pq.read_table(tmp_path / "out.parquet").column_names == [PROBABILITY, PREDICTED_CLASS, ERROR]


def test_an_input_of_only_a_header_gives_an_empty_output(tmp_path):
    source = tmp_path / "empty.csv"
    source.write_text("id,x5,x12\n")
    code, stderr = run_score(source, "-o", tmp_path / "out.parquet")
    assert code == 0, stderr
    table = pq.read_table(tmp_path / "out.parquet")
    assert (table.num_rows, table.column_names) == (0, [PROBABILITY, PREDICTED_CLASS, ID_KEY, ERROR])
    assert "scored 0 rows" in stderr


@pytest.mark.parametrize(("setup", "arguments", "code", "message"), [
    (None, ["missing.csv"], score.EXIT_USAGE, "missing.csv: no such file"),
    ("rows.txt", ["rows.txt"], score.EXIT_USAGE, "cannot tell the format of"),
    ("rows.csv", ["rows.csv", "-o", "out.xlsx"], score.EXIT_USAGE, "cannot tell the output format"),
    ("rows.csv", ["rows.csv", "-o", "rows.csv"], score.EXIT_USAGE, "three different files"),
    ("rows.csv", ["rows.csv", "-o", "no/such/dir/out.csv"], score.EXIT_USAGE, "no directory"),
    ("rows.csv", ["rows.csv", "--keep", "x5,nope"], score.EXIT_USAGE, "the input has no column 'nope'"),
    ("rows.csv", ["rows.csv", "--keep", "error"], score.EXIT_USAGE, "would clash"),
    ("rows.csv", ["rows.csv", "--errors", "no/dir/e.csv"], score.EXIT_UNREADABLE, "cannot write no/dir/"),
    ("rows.csv", ["rows.csv", "--format", "parquet"], score.EXIT_UNREADABLE, "not a readable Parquet file"),
    ("rows.csv", ["rows.csv", "--format", "ndjson"], score.EXIT_UNREADABLE, "line 1: malformed JSON"),
    ("latin1.csv", ["latin1.csv"], score.EXIT_UNREADABLE, "the CSV file is not valid UTF-8 at byte 26"),
    ("empty.csv", ["empty.csv"], score.EXIT_UNREADABLE, "the file is empty"),
])
def test_mistakes_get_a_message_and_an_exit_code(test_rows, tmp_path, monkeypatch, setup, arguments, code, message):
    if setup == "latin1.csv":
        (tmp_path / setup).write_bytes("id,x5,x12\nr1,montag,1\nr2,m\xe4rz,1\n".encode("latin-1"))
    elif setup == "empty.csv":
        (tmp_path / setup).write_text("")
    elif setup:
        write_rows(test_rows[:5], tmp_path / "rows.csv").rename(tmp_path / setup)
    monkeypatch.chdir(tmp_path)
    got, stderr = run_score(*arguments)
    assert (got, message in stderr, "Traceback" in stderr) == (code, True, False), stderr
    assert stderr.startswith("lib.batch: error: ")
    assert [path.name for path in tmp_path.rglob("*") if "scores" in path.name or path.suffix == ".partial"] == []


def test_a_tampered_model_stops_the_command_before_reading(model_copy, table_files, tmp_path):
    (model_copy / "scaler.pkl").write_bytes((model_copy / "scaler.pkl").read_bytes() + b"\0")
    code, stderr = run_score(table_files["csv"], "-o", tmp_path / "out.csv", "--model-dir", model_copy)
    assert code == score.EXIT_MODEL
    assert "failed verification: scaler.pkl: sha256 does not match manifest.json" in stderr
    assert [p.name for p in tmp_path.iterdir()] == [model_copy.name]


def test_the_command_line_entry_point_exits_with_the_code_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lib.batch", str(tmp_path / "nope.parquet")], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stderr) == (score.EXIT_USAGE, f"lib.batch: error: {tmp_path / 'nope.parquet'}: "
                                                                "no such file\n")
    done = subprocess.run([sys.executable, "-m", "lib.batch", "--chunk-rows", "0", "x.csv"], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "expected a positive number of rows" in done.stderr


def readme_commands(*names: str) -> list[str]:
    """The runnable command lines of the README's "Scoring files and tables" section that name one of
    ``names``, in order (the cluster example, which needs a cluster, starts otherwise)."""
    section = README.split("## Scoring files and tables\n", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith("    ")]
    return [line for line in lines if line.startswith((".venv/bin/python ", "PYSPARK_PYTHON="))
            and any(name in line for name in names)]


def run_readme_commands(commands: list[str], tmp_path: Path) -> str:
    """Run ``commands`` as written, in one shell, writing into ``tmp_path`` instead of /tmp; their stderr."""
    script = "set -euo pipefail\n" + "\n".join(commands).replace("/tmp/", f"{tmp_path}/")
    done = subprocess.run(["bash", "-c", script], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_the_readme_file_commands_work_as_written(model_dir, data_dir, tmp_path):
    commands = readme_commands("-m lib.batch", "pyarrow.parquet")
    assert len(commands) == 4
    output = run_readme_commands(commands, tmp_path)
    assert output.count("scored 40,000 rows in") == 3 and "; 0 invalid;" in output
    assert {p.name for p in tmp_path.iterdir()} == {"train-scores.csv", "train-scores.parquet", "train-errors.csv",
                                                     "train.parquet", "train-scores.ndjson"}
    assert pq.read_table(tmp_path / "train-scores.parquet").column_names == [PROBABILITY, PREDICTED_CLASS, "y", ERROR]
