"""Output files of the file command (``lib.batch.command``), written chunk by chunk and never left half-written.

Each writer writes to a temporary file in the output's directory (``lib.core.atomic_file``) and renames
it over the output only when the run succeeds (``commit``); ``discard`` removes it. A chunk arrives
as the scores table of ``lib.codecs.answer_table.result_table`` (``probability_positiveclass``,
``predicted_class``, ``error``) and the input columns to copy; the output's columns are the scores,
then the copied columns, then ``error``: the columns of the API's table answers, with ``id`` or the
columns asked for.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from lib.batch.readers import CSV, NDJSON, PARQUET
from lib.codecs.answer_table import ERROR, PROBABILITY
from lib.core.atomic_file import AtomicFile
from lib.core.errors import CellError
from lib.core.schema import ID_KEY

#: The side file's columns: one line per invalid cell, as the API lists them.
ERROR_FIELDS = ("index", "id", "column", "message")


class OutputError(Exception):
    """The scores cannot be written in the chosen format (a copied column of a type it cannot hold)."""


class OutputWriter(Protocol):
    """Writes the scored chunks of one run to one output file."""

    def write(self, scores: pa.Table, kept: dict[str, pa.Array | list]) -> None:
        """Append a chunk: its scores and the input columns to copy."""
        ...

    def commit(self) -> None:
        """Finish the file and move it to the output path."""
        ...

    def discard(self) -> None:
        """Drop everything written; the output path is left as it was."""
        ...


def open_writer(path: Path, fmt: str) -> OutputWriter:
    """The writer of ``path`` in format ``fmt`` (csv, ndjson or parquet)."""
    writers = {CSV: CsvWriter, NDJSON: NdjsonWriter, PARQUET: ParquetWriter}
    return writers[fmt](path)


def output_table(scores: pa.Table, kept: dict[str, pa.Array | list]) -> pa.Table:
    """The chunk's output columns: the scores, the copied columns, then ``error`` if present.
    Lists of JSON values (NDJSON) become text: strings as they are, other values as JSON."""
    table = scores.drop_columns([ERROR]) if ERROR in scores.column_names else scores
    for name, values in kept.items():
        if not isinstance(values, pa.Array | pa.ChunkedArray):
            values = pa.array(map(_as_text, values), type=pa.string())
        elif pa.types.is_dictionary(values.type):  # a categorical column read as Parquet stores it
            values = values.cast(values.type.value_type)
        table = table.append_column(name, values)
    if ERROR in scores.column_names:
        table = table.append_column(ERROR, scores.column(ERROR))
    return table


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


class _ArrowWriter:
    """Shared by the Parquet and CSV writers: the first chunk fixes the schema, later chunks are
    cast to it (a chunk of all-null ids is still written with the ids' type)."""

    def __init__(self, path: Path):
        self._file = AtomicFile(path)
        self._writer = None
        self._schema: pa.Schema | None = None

    def _open(self, schema: pa.Schema):
        raise NotImplementedError

    def write(self, scores: pa.Table, kept: dict[str, pa.Array | list]) -> None:
        table = output_table(scores, kept)
        if self._writer is None:
            self._schema = pa.schema([field.with_type(pa.string()) if pa.types.is_null(field.type) else field
                                      for field in table.schema])
            self._writer = self._open(self._schema)
        try:
            self._writer.write_table(table.cast(self._schema))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise OutputError(f"cannot write the output: {exc}") from None

    def commit(self) -> None:
        if self._writer is None:
            raise RuntimeError("nothing was written: write at least one (possibly empty) chunk")
        self._writer.close()
        self._file.commit()

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._file.discard()


class ParquetWriter(_ArrowWriter):
    """Parquet, one row group per chunk."""

    def _open(self, schema: pa.Schema):
        # No dictionary for the probabilities and ids, which are (nearly) all distinct: building one
        # only to fall back to plain encoding was half the writing time.
        small = [name for name in schema.names if name not in (PROBABILITY, ID_KEY)]
        return pq.ParquetWriter(self._file.temporary, schema, use_dictionary=small)


class CsvWriter(_ArrowWriter):
    """CSV with a header row; nulls as empty cells, floats in their shortest exact form."""

    def _open(self, schema: pa.Schema):
        try:
            return pcsv.CSVWriter(self._file.temporary, schema,
                                  write_options=pcsv.WriteOptions(quoting_style="needed"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise OutputError(f"cannot write the output as CSV: {exc}") from None


class _StreamWriter:
    """A file written through one open handle, closed by ``commit`` or ``discard``."""

    def __init__(self, path: Path, mode: str = "wb", **options):
        self._file = AtomicFile(path)
        self._handle = open(self._file.temporary, mode, **options)  # closed by commit or discard

    def commit(self) -> None:
        self._handle.close()
        self._file.commit()

    def discard(self) -> None:
        self._handle.close()
        self._file.discard()


class NdjsonWriter(_StreamWriter):
    """NDJSON: one object per row, copied values as the input had them."""

    def write(self, scores: pa.Table, kept: dict[str, pa.Array | list]) -> None:
        columns = {name: scores.column(name).to_pylist() for name in scores.column_names if name != ERROR}
        columns.update({name: values.to_pylist() if isinstance(values, pa.Array | pa.ChunkedArray) else values
                        for name, values in kept.items()})
        if ERROR in scores.column_names:
            columns[ERROR] = scores.column(ERROR).to_pylist()
        names, dumps = list(columns), orjson.dumps
        self._handle.write(b"".join(dumps(dict(zip(names, row, strict=True)), option=orjson.OPT_APPEND_NEWLINE,
                                          default=str) for row in zip(*columns.values(), strict=True)))


class ErrorsWriter(_StreamWriter):
    """The side file of invalid cells: CSV with a header, one line per cell (``index`` counts the
    input's rows from 0, as the API's error lists do)."""

    def __init__(self, path: Path):
        super().__init__(path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._handle)
        self._csv.writerow(ERROR_FIELDS)

    def write(self, errors: Sequence[CellError], first_row: int) -> None:
        """Append the cell errors of a chunk whose first row is input row ``first_row``."""
        self._csv.writerows((first_row + e.index, e.id, e.column, e.message) for e in errors)
