"""A reader of Thrift's compact protocol, the encoding of Parquet's footer and page headers.

Small on purpose: it reads a struct into ``{field id: value}`` (nested structs as dicts, lists as
lists, binary as bytes) and notes where each integer's varint lies (``spans``), which is all the
Parquet codec needs to read page headers before pyarrow decodes a page, and all the tests need to
make a footer lie. Hostile bytes end in ``ThriftError``, never in an IndexError or a deep recursion.
"""

from __future__ import annotations

#: Nesting deeper than this is not a Parquet structure.
MAX_DEPTH = 16
_BOOL_TRUE, _BOOL_FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)


class ThriftError(ValueError):
    """The bytes are not a compact-protocol struct (truncated, or of an unknown type)."""


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` and the position after it."""
    value = shift = 0
    for _ in range(10):
        if pos >= len(data):
            raise ThriftError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
    raise ThriftError("varint longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    """``value`` (unsigned) as a varint."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def zigzag(value: int) -> int:
    """A signed 64-bit integer as the unsigned number the compact protocol writes."""
    return (value << 1) ^ (value >> 63)


def unzigzag(raw: int) -> int:
    """The signed integer of a zigzag-encoded number."""
    return (raw >> 1) ^ -(raw & 1)


class StructReader:
    """Reads one compact-protocol struct from ``data`` (``read(pos)``: the struct and its end)."""

    def __init__(self, data: bytes | memoryview, spans: bool = False):
        self.data = data
        #: With ``spans``: path of field ids (and list positions) -> (start, end) of each integer's varint.
        self.spans: dict[tuple[int, ...], tuple[int, int]] | None = {} if spans else None

    def read(self, pos: int = 0, last_field: int | None = None) -> tuple[dict, int]:
        """The struct at ``pos`` and the position after it; raise ThriftError. With ``last_field``,
        only its fields up to that id (written in id order, as Parquet's writers do), and the
        position where the reading stopped."""
        try:
            return self._struct(pos, (), 0, last_field)
        except IndexError:
            raise ThriftError("truncated struct") from None

    def _struct(self, pos: int, path: tuple[int, ...], depth: int,
                last_field: int | None = None) -> tuple[dict, int]:
        if depth > MAX_DEPTH:
            raise ThriftError("structs nested too deep")
        fields: dict[int, object] = {}
        field = 0
        while True:
            head = self.data[pos]
            pos += 1
            if head == 0:
                return fields, pos
            delta, kind = head >> 4, head & 0x0F
            if delta:
                field += delta
            else:
                raw, pos = read_varint(self.data, pos)
                field = unzigzag(raw)
            if last_field is not None and field > last_field:
                return fields, pos - 1
            if kind in (_BOOL_TRUE, _BOOL_FALSE):  # in a struct, the value is the type
                fields[field] = kind == _BOOL_TRUE
                continue
            fields[field], pos = self._value(pos, kind, path if self.spans is None else (*path, field), depth)

    def _value(self, pos: int, kind: int, path: tuple[int, ...], depth: int) -> tuple[object, int]:
        data = self.data
        if kind in (_BOOL_TRUE, _BOOL_FALSE, _BYTE):  # a list's booleans take a byte each
            return data[pos], pos + 1
        if kind in (_I16, _I32, _I64):
            raw, end = read_varint(data, pos)
            if self.spans is not None:
                self.spans[path] = (pos, end)
            return unzigzag(raw), end
        if kind == _DOUBLE:
            return bytes(data[pos:pos + 8]), pos + 8
        if kind == _BINARY:
            length, pos = read_varint(data, pos)
            if pos + length > len(data):
                raise ThriftError("truncated binary field")
            return bytes(data[pos:pos + length]), pos + length
        if kind in (_LIST, _SET):
            head = data[pos]
            pos += 1
            size, item = head >> 4, head & 0x0F
            if size == 15:
                size, pos = read_varint(data, pos)
            if size > len(data) - pos:  # every item takes a byte at least
                raise ThriftError("list longer than its bytes")
            items = []
            for i in range(size):
                value, pos = self._value(pos, item, path if self.spans is None else (*path, i), depth + 1)
                items.append(value)
            return items, pos
        if kind == _STRUCT:
            return self._struct(pos, path, depth + 1)
        raise ThriftError(f"compact type {kind} is not used by Parquet")
