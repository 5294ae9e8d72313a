"""Input files read in chunks of rows, for the file command (``lib.batch.command``): CSV, NDJSON, Parquet.

Every reader yields ``Chunk``s: the consumed columns and ids of a run of rows as the scorer's
``RawBatch``, plus the columns to copy to the output. Memory is bounded by the chunk (and, for
Parquet, by a row group of the consumed columns), never by the file. Each format reads its cells
as the API reads a body of that format:

- CSV: the API's CSV decoder (``lib.codecs.csv``): every cell as text, so ``"$1,234.50"``,
  ``" nan "`` and empty cells are the same strings as in the API; a row whose cell count differs
  from the header's is refused; the cells then go through ``lib.codecs.columnar``;
- NDJSON: each line a JSON object, decoded as the API decodes NDJSON (``lib.codecs.ndjson``);
- Parquet: by the shared codec (``lib.codecs.parquet``: footer and page headers checked first,
  rows counted from the data), in record batches of the consumed columns only, through
  ``lib.codecs.columnar`` (numbers as float64, strings through the normaliser, other types invalid cells).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from lib.codecs.columnar import batch_from_table
from lib.codecs.csv import CsvDecoder, first_line, header_names
from lib.codecs.limits import DecodeLimits
from lib.codecs.ndjson import LinesDecoder
from lib.codecs.parquet import ParquetDecoder
from lib.core.errors import LimitError, PayloadError
from lib.core.raw_batch import RawBatch, make_batch
from lib.core.schema import ID_KEY

CSV, NDJSON, PARQUET = "csv", "ndjson", "parquet"
#: File name endings -> format.
EXTENSIONS = {".csv": CSV, ".ndjson": NDJSON, ".jsonl": NDJSON, ".parquet": PARQUET, ".pq": PARQUET}
#: What a Parquet row group's pages and one chunk of rows may decode to: the API's MAX_DECODED_MB default.
DEFAULT_DECODED_BYTES = DecodeLimits.max_decoded_bytes


@dataclass(frozen=True)
class Chunk:
    """A run of input rows: what the scorer reads, and the columns copied to the output."""

    batch: RawBatch
    #: Columns to copy to the output, by name: Arrow arrays, or Python lists of JSON values (NDJSON).
    kept: dict[str, pa.Array | list]
    #: Bytes of the file read so far (for progress).
    bytes_read: int


class FileReader(Protocol):
    """Reads one input file in chunks."""

    #: Rows in the file, when the format records it (Parquet); None otherwise.
    total_rows: int | None
    #: Column names the file declares (None for NDJSON, whose rows declare their own keys).
    columns: tuple[str, ...] | None

    def chunks(self, keep: Sequence[str] = ()) -> Iterator[Chunk]:
        """The file's rows, in order, ``chunk_rows`` at a time, with the ``keep`` columns to copy."""
        ...


def format_of(path: Path) -> str | None:
    """The format a file name's ending says, or None."""
    return EXTENSIONS.get(path.suffix.lower())


def open_reader(path: Path, fmt: str, consumed: Sequence[str], chunk_rows: int) -> FileReader:
    """The reader of ``path`` in format ``fmt``, reading the ``consumed`` columns for the scorer.
    Raise PayloadError if the file cannot be read as ``fmt``."""
    readers = {CSV: CsvFileReader, NDJSON: NdjsonFileReader, PARQUET: ParquetFileReader}
    return readers[fmt](path, tuple(consumed), chunk_rows)


class ParquetFileReader:
    """Parquet by record batches of the consumed, id and kept columns, through the shared codec
    (lib.codecs.parquet): the footer and page headers checked first, the rows counted from the
    data, each row group's pages and each chunk's decoded bytes within ``max_decoded_bytes``."""

    def __init__(self, path: Path, consumed: tuple[str, ...], chunk_rows: int,
                 max_decoded_bytes: int = DEFAULT_DECODED_BYTES):
        self._path, self._consumed, self._chunk_rows = path, consumed, chunk_rows
        self._limits = DecodeLimits(max_rows=sys.maxsize, max_decoded_bytes=max_decoded_bytes)
        decoder = self._decoder()
        decoder.close()
        self.columns = decoder.names
        self.total_rows = decoder.total_rows

    def _decoder(self, keep: Sequence[str] = ()) -> ParquetDecoder:
        return ParquetDecoder(self._path, self._consumed, self._limits, keep=keep, whole=False,
                              unreadable="not a readable Parquet file")

    def chunks(self, keep: Sequence[str] = ()) -> Iterator[Chunk]:
        decoder = self._decoder(keep)
        try:
            for record_batch in decoder.batches(self._chunk_rows):
                # No byte count: the row count is in the file's metadata (total_rows).
                yield Chunk(batch=batch_from_table(record_batch, self._consumed),
                            kept={name: record_batch.column(name) for name in keep}, bytes_read=0)
        except LimitError as exc:
            raise PayloadError(f"{exc}: score it with a smaller --chunk-rows") from None
        finally:
            decoder.close()


class CsvFileReader:
    """CSV with a header row, a block at a time, every cell as text (``lib.codecs.csv``, as the
    API decodes a CSV body)."""

    def __init__(self, path: Path, consumed: tuple[str, ...], chunk_rows: int):
        self.path = path
        self.total_rows = None
        if path.stat().st_size == 0:
            raise PayloadError("the file is empty: a CSV file starts with a header row")
        self.columns = tuple(header_names(first_line(path)))
        self._decoder = CsvDecoder((*consumed, ID_KEY))
        self._consumed, self._chunk_rows = consumed, chunk_rows

    def chunks(self, keep: Sequence[str] = ()) -> Iterator[Chunk]:
        for block, bytes_read in self._decoder.batches(self.path, keep):
            for start in range(0, block.num_rows, self._chunk_rows):
                rows = block.slice(start, self._chunk_rows)
                yield Chunk(batch=batch_from_table(rows, self._consumed), bytes_read=bytes_read,
                            kept={name: rows.column(name) for name in keep})


class NdjsonFileReader:
    """NDJSON by chunks of ``chunk_rows`` lines."""

    def __init__(self, path: Path, consumed: tuple[str, ...], chunk_rows: int):
        self.path = path
        self.total_rows = None
        self.columns = None
        self._consumed, self._chunk_rows = consumed, chunk_rows

    def chunks(self, keep: Sequence[str] = ()) -> Iterator[Chunk]:
        decoder = LinesDecoder((*self._consumed, ID_KEY, *keep), reported=self._consumed)
        read_bytes, line = 0, 1
        with open(self.path, "rb") as handle:
            while lines := list(itertools.islice(handle, self._chunk_rows)):
                decoded = decoder.decode(b"".join(lines), first_line=line)
                if decoded.malformed is not None:
                    raise decoded.malformed
                line += len(lines)
                read_bytes += sum(map(len, lines))
                values, n = decoded.values, decoded.n_rows
                if not n:
                    continue
                yield Chunk(batch=make_batch(self._consumed, n, [values[c] for c in self._consumed], values[ID_KEY]),
                            kept={name: values[name] for name in keep}, bytes_read=read_bytes)
