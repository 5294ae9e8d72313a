"""Parquet, decoded in one place for the API's bodies, the file command and the Spark job.

A Parquet file says in its footer how many rows it holds, per row group, and where each column
chunk lies; pyarrow believes it: it sizes its buffers by a row group's ``num_rows`` (a 491-byte
file claiming 2^40 rows grows a worker until the kernel kills it) and reads no more rows than
the footer claims. So, before any value is decoded:

1. the footer is checked for consistency: the file's ``num_rows`` is the sum of its row groups';
   no claim is negative; every column chunk lies within the file, before the footer;
2. the page headers of every column chunk to be read are walked (a few bytes per page, nothing
   decompressed): their data pages must hold exactly the rows their row group claims (a flat
   column holds one value per row), and their ``uncompressed_page_size`` is what decompressing
   them will take;
3. with ``DecodeLimits``, a row group whose rows would take the body past ``MAX_ROWS`` is refused
   (413) before it is read, and so is a row group whose pages and decoded values would take it past
   ``MAX_DECODED_MB``.

Then the row groups are read one by one, in record batches of a bounded number of rows (never
a read sized by the footer), counting the rows decoded, and at the end of each row group the
rows decoded must equal its claim: a footer that lies is a ``PayloadError`` (400) saying what it
says and what the data holds. Only the consumed columns and ``id`` (and the file command's kept
columns) are read or decompressed. Text columns the scorer reads come dictionary-encoded, as
Parquet stores them, so that a value repeated a million times is decoded once; what such a column
expands to when a numeric kind's text is parsed cell by cell (``lib.codecs.columnar``) is charged to the
budget, ``TEXT_COPIES`` times, before it happens.

The module is kept whole: its checks are one sequence over one file (footer, schema, pages, then
each batch as it is read), sharing the decoder's reader and limits, and read best top to bottom.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lib.codecs.limits import DecodeLimits
from lib.codecs.thrift import StructReader, ThriftError
from lib.core.errors import PayloadError
from lib.core.schema import ID_KEY, LEVELS, kind_of

#: Width charged per decoded row of a column read (a double, an offset, a dictionary index).
ROW_WIDTH = 8
#: Bytes of worker memory per byte of a numeric kind's text (or ids) expanded from a dictionary:
#: lib.codecs.columnar expands it per row, trims and cleans it, and, for cells that do not parse cleanly,
#: makes a Python string of each, which the normaliser then refuses cell by cell (measured: 6.4 MB
#: per MB for a 600-byte amount repeated 100,000 times; docs/PERFORMANCE.md), with a margin.
TEXT_COPIES = 16
#: Bytes read at a time to find a page header (one is tens of bytes; statistics can make it longer).
HEADER_PROBE = 256
#: A page header longer than this is not one.
MAX_HEADER_BYTES = 1024 * 1024
_DATA_PAGE, _DATA_PAGE_V2 = 0, 3


def _broken(what: str) -> PayloadError:
    return PayloadError(f"the Parquet footer is inconsistent: {what}")


def _lie(index: int, claim: int, held: int, where: str = "") -> PayloadError:
    return PayloadError(f"the Parquet footer lies: the footer says row group {index} holds {claim} rows, "
                        f"the data holds {held}{where}")


@dataclass(frozen=True)
class RowGroup:
    """What the footer and the page headers say of one row group, checked against each other."""

    index: int
    rows: int
    #: Bytes the read column chunks' pages decompress to (from their page headers).
    page_bytes: int


class FittingSchemas:
    """Footers whose schema was checked and fits (``ParquetDecoder``'s annotation check): the
    footer's bytes up to the end of its schema. A footer that starts with the same bytes holds
    the same schema (the compact protocol is read byte by byte, each field delimited by its own
    bytes), so it is not read again: clients send one schema body after body, and reading 100
    columns' schema costs half a millisecond. The most recent ``size`` are kept."""

    def __init__(self, size: int = 16):
        self.size = size
        self._prefixes: dict[bytes, None] = {}

    def known(self, footer: bytes) -> bool:
        """Whether ``footer`` starts with the bytes of a schema found to fit."""
        return any(footer.startswith(prefix) for prefix in self._prefixes)

    def add(self, prefix: bytes) -> None:
        """Keep ``prefix`` (a footer's bytes up to the end of its fitting schema)."""
        self._prefixes.pop(prefix, None)
        while len(self._prefixes) >= self.size:
            del self._prefixes[next(iter(self._prefixes))]
        self._prefixes[prefix] = None


class ParquetDecoder:
    """One Parquet body or file, its footer and page headers checked before any value is read.

    ``columns`` are the model's consumed columns, ``keep`` other columns to read as they are (the
    file command's ``--keep``); ``unreadable`` begins the message for bytes pyarrow cannot open.
    With ``whole`` (the API), every row group read stays in memory, so ``limits`` count rows and
    decoded bytes over the whole body; without (the file command), each batch is dropped before
    the next, so the byte budget covers one row group's pages and one batch, and the row limit is
    not used.
    """

    def __init__(self, source: bytes | Path, columns: Sequence[str], limits: DecodeLimits,
                 keep: Sequence[str] = (), whole: bool = True,
                 unreadable: str = "the body is not a valid Parquet file", schemas: FittingSchemas | None = None):
        self.columns = tuple(columns)
        self.limits, self.whole = limits, whole
        self._schemas = schemas
        if isinstance(source, bytes | bytearray | memoryview):
            view = memoryview(source)
            self.size = len(view)
            self._read_at: Callable[[int, int], bytes] = lambda offset, n: view[offset:offset + n]
            opened = pa.BufferReader(source)
        else:
            self.size = os.path.getsize(source)
            handle = open(source, "rb")  # noqa: SIM115 - kept for the page headers, closed with the decoder

            def read_at(offset: int, n: int) -> bytes:
                handle.seek(offset)
                return handle.read(n)

            self._handle, self._read_at, opened = handle, read_at, str(source)
        try:
            self._open(source, opened, keep, unreadable)
        except BaseException:
            self.close()
            raise

    def _open(self, source: bytes | Path, opened: pa.BufferReader | str, keep: Sequence[str], unreadable: str) -> None:
        self._check_schema_types(unreadable)
        try:
            metadata = pq.read_metadata(opened if isinstance(opened, str) else pa.BufferReader(source))
            schema = metadata.schema.to_arrow_schema()
            self.names = tuple(schema.names)
            present = set(self.names)
            self.read = [name for name in dict.fromkeys((*self.columns, ID_KEY, *keep)) if name in present]
            for name in self.read:
                if self.names.count(name) > 1:
                    raise PayloadError(f"column {name!r} appears {self.names.count(name)} times in the table: "
                                       "send it once")
            types = {field.name: field.type for field in schema}
            # The text the scorer reads, dictionary-encoded: decoded once per distinct value.
            text = [name for name in self.read if name in {*self.columns, ID_KEY} and _is_text(types[name])]
            self._file = pq.ParquetFile(opened, metadata=metadata, read_dictionary=text, pre_buffer=False)
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            raise PayloadError(f"{unreadable}: {_first_line(exc)}") from None
        self._metadata = self._file.metadata
        # Without any column to read, count the rows on the first column, as the CSV reader does
        # (each row then all missing values): a count is never taken from the footer alone.
        self._counted = self.read or list(self.names[:1])
        self.row_groups = self._check_footer()
        self.total_rows = sum(group.rows for group in self.row_groups)

    def _check_schema_types(self, unreadable: str) -> None:
        """Refuse a schema whose column annotations (text, integers, dates, ...) do not fit their
        physical types, read from the footer's own bytes: pyarrow's conversion of such a schema
        throws where it cannot be caught, and the process is aborted (SIGABRT)."""
        if self.size < 12:
            return  # too short for a footer: pyarrow refuses it with a message
        length = int.from_bytes(bytes(self._read_at(self.size - 8, 4)), "little")
        if not 0 < length <= self.size - 12:
            return  # pyarrow refuses it with a message
        data = bytes(self._read_at(self.size - 8 - length, length))
        if self._schemas is not None and self._schemas.known(data):
            return
        try:
            footer, schema_end = StructReader(data).read(last_field=2)
        except ThriftError:
            return  # pyarrow refuses it with a message
        for element in footer.get(2) or []:
            if not isinstance(element, dict) or element.get(5):  # a group: no values of its own
                continue
            physical = element.get(1)
            fits = _FITTING_TYPES.get(_annotation(element))
            if physical is not None and fits is not None and physical not in fits:
                name = element.get(4, b"?")
                name = name.decode("utf-8", "replace")[:64] if isinstance(name, bytes) else "?"
                stored = _TYPE_NAMES[physical] if 0 <= physical < len(_TYPE_NAMES) else physical
                raise PayloadError(f"{unreadable}: column {name!r} is annotated {_annotation(element)} but its "
                                   f"values are stored as {stored}")
        # Kept only when the schema was read and the reading stopped at a one-byte field header
        # (id past 2): a footer with the same bytes up to and with that header holds the same
        # schema and no other. A footer without a schema, or whose next field has a long header,
        # is not kept (its prefix would be the version alone, which every footer starts with).
        if self._schemas is not None and 2 in footer and schema_end < len(data) and data[schema_end] >> 4:
            self._schemas.add(data[:schema_end + 1])

    def close(self) -> None:
        """Close the file (a path's decoder); a body's has nothing to close."""
        if getattr(self, "_file", None) is not None:
            self._file.close()
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.close()

    # -- before reading --------------------------------------------------------------------------

    def _check_footer(self) -> list[RowGroup]:
        metadata = self._metadata
        claims = [metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)]
        if metadata.num_rows < 0 or min(claims, default=0) < 0:
            raise _broken(f"it says the file holds {metadata.num_rows} rows, its row groups {claims[:5]}")
        if sum(claims) != metadata.num_rows:
            raise _broken(f"the footer says the file holds {metadata.num_rows} rows, its row groups {sum(claims)}")
        if metadata.num_rows and not self.names:
            raise PayloadError(f"the Parquet file has no columns but its footer says {metadata.num_rows} rows: "
                               "send the model's columns")
        if self.whole:  # a claim over MAX_ROWS is refused before its pages are even looked at
            self.limits.check_more_rows(metadata.num_rows)
        leaves = self._leaves()
        self._end_of_data = self.size - 8 - int.from_bytes(bytes(self._read_at(self.size - 8, 4)), "little")
        groups = []
        for index, claim in enumerate(claims):
            group = metadata.row_group(index)
            groups.append(RowGroup(index, claim, sum(self._check_chunk(index, claim, group.column(j), flat)
                                                     for j, flat in leaves)))
        return groups

    def _leaves(self) -> list[tuple[int, bool]]:
        """The leaf columns of the columns read: their index, and whether they are flat (one value
        per row, so their pages must hold exactly their row group's rows)."""
        schema = self._metadata.schema
        leaves = []
        self._leaf_index = {schema.column(j).path: j for j in range(len(schema))}
        for j in range(len(schema)):
            leaf = schema.column(j)
            top = leaf.path.split(".", 1)[0]
            if leaf.path in self._counted or top in self._counted:
                leaves.append((j, leaf.max_repetition_level == 0 and leaf.path in self._counted))
        return leaves

    def _check_chunk(self, index: int, claim: int, chunk: pq.ColumnChunkMetaData, flat: bool) -> int:
        """Check one column chunk's place, type, counts and pages; return the bytes its pages
        decompress to."""
        leaf = self._metadata.schema.column(self._leaf_index[chunk.path_in_schema])
        if chunk.physical_type != leaf.physical_type:
            # pyarrow would decode the pages as the schema's type: a worker dies (SIGABRT) on it.
            raise _broken(f"column {chunk.path_in_schema!r} of row group {index} holds {chunk.physical_type} values "
                          f"but the schema says {leaf.physical_type}")
        if flat and chunk.num_values != claim:
            where = f" (the footer's value count of column {chunk.path_in_schema!r})"
            raise _lie(index, claim, chunk.num_values, where)
        start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
        size = chunk.total_compressed_size
        if start is None or start < 4 or size < 0 or start + size > self._end_of_data:
            raise _broken(f"column {chunk.path_in_schema!r} of row group {index} lies outside the file's data")
        # A flat column's page holds one row at least: more pages than rows (as the row group or the
        # chunk says; at most MAX_ROWS in a body), a dictionary and an index page, is a body made to
        # keep this walk busy.
        most_pages = None
        if flat:
            most_pages = max(claim, chunk.num_values) + 2
            if self.whole:
                most_pages = min(most_pages, self.limits.max_rows + 2)
        values, page_bytes = self._walk_pages(start, start + size, (chunk.path_in_schema, index), most_pages, flat)
        if flat and values != claim:
            raise _lie(index, claim, values, f" (the pages of column {chunk.path_in_schema!r})")
        return page_bytes

    def _walk_pages(self, pos: int, end: int, where: tuple[str, int], most_pages: int | None,
                    flat: bool) -> tuple[int, int]:
        """The values the data pages between ``pos`` and ``end`` hold, and their uncompressed bytes."""
        name = f"column {where[0]!r} of row group {where[1]}"
        values = page_bytes = pages = 0
        while pos < end:
            pages += 1
            if most_pages is not None and pages > most_pages:
                raise PayloadError(f"the pages of {name} are more than its rows: not a Parquet writer's file")
            header, length = self._page_header(pos, end, name)
            kind, uncompressed, compressed = header.get(1), header.get(2), header.get(3)
            if not all(isinstance(size, int) and size >= 0 for size in (uncompressed, compressed)):
                raise PayloadError(f"a page header of {name} has no valid sizes")
            page_bytes += uncompressed
            if kind == _DATA_PAGE:
                values += _count(header.get(5), 1, name)
            elif kind == _DATA_PAGE_V2:
                values += _v2_rows(header.get(8), name, flat)
            pos += length + compressed
        if pos != end:
            raise PayloadError(f"the pages of {name} run past the column chunk the footer gives")
        return values, page_bytes

    def _page_header(self, pos: int, end: int, name: str) -> tuple[dict, int]:
        probe = HEADER_PROBE
        while True:
            data = self._read_at(pos, min(probe, end - pos))
            try:
                header, length = StructReader(data).read()
                return header, length
            except ThriftError:
                if len(data) >= min(end - pos, MAX_HEADER_BYTES):
                    raise PayloadError(f"a page header of {name} is not readable") from None
                probe *= 16

    # -- reading ---------------------------------------------------------------------------------

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The rows, row group by row group, in record batches of at most ``batch_rows`` rows, of
        the columns read; raise PayloadError (a footer that lies, unreadable data) or LimitError."""
        rows = spent = 0
        for group in self.row_groups:
            if self.whole:
                self.limits.check_more_rows(rows + group.rows)
            else:
                spent = 0
            # A row group's pages, and the values it decodes to, before pyarrow decompresses any.
            spent += group.page_bytes + min(group.rows, batch_rows) * ROW_WIDTH * len(self._counted)
            self.limits.check_decoded(spent, f"row group {group.index} of the Parquet file")
            decoded = 0
            reader = self._file.iter_batches(batch_size=max(1, min(batch_rows, group.rows)), row_groups=[group.index],
                                             columns=self._counted, use_threads=False)
            while True:
                try:
                    batch = next(reader, None)
                except (pa.ArrowException, OSError, ValueError) as exc:
                    raise PayloadError(f"unreadable Parquet data in row group {group.index}: "
                                       f"{_first_line(exc)}") from None
                if batch is None:
                    break
                decoded += batch.num_rows
                if decoded > group.rows:
                    break
                _validate(batch, group.index)
                extra = self._expansion(batch, group.index)
                if extra:
                    self.limits.check_decoded(spent + extra, f"the text of row group {group.index}")
                    if self.whole:
                        spent += extra
                yield batch if self.read else batch.select([])
            if decoded != group.rows:
                raise _lie(group.index, group.rows, decoded)
            rows += decoded

    def _expansion(self, batch: pa.RecordBatch, index: int) -> int:
        """The bytes the batch's dictionary-encoded text of a numeric kind (and ids) expands to when
        lib.codecs.columnar takes it value by value, ``TEXT_COPIES`` times (the batch is validated)."""
        extra = 0
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if not pa.types.is_dictionary(column.type):
                continue
            if name == ID_KEY or kind_of(name) not in LEVELS:
                lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
                extra += (pc.sum(lengths).as_py() or 0) + ROW_WIDTH * len(column)
        return extra * TEXT_COPIES

    def table(self) -> pa.Table:
        """The whole body as one table of the columns read (the API): at least one row, and no more
        than ``limits`` allow."""
        self.limits.check_rows(self.total_rows)
        batches = list(self.batches(max(1, self.total_rows)))
        schema = batches[0].schema if batches else self._file.schema_arrow
        return pa.Table.from_batches(batches, schema=schema) if batches else pa.table({})


def _is_text(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _count(page: object, field: int, name: str) -> int:
    number = page.get(field) if isinstance(page, dict) else None
    if not isinstance(number, int) or number < 0:
        raise PayloadError(f"a data page header of {name} has no valid value count")
    return number


def _v2_rows(page: object, name: str, flat: bool) -> int:
    """The rows of a v2 data page, its other counts checked against them: pyarrow decodes a flat
    column's levels by ``num_values`` and its rows by ``num_rows``, so a page whose two counts
    differ shifts its values into the wrong rows (nulls among them)."""
    rows, values = _count(page, 3, name), _count(page, 1, name)
    nulls = page.get(2) if isinstance(page, dict) else None
    if flat and values != rows:
        raise PayloadError(f"a data page of {name} says it holds {values} values in {rows} rows: "
                           "a column of single values holds one per row")
    if not isinstance(nulls, int) or not 0 <= nulls <= values:
        raise PayloadError(f"a data page of {name} says {nulls} of its {values} values are null")
    return rows


# Parquet's physical types (Thrift enum Type) and the annotations that need one of them.
_TYPE_NAMES = ("BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")
_BOOLEAN, _INT32, _INT64, _INT96, _FLOAT, _DOUBLE, _BYTE_ARRAY, _FIXED = range(8)
_FITTING_TYPES = {
    "text": {_BYTE_ARRAY}, "integer": {_INT32, _INT64}, "date": {_INT32}, "time": {_INT32, _INT64},
    "timestamp": {_INT64}, "decimal": {_INT32, _INT64, _BYTE_ARRAY, _FIXED}, "fixed": {_FIXED},
}
#: converted_type (field 6) -> annotation; logicalType (field 10) union member -> annotation.
_CONVERTED = {0: "text", 4: "text", 19: "text", 20: "text", 5: "decimal", 6: "date", 7: "time", 8: "time",
              9: "timestamp", 10: "timestamp", 21: "fixed", **dict.fromkeys(range(11, 19), "integer")}
_LOGICAL = {1: "text", 4: "text", 12: "text", 13: "text", 5: "decimal", 6: "date", 7: "time", 8: "timestamp",
            10: "integer", 14: "fixed", 15: "fixed"}


def _annotation(element: dict) -> str | None:
    logical = element.get(10)
    if isinstance(logical, dict) and logical:
        return _LOGICAL.get(next(iter(logical)))
    return _CONVERTED.get(element.get(6))


def _validate(batch: pa.RecordBatch, index: int) -> None:
    """Every value of a decoded batch checked (decimals within their precision, text UTF-8, ...)
    before any is read: PayloadError naming the column."""
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            column.validate(full=True)
        except (pa.ArrowInvalid, pa.ArrowIndexError) as exc:
            if "UTF8" in str(exc):
                raise PayloadError(f"column {name!r} holds text that is not UTF-8 (row group {index}): "
                                   "send UTF-8 strings") from None
            raise PayloadError(f"column {name!r} of row group {index} holds invalid values: "
                               f"{_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    """pyarrow's reason, first line only and cut short: never the data."""
    return str(exc).strip().split("\n", 1)[0][:200]


def check_file(path: Path, columns: Sequence[str], keep: Sequence[str] = ()) -> int:
    """Check a Parquet file's footer and the page headers of its ``columns``, ``id`` and ``keep``
    columns as the decoder does, without decoding anything (the Spark job, before Spark reads it);
    return its rows; raise PayloadError."""
    decoder = ParquetDecoder(path, columns, DecodeLimits(max_rows=2**63 - 1, max_decoded_bytes=2**63 - 1),
                             keep=keep, whole=False, unreadable="not a readable Parquet file")
    decoder.close()
    _check_row_group_sizes(path)
    return decoder.total_rows


def _check_row_group_sizes(path: Path) -> None:
    """Each row group's compressed size must be its column chunks' (Spark splits a file by the
    middle of each row group as these sizes place it: a row group placed past the end of the file
    is read by no task, and its rows are lost without a word)."""
    with open(path, "rb") as handle:  # the footer only: the file may be large
        handle.seek(-8, os.SEEK_END)
        length = int.from_bytes(handle.read(4), "little")
        handle.seek(-8 - length, os.SEEK_END)
        footer_bytes = handle.read(length)
    try:
        footer, _ = StructReader(footer_bytes).read()
    except ThriftError as exc:
        raise PayloadError(f"not a readable Parquet file: its footer: {exc}") from None
    for index, group in enumerate(footer.get(4) or []):
        claimed = group.get(6) if isinstance(group, dict) else None
        if claimed is None:
            continue
        chunks = sum((chunk.get(3) or {}).get(7, 0) for chunk in group.get(1) or [] if isinstance(chunk, dict))
        if claimed != chunks:
            raise PayloadError(f"not a readable Parquet file: row group {index} says it is {claimed} bytes, "
                               f"its column chunks {chunks}")

