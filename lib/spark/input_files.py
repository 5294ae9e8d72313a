"""The Spark job's input files, checked as the API checks a body before Spark reads them: local
Parquet files through the shared Parquet decoder's footer and page checks, local CSV files for a
header naming each column once, UTF-8 and no stray control characters; Spark's CSV reader set to
read as the API does, and its refusals told in one line naming the file."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from lib.codecs.csv import FILE_BLOCK_BYTES, first_line, header_names, require_utf8_file
from lib.codecs.parquet import check_file
from lib.core.errors import PayloadError

#: Spark's CSV reader set to read as the API does (lib.codecs.csv): quotes inside a quoted cell
#: doubled (Spark's default escape is a backslash), line breaks inside quoted cells (a file is then
#: read by one task), every file's header the same as the first's (by default Spark ignores the
#: others), and a row whose cell count is not the header's failing the job (by default Spark pads
#: it with nulls or drops its extra cells, moving no value but losing or inventing some).
CSV_OPTIONS = {"header": True, "escape": '"', "multiLine": True, "enforceSchema": False, "mode": "FAILFAST"}
#: Control characters that are not white space (the normaliser strips white space from a cell).
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1b]")
#: Words of Spark's errors for a ragged CSV row in FAILFAST mode.
_MALFORMED_CSV = ("MALFORMED_RECORD_IN_PARSING", "MALFORMED_CSV_RECORD")


def check_parquet_files(uris: Sequence[str], columns: Sequence[str], keep: Sequence[str] = ()) -> None:
    """Check the footer and page headers of each local Parquet file Spark is about to read, as the
    API checks a body (lib.codecs.parquet); raise PayloadError for the first that lies.

    Spark believes a footer: a row group that claims fewer rows than its pages hold loses the rest
    silently, one that claims more fails the job, one that claims 2^40 rows runs on. Files on
    other file systems (hdfs://, s3a://) are left to Spark."""
    for path in _local_files(uris):
        try:
            check_file(path, columns, keep)
        except PayloadError as exc:
            raise PayloadError(f"{path}: {exc}") from None


def check_csv_files(uris: Sequence[str]) -> None:
    """Check each local CSV file Spark is about to read as the API checks a body: a header
    naming each column once, UTF-8 throughout (lib.codecs.csv); raise PayloadError for the first
    that fails. Spark would rename a name given twice (``x5`` as columns 1 and 2 becomes ``x51``
    and ``x52``, each then an absent column) and read bytes that are not UTF-8 as replacement
    characters. Files on other file systems are left to Spark; a ragged row fails the job wherever
    it lies (CSV_OPTIONS)."""
    for path in _local_files(uris):
        try:
            if path.stat().st_size == 0:
                raise PayloadError("the file is empty: a CSV file starts with a header row")
            header_names(first_line(path))
            require_utf8_file(path)
            _refuse_control_bytes(path)
        except PayloadError as exc:
            raise PayloadError(f"{path}: {exc}") from None


def _refuse_control_bytes(path: Path) -> None:
    """Refuse a CSV file holding a control character that is not white space (NUL, ...): Spark's
    reader drops those that follow a quoted cell (``"$1.00"\\0``), where the API keeps them and
    refuses the cell, so the job would score a row the API does not."""
    offset = 0
    with open(path, "rb") as handle:
        while block := handle.read(FILE_BLOCK_BYTES):
            found = _CONTROL_BYTES.search(block)
            if found:
                raise PayloadError(f"byte {offset + found.start()} of the CSV file is a control character "
                                   f"(0x{found.group()[0]:02x}): remove it (the Spark job does not read them as "
                                   "the API does)")
            offset += len(block)


def _local_files(uris: Sequence[str]) -> Iterator[Path]:
    for uri in uris:
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            yield Path(unquote(parsed.path))


def csv_failure(text: str) -> str | None:
    """The one-line message for a CSV that Spark's reader refused as CSV_OPTIONS ask (a ragged
    row, a header unlike the others), naming the file; never a row, which Spark's message quotes."""
    if any(words in text for words in _MALFORMED_CSV):
        found = re.search(r"while reading file (\S+?)\.?\s", text)
        return (f"{path_of(found.group(1)) if found else 'the input'}: a row of the CSV does not have as many "
                "cells as the header (a comma inside an unquoted cell, a cell left out, or a quote left open): "
                "quote such cells, send every cell; nothing was written")
    if "CSV header does not conform to the schema" in text:
        found, differs = re.search(r"CSV file: (\S+)", text), re.search(r"Expected: (.*) but found: (.*)", text)
        where = path_of(found.group(1)) if found else "a file of the input"
        how = f" (column {differs.group(2)!r} where the table has {differs.group(1)!r})" if differs else ""
        return (f"{where}: its CSV header does not match the table's columns{how}: every file of a table names "
                "the same columns in the same order, each once; nothing was written")
    return None


def path_of(uri: str) -> str:
    """A file URI as the local path it names, else the URI."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("", "file") else uri
