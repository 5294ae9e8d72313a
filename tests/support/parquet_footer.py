"""Lying Parquet files for the tests: a file written by pyarrow, then integers of its footer
changed (the file's ``num_rows``, a row group's, a column chunk's ``num_values`` or offsets).

The footer is a Thrift compact-protocol ``FileMetaData``, read by the codec's own reader
(``lib.codecs.thrift``), which notes where each integer's varint lies; ``patched`` splices new
varints in their place, of any length: the footer is the file's last part, so only its length,
written after it, moves.
"""

from __future__ import annotations

import struct

from lib.codecs.thrift import StructReader, encode_varint, zigzag

MAGIC = b"PAR1"
#: The file's num_rows in FileMetaData.
FILE_ROWS = (3,)


def row_group_rows(group: int) -> tuple[int, ...]:
    """The path of row group ``group``'s ``num_rows`` (FileMetaData.row_groups[group].num_rows)."""
    return (4, group, 3)


def chunk_field(group: int, column: int, field: int) -> tuple[int, ...]:
    """The path of a ColumnMetaData field of one column chunk: 5 num_values, 6
    total_uncompressed_size, 7 total_compressed_size, 9 data_page_offset."""
    return (4, group, 1, column, 3, field)


def _footer(data: bytes) -> tuple[int, int]:
    assert data[-4:] == MAGIC, "not a Parquet file"
    length = struct.unpack("<I", data[-8:-4])[0]
    return len(data) - 8 - length, len(data) - 8


def patched(data: bytes, changes: dict[tuple[int, ...], int]) -> bytes:
    """``data`` with the footer's integer fields at the ``changes`` paths set to new values."""
    start, end = _footer(data)
    footer = data[start:end]
    reader = StructReader(footer, spans=True)
    reader.read()
    spans = reader.spans
    missing = [path for path in changes if path not in spans]
    assert not missing, f"no integer field at {missing} in the footer"
    # From the last span to the first, so that the earlier spans stay where they are.
    for path, value in sorted(changes.items(), key=lambda item: spans[item[0]][0], reverse=True):
        a, b = spans[path]
        footer = footer[:a] + encode_varint(zigzag(value)) + footer[b:]
    return data[:start] + footer + struct.pack("<I", len(footer)) + MAGIC


def patched_page(data: bytes, offset: int, path: tuple[int, ...], value: int) -> bytes:
    """``data`` with an integer field of the page header at ``offset`` set to ``value``, whose
    varint must be as long as the old one's (the page's bytes and every offset stay put)."""
    reader = StructReader(data[offset:offset + 256], spans=True)
    reader.read()
    a, b = reader.spans[path]
    varint = encode_varint(zigzag(value))
    assert len(varint) == b - a, f"{value} does not take {b - a} bytes"
    return data[:offset + a] + varint + data[offset + b:]
