"""CSV with a header row (the exercise's test file as it is), for the API's bodies and the file
command's files alike: parsed by Arrow's CSV reader, the wanted columns taken by name as text
(every cell a string for the normaliser, nothing turned into a null), the rest never converted.

What a body must hold, checked as it is parsed:
- a header of distinct names (a name given twice is refused, never one of the two silently);
- every row with as many cells as the header: a row with more (an amount's grouping comma left
  unquoted, ``Monday,$1,000,5``) or fewer cells would shift values between columns, so it is
  refused with its row number, never guessed;
- UTF-8 everywhere in a body, in the converted columns of a file (a byte-order mark at the start
  is skipped); blank lines are skipped; quoted cells may hold commas, quotes (doubled) and line
  breaks.
"""

from __future__ import annotations

import codecs
import csv
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv

from lib.codecs.text import describe_invalid_csv_utf8, require_utf8
from lib.core.errors import PayloadError

_BOM = b"\xef\xbb\xbf"
#: Bytes of a file parsed at a time by the file command (memory is bounded by a few blocks).
FILE_BLOCK_BYTES = 16 << 20


class RaggedRows:
    """Collects the first row whose cell count differs from the header's (Arrow calls it)."""

    def __init__(self):
        self.first: pcsv.InvalidRow | None = None

    def __call__(self, row: pcsv.InvalidRow) -> str:
        self.first = self.first or row
        return "error"

    def problem(self) -> PayloadError | None:
        """The first ragged row as a PayloadError, or None if there was none."""
        row = self.first
        if row is None:
            return None
        where = f"row {row.number}" if row.number is not None else "a row"
        if row.actual_columns > row.expected_columns:
            hint = "a comma inside an unquoted cell, such as an amount's \"$1,000\", makes two cells: quote such cells"
        else:
            hint = "a cell left out, or a quote left open, joins cells: send every cell, an empty one as nothing"
        cells = f"{row.actual_columns} cell{'s' if row.actual_columns != 1 else ''}"
        return PayloadError(f"{where} of the CSV (the header is row 1) has {cells} but the header has "
                            f"{row.expected_columns} ({hint})")


def header_names(first_block: bytes) -> list[str]:
    """The header's column names, from the start of a CSV body or file (its whole first line);
    PayloadError if there is no header or a name appears twice."""
    start = len(_BOM) if first_block.startswith(_BOM) else 0
    end = first_block.find(b"\n", start)
    head = first_block[start:] if end < 0 else first_block[start:end + 1]
    line = head.rstrip(b"\r\n")
    try:
        names = next(csv.reader([line.decode("utf-8")]), [])
    except UnicodeDecodeError:
        raise PayloadError(f"the CSV header is {describe_invalid_csv_utf8(head)}") from None
    except csv.Error as exc:
        raise PayloadError(f"malformed CSV header: {exc}") from None
    if not line.strip() or not names:
        raise PayloadError("the CSV holds no header row: its first line names the columns")
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise PayloadError(f"column {repeated[0]!r} appears {names.count(repeated[0])} times in the CSV header: "
                           "send each column once")
    return names


def first_line(path: Path) -> bytes:
    """A file's first line, however long (a header of many or long names)."""
    with open(path, "rb") as handle:
        pieces = []
        while piece := handle.read(1 << 16):
            pieces.append(piece)
            if b"\n" in piece:
                break
    return b"".join(pieces)


def require_utf8_file(path: Path) -> None:
    """Refuse a file (PayloadError) unless all of it is UTF-8, as a body is refused: read once
    more, a block at a time (a pass over plain ASCII, a decode else)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        while block := handle.read(FILE_BLOCK_BYTES):
            if not block.isascii() or decoder.getstate()[0]:
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    raise PayloadError(f"the CSV file is not valid UTF-8 at byte {offset + max(exc.start, 0)}: "
                                       "send text as UTF-8") from None
            offset += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise PayloadError("the CSV file ends inside a UTF-8 character: send text as UTF-8") from None


class CsvDecoder:
    """Decodes CSV bodies and files into Arrow tables of text columns; build once per process."""

    def __init__(self, wanted: Sequence[str]):
        self.wanted = tuple(dict.fromkeys(wanted))

    def read(self, body: bytes) -> pa.Table:
        """The wanted columns of a CSV body (those it has), all as strings; PayloadError if it is
        not well-formed CSV."""
        require_utf8(body, "the CSV body", csv=True)  # every byte: the columns no one reads too
        names = header_names(body)
        included = self._included(names)
        ragged = RaggedRows()
        try:
            table = pcsv.read_csv(pa.py_buffer(body), read_options=pcsv.ReadOptions(use_threads=False),
                                  parse_options=self._parse_options(ragged),
                                  convert_options=self._convert_options(included))
        except pa.ArrowInvalid as exc:
            raise self._problem(exc, ragged, body) from None
        return self._only_wanted(table)

    def batches(self, path: Path, keep: Sequence[str] = ()) -> Iterator[tuple[pa.RecordBatch, int]]:
        """The wanted and ``keep`` columns of a CSV file, a block at a time, with the bytes read so
        far; PayloadError (naming the rows read before it) if the file is not well-formed CSV."""
        names = header_names(first_line(path))
        require_utf8_file(path)
        included = self._included(names, keep)
        ragged = RaggedRows()
        rows = 0
        with pa.input_stream(path) as source:
            try:
                reader = pcsv.open_csv(source, read_options=pcsv.ReadOptions(use_threads=False,
                                                                             block_size=FILE_BLOCK_BYTES),
                                       parse_options=self._parse_options(ragged),
                                       convert_options=self._convert_options(included))
                for batch in reader:
                    rows += batch.num_rows
                    yield self._only_wanted(batch, keep), source.tell()
            except pa.ArrowInvalid as exc:
                problem = self._problem(exc, ragged, None)
                raise PayloadError(f"malformed CSV after row {rows}: {problem}") from None

    def _included(self, names: list[str], keep: Sequence[str] = ()) -> list[str]:
        wanted = {*self.wanted, *keep}
        # Without any wanted column, the first one is read to count the rows (each then all missing).
        return [name for name in names if name in wanted] or names[:1]

    @staticmethod
    def _parse_options(ragged: RaggedRows) -> pcsv.ParseOptions:
        return pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=ragged)

    @staticmethod
    def _convert_options(included: list[str]) -> pcsv.ConvertOptions:
        return pcsv.ConvertOptions(include_columns=included, column_types=dict.fromkeys(included, pa.string()),
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)

    def _only_wanted(self, table, keep: Sequence[str] = ()):
        wanted = {*self.wanted, *keep}
        unwanted = [i for i, name in enumerate(table.schema.names) if name not in wanted]
        for i in reversed(unwanted):
            table = table.remove_column(i)
        return table

    @staticmethod
    def _problem(exc: pa.ArrowInvalid, ragged: RaggedRows, body: bytes | None) -> PayloadError:
        if ragged.problem() is not None:
            return ragged.problem()
        message = str(exc).strip().split("\n", 1)[0]
        if "invalid UTF8" in message:
            if body is None:  # a file: Arrow's words name the column and row, and hold no cell
                return PayloadError(f"not valid UTF-8: {message}; send text as UTF-8")
            return PayloadError(f"the CSV body is {describe_invalid_csv_utf8(body)}")
        # Arrow's message may end with the row's text: keep only its reason.
        return PayloadError(f"malformed CSV: {message.split(': ', 1)[-1][:200]}")
