"""The file command: score a CSV, NDJSON or Parquet file of any size, as the API would score its rows.

    .venv/bin/python -m lib.batch lib/data/train.csv -o /tmp/train-scores.parquet --errors /tmp/errors.csv

It reads the file in chunks (memory bounded by ``--chunk-rows``, not by the file), normalises and
scores every row with the API's rules and the same compiled plan, and writes, in input order,
``probability_positiveclass``, ``predicted_class``, ``id`` (or the ``--keep`` columns) and ``error``
(why a row was not scored; absent with ``--strict``). The artifacts are verified and the golden row
checked first, as at server start. Progress goes to stderr (a bar on a terminal, a line every few
seconds otherwise), then a summary. The output is written to a temporary file and moved into place
only when the run succeeds.

Exit codes (``lib.batch.exit_codes``, the Spark job's too): 0 done (invalid rows, if any, are in the
output's ``error`` column and the ``--errors`` file); 1 an invalid cell with ``--strict`` (nothing
written); 2 a wrong command line (an unknown option or format, a missing input file); 3 the input
cannot be read (malformed or not of its format) or the output cannot be written; 4 the model's
artifacts failed verification; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa

from lib.batch.exit_codes import (
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_MODEL,
    EXIT_OK,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    SHOWN_ERRORS,
)
from lib.batch.progress import Progress, Summary
from lib.batch.readers import CSV, EXTENSIONS, NDJSON, PARQUET, FileReader, format_of, open_reader
from lib.batch.writers import ErrorsWriter, OutputError, OutputWriter, open_writer
from lib.codecs.answer_table import ERROR, PREDICTED_CLASS, PROBABILITY, result_table
from lib.core.columns import ColumnReport, FarBounds, name_report
from lib.core.errors import ArtifactError, CellError, PayloadError
from lib.core.schema import ID_KEY
from lib.core.scorer import ScoringPlan, count_positive, load_plan, score_batch
from lib.store.versions import DEFAULT_STORE, active_directory

FORMATS = (CSV, NDJSON, PARQUET)
DEFAULT_CHUNK_ROWS = 65_536


class CommandError(Exception):
    """A run that cannot go on: the message for the user and the exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; argparse exits with code 2 on a wrong one."""
    extensions = ", ".join(f"{ext} ({fmt})" for ext, fmt in EXTENSIONS.items())
    parser = argparse.ArgumentParser(
        prog="python -m lib.batch", description="Score a CSV, NDJSON or Parquet file with the model, as the API would.",
        epilog=f"Formats by file name ending: {extensions}. Exit codes: 0 done, 1 invalid cells with --strict, "
               "2 wrong command line, 3 unreadable input or unwritable output, 4 model verification failed.")
    parser.add_argument("input", type=Path, help="the file to score")
    parser.add_argument("-o", "--output", type=Path,
                        help="where to write the scores (default: INPUT with .scores before its ending)")
    parser.add_argument("--format", choices=FORMATS, help="the input's format (default: from its ending)")
    parser.add_argument("--output-format", choices=FORMATS,
                        help="the output's format (default: from the output's ending, else the input's format)")
    parser.add_argument("--keep", type=_names, metavar="COLUMNS",
                        help="comma-separated input columns to copy to the output instead of id (e.g. id,y)")
    invalid = parser.add_mutually_exclusive_group()
    invalid.add_argument("--errors", type=Path, metavar="FILE",
                         help="also write every invalid cell to FILE (CSV: index, id, column, message)")
    invalid.add_argument("--strict", action="store_true",
                         help="stop with exit code 1 at the first invalid cell, writing nothing")
    parser.add_argument("--chunk-rows", type=_positive, default=DEFAULT_CHUNK_ROWS, metavar="N",
                        help=f"rows per chunk: memory grows with it (default {DEFAULT_CHUNK_ROWS:,})")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--store", type=Path, default=DEFAULT_STORE, metavar="DIR",
                       help="score with the active version of this model store (default: lib/model_store)")
    model.add_argument("--model-dir", type=Path, metavar="DIR",
                       help="score with the model in this directory instead (a version of a store, or "
                            "python -m lib.training.train --out DIR)")
    parser.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between progress lines when stderr is not a terminal (default 5)")
    return parser.parse_args(argv)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of rows, got {text}")
    return value


def main(argv: Sequence[str] | None = None, stderr: TextIO | None = None) -> int:
    """Run the command; return its exit code. Messages go to ``stderr``, never a traceback for
    a user's mistake."""
    args = parse_args(argv)
    stderr = stderr or sys.stderr
    try:
        output, summary = run(args, stderr)
    except CommandError as exc:
        print(f"lib.batch: error: {exc}", file=stderr)
        return exc.code
    except KeyboardInterrupt:
        print("lib.batch: interrupted; nothing was written", file=stderr)
        return EXIT_INTERRUPTED
    print(f"{summary.text()}\nwrote {output}" + (f"; invalid cells in {args.errors}" if args.errors else ""),
          file=stderr)
    return EXIT_OK


def run(args: argparse.Namespace, stderr: TextIO) -> tuple[Path, Summary]:
    """Score ``args.input`` into the output; return the output's path and the summary."""
    source, fmt = _input(args)
    output, output_format = _output(args, source, fmt)
    try:
        model_dir = args.model_dir or active_directory(args.store)
    except ArtifactError as exc:
        raise CommandError(f"no model to score with in {args.store}: {exc}", EXIT_MODEL) from None
    try:
        plan, manifest = load_plan(model_dir)
    except ArtifactError as exc:
        raise CommandError(f"the model in {model_dir} failed verification: {exc}", EXIT_MODEL) from None
    try:
        reader = open_reader(source, fmt, plan.consumed_columns, args.chunk_rows)
    except PayloadError as exc:
        raise CommandError(f"{source}: {exc}", EXIT_UNREADABLE) from None
    except OSError as exc:
        raise CommandError(f"{source}: cannot read it: {exc.strerror}", EXIT_UNREADABLE) from None
    keep = _kept_columns(args.keep, reader)
    # The API's column report (lib.core.columns): names from a CSV header or a Parquet schema (an
    # NDJSON file has none up front), values far outside training counted while scoring.
    report = name_report(plan.consumed_columns, reader.columns)
    far = FarBounds.from_manifest(manifest, plan.numeric_columns, plan.center, plan.scale)
    outputs = _open_outputs(output, output_format, args.errors)
    progress = Progress(stderr, reader.total_rows, source.stat().st_size, args.progress_every)
    try:
        summary = score_file(plan, reader, keep, progress, args.strict, *outputs, far=far, report=report)
    except BaseException as exc:
        for out in outputs:
            out.discard()
        if isinstance(exc, PayloadError):
            raise CommandError(f"{source}: {exc}; nothing was written", EXIT_UNREADABLE) from None
        if isinstance(exc, OutputError):
            raise CommandError(f"{exc}; nothing was written", EXIT_UNREADABLE) from None
        if isinstance(exc, OSError):
            raise CommandError(f"cannot write the output: {exc}; nothing was written", EXIT_UNREADABLE) from None
        raise
    finally:
        progress.close()
    for out in outputs:
        out.commit()
    if report:
        print(f"lib.batch: warning: {report.describe()}", file=stderr)
    return output, summary


def _open_outputs(output: Path, output_format: str, errors: Path | None) -> list:
    """The output's writer, then the errors file's if asked for; nothing left behind on failure."""
    opened = []
    try:
        opened.append(open_writer(output, output_format))
        if errors:
            opened.append(ErrorsWriter(errors))
    except OSError as exc:
        for out in opened:
            out.discard()
        raise CommandError(f"cannot write {exc.filename}: {exc.strerror}", EXIT_UNREADABLE) from None
    return opened


def _input(args: argparse.Namespace) -> tuple[Path, str]:
    source: Path = args.input
    if not source.exists():
        raise CommandError(f"{source}: no such file", EXIT_USAGE)
    if source.is_dir():
        raise CommandError(f"{source} is a directory: name one file", EXIT_USAGE)
    fmt = args.format or format_of(source)
    if fmt is None:
        raise CommandError(f"cannot tell the format of {source} from its ending: use --format "
                           f"({', '.join(FORMATS)}); endings known: {', '.join(EXTENSIONS)}", EXIT_USAGE)
    return source, fmt


def _output(args: argparse.Namespace, source: Path, fmt: str) -> tuple[Path, str]:
    output_format = args.output_format or (format_of(args.output) if args.output else fmt)
    if output_format is None:
        raise CommandError(f"cannot tell the output format from {args.output}'s ending: use --output-format "
                           f"({', '.join(FORMATS)})", EXIT_USAGE)
    ending = next(ext for ext, name in EXTENSIONS.items() if name == output_format)
    output = args.output or source.with_name(f"{source.name.removesuffix(source.suffix)}.scores{ending}")
    if output.resolve() == source.resolve() or (args.errors and args.errors.resolve() in (source.resolve(),
                                                                                          output.resolve())):
        raise CommandError("the input, the output and the errors file must be three different files", EXIT_USAGE)
    if not output.parent.is_dir():
        raise CommandError(f"cannot write {output}: no directory {output.parent}", EXIT_USAGE)
    return output, output_format


def _kept_columns(asked: tuple[str, ...] | None, reader: FileReader) -> tuple[str, ...]:
    """The input columns to copy: those asked for, else ``id`` when the input may have it."""
    if asked is None:
        return (ID_KEY,) if reader.columns is None or ID_KEY in reader.columns else ()
    taken = [name for name in asked if name in (PROBABILITY, PREDICTED_CLASS, ERROR)]
    if taken:
        raise CommandError(f"--keep: {', '.join(taken)} would clash with an output column of the same name",
                           EXIT_USAGE)
    missing = [name for name in asked if reader.columns is not None and name not in reader.columns]
    if missing:
        raise CommandError(f"--keep: the input has no column {', '.join(map(repr, missing))}", EXIT_USAGE)
    return tuple(dict.fromkeys(asked))


def score_file(plan: ScoringPlan, reader: FileReader, keep: tuple[str, ...], progress: Progress, strict: bool,
               writer: OutputWriter, errors_writer: ErrorsWriter | None = None, *, far: FarBounds | None = None,
               report: ColumnReport | None = None) -> Summary:
    """Score every chunk of ``reader`` into ``writer`` with the ``keep`` columns, and each invalid
    cell into ``errors_writer``; raise CommandError at the first invalid cell if ``strict``. With
    ``far`` and ``report``, the values far outside training are counted into ``report.far``."""
    started, cpu_started = time.perf_counter(), time.process_time()
    rows = invalid = positives = 0
    for chunk in reader.chunks(keep):
        scores = score_batch(plan, chunk.batch)
        bad = scores.invalid_rows
        if far is not None and report is not None:
            for column, count in far.count(scores.numeric).items():
                report.far[column] = report.far.get(column, 0) + count
        if bad and strict:
            raise CommandError(_strict_message(scores.errors, rows), EXIT_INVALID)
        writer.write(result_table(scores.probabilities, scores.classes, bad, errors=None if strict else scores.errors),
                     chunk.kept)
        if errors_writer is not None and scores.errors:
            errors_writer.write(scores.errors, rows)
        n = chunk.batch.n_rows
        positives += count_positive(scores.classes, bad)
        rows, invalid = rows + n, invalid + len(bad)
        progress.update(n, chunk.bytes_read)
    if not rows:  # an empty input still gets an output with the columns
        writer.write(result_table(np.empty(0), np.empty(0, dtype=np.int8), errors=None if strict else []),
                     {name: pa.array([], type=pa.string()) for name in keep})
    return Summary(rows=rows, invalid=invalid, positives=positives, seconds=time.perf_counter() - started,
                   cpu_seconds=time.process_time() - cpu_started)


def _strict_message(errors: list[CellError], first_row: int) -> str:
    shown = "; ".join(f"row {first_row + e.index}" + (f" (id {e.id!r})" if e.id is not None else "")
                      + f", {e.column}: {e.message}" for e in errors[:SHOWN_ERRORS])
    more = f"; and {len(errors) - SHOWN_ERRORS} more invalid cells in rows up to {first_row + errors[-1].index}" \
        if len(errors) > SHOWN_ERRORS else ""
    return f"invalid cells (--strict: stopped, nothing was written): {shown}{more}"


if __name__ == "__main__":
    sys.exit(main())
