"""The Spark job (``lib.spark.job``) on ``local[2]``: the API's numbers and errors, strict mode, the
artifacts checked on the executors, and the job's entry points (``python -m`` and ``spark-submit``).

One SparkSession for the module (starting a JVM costs seconds). Skipped, with the reason, only
where no Java runtime is installed; CI installs one (.ci/run).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lib.codecs.answer_table import ERROR, PREDICTED_CLASS, PROBABILITY
from lib.core.artifacts import MANIFEST_FILE, STAGE_FILES
from lib.core.errors import ArtifactError
from lib.core.schema import ID_KEY
from tests.conftest import api_answer, api_cell_errors, write_rows
from tests.lib.batch.test_score import readme_commands, run_readme_commands
from tests.support.live_server import PROJECT_DIR
from tests.support.parquet_footer import FILE_ROWS, patched, row_group_rows

pytestmark = pytest.mark.skipif(shutil.which("java") is None,
                                reason="no Java runtime (apt-get install openjdk-17-jre-headless; .ci/run does)")

#: Small and quiet: two cores, two shuffle partitions, no web UI, no console progress bars.
TEST_CONFIG = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    # Batches smaller than the default 10,000 rows: the test rows span several batches per partition.
    "spark.sql.execution.arrow.maxRecordsPerBatch": "1500",
}


@pytest.fixture(scope="module")
def spark(model_dir):
    from lib.spark.job import spark_session

    session = spark_session("local[2]", app_name="tests", config=TEST_CONFIG)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def collected(df, names=(ID_KEY, PROBABILITY, PREDICTED_CLASS, ERROR)) -> dict[str, list]:
    """The DataFrame's columns ``names`` as lists, in ``id`` order of the input (t0, t1, ...)."""
    rows = sorted(df.select(*[n for n in names if n in df.columns]).collect(), key=lambda r: int(r[ID_KEY][1:]))
    return {name: [row[name] for row in rows] for name in names if name in df.columns}


@pytest.mark.parametrize("input_format", ["parquet", "csv"])
def test_the_test_rows_score_bit_for_bit_as_in_the_api(spark, table_files, api_scores, input_format):
    from lib.spark.job import score_dataframe

    path = str(table_files[input_format])
    df = spark.read.parquet(path) if input_format == "parquet" else spark.read.option("header", True).csv(path)
    got = collected(score_dataframe(df.repartition(3)))
    assert np.array(got[PROBABILITY]).tobytes() == np.array(api_scores[PROBABILITY]).tobytes()
    assert got[PREDICTED_CLASS] == api_scores[PREDICTED_CLASS]
    assert got[ID_KEY] == api_scores[ID_KEY]
    assert got[ERROR] == [None] * len(api_scores[ID_KEY])


def test_the_input_columns_stay_and_the_scores_are_appended(spark, table_files):
    from lib.spark.job import score_dataframe

    df = spark.read.parquet(str(table_files["parquet"]))
    scored = score_dataframe(df)
    assert scored.columns == [*df.columns, PROBABILITY, PREDICTED_CLASS, ERROR]
    assert [f.dataType.simpleString() for f in scored.schema.fields[-3:]] == ["double", "tinyint", "string"]


def test_messy_and_invalid_cells_get_the_api_answers_and_errors(spark, app, messy_rows, tmp_path):
    from lib.spark.job import score_dataframe

    path = write_rows(messy_rows, tmp_path / "messy.parquet")
    got = collected(score_dataframe(spark.read.parquet(str(path))))
    expected = api_answer(app, messy_rows)
    assert got[PROBABILITY] == expected[PROBABILITY]
    by_row: dict[int, str] = {}
    for index, _, column, message in api_cell_errors(expected):
        by_row[index] = f"{by_row[index]}\n{column}: {message}" if index in by_row else f"{column}: {message}"
    assert got[ERROR] == [by_row.get(i) for i in range(len(messy_rows))]
    assert sum(e is not None for e in got[ERROR]) == 4


def test_strict_mode_fails_the_job_naming_the_cell(spark, id_rows, tmp_path):
    from pyspark.errors import PythonException

    from lib.spark.job import score_dataframe

    rows = [dict(row) for row in id_rows[:300]]
    rows[123]["x81"] = "Smarch"
    df = spark.read.parquet(str(write_rows(rows, tmp_path / "rows.parquet")))
    strict = score_dataframe(df, strict=True)
    assert ERROR not in strict.columns
    with pytest.raises(PythonException, match=r"InvalidRowsError: invalid cells in strict mode: id 't123', "
                                              r"x81: unknown value 'Smarch'"):
        strict.collect()


def test_the_executors_verify_the_artifacts_they_receive(spark, table_files, model_dir):
    from pyspark.errors import PythonException

    from lib.spark.job import ShippedModel, score_dataframe

    good = ShippedModel.read(model_dir)
    tampered = ShippedModel(good.manifest, {**good.files, "model.pkl": good.files["model.pkl"] + b"\0"})
    df = spark.read.parquet(str(table_files["parquet"])).limit(10)
    # Handed over unverified: only the executors check it, and refuse it before unpickling.
    with pytest.raises(PythonException, match="model.pkl: sha256 does not match manifest.json"):
        score_dataframe(df, tampered).collect()
    assert len(score_dataframe(df, good).collect()) == 10


def test_a_shipped_model_is_checked_like_a_server_start(model_copy):
    from lib.spark.job import ShippedModel

    shipped = ShippedModel.read(model_copy)
    assert set(shipped.files) == set(STAGE_FILES)
    with pytest.raises(ArtifactError, match="does not match its own checksum"):
        ShippedModel({**shipped.manifest, "threshold": 0.1}, shipped.files).plan()
    with pytest.raises(ArtifactError, match="scaler.pkl is missing"):
        ShippedModel(shipped.manifest, {k: v for k, v in shipped.files.items() if k != "scaler.pkl"}).plan()
    (model_copy / "imputer.pkl").write_bytes(b"not the imputer")
    with pytest.raises(ArtifactError, match="imputer.pkl: sha256 does not match"):
        ShippedModel.read(model_copy)


def test_a_column_named_like_a_score_is_refused(spark):
    from lib.spark.job import score_dataframe

    with pytest.raises(ValueError, match="already has the column"):
        score_dataframe(spark.createDataFrame([(0.5,)], [PROBABILITY]))


def test_spark_submit_runs_the_job_file_with_the_artifacts_shipped_as_files(table_files, api_scores, tmp_path,
                                                                           model_dir):
    submit = shutil.which("spark-submit", path=str(PROJECT_DIR / ".venv" / "bin"))
    output = tmp_path / "scores"
    shipped = ",".join(str(model_dir / name) for name in (MANIFEST_FILE, *STAGE_FILES))
    done = subprocess.run(
        [submit, "--master", "local[2]", "--conf", "spark.ui.enabled=false", "--files", shipped,
         "lib/spark/job.py", "--model-from-files", str(table_files["parquet"]), str(output)],
        # The pip-installed spark-submit finds Spark with PYSPARK_PYTHON (else python3 from the PATH).
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # spark-submit copies the Python driver's stderr to its own stdout.
    assert "scored 10,000 rows in" in done.stdout and "; 0 invalid;" in done.stdout
    table = pq.read_table(output).sort_by([(ID_KEY, "ascending")])
    expected = dict(zip(api_scores[ID_KEY], api_scores[PROBABILITY], strict=True))
    assert table.column_names == [PROBABILITY, PREDICTED_CLASS, ID_KEY, ERROR]
    assert table.column(PROBABILITY).to_pylist() == [expected[i] for i in table.column(ID_KEY).to_pylist()]


def test_the_job_in_strict_mode_exits_1_and_writes_nothing(id_rows, tmp_path):
    rows = [dict(row) for row in id_rows[:50]]
    rows[7]["x12"] = "twelve dollars"
    source = write_rows(rows, tmp_path / "rows.csv")
    output = tmp_path / "scores"
    done = subprocess.run([sys.executable, "-m", "lib.spark", str(source), str(output), "--master", "local[2]",
                           "--strict"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr[-3000:]
    assert ("lib.spark: error: invalid cells in strict mode: id 't7', x12: not an amount: 'twelve dollars'"
            in done.stderr)
    assert "Traceback" not in done.stderr
    assert not list(output.glob("*.parquet")) and not (output / "_SUCCESS").exists()


@pytest.mark.parametrize("command", readme_commands("lib.spark", "lib/spark/job.py"))
def test_the_readme_spark_commands_work_as_written(command, model_dir, data_dir, tmp_path):
    output = run_readme_commands([command], tmp_path)
    assert "scored 40,000 rows in" in output and "; 0 invalid;" in output


def test_the_readme_shows_both_ways_of_running_the_job():
    assert [c.split()[0] for c in readme_commands("lib.spark", "lib/spark/job.py")] == [".venv/bin/python",
                                                                                  "PYSPARK_PYTHON=.venv/bin/python"]


class _KeptSession:
    """The module's session for ``lib.spark.job.main``, which stops its session when done."""

    def __init__(self, session):
        self._session = session

    def __getattr__(self, name):
        return getattr(self._session, name)

    def stop(self) -> None:
        pass


def run_job(spark, monkeypatch, args: list[str]) -> tuple[int, str]:
    """``lib.spark.job.main(args)`` on the module's session: (exit code, what it wrote to stderr)."""
    import lib.spark.job

    monkeypatch.setattr(lib.spark.job, "spark_session", lambda *args, **kwargs: _KeptSession(spark))
    errors = io.StringIO()
    monkeypatch.setattr(sys, "stderr", errors)
    code = lib.spark.job.main([*args, "--log-level", "ERROR"])
    monkeypatch.undo()
    return code, errors.getvalue()


@pytest.mark.parametrize("claim", [
    300,  # Spark itself would read 900 of the 1,000 rows and say nothing...
    2**40,  # ... or run on and on.
])
def test_the_job_refuses_a_parquet_footer_that_lies_with_exit_code_3(spark, monkeypatch, tmp_path, claim):
    import lib.spark.job

    data = pa.table({"x44": pa.array([i / 1000 for i in range(1000)]), ID_KEY: [f"t{i}" for i in range(1000)]})
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink, row_group_size=400)
    source = tmp_path / "lying.parquet"
    source.write_bytes(patched(sink.getvalue().to_pybytes(), {FILE_ROWS: claim + 600, row_group_rows(0): claim}))
    code, errors = run_job(spark, monkeypatch, [str(source), str(tmp_path / "scores")])
    assert code == lib.spark.job.EXIT_UNREADABLE, errors
    assert (f"lib.spark: error: {source}: the Parquet footer lies: the footer says row group 0 holds {claim} rows, "
            "the data holds 400") in errors
    assert not (tmp_path / "scores").exists()


#: CSV the API and the file command refuse (lib/codecs/csv.py), and the words of the job's message.
BAD_CSV = {
    "a column named twice": (b"id,x5,x12,x5\nt0,monday,$1.00,friday\n",
                             "column 'x5' appears 2 times in the CSV header: send each column once"),
    "a row with a cell more": (b"id,x5,x12\nt0,monday,$1.00\nt1,friday,$1,000.00\nt2,sunday,$2.00\n",
                               "a row of the CSV does not have as many cells as the header"),
    "a row with a cell less": (b"id,x5,x12\nt0,monday,$1.00\nt1,friday\n",
                               "a row of the CSV does not have as many cells as the header"),
    "a quote left open": (b'id,x5,x12\nt0,"monday,$1.00\nt1,friday,$2.00\n',
                          "a row of the CSV does not have as many cells as the header"),
    "bytes that are not UTF-8": (b"id,x5,x12\nt0,monday,$1.00\nt1,fri\xffday,$2.00\n",
                                 "the CSV file is not valid UTF-8 at byte 32"),
    "an empty file": (b"", "the file is empty: a CSV file starts with a header row"),
    # Spark's reader drops it after a quoted cell and scores $1.00; the API refuses the cell.
    "a NUL after a quoted cell": (b'id,x5,x12\nt0,monday,"$1.00"\0\n',
                                  "byte 27 of the CSV file is a control character (0x00)"),
}


@pytest.mark.parametrize("name", list(BAD_CSV))
def test_the_job_refuses_csv_the_api_refuses_with_exit_code_3_and_one_line(spark, monkeypatch, tmp_path, name):
    import lib.spark.job

    body, words = BAD_CSV[name]
    source = tmp_path / "bad.csv"
    source.write_bytes(body)
    code, errors = run_job(spark, monkeypatch, [str(source), str(tmp_path / "scores")])
    assert code == lib.spark.job.EXIT_UNREADABLE, errors
    lines = errors.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lib.spark: error: {source}: {words}"), errors
    assert "$1,000.00" not in errors and "Traceback" not in errors  # the message names the problem, not the row
    # A ragged row fails the job as it writes: Spark may leave the directory, not a file in it.
    assert not list((tmp_path / "scores").glob("*.parquet")) and not (tmp_path / "scores" / "_SUCCESS").exists()


def job_and_api_scores(spark, monkeypatch, tmp_path, app, body: bytes) -> tuple[pa.Table, dict]:
    """A CSV file of ``body`` through the job (which must succeed): what it wrote, and the API's
    answer for the same bytes as a body."""
    source, output = tmp_path / "input.csv", tmp_path / "scores"
    source.write_bytes(body)
    code, errors = run_job(spark, monkeypatch, [str(source), str(output)])
    assert code == 0, errors
    answer = app.test_client().post("/predict?format=columns&errors=inline", data=body, content_type="text/csv")
    return pq.read_table(output), answer.get_json()


def test_the_job_reads_quoted_cells_as_the_api_does(spark, monkeypatch, tmp_path, app):
    """Quotes doubled inside a quoted cell, a line break in one, a backslash as it is: as the API
    reads them (Spark's defaults: a backslash escapes a quote, a line break ends a row)."""
    body = (b'id,x5,x12,x81\n"a ""quoted"" id",monday,"$1,000.00",June\n"two\nlines",friday,$2.00,"May"\n'
            b'"back\\",sunday,"$-3.50",April\n')
    table, expected = job_and_api_scores(spark, monkeypatch, tmp_path, app, body)
    assert expected[ID_KEY] == ['a "quoted" id', "two\nlines", "back\\"]
    got = dict(zip(table.column(ID_KEY).to_pylist(), table.column(PROBABILITY).to_pylist(), strict=True))
    assert got == dict(zip(expected[ID_KEY], expected[PROBABILITY], strict=True))
    assert table.column(ERROR).to_pylist() == [None] * 3


def test_the_job_refuses_a_csv_directory_whose_headers_differ(spark, monkeypatch, tmp_path):
    import lib.spark.job

    source = tmp_path / "table"
    source.mkdir()
    (source / "part-0.csv").write_bytes(b"id,x5,x12\nt0,monday,$1.00\n")
    (source / "part-1.csv").write_bytes(b"id,x12,x5\nt1,$2.00,friday\n")  # Spark's default: x12 read as x5
    code, errors = run_job(spark, monkeypatch, [str(source), str(tmp_path / "scores"), "--format", "csv"])
    assert code == lib.spark.job.EXIT_UNREADABLE, errors
    # Which file's header Spark takes for the table's is its choice: the message names the other.
    assert errors in (f"lib.spark: error: {source / part}: its CSV header does not match the table's columns "
                      f"(column {found!r} where the table has {expected!r}): every file of a table names the same "
                      "columns in the same order, each once; nothing was written\n"
                      for part, found, expected in (("part-0.csv", "x5", "x12"), ("part-1.csv", "x12", "x5")))


def test_the_job_tells_columns_apart_by_case_as_the_api_does(spark, monkeypatch, tmp_path, app):
    body = b"id,x5,X5,x12\nt0,monday,friday,$1.00\nt1,sunday,monday,$-2.50\n"
    table, expected = job_and_api_scores(spark, monkeypatch, tmp_path, app, body)
    # x5 is read, X5 is not: the same answers as with x5 alone.
    alone = app.test_client().post("/predict?format=columns&errors=inline", content_type="text/csv",
                                   data=b"id,x5,x12\nt0,monday,$1.00\nt1,sunday,$-2.50\n").get_json()
    assert expected[PROBABILITY] == alone[PROBABILITY]
    table = table.sort_by([(ID_KEY, "ascending")])
    assert table.column(PROBABILITY).to_pylist() == expected[PROBABILITY]
