"""Scoring a Spark DataFrame with the API's plan: ``score_dataframe``, and the job that scores a table.

    .venv/bin/python -m lib.spark lib/data/train.csv /tmp/train-scores --master 'local[2]'
    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[2]' lib/spark/job.py IN OUT

How the model reaches the executors: the driver reads the manifest and the three pickles, and
checks them as a server does at start (manifest checksum, library versions, every file's sha256,
the golden row); the manifest and the verified bytes are then broadcast once (``ShippedModel``).
On each executor, the Python worker checks them again before its first batch (nothing unverified
is unpickled there either), compiles the plan once and keeps it for every later batch and task.
Batches go through ``mapInArrow``: each Arrow batch becomes a ``RawBatch`` by the same conversion
as the API's Arrow and Parquet bodies (``lib.codecs.columnar``), so every row gets the API's probability,
bit for bit, and every invalid cell the API's message.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a file (spark-submit lib/spark/job.py): import the package, not lib/ as a path
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import argparse
import functools
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException, PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ByteType, DoubleType, StringType, StructField, StructType

from lib.batch.exit_codes import EXIT_INVALID, EXIT_MODEL, EXIT_OK, EXIT_UNREADABLE, EXIT_USAGE, SHOWN_ERRORS
from lib.batch.progress import Summary
from lib.codecs.answer_table import ERROR, PREDICTED_CLASS, PROBABILITY, result_table
from lib.codecs.columnar import batch_from_table
from lib.core.artifacts import (
    STAGE_FILES,
    check_manifest,
    read_files,
    read_manifest,
    sha256_bytes,
    stages_from_bytes,
)
from lib.core.errors import ArtifactError, CellError, PayloadError
from lib.core.schema import ID_KEY
from lib.core.scorer import ScoringPlan, ready_plan, score_batch
from lib.spark.input_files import CSV_OPTIONS, check_csv_files, check_parquet_files, csv_failure
from lib.store.versions import DEFAULT_STORE, active_directory

FORMATS = ("parquet", "csv")
#: Compiled plans of this process, by manifest checksum and file hashes (a Python worker keeps its
#: plan for every later task of the same model).
_PLANS: dict[tuple[str, ...], ScoringPlan] = {}


class InvalidRowsError(ValueError):
    """Strict mode met an invalid cell; the message names the rows, ids, columns and problems."""


@dataclass(frozen=True)
class ShippedModel:
    """The model as it travels to the executors: the manifest and the bytes of the pickles."""

    manifest: dict
    files: dict[str, bytes]

    @classmethod
    def read(cls, model_dir: Path | None = None) -> ShippedModel:
        """Read the artifacts of ``model_dir`` (default: the active version of lib/model_store) and
        check them as at server start (raise ArtifactError)."""
        model_dir = Path(model_dir) if model_dir is not None else active_directory()
        shipped = cls(read_manifest(model_dir), read_files(model_dir))
        shipped.plan()
        return shipped

    def plan(self) -> ScoringPlan:
        """The compiled plan, after the checks of server start: manifest checksum, library versions,
        each file's sha256, the golden row. Done once per process and model; raise ArtifactError."""
        check_manifest(self.manifest)
        hashes = (sha256_bytes(self.files.get(name, b"")) for name in STAGE_FILES)
        key = (self.manifest.get("manifest_sha256", ""), *hashes)
        if key not in _PLANS:
            _PLANS[key], _ = ready_plan(stages_from_bytes(self.manifest, self.files))
        return _PLANS[key]


def score_dataframe(df: DataFrame, model: Path | ShippedModel | None = None, strict: bool = False) -> DataFrame:
    """``df`` with ``probability_positiveclass`` (double), ``predicted_class`` (byte) and, unless
    ``strict``, ``error`` (null for scored rows, else each invalid cell as ``column: message``).

    ``model`` is a model directory (read and verified here, on the driver; default: the active
    version of lib/model_store) or a ``ShippedModel`` (verified on the executors only). The
    consumed columns are taken by name, as in the API (absent ones are missing values; numbers as
    doubles, strings through the normaliser, other types invalid); an ``id`` column names the rows
    in error messages. With ``strict``, the first invalid cell fails the job with an
    ``InvalidRowsError`` naming it.
    """
    taken = [name for name in (PROBABILITY, PREDICTED_CLASS, ERROR) if name in df.columns]
    if taken:
        raise ValueError(f"the DataFrame already has the column(s) {', '.join(taken)}: rename or drop them first")
    shipped = model if isinstance(model, ShippedModel) else ShippedModel.read(model)
    broadcast = df.sparkSession.sparkContext.broadcast(shipped)
    added = [StructField(PROBABILITY, DoubleType()), StructField(PREDICTED_CLASS, ByteType())]
    if not strict:
        added.append(StructField(ERROR, StringType()))
    schema = StructType([*df.schema.fields, *added])
    return df.mapInArrow(functools.partial(score_batches, model=broadcast, strict=strict), schema)


def score_batches(batches: Iterator[pa.RecordBatch], model, strict: bool) -> Iterator[pa.RecordBatch]:
    """What runs on the executors: each Arrow batch with its scores appended. ``model`` is the
    broadcast ``ShippedModel``, verified before the first batch."""
    plan = model.value.plan()
    for batch in batches:
        scores = score_batch(plan, batch_from_table(batch, plan.consumed_columns))
        invalid = scores.invalid_rows
        if invalid and strict:
            raise InvalidRowsError(strict_message(scores.errors))
        result = result_table(scores.probabilities, scores.classes, invalid, errors=None if strict else scores.errors)
        yield pa.RecordBatch.from_arrays([*batch.columns, *(column.combine_chunks() for column in result.columns)],
                                         names=[*batch.schema.names, *result.column_names])


def strict_message(errors: Sequence[CellError]) -> str:
    """The first invalid cells of a batch, each with its row's id (rows of a partition have no
    stable position: give the table an ``id`` column to find them)."""
    shown = "; ".join((f"id {e.id!r}, " if e.id is not None else "") + f"{e.column}: {e.message}"
                      for e in errors[:SHOWN_ERRORS])
    more = f" (and {len(errors) - SHOWN_ERRORS} more in the same batch)" if len(errors) > SHOWN_ERRORS else ""
    return f"invalid cells in strict mode: {shown}{more}"


def spark_session(master: str | None = None, app_name: str = "lib.spark", config: dict | None = None) -> SparkSession:
    """A session for the job (or the tests). With a local master, the Python workers run this
    interpreter (PySpark would start ``python3`` from the PATH, which may lack the project's
    packages) unless ``PYSPARK_PYTHON`` chose another."""
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in (config or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    context = spark.sparkContext
    if context.master.startswith("local") and context.pythonExec == "python3":
        context.pythonExec = sys.executable
    return spark


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The job's command line; argparse exits with code 2 on a wrong one."""
    parser = argparse.ArgumentParser(
        prog="python -m lib.spark", description="Score a Parquet or CSV table with Spark; write Parquet.",
        epilog="Exit codes: 0 done, 1 invalid cells with --strict, 2 wrong command line or existing output, "
               "3 unreadable input, 4 model verification failed.")
    parser.add_argument("input", help="a Parquet or CSV file or directory (any path Spark reads: hdfs://, s3a://)")
    parser.add_argument("output", help="the Parquet directory to write")
    parser.add_argument("--master", help="Spark master URL (default: spark-submit's, else local[*])")
    parser.add_argument("--format", choices=FORMATS,
                        help="the input's format (default: csv for a name ending in .csv, else parquet)")
    parser.add_argument("--keep", type=lambda text: tuple(n.strip() for n in text.split(",") if n.strip()),
                        metavar="COLUMNS", help="comma-separated input columns to write beside the scores "
                                                "(default: id, if the input has it)")
    parser.add_argument("--strict", action="store_true", help="fail at the first invalid cell (no error column)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--log-level", default="FATAL", choices=("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"),
                        help="Spark's log level once the job runs (default FATAL: errors are reported by the job)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--store", type=Path, default=DEFAULT_STORE, metavar="DIR",
                       help="score with the active version of this model store, read on the driver "
                            "(default: lib/model_store)")
    model.add_argument("--model-dir", type=Path, metavar="DIR",
                       help="score with the model in this directory instead, read on the driver")
    model.add_argument("--model-from-files", action="store_true",
                       help="read the artifacts shipped with spark-submit --files (its manifest.json and the "
                            "three .pkl files) instead")
    return parser.parse_args(argv)


def run(spark: SparkSession, args: argparse.Namespace) -> Summary:
    """Read the input, score it, write the output; the summary of what was written."""
    from pyspark import SparkFiles

    if args.model_from_files:
        model_dir = Path(SparkFiles.getRootDirectory())
    else:
        model_dir = args.model_dir or active_directory(args.store)
    shipped = ShippedModel.read(model_dir)
    fmt = args.format or ("csv" if args.input.lower().endswith(".csv") else "parquet")
    # Columns by their exact names, as the API takes them: by default Spark renames a CSV header's
    # x5 and X5 alike (x51, X52), and reads a Parquet column X44 as x44.
    spark.conf.set("spark.sql.caseSensitive", "true")
    # A CSV's columns are all strings (no schema inference): every cell reaches the normaliser as text.
    df = spark.read.options(**CSV_OPTIONS).csv(args.input) if fmt == "csv" else spark.read.parquet(args.input)
    keep = args.keep if args.keep is not None else ((ID_KEY,) if ID_KEY in df.columns else ())
    missing = [name for name in keep if name not in df.columns]
    if missing:
        raise UsageError(f"--keep: the input has no column {', '.join(map(repr, missing))}")
    plan = shipped.plan()
    read = list(dict.fromkeys(name for name in (*plan.consumed_columns, ID_KEY, *keep) if name in df.columns))
    if fmt == "parquet":
        check_parquet_files(df.inputFiles(), plan.consumed_columns, keep)
    else:
        check_csv_files(df.inputFiles())
    scored = score_dataframe(df.select(*read), shipped, strict=args.strict)
    written = [PROBABILITY, PREDICTED_CLASS, *keep] + ([] if args.strict else [ERROR])
    started = time.perf_counter()
    scored.select(*written).write.mode("overwrite" if args.overwrite else "errorifexists").parquet(args.output)
    seconds = time.perf_counter() - started
    counts = spark.read.parquet(args.output).agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col(PREDICTED_CLASS).cast("long")).alias("positives"),
        (F.count(F.col(ERROR)) if not args.strict else F.lit(0)).alias("invalid"),
    ).first()
    return Summary(rows=counts["rows"], invalid=counts["invalid"], positives=counts["positives"] or 0, seconds=seconds)


class UsageError(Exception):
    """A wrong command line found after Spark started (an absent column)."""


def main(argv: Sequence[str] | None = None) -> int:
    """The job: score INPUT into OUTPUT; return the exit code (messages on stderr, no traceback
    for a user's mistake)."""
    args = parse_args(argv)
    # PySpark warns that it does not fully support pandas 3; this job goes through mapInArrow only.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    spark = spark_session(args.master)
    # FATAL by default: a strict job's invalid cell is reported below in one line, where Spark would
    # log every failed task with the worker's traceback.
    spark.sparkContext.setLogLevel(args.log_level)
    try:
        summary = run(spark, args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ArtifactError as exc:
        return _fail(f"the model failed verification: {exc}", EXIT_MODEL)
    except PayloadError as exc:
        return _fail(f"{exc}; nothing was written", EXIT_UNREADABLE)
    except AnalysisException as exc:
        if "PATH_ALREADY_EXISTS" in str(exc):
            return _fail(f"{_first_line(exc)} (use --overwrite)", EXIT_USAGE)
        return _fail(_first_line(exc), EXIT_USAGE if "PATH_NOT_FOUND" in str(exc) else EXIT_UNREADABLE)
    except (PySparkException, Py4JJavaError) as exc:  # a failed job: an invalid cell in strict mode, an
        # unreadable file (Spark's own reader refusing a footer raises from the JVM, unwrapped)
        found = _strict_failure(str(exc))
        if found:
            return _fail(found, EXIT_INVALID)
        refused = csv_failure(str(exc))
        if refused:
            return _fail(refused, EXIT_UNREADABLE)
        return _fail(f"the job failed: {_first_line(exc)}", EXIT_UNREADABLE)
    finally:
        spark.stop()
    print(f"{summary.text()}\nwrote {args.output}", file=sys.stderr)
    return EXIT_OK


def _strict_failure(text: str) -> str | None:
    marker = f"{InvalidRowsError.__name__}: "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].splitlines()[0] + " (nothing was written)"


def _first_line(exc: Exception) -> str:
    """The line that says what went wrong: the last ``SomeError: message`` line of a failed
    worker's traceback, else the exception's first line."""
    lines = str(exc).strip().splitlines()
    errors = [line.strip() for line in lines if re.match(r"\s*[\w.]+(Error|Exception): ", line)]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:500]


def _fail(message: str, code: int) -> int:
    print(f"lib.spark: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    # The package's own module, not this __main__: executors import the functions they run by name.
    from lib.spark.job import main as job

    sys.exit(job())
