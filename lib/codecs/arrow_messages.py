"""Arrow IPC message headers read without pyarrow (Message.fbs, flatbuffers): each record batch's
and dictionary's declared length and buffers, and what its buffers decode to (a compressed
buffer's declared length, read from its prefix without decompressing anything). The Arrow decoder
(``lib.codecs.arrow``) charges these to the decoded-size budget before pyarrow reads a value."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa

from lib.core.errors import PayloadError

# Message.fbs: the MessageHeader union's type codes.
SCHEMA, DICTIONARY_BATCH, RECORD_BATCH = 1, 2, 3
NOT_COMPRESSED = -1  # the uncompressed-length prefix of a buffer stored as is


class FlatTable:
    """One flatbuffer table, read field by field with every offset checked against the buffer
    (pyarrow verifies a message's flatbuffer before handing it over; this holds regardless)."""

    def __init__(self, data: bytes, position: int):
        self.data = data
        self.position = position
        self.vtable = position - self._read("<i", position)
        self.vtable_size = self._read("<H", self.vtable)

    def _read(self, fmt: str, position: int):
        if position < 0:
            raise PayloadError("the Arrow IPC message's header is malformed (an offset outside it)")
        try:
            return struct.unpack_from(fmt, self.data, position)[0]
        except struct.error:
            raise PayloadError("the Arrow IPC message's header is malformed (an offset outside it)") from None

    def _field(self, index: int) -> int | None:
        entry = 4 + 2 * index
        if entry + 2 > self.vtable_size:
            return None
        offset = self._read("<H", self.vtable + entry)
        return self.position + offset if offset else None

    def scalar(self, index: int, fmt: str, default: int) -> int:
        position = self._field(index)
        return default if position is None else self._read(fmt, position)

    def table(self, index: int) -> FlatTable | None:
        position = self._field(index)
        return None if position is None else FlatTable(self.data, position + self._read("<I", position))

    def structs(self, index: int, fmt: str) -> list[tuple]:
        """A vector of structs (or scalars) of ``fmt``, e.g. ``"<qq"`` for FieldNode and Buffer."""
        position = self._field(index)
        if position is None:
            return []
        start = position + self._read("<I", position)
        count = self._read("<I", start)
        size = struct.calcsize(fmt)
        if start + 4 + count * size > len(self.data):
            raise PayloadError("the Arrow IPC message's header is malformed (a vector longer than the header)")
        return list(struct.iter_unpack(fmt, self.data[start + 4:start + 4 + count * size]))


@dataclass(frozen=True)
class MessageHeader:
    """What the decoder needs of one record-batch or dictionary message's header."""

    kind: int
    length: int  # rows (of the batch, or entries of the dictionary), as declared
    buffers: list[tuple[int, int]]  # (offset, length) in the message body
    variadic_counts: list[int]  # data buffers of each string_view / binary_view column, in order
    compressed: bool
    dictionary_id: int | None = None


def read_header(metadata: bytes) -> MessageHeader:
    """Message.fbs: Message { version, header_type, header, bodyLength, custom_metadata }, whose
    header is a RecordBatch { length, nodes, buffers, compression, variadicBufferCounts } or a
    DictionaryBatch { id, data: RecordBatch, isDelta }."""
    if len(metadata) < 4:
        raise PayloadError("the Arrow IPC message's header is malformed (shorter than its root offset)")
    message = FlatTable(metadata, struct.unpack_from("<I", metadata)[0])
    kind = message.scalar(1, "<B", 0)
    header = message.table(2)
    dictionary_id = None
    if kind == DICTIONARY_BATCH and header is not None:
        dictionary_id = header.scalar(0, "<q", 0)
        header = header.table(1)
    if kind not in (DICTIONARY_BATCH, RECORD_BATCH) or header is None:
        return MessageHeader(kind, 0, [], [], False)
    return MessageHeader(kind=kind, length=header.scalar(0, "<q", 0), buffers=header.structs(2, "<qq"),
                   variadic_counts=[count for (count,) in header.structs(4, "<q")],
                   compressed=header.table(3) is not None, dictionary_id=dictionary_id)


def buffer_count(data_type: pa.DataType, variadic: Iterator[int]) -> int:
    """How many buffers a column of ``data_type`` holds in an IPC record batch (Arrow's columnar
    format, metadata V5: its children's buffers included, none for null, no validity for unions)."""
    t = pa.types
    if t.is_dictionary(data_type):
        return 2
    if t.is_null(data_type):
        return 0
    if t.is_string_view(data_type) or t.is_binary_view(data_type):
        return 2 + next(variadic, 0)
    if (t.is_string(data_type) or t.is_binary(data_type) or t.is_large_string(data_type)
            or t.is_large_binary(data_type)):
        return 3
    own = 1  # the validity bitmap
    if t.is_list_view(data_type) or t.is_large_list_view(data_type):
        own = 3
    elif t.is_list(data_type) or t.is_large_list(data_type) or t.is_map(data_type):
        own = 2
    elif t.is_union(data_type):
        own = 2 if data_type.mode == "dense" else 1
    elif t.is_run_end_encoded(data_type):
        own = 0
    elif data_type.num_fields == 0:
        return 2  # validity and values: every fixed-width type
    return own + sum(buffer_count(data_type.field(i).type, variadic) for i in range(data_type.num_fields))


def decoded_size(body: pa.Buffer, buffers: Sequence[tuple[int, int]], compressed: bool) -> int:
    """The bytes ``buffers`` decode to: a compressed buffer's declared uncompressed length (its
    int64 prefix, read without decompressing anything), else its own length."""
    if not compressed:
        return sum(length for _, length in buffers)
    view = memoryview(body)
    total = 0
    for offset, length in buffers:
        if length == 0:
            continue
        if length < 8 or offset < 0 or offset + 8 > len(view):
            raise PayloadError("the Arrow body is malformed: a compressed buffer without its length prefix")
        (declared,) = struct.unpack_from("<q", view, offset)
        if declared < NOT_COMPRESSED:
            raise PayloadError(f"the Arrow body is malformed: a compressed buffer declares {declared} bytes")
        total += length - 8 if declared == NOT_COMPRESSED else declared
    return total
