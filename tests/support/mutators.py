"""Mutations of request bodies at the level of their structure, for tests/lib/codecs/test_fuzz_bodies.py.

Arrow IPC and Parquet bodies are parsed with small readers of their own (Arrow: the flatbuffers
of Message.fbs, Schema.fbs and File.fbs; Parquet: the Thrift compact protocol of FileMetaData and
PageHeader), so that a mutation hits a field (a record batch's length, a buffer's offset, a
footer's row count) rather than a random byte: a random byte mostly breaks a checksum-free
structure somewhere no reader looks. Byte flips are one mutation kind among many.
JSON, CSV and NDJSON are mutated at the byte level: flips, inserted syntax, invalid UTF-8, BOM,
NUL, duplicated keys, huge numbers, deep nesting, truncation.

Every mutator takes a ``random.Random`` and a valid body and returns a ``Mutant``: the bytes and
a line saying what was changed, so that a failure names its mutation.
"""

from __future__ import annotations

import decimal
import math
import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Mutant:
    """A mutated body: its bytes, the mutation's kind (``arrow.batch_length``) and what it did."""

    body: bytes
    kind: str
    detail: str


class NotApplicable(Exception):
    """The body has no structure this mutation can change (e.g. no dictionary to misindex)."""


#: A body parsed into the structures a mutation changes (ArrowBody, ParquetBody).
Parsed = TypeVar("Parsed")


# -- Numbers a lying length or count takes -------------------------------------------------------

def lying_count(rng: random.Random, real: int) -> int:
    """A count that is not ``real``: off by one, zero, negative, doubled, or huge."""
    choices = [0, 1, real - 1, real + 1, 2 * real, 100_000, 2**31 - 1, 2**34, -1, -real]
    return rng.choice([c for c in choices if c != real] or [real + 1])


def lying_size(rng: random.Random, real: int, room: int) -> int:
    """A byte size or offset that is not ``real``, within and past ``room`` (the space there is)."""
    choices = [0, real // 2, real + 8, real - 8, real * 100 + 64, room, room + 1024, 2**31 - 1, 2**40, -8]
    return rng.choice([c for c in choices if c != real] or [real + 8])


# -- Flatbuffers ---------------------------------------------------------------------------------

def _u16(buf, pos):
    return struct.unpack_from("<H", buf, pos)[0]


def _i32(buf, pos):
    return struct.unpack_from("<i", buf, pos)[0]


def _u32(buf, pos):
    return struct.unpack_from("<I", buf, pos)[0]


class FlatTable:
    """A flatbuffers table at ``pos`` of ``buf``: its fields by index (the order of the .fbs)."""

    def __init__(self, buf: bytearray, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - _i32(buf, pos)
        self.vtable_size = _u16(buf, self.vtable)

    def field(self, index: int) -> int | None:
        """The absolute position of field ``index``, None when absent (flatbuffers omit defaults)."""
        slot = 4 + 2 * index
        if slot >= self.vtable_size:
            return None
        offset = _u16(self.buf, self.vtable + slot)
        return self.pos + offset if offset else None

    def scalar(self, index: int, fmt: str, default=0):
        pos = self.field(index)
        return default if pos is None else struct.unpack_from("<" + fmt, self.buf, pos)[0]

    def table(self, index: int) -> FlatTable | None:
        pos = self.field(index)
        return None if pos is None else FlatTable(self.buf, pos + _u32(self.buf, pos))

    def vector(self, index: int) -> tuple[int, int]:
        """(position of the first element, number of elements); (0, 0) when absent."""
        pos = self.field(index)
        if pos is None:
            return 0, 0
        start = pos + _u32(self.buf, pos)
        return start + 4, _u32(self.buf, start)

    def tables(self, index: int) -> list[FlatTable]:
        start, n = self.vector(index)
        return [FlatTable(self.buf, start + 4 * i + _u32(self.buf, start + 4 * i)) for i in range(n)]

    def string(self, index: int) -> str:
        start, n = self.vector(index)
        return bytes(self.buf[start:start + n]).decode("utf-8", "replace")


def flat_root(buf: bytearray, pos: int) -> FlatTable:
    """The root table of the flatbuffer that starts at ``pos``."""
    return FlatTable(buf, pos + _u32(buf, pos))


def put(buf: bytearray, pos: int, fmt: str, value) -> None:
    """Write ``value`` at ``pos`` (little-endian ``fmt``), wrapped to the field's width."""
    bits = struct.calcsize(fmt) * 8
    if fmt.lower() == fmt and fmt not in "?":  # signed: wrap into range
        value = (value + 2 ** (bits - 1)) % 2**bits - 2 ** (bits - 1)
    else:
        value %= 2**bits
    struct.pack_into("<" + fmt, buf, pos, value)


# -- Arrow IPC (Message.fbs, Schema.fbs, File.fbs) -----------------------------------------------

SCHEMA, DICTIONARY_BATCH, RECORD_BATCH = 1, 2, 3
# Type union tags of Schema.fbs.
T_INT, T_FLOAT, T_BINARY, T_UTF8, T_BOOL, T_DECIMAL, T_DATE, T_TIMESTAMP = 2, 3, 4, 5, 6, 7, 8, 10
T_LARGE_BINARY, T_LARGE_UTF8, T_BINARY_VIEW, T_UTF8_VIEW = 19, 20, 23, 24
#: Type tags a string column may be relabelled with (buffers left as they are).
STRING_RELABELS = {"binary": T_BINARY, "large_string": T_LARGE_UTF8, "large_binary": T_LARGE_BINARY,
                   "string_view": T_UTF8_VIEW, "binary_view": T_BINARY_VIEW, "bool": T_BOOL, "int": T_INT,
                   "timestamp": T_TIMESTAMP, "decimal": T_DECIMAL, "date": T_DATE}
ARROW_FILE_MAGIC = b"ARROW1"
FIELD_NODE, BUFFER = 16, 16  # struct sizes: (length, null_count), (offset, length)


@dataclass
class IpcMessage:
    """One encapsulated IPC message: where it starts, its flatbuffer, its body."""

    start: int
    meta: int
    body: int
    body_length: int
    header_type: int
    header: FlatTable | None

    @property
    def end(self) -> int:
        return self.body + self.body_length


@dataclass
class ArrowField:
    """A top-level field of the schema: its name, type tag, the type's table, and its dictionary."""

    name: str
    type_tag: int
    type_table: FlatTable | None
    field_table: FlatTable
    dictionary: FlatTable | None  # DictionaryEncoding: id (0), indexType (1: Int)


class ArrowBody:
    """An Arrow IPC stream, or file, parsed down to the fields a mutation changes."""

    def __init__(self, body: bytes):
        self.buf = bytearray(body)
        self.is_file = body.startswith(ARROW_FILE_MAGIC)
        self.messages = self._messages(8 if self.is_file else 0)
        schemas = [m for m in self.messages if m.header_type == SCHEMA]
        self.fields = [self._field(t) for t in schemas[0].header.tables(1)] if schemas else []
        self.footer = None
        if self.is_file:
            footer_length = _i32(self.buf, len(self.buf) - 10)
            self.footer = flat_root(self.buf, len(self.buf) - 10 - footer_length)

    def _messages(self, pos: int) -> list[IpcMessage]:
        found = []
        while pos + 8 <= len(self.buf):
            if _u32(self.buf, pos) == 0xFFFFFFFF:
                length, meta = _i32(self.buf, pos + 4), pos + 8
            else:  # the format before 0.15: no continuation marker
                length, meta = _i32(self.buf, pos), pos + 4
            if length <= 0 or meta + length > len(self.buf):
                break  # end-of-stream marker (or the file's footer)
            message = flat_root(self.buf, meta)
            found.append(IpcMessage(pos, meta, meta + length, message.scalar(3, "q"), message.scalar(1, "B"),
                                    message.table(2)))
            pos = found[-1].end
        return found

    def _field(self, table: FlatTable) -> ArrowField:
        return ArrowField(table.string(0), table.scalar(2, "B"), table.table(3), table, table.table(4))

    def batches(self, header_type: int = RECORD_BATCH) -> list[IpcMessage]:
        return [m for m in self.messages if m.header_type == header_type]

    @staticmethod
    def record_batch(message: IpcMessage) -> FlatTable:
        """The RecordBatch table of a record batch or of a dictionary batch (its ``data``)."""
        return message.header.table(1) if message.header_type == DICTIONARY_BATCH else message.header

    def field_buffers(self, message: IpcMessage) -> list[tuple[int, ...]]:
        """Per top-level field of a record batch, the indices of its buffers (flat schemas only)."""
        if message.header_type == DICTIONARY_BATCH:
            return [tuple(range(self.vector_length(message, 2)))]
        layout, index = [], 0
        variadic = iter(self.variadic_counts(message))
        for field in self.fields:
            if field.dictionary is not None or field.type_tag in (T_INT, T_FLOAT, T_BOOL, T_DECIMAL, T_DATE,
                                                                  T_TIMESTAMP):
                n = 2
            elif field.type_tag in (T_UTF8_VIEW, T_BINARY_VIEW):
                n = 2 + next(variadic, 0)
            else:
                n = 3
            layout.append(tuple(range(index, index + n)))
            index += n
        return layout

    def vector_length(self, message: IpcMessage, index: int) -> int:
        return self.record_batch(message).vector(index)[1]

    def variadic_counts(self, message: IpcMessage) -> list[int]:
        start, n = self.record_batch(message).vector(4)
        return [struct.unpack_from("<q", self.buf, start + 8 * i)[0] for i in range(n)]

    def node(self, message: IpcMessage, i: int) -> int:
        """Position of field node ``i`` (length, null_count) of a batch."""
        return self.record_batch(message).vector(1)[0] + FIELD_NODE * i

    def buffer(self, message: IpcMessage, i: int) -> tuple[int, int, int]:
        """(position of the Buffer struct, offset in the body, length) of buffer ``i`` of a batch."""
        pos = self.record_batch(message).vector(2)[0] + BUFFER * i
        offset, length = struct.unpack_from("<qq", self.buf, pos)
        return pos, offset, length

    def compression(self, message: IpcMessage) -> FlatTable | None:
        return self.record_batch(message).table(3)


def _pick(rng: random.Random, items: list, what: str):
    if not items:
        raise NotApplicable(what)
    return rng.choice(items)


def _arrow_batch_length(rng, arrow: ArrowBody) -> str:
    message = _pick(rng, [m for m in arrow.messages if m.header_type in (RECORD_BATCH, DICTIONARY_BATCH)
                          and arrow.record_batch(m).field(0) is not None], "no batch length")
    pos = arrow.record_batch(message).field(0)
    real = struct.unpack_from("<q", arrow.buf, pos)[0]
    value = lying_count(rng, real)
    put(arrow.buf, pos, "q", value)
    return f"batch at byte {message.start}: length {real} -> {value}"


def _arrow_node(rng, arrow: ArrowBody) -> str:
    message = _pick(rng, [m for m in arrow.messages if m.header_type in (RECORD_BATCH, DICTIONARY_BATCH)
                          and arrow.vector_length(m, 1)], "no field nodes")
    i = rng.randrange(arrow.vector_length(message, 1))
    pos = arrow.node(message, i)
    length, nulls = struct.unpack_from("<qq", arrow.buf, pos)
    if rng.random() < 0.5:
        value = lying_count(rng, length)
        put(arrow.buf, pos, "q", value)
        return f"batch at byte {message.start}, node {i}: length {length} -> {value}"
    value = rng.choice([-1, length, length + 1, 2**34, 0 if nulls else 1])
    put(arrow.buf, pos + 8, "q", value)
    return f"batch at byte {message.start}, node {i}: null_count {nulls} -> {value}"


def _arrow_buffer(rng, arrow: ArrowBody) -> str:
    message = _pick(rng, [m for m in arrow.messages if m.header_type in (RECORD_BATCH, DICTIONARY_BATCH)
                          and arrow.vector_length(m, 2)], "no buffers")
    i = rng.randrange(arrow.vector_length(message, 2))
    pos, offset, length = arrow.buffer(message, i)
    if rng.random() < 0.5:
        value = lying_size(rng, offset, message.body_length)
        put(arrow.buf, pos, "q", value)
        return f"batch at byte {message.start}, buffer {i}: offset {offset} -> {value}"
    value = lying_size(rng, length, message.body_length - offset)
    put(arrow.buf, pos + 8, "q", value)
    return f"batch at byte {message.start}, buffer {i}: length {length} -> {value}"


def _arrow_dictionary_index(rng, arrow: ArrowBody) -> str:
    """An index of a dictionary-encoded column out of range or negative (uncompressed bodies)."""
    candidates = [(m, f) for m in arrow.batches() if arrow.compression(m) is None
                  for f, field in enumerate(arrow.fields) if field.dictionary is not None]
    message, f = _pick(rng, candidates, "no dictionary-encoded column")
    index_type = arrow.fields[f].dictionary.table(1)
    width = index_type.scalar(0, "i", 32) // 8 if index_type else 4
    _, offset, length = arrow.buffer(message, arrow.field_buffers(message)[f][1])
    if length < width:
        raise NotApplicable("empty index buffer")
    row = rng.randrange(length // width)
    fmt = {1: "b", 2: "h", 4: "i", 8: "q"}[width]
    value = rng.choice([-1, -(2 ** (8 * width - 1)), 2 ** (8 * width - 1) - 1, 5, 7, 12, 100])
    old = struct.unpack_from("<" + fmt, arrow.buf, message.body + offset + row * width)[0]
    put(arrow.buf, message.body + offset + row * width, fmt, value)
    return f"batch at byte {message.start}, column {arrow.fields[f].name!r}, row {row}: index {old} -> {value}"


def _arrow_dictionary_id(rng, arrow: ArrowBody) -> str:
    targets = [(m.header.field(0), f"dictionary batch at byte {m.start}") for m in arrow.batches(DICTIONARY_BATCH)]
    targets += [(f.dictionary.field(0), f"column {f.name!r}'s dictionary") for f in arrow.fields if f.dictionary]
    pos, what = _pick(rng, [t for t in targets if t[0] is not None], "no dictionary id written")
    real = struct.unpack_from("<q", arrow.buf, pos)[0]
    value = rng.choice([v for v in (0, 1, 2, 99, -1, 2**40) if v != real])
    put(arrow.buf, pos, "q", value)
    return f"{what}: id {real} -> {value}"


def _arrow_delta_flag(rng, arrow: ArrowBody) -> str:
    message = _pick(rng, [m for m in arrow.batches(DICTIONARY_BATCH) if m.header.field(2) is not None],
                    "no isDelta written")
    pos = message.header.field(2)
    old = arrow.buf[pos]
    arrow.buf[pos] = 0 if old else 1
    return f"dictionary batch at byte {message.start}: isDelta {bool(old)} -> {not old}"


def _arrow_codec(rng, arrow: ArrowBody) -> str:
    message = _pick(rng, [m for m in arrow.messages if m.header_type in (RECORD_BATCH, DICTIONARY_BATCH)
                          and arrow.compression(m) is not None and arrow.compression(m).field(0) is not None],
                    "no codec written")
    pos = arrow.compression(message).field(0)
    old = arrow.buf[pos]
    arrow.buf[pos] = rng.choice([v for v in (0, 1, 2, 7, 255) if v != old])
    return f"batch at byte {message.start}: body compression codec {old} -> {arrow.buf[pos]}"


def _arrow_uncompressed_length(rng, arrow: ArrowBody) -> str:
    """The int64 that prefixes each compressed buffer: its uncompressed length (-1: not compressed)."""
    candidates = [(m, i) for m in arrow.messages if m.header_type in (RECORD_BATCH, DICTIONARY_BATCH)
                  and arrow.compression(m) is not None for i in range(arrow.vector_length(m, 2))
                  if arrow.buffer(m, i)[2] >= 8]
    message, i = _pick(rng, candidates, "no compressed buffer")
    _, offset, _ = arrow.buffer(message, i)
    pos = message.body + offset
    real = struct.unpack_from("<q", arrow.buf, pos)[0]
    value = rng.choice([v for v in (-1, 0, 1, real // 2, real + 1, real * 2, 2**31, 2**40, -2) if v != real])
    put(arrow.buf, pos, "q", value)
    return f"batch at byte {message.start}, buffer {i}: uncompressed length {real} -> {value}"


def _arrow_field_type(rng, arrow: ArrowBody) -> str:
    """A field relabelled with another type, its buffers unchanged: string -> string_view,
    large_string, binary...; int64 -> uint64 or a narrower int; a dictionary's index type."""
    choices = []
    for field in arrow.fields:
        pos = field.field_table.field(2)
        if field.dictionary is not None and field.dictionary.table(1) is not None:
            choices.append(("index", field))
        if pos is not None and field.type_tag == T_UTF8 and field.dictionary is None:
            choices.append(("string", field))
        if field.type_tag == T_INT and field.type_table is not None and field.dictionary is None:
            choices.append(("int", field))
    how, field = _pick(rng, choices, "no field to relabel")
    if how == "string":
        name, tag = rng.choice(sorted(STRING_RELABELS.items()))
        arrow.buf[field.field_table.field(2)] = tag
        return f"field {field.name!r}: type utf8 -> {name} (buffers unchanged)"
    table = field.type_table if how == "int" else field.dictionary.table(1)
    width_pos, signed_pos = table.field(0), table.field(1)
    if signed_pos is not None and rng.random() < 0.5:
        arrow.buf[signed_pos] = 0
        return f"field {field.name!r}: {how} type made unsigned"
    if width_pos is None:
        raise NotApplicable("no bitWidth written")
    old = _i32(arrow.buf, width_pos)
    new = rng.choice([w for w in (8, 16, 32, 64, 7, 128) if w != old])
    put(arrow.buf, width_pos, "i", new)
    return f"field {field.name!r}: {how} bitWidth {old} -> {new}"


def _arrow_truncate(rng, arrow: ArrowBody) -> str:
    """The body cut at a message boundary, after a message's metadata, or inside a body."""
    message = _pick(rng, arrow.messages, "no messages")
    cut = rng.choice([message.start, message.body, message.end, message.body + message.body_length // 2,
                      message.meta + 2])
    del arrow.buf[cut:]
    return f"cut at byte {cut} of the message at byte {message.start}"


def _arrow_drop_or_repeat(rng, arrow: ArrowBody) -> str:
    """A message dropped or sent twice (a dictionary twice is a replacement, or a second delta)."""
    message = _pick(rng, arrow.messages, "no messages")
    chunk = bytes(arrow.buf[message.start:message.end])
    if rng.random() < 0.5:
        del arrow.buf[message.start:message.end]
        return f"message at byte {message.start} (type {message.header_type}) dropped"
    target = rng.choice([m.end for m in arrow.messages])
    arrow.buf[target:target] = chunk
    return f"message at byte {message.start} (type {message.header_type}) repeated at byte {target}"


def _arrow_footer_block(rng, arrow: ArrowBody) -> str:
    """The file format's footer: a Block (offset, metaDataLength, bodyLength) of a batch."""
    if arrow.footer is None:
        raise NotApplicable("not the file format")
    blocks = [(index, i) for index in (2, 3) for i in range(arrow.footer.vector(index)[1])]
    index, i = _pick(rng, blocks, "no blocks")
    pos = arrow.footer.vector(index)[0] + 24 * i
    what, fmt, at = rng.choice([("offset", "q", 0), ("metaDataLength", "i", 8), ("bodyLength", "q", 16)])
    old = struct.unpack_from("<" + fmt, arrow.buf, pos + at)[0]
    value = lying_size(rng, old, len(arrow.buf))
    put(arrow.buf, pos + at, fmt, value)
    return f"footer {('dictionaries', 'recordBatches')[index - 2]}[{i}]: {what} {old} -> {value}"


def first_that_applies(rng: random.Random, mutations: dict[str, Callable[[random.Random, Parsed], str]],
                       parse: Callable[[bytes], Parsed], encode: Callable[[Parsed], bytes],
                       body: bytes) -> Mutant | None:
    """The first of ``mutations``, tried in a random order, that applies to ``body`` (parsed afresh
    for each try, as a failed try may have changed it half-way); None if none applies."""
    kinds = list(mutations)
    rng.shuffle(kinds)
    for kind in kinds:
        parsed = parse(body)
        try:
            detail = mutations[kind](rng, parsed)
        except NotApplicable:
            continue
        return Mutant(encode(parsed), kind, detail)
    return None


def flip_bytes(rng: random.Random, buf: bytearray, start: int = 0) -> str:
    """Flip 1 to 8 random bytes at or after ``start``; say which."""
    if len(buf) <= start:
        raise NotApplicable("empty body")
    where = sorted(rng.randrange(start, len(buf)) for _ in range(rng.randint(1, 8)))
    for pos in where:
        buf[pos] ^= rng.randrange(1, 256)
    return f"bytes flipped at {where}"


ARROW_MUTATIONS: dict[str, Callable[[random.Random, ArrowBody], str]] = {
    "arrow.batch_length": _arrow_batch_length,
    "arrow.field_node": _arrow_node,
    "arrow.buffer": _arrow_buffer,
    "arrow.dictionary_index": _arrow_dictionary_index,
    "arrow.dictionary_id": _arrow_dictionary_id,
    "arrow.delta_flag": _arrow_delta_flag,
    "arrow.codec": _arrow_codec,
    "arrow.uncompressed_length": _arrow_uncompressed_length,
    "arrow.field_type": _arrow_field_type,
    "arrow.truncate": _arrow_truncate,
    "arrow.drop_or_repeat": _arrow_drop_or_repeat,
    "arrow.footer_block": _arrow_footer_block,
    "arrow.byte_flip": lambda rng, arrow: flip_bytes(rng, arrow.buf, 8 if arrow.is_file else 0),
}


def mutate_arrow(rng: random.Random, body: bytes) -> Mutant:
    """One structural mutation of an Arrow IPC body (stream or file), chosen among those that apply."""
    mutant = first_that_applies(rng, ARROW_MUTATIONS, ArrowBody, lambda arrow: bytes(arrow.buf), body)
    if mutant is None:
        raise AssertionError("no Arrow mutation applies")  # the byte flip always does
    return mutant


# -- Thrift compact protocol (Parquet's footer and page headers) ---------------------------------

# Compact type ids.
C_TRUE, C_FALSE, C_BYTE, C_I16, C_I32, C_I64, C_DOUBLE, C_BINARY, C_LIST, C_SET, C_MAP, C_STRUCT = range(1, 13)


@dataclass
class ThriftField:
    """One field of a struct: id, compact type, value (int, float, bytes, bool, ThriftStruct or
    a list ``(element type, [values])``)."""

    id: int
    type: int
    value: object


class ThriftStruct:
    """A Thrift struct read without its IDL: its fields in the order written."""

    def __init__(self, fields: list[ThriftField]):
        self.fields = fields

    def get(self, field_id: int) -> ThriftField | None:
        return next((f for f in self.fields if f.id == field_id), None)

    def value(self, field_id: int, default=None):
        found = self.get(field_id)
        return default if found is None else found.value

    def set(self, field_id: int, type_: int, value) -> None:
        found = self.get(field_id)
        if found is None:
            self.fields.append(ThriftField(field_id, type_, value))
            self.fields.sort(key=lambda f: f.id)
        else:
            found.type, found.value = type_, value

    def remove(self, field_id: int) -> None:
        self.fields = [f for f in self.fields if f.id != field_id]


class CompactReader:
    """Reads Thrift compact structs from ``buf`` starting at ``pos``."""

    def __init__(self, buf: bytes, pos: int = 0):
        self.buf, self.pos = buf, pos

    def varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.buf[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ValueError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, type_: int):
        if type_ in (C_TRUE, C_FALSE):
            return type_ == C_TRUE
        if type_ == C_BYTE:
            self.pos += 1
            return struct.unpack_from("<b", self.buf, self.pos - 1)[0]
        if type_ in (C_I16, C_I32, C_I64):
            return self.zigzag()
        if type_ == C_DOUBLE:
            self.pos += 8
            return struct.unpack_from("<d", self.buf, self.pos - 8)[0]
        if type_ == C_BINARY:
            n = self.varint()
            self.pos += n
            return bytes(self.buf[self.pos - n:self.pos])
        if type_ in (C_LIST, C_SET):
            header = self.buf[self.pos]
            self.pos += 1
            n, element = header >> 4, header & 0x0F
            if n == 15:
                n = self.varint()
            if element in (C_TRUE, C_FALSE):  # booleans in a list are one byte each
                values = [self.buf[self.pos + i] == 1 for i in range(n)]
                self.pos += n
                return element, values
            return element, [self.value(element) for _ in range(n)]
        if type_ == C_STRUCT:
            return self.struct()
        raise ValueError(f"compact type {type_} not supported here")

    def struct(self) -> ThriftStruct:
        fields, last = [], 0
        while True:
            header = self.buf[self.pos]
            self.pos += 1
            if header == 0:
                return ThriftStruct(fields)
            delta, type_ = header >> 4, header & 0x0F
            field_id = last + delta if delta else self.zigzag()
            fields.append(ThriftField(field_id, type_, self.value(type_)))
            last = field_id


class CompactWriter:
    """Writes what CompactReader reads."""

    def __init__(self):
        self.out = bytearray()

    def varint(self, n: int) -> None:
        n &= (1 << 64) - 1
        while n > 0x7F:
            self.out.append(n & 0x7F | 0x80)
            n >>= 7
        self.out.append(n)

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, type_: int, value) -> None:
        if type_ == C_BYTE:
            self.out += struct.pack("<b", value)
        elif type_ in (C_I16, C_I32, C_I64):
            self.zigzag(value)
        elif type_ == C_DOUBLE:
            self.out += struct.pack("<d", value)
        elif type_ == C_BINARY:
            self.varint(len(value))
            self.out += value
        elif type_ in (C_LIST, C_SET):
            element, values = value
            if len(values) < 15:
                self.out.append(len(values) << 4 | element)
            else:
                self.out.append(0xF0 | element)
                self.varint(len(values))
            for item in values:
                if element in (C_TRUE, C_FALSE):
                    self.out.append(1 if item else 2)
                else:
                    self.value(element, item)
        elif type_ == C_STRUCT:
            self.struct(value)

    def struct(self, value: ThriftStruct) -> None:
        last = 0
        for field in value.fields:
            type_ = (C_TRUE if field.value else C_FALSE) if field.type in (C_TRUE, C_FALSE) else field.type
            if 0 < field.id - last <= 15:
                self.out.append((field.id - last) << 4 | type_)
            else:
                self.out.append(type_)
                self.zigzag(field.id)
            if field.type not in (C_TRUE, C_FALSE):
                self.value(field.type, field.value)
            last = field.id
        self.out.append(0)


def thrift_bytes(value: ThriftStruct) -> bytes:
    writer = CompactWriter()
    writer.struct(value)
    return bytes(writer.out)


# -- Parquet (parquet.thrift: FileMetaData, RowGroup, ColumnChunk, ColumnMetaData, PageHeader) ----

PARQUET_MAGIC = b"PAR1"
# FileMetaData
FMD_SCHEMA, FMD_NUM_ROWS, FMD_ROW_GROUPS = 2, 3, 4
# SchemaElement
SE_TYPE, SE_NAME, SE_CONVERTED_TYPE, SE_LOGICAL_TYPE = 1, 4, 6, 10
# RowGroup
RG_COLUMNS, RG_TOTAL_BYTE_SIZE, RG_NUM_ROWS, RG_FILE_OFFSET, RG_TOTAL_COMPRESSED = 1, 2, 3, 5, 6
# ColumnChunk, ColumnMetaData
CC_FILE_OFFSET, CC_META = 2, 3
CMD_TYPE, CMD_PATH, CMD_CODEC, CMD_NUM_VALUES, CMD_UNCOMPRESSED, CMD_COMPRESSED = 1, 3, 4, 5, 6, 7
CMD_DATA_PAGE, CMD_DICTIONARY_PAGE = 9, 11
# PageHeader and its page kinds
PH_UNCOMPRESSED, PH_COMPRESSED = 2, 3
PH_DATA, PH_DICTIONARY, PH_DATA_V2 = 5, 7, 8
PHYSICAL_TYPES = {"BOOLEAN": 0, "INT32": 1, "INT64": 2, "INT96": 3, "FLOAT": 4, "DOUBLE": 5, "BYTE_ARRAY": 6,
                  "FIXED_LEN_BYTE_ARRAY": 7, "invalid 9": 9}
CODECS = {"UNCOMPRESSED": 0, "SNAPPY": 1, "GZIP": 2, "LZO": 3, "BROTLI": 4, "LZ4": 5, "ZSTD": 6, "LZ4_RAW": 7,
          "invalid 42": 42}
#: LogicalType union members (field id -> a struct of its own): STRING 1, INTEGER 10 (bitWidth, isSigned), ...
LOGICAL_TYPES = {
    "STRING": ThriftStruct([]), "ENUM": ThriftStruct([]), "JSON": ThriftStruct([]), "UUID": ThriftStruct([]),
    "DATE": ThriftStruct([]), "INTEGER(64, unsigned)": ThriftStruct([ThriftField(1, C_BYTE, 64),
                                                                     ThriftField(2, C_FALSE, False)]),
    "INTEGER(8, signed)": ThriftStruct([ThriftField(1, C_BYTE, 8), ThriftField(2, C_TRUE, True)]),
    "DECIMAL(9, 2)": ThriftStruct([ThriftField(1, C_I32, 2), ThriftField(2, C_I32, 9)]),
}
LOGICAL_IDS = {"STRING": 1, "ENUM": 4, "JSON": 12, "UUID": 14, "DATE": 6, "INTEGER(64, unsigned)": 10,
               "INTEGER(8, signed)": 10, "DECIMAL(9, 2)": 5}


@dataclass
class ParquetPage:
    header: ThriftStruct
    data: bytes


@dataclass
class ParquetChunk:
    """A column chunk: where its pages were, and the pages themselves."""

    meta: ThriftStruct  # ColumnMetaData
    column: ThriftStruct  # ColumnChunk
    pages: list[ParquetPage]


class ParquetBody:
    """A Parquet file parsed into its footer and its pages; ``bytes()`` writes it back, with the
    column chunks' offsets and sizes recomputed from what is written (unless a mutation has
    pinned them: ``pinned`` holds the ``id()`` of structs whose offsets must stay as set)."""

    def __init__(self, body: bytes):
        if not (body.startswith(PARQUET_MAGIC) and body.endswith(PARQUET_MAGIC)):
            raise ValueError("not a Parquet file")
        footer_length = _i32(body, len(body) - 8)
        self.footer = CompactReader(body, len(body) - 8 - footer_length).struct()
        self.chunks: list[ParquetChunk] = []
        self.pinned: set[int] = set()
        for group in self.row_groups():
            for column in group.value(RG_COLUMNS)[1]:
                meta = column.value(CC_META)
                start = meta.value(CMD_DICTIONARY_PAGE) or meta.value(CMD_DATA_PAGE)
                end = start + meta.value(CMD_COMPRESSED)
                reader, pages = CompactReader(body, start), []
                while reader.pos < end:
                    header = reader.struct()
                    size = header.value(PH_COMPRESSED)
                    pages.append(ParquetPage(header, body[reader.pos:reader.pos + size]))
                    reader.pos += size
                self.chunks.append(ParquetChunk(meta, column, pages))

    def row_groups(self) -> list[ThriftStruct]:
        return self.footer.value(FMD_ROW_GROUPS)[1]

    def schema(self) -> list[ThriftStruct]:
        """The schema elements after the root."""
        return self.footer.value(FMD_SCHEMA)[1][1:]

    def __bytes__(self) -> bytes:
        out = bytearray(PARQUET_MAGIC)
        for chunk in self.chunks:
            start, dictionary_at, data_at = len(out), None, None
            for page in chunk.pages:
                if page.header.get(PH_DICTIONARY) is not None:
                    dictionary_at = len(out) if dictionary_at is None else dictionary_at
                elif data_at is None:
                    data_at = len(out)
                out += thrift_bytes(page.header) + page.data
            if id(chunk.meta) not in self.pinned:
                chunk.meta.set(CMD_DATA_PAGE, C_I64, start if data_at is None else data_at)
                if dictionary_at is not None:
                    chunk.meta.set(CMD_DICTIONARY_PAGE, C_I64, dictionary_at)
                chunk.meta.set(CMD_COMPRESSED, C_I64, len(out) - start)
        footer = thrift_bytes(self.footer)
        return bytes(out + footer + struct.pack("<i", len(footer)) + PARQUET_MAGIC)


def _choose_chunk(rng, parquet: ParquetBody) -> ParquetChunk:
    return _pick(rng, parquet.chunks, "no column chunks")


def _chunk_name(chunk: ParquetChunk) -> str:
    return b".".join(chunk.meta.value(CMD_PATH)[1]).decode("utf-8", "replace")


def _parquet_num_rows(rng, parquet: ParquetBody) -> str:
    if rng.random() < 0.5:
        real = parquet.footer.value(FMD_NUM_ROWS)
        value = lying_count(rng, real)
        parquet.footer.set(FMD_NUM_ROWS, C_I64, value)
        return f"file num_rows {real} -> {value}"
    i = rng.randrange(len(parquet.row_groups()))
    group = parquet.row_groups()[i]
    real = group.value(RG_NUM_ROWS)
    value = lying_count(rng, real)
    group.set(RG_NUM_ROWS, C_I64, value)
    return f"row group {i}: num_rows {real} -> {value}"


def _parquet_num_values(rng, parquet: ParquetBody) -> str:
    chunk = _choose_chunk(rng, parquet)
    real = chunk.meta.value(CMD_NUM_VALUES)
    value = lying_count(rng, real)
    chunk.meta.set(CMD_NUM_VALUES, C_I64, value)
    return f"column {_chunk_name(chunk)!r}: num_values {real} -> {value}"


def _parquet_offsets(rng, parquet: ParquetBody) -> str:
    chunk = _choose_chunk(rng, parquet)
    parquet.pinned.add(id(chunk.meta))
    bytes(parquet)  # lay the chunks out once, so that the real offsets are in the footer
    field_id, name = rng.choice([(CMD_DATA_PAGE, "data_page_offset"), (CMD_DICTIONARY_PAGE, "dictionary_page_offset"),
                                 (CMD_COMPRESSED, "total_compressed_size"), (CMD_UNCOMPRESSED,
                                                                             "total_uncompressed_size")])
    real = chunk.meta.value(field_id)
    if real is None:
        raise NotApplicable(f"no {name}")
    value = lying_size(rng, real, 4096)
    chunk.meta.set(field_id, C_I64, value)
    return f"column {_chunk_name(chunk)!r}: {name} {real} -> {value}"


def _parquet_group_sizes(rng, parquet: ParquetBody) -> str:
    i = rng.randrange(len(parquet.row_groups()))
    group = parquet.row_groups()[i]
    field_id, name = rng.choice([(RG_TOTAL_BYTE_SIZE, "total_byte_size"), (RG_FILE_OFFSET, "file_offset"),
                                 (RG_TOTAL_COMPRESSED, "total_compressed_size")])
    real = group.value(field_id, 0)
    value = lying_size(rng, real, 4096)
    group.set(field_id, C_I64, value)
    return f"row group {i}: {name} {real} -> {value}"


def _parquet_codec(rng, parquet: ParquetBody) -> str:
    chunk = _choose_chunk(rng, parquet)
    real = chunk.meta.value(CMD_CODEC)
    name, value = rng.choice([(n, v) for n, v in CODECS.items() if v != real])
    chunk.meta.set(CMD_CODEC, C_I32, value)
    return f"column {_chunk_name(chunk)!r}: codec {real} -> {name}"


def _parquet_types(rng, parquet: ParquetBody) -> str:
    """A column's physical type (in the schema or in its chunk) or its logical type changed."""
    element = _pick(rng, [e for e in parquet.schema() if e.get(SE_TYPE) is not None], "no leaf columns")
    name = element.value(SE_NAME).decode("utf-8", "replace")
    where = rng.choice(["schema", "chunk", "logical", "no logical"])
    if where == "logical":
        logical = rng.choice(sorted(LOGICAL_TYPES))
        element.set(SE_LOGICAL_TYPE, C_STRUCT, ThriftStruct([ThriftField(LOGICAL_IDS[logical], C_STRUCT,
                                                                         LOGICAL_TYPES[logical])]))
        element.remove(SE_CONVERTED_TYPE)
        return f"column {name!r}: logical type -> {logical}"
    if where == "no logical":
        element.remove(SE_LOGICAL_TYPE)
        element.remove(SE_CONVERTED_TYPE)
        return f"column {name!r}: logical and converted types removed"
    physical, value = rng.choice([(n, v) for n, v in PHYSICAL_TYPES.items() if v != element.value(SE_TYPE)])
    if where == "schema":
        element.set(SE_TYPE, C_I32, value)
    else:
        for chunk in parquet.chunks:
            if chunk.meta.value(CMD_PATH)[1] == [element.value(SE_NAME)]:
                chunk.meta.set(CMD_TYPE, C_I32, value)
    return f"column {name!r}: physical type in the {where} -> {physical}"


def _parquet_page_header(rng, parquet: ParquetBody) -> str:
    chunk = _choose_chunk(rng, parquet)
    i = rng.randrange(len(chunk.pages))
    page = chunk.pages[i]
    what = rng.choice(["uncompressed_page_size", "compressed_page_size", "num_values"])
    if what == "num_values":
        kind = next(k for k in (PH_DATA, PH_DICTIONARY, PH_DATA_V2) if page.header.get(k) is not None)
        inner = page.header.value(kind)
        real = inner.value(1)
        value = lying_count(rng, real)
        inner.set(1, C_I32, value)
    else:
        field_id = PH_UNCOMPRESSED if what == "uncompressed_page_size" else PH_COMPRESSED
        real = page.header.value(field_id)
        value = lying_size(rng, real, len(page.data))
        value = max(min(value, 2**31 - 1), -(2**31))
        page.header.set(field_id, C_I32, value)
    return f"column {_chunk_name(chunk)!r}, page {i}: {what} {real} -> {value}"


PARQUET_MUTATIONS: dict[str, Callable[[random.Random, ParquetBody], str]] = {
    "parquet.num_rows": _parquet_num_rows,
    "parquet.num_values": _parquet_num_values,
    "parquet.chunk_offsets": _parquet_offsets,
    "parquet.row_group_sizes": _parquet_group_sizes,
    "parquet.codec": _parquet_codec,
    "parquet.types": _parquet_types,
    "parquet.page_header": _parquet_page_header,
}


def _parquet_raw(rng: random.Random, body: bytes) -> Mutant:
    """Mutations of the file's bytes rather than its structures: truncation, magic, flips."""
    buf = bytearray(body)
    kind = rng.choice(["truncate", "magic", "byte_flip", "footer_length"])
    if kind == "truncate":
        cut = rng.choice([4, len(body) // 2, len(body) - 8, len(body) - 4, len(body) - 1, rng.randrange(len(body))])
        return Mutant(body[:cut], "parquet.truncate", f"cut at byte {cut} of {len(body)}")
    if kind == "magic":
        at = rng.choice([0, len(body) - 4])
        buf[at:at + 4] = rng.choice([b"PAR0", b"PARE", b"\0\0\0\0", b"par1"])
        return Mutant(bytes(buf), "parquet.magic", f"magic at byte {at} -> {bytes(buf[at:at + 4])!r}")
    if kind == "footer_length":
        real = _i32(body, len(body) - 8)
        value = lying_size(rng, real, len(body))
        put(buf, len(body) - 8, "i", value)
        return Mutant(bytes(buf), "parquet.footer_length", f"footer length {real} -> {value}")
    return Mutant(bytes(buf), "parquet.byte_flip", flip_bytes(rng, buf, 4))


def mutate_parquet(rng: random.Random, body: bytes) -> Mutant:
    """One mutation of a Parquet file: a footer or page-header field (re-encoded), or its bytes."""
    if rng.random() < 0.2:
        return _parquet_raw(rng, body)
    return first_that_applies(rng, PARQUET_MUTATIONS, ParquetBody, bytes, body) or _parquet_raw(rng, body)


# -- Text formats: JSON rows, JSON columns, CSV, NDJSON ------------------------------------------

INVALID_UTF8 = (b"\xff", b"\xc3", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                b"\xc0\xaf", b"\x80")
HUGE_NUMBERS = (b"1e309", b"-1e309", b"1e308", b"123456789012345678901234567890123456789", b"-0.0e-400",
                b"18446744073709551616", b"9223372036854775808", b"1" * 400)
SYNTAX = (b'"', b",", b"\n", b"{", b"}", b"[", b"]", b":", b"\r", b"\\", b'""', b"\r\n")
BOM = b"\xef\xbb\xbf"
NUL = b"\x00"


def _insert(rng, buf: bytearray, what: bytes) -> int:
    at = rng.randrange(len(buf) + 1)
    buf[at:at] = what
    return at


def _value_spans(body: bytes) -> list[tuple[int, int]]:
    """Where JSON numbers or CSV cells that look like numbers are: spans a number can replace."""
    return [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?", body)]


def _text_duplicate(rng, body: bytes, fmt: str) -> tuple[bytes, str]:
    """A key (JSON) or a header name (CSV) given twice."""
    if fmt == "csv":
        header, _, rest = body.partition(b"\n")
        names = header.split(b",")
        i = rng.randrange(len(names))
        names.insert(rng.randrange(len(names) + 1), names[i])
        lines = [b",".join(names)] + [line.split(b",") for line in rest.split(b"\n")]
        out = [lines[0]]
        for cells in lines[1:]:
            if cells != [b""]:
                cells.insert(0, cells[min(i, len(cells) - 1)])
            out.append(b",".join(cells))
        return b"\n".join(out), f"header {names[i]!r} given twice"
    keys = list(re.finditer(rb'"([a-z0-9_]+)":', body))
    if not keys:
        raise NotApplicable("no keys")
    key = rng.choice(keys)
    at = key.start()
    copy = b'"%s":"dup",' % key.group(1) if fmt != "json_columns" else b'"%s":[],' % key.group(1)
    return body[:at] + copy + body[at:], f"key {key.group(1)!r} duplicated at byte {at}"


def _deep_nesting(rng, body: bytes) -> tuple[bytes, str]:
    # Not between 800 and 1,100: the test's own decoder (Python's json) and the service's may
    # draw their depth limits anywhere near 1,000.
    depth = rng.choice([50, 600, 5000, 100_000])
    spans = _value_spans(body)
    start, end = rng.choice(spans) if spans else (0, 0)
    nested = b"[" * depth + b"1" + b"]" * depth
    return body[:start] + nested + body[end:], f"a value at byte {start} nested {depth} deep"


def mutate_text(rng: random.Random, body: bytes, fmt: str) -> Mutant:
    """One byte-level mutation of a JSON rows, JSON columns, CSV or NDJSON body."""
    buf = bytearray(body)
    kind = rng.choice(["flip", "syntax", "invalid_utf8", "bom", "nul", "duplicate", "huge_number", "nesting",
                       "truncate", "syntax", "invalid_utf8", "flip"])
    if kind == "flip":
        detail = flip_bytes(rng, buf)
    elif kind == "syntax":
        what = rng.choice(SYNTAX)
        detail = f"{what!r} inserted at byte {_insert(rng, buf, what)}"
    elif kind == "invalid_utf8":
        what = rng.choice(INVALID_UTF8)
        strings = [m.start() + 1 for m in re.finditer(rb'"[a-zA-Z$]', body)] or [rng.randrange(len(body) + 1)]
        at = rng.choice(strings) if rng.random() < 0.7 else rng.randrange(len(body) + 1)
        buf[at:at] = what
        detail = f"{what!r} inserted at byte {at}"
    elif kind == "bom":
        at = rng.choice([0, 0, rng.randrange(len(body) + 1)])
        buf[at:at] = BOM
        detail = f"BOM inserted at byte {at}"
    elif kind == "nul":
        detail = f"NUL inserted at byte {_insert(rng, buf, NUL)}"
    elif kind == "duplicate":
        try:
            new, detail = _text_duplicate(rng, body, fmt)
        except NotApplicable:
            new, detail = bytes(buf[:-1]), "last byte cut"
        buf = bytearray(new)
    elif kind == "huge_number":
        spans = _value_spans(body)
        if not spans:
            raise AssertionError("a test body without numbers")
        start, end = rng.choice(spans)
        number = rng.choice(HUGE_NUMBERS)
        buf[start:end] = number
        detail = f"number at byte {start} -> {number[:40]!r}"
    elif kind == "nesting":
        new, detail = _deep_nesting(rng, body)
        buf = bytearray(new)
    else:
        cut = rng.randrange(1, len(body))
        del buf[cut:]
        detail = f"cut at byte {cut} of {len(body)}"
    return Mutant(bytes(buf), f"{fmt}.{kind}", detail)


# -- What a mutant really holds, decoded independently of the service ----------------------------
# Arrow and Parquet are decoded in tests/support/sandbox.py's child (a crafted body may crash pyarrow), which
# imports this module rather than the test module: it starts faster.

@dataclass
class Holds:
    """What the test's own decoding found: the rows (JSON-ready dicts), or why there are none.
    ``rows`` with ``invalid`` set is an NDJSON stream's valid prefix; neither set: the test
    cannot tell (a nesting deeper than Python's recursion allows), any 2xx or 4xx will do.
    ``refusable`` names the columns of a type the service may refuse cell by cell instead of
    converting (README: numbers and strings, plain or dictionary-encoded, must be read)."""

    rows: list[dict] | None = None
    invalid: str | None = None
    refusable: tuple[str, ...] = ()
    #: Other answers as right as this one: a key given twice inside a row object beyond the first
    #: row (or a key no one reads given twice) may be refused or read as its last value, since
    #: the service checks the first row only (README, Column names).
    alternatives: tuple[Holds, ...] = ()


UNSUPPORTED = "unsupported"


def _json_ready(value):
    """A decoded cell as the JSON value that means the same, or a marker the model refuses (an
    object: invalid in every consumed column). Bytes stay bytes: the service may read them as
    UTF-8 text or refuse them (``expectations``)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, bool | int | float | str | bytes | decimal.Decimal):
        return value
    if isinstance(value, list | dict):
        return {UNSUPPORTED: "nested"}
    return {UNSUPPORTED: type(value).__name__}


def _converted(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")  # UnicodeDecodeError: this way is closed
    return value


def expectations(found: Holds) -> list[list[dict]]:
    """The JSON rows a 200 may be the answer for: each column of ``found.refusable`` converted
    (binary read as UTF-8 text) or refused cell by cell, in every combination."""
    options = [found.rows]
    for column in found.refusable:
        grown = []
        for rows in options:
            try:
                grown.append([{**row, column: _converted(row.get(column))} for row in rows])
            except UnicodeDecodeError:
                pass
            grown.append([{**row, column: None if row.get(column) is None else {UNSUPPORTED: "refused"}}
                          for row in rows])
        options = grown
    return options


def _must_convert(kind: pa.DataType) -> bool:
    """Whether the README promises to read a column of this type: numbers or strings, plain or
    dictionary-encoded with a signed index."""
    if pa.types.is_dictionary(kind):
        return pa.types.is_signed_integer(kind.index_type) and _must_convert(kind.value_type)
    return (pa.types.is_string(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)
            or pa.types.is_signed_integer(kind))


def _holds_table(table: pa.Table, wanted: tuple[str, ...]) -> Holds:
    if len(set(table.column_names)) != len(table.column_names):
        return Holds(invalid=f"duplicated column names {table.column_names}")
    names = [n for n in table.column_names if n in wanted]
    columns = {n: [_json_ready(v) for v in table.column(n).to_pylist()] for n in names}
    if "id" in columns and _has_fraction_digits(table.schema.field("id").type):
        # Ids are echoed, not scored: a decimal id with digits after the point comes back as
        # its text, digit for digit, where a JSON number would come back as a double.
        columns["id"] = [v if not isinstance(v, decimal.Decimal) else format(v, "f") for v in columns["id"]]
    return Holds(rows=[{n: columns[n][i] for n in names} for i in range(table.num_rows)],
                 refusable=tuple(n for n in names if not _must_convert(table.schema.field(n).type)))


def _has_fraction_digits(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _has_fraction_digits(kind.value_type)
    return pa.types.is_decimal(kind) and kind.scale > 0


def decode_arrow(body: bytes, wanted: tuple[str, ...]) -> Holds:
    """Run in the sandbox: the rows of an Arrow IPC stream or file, fully validated. A body that
    decodes only when the columns no one reads are left unread (as the service reads it: the
    stream, its wanted fields) may be refused or scored: the service does not read those."""
    strict = _decode_arrow(body, wanted, only_wanted=False)
    if strict.invalid is None:
        return strict
    loose = _decode_arrow(body, wanted, only_wanted=True)
    if loose.invalid is not None:
        return strict
    return Holds(rows=loose.rows, refusable=loose.refusable, alternatives=(strict,))


def _decode_arrow(body: bytes, wanted: tuple[str, ...], only_wanted: bool) -> Holds:
    try:
        source = pa.py_buffer(body)
        if not only_wanted:
            reader = pa.ipc.open_file(source) if body.startswith(b"ARROW1") else pa.ipc.open_stream(source)
        else:
            stream = source.slice(8) if body.startswith(b"ARROW1") else source
            fields = [i for i, name in enumerate(pa.ipc.open_stream(stream).schema.names) if name in wanted]
            reader = pa.ipc.open_stream(stream, options=pa.ipc.IpcReadOptions(included_fields=fields))
        table = reader.read_all()
        table.validate(full=True)
        for batch in table.to_batches():
            batch.validate(full=True)
        return _holds_table(table, wanted)
    except Exception as exc:  # noqa: BLE001 - whatever the reason, the body does not decode
        return Holds(invalid=f"{type(exc).__name__}: {str(exc)[:200]}")


def decode_parquet(body: bytes, wanted: tuple[str, ...]) -> Holds:
    """Run in the sandbox: the rows of a Parquet file, its footer's counts checked against the data."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(body))
        metadata = parquet.metadata
        names = [n for n in parquet.schema_arrow.names if n in wanted]
        table = parquet.read(columns=names, use_threads=False)
        table.validate(full=True)
        groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
        counts = {"file num_rows": metadata.num_rows, "sum of row groups' num_rows": sum(g.num_rows for g in groups),
                  "rows decoded": table.num_rows}
        if len(set(counts.values())) != 1 or metadata.num_rows < 0:
            return Holds(invalid=f"the counts disagree: {counts}")
        for group in groups:
            for i in range(group.num_columns):
                chunk = group.column(i)
                if chunk.path_in_schema in names and chunk.num_values != group.num_rows:
                    return Holds(invalid=f"{chunk.path_in_schema}: num_values {chunk.num_values} in a row group "
                                         f"of {group.num_rows} rows")
        return _holds_table(table, wanted)
    except Exception as exc:  # noqa: BLE001
        return Holds(invalid=f"{type(exc).__name__}: {str(exc)[:200]}")
