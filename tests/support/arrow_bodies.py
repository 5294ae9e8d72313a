"""Arrow IPC bodies built with pyarrow, honest and crafted, for tests/lib/codecs/test_arrow_codec.py and
bench/decoded_budget.py: a valid stream written by pyarrow, then its flatbuffer fields patched in
the bytes (what a hostile client sends), and bombs that are small on the wire and huge decoded."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from tests.support import forms

CONTINUATION = b"\xff\xff\xff\xff"


def stream(data: pa.Table | pa.RecordBatch | Sequence[pa.RecordBatch], compression: str | None = None,
           deltas: bool = False, file: bool = False) -> bytes:
    """``data`` as an Arrow IPC stream (or file), its batches as they are (each one a message)."""
    batches = data.to_batches() if isinstance(data, pa.Table) else [data] if isinstance(data, pa.RecordBatch) else data
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression, emit_dictionary_deltas=deltas)
    open_writer = pa.ipc.new_file if file else pa.ipc.new_stream
    with open_writer(sink, batches[0].schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def message_spans(body: bytes) -> list[tuple[str, int, int]]:
    """Each message of a stream (or of a file's stream) as (type, start of its flatbuffer, end of it)."""
    position = 8 if body.startswith(b"ARROW1") else 0
    spans = []
    while position + 8 <= len(body) and body[position:position + 4] == CONTINUATION:
        (size,) = struct.unpack_from("<i", body, position + 4)
        if size == 0:
            break
        message = pa.ipc.read_message(pa.py_buffer(body[position:]))
        spans.append((message.type, position + 8, position + 8 + size))
        position += 8 + size + (message.body.size if message.body is not None else 0)
    return spans


def patch_int64(body: bytes, kind: str, old: int, new: int, occurrence: int | None = None) -> bytes:
    """``body`` with the int64 ``old`` replaced by ``new`` in the flatbuffer of every message of
    type ``kind`` (``"record batch"``, ``"dictionary"``): a length, a null count or a buffer's
    offset or size, picked by its value (make it a value nothing else in the header holds);
    ``occurrence`` limits it to the n-th one found."""
    patched = bytearray(body)
    found = 0
    for message_type, start, end in message_spans(body):
        if message_type != kind:
            continue
        at = start
        while (at := patched.find(struct.pack("<q", old), at, end)) >= 0:
            if occurrence is None or found == occurrence:
                patched[at:at + 8] = struct.pack("<q", new)
            found += 1
            at += 8
    assert found, f"no {old} in a {kind} message"
    return bytes(patched)


def zeros_text(n_rows: int, value_bytes: int) -> pa.Array:
    """``n_rows`` strings of ``value_bytes`` NUL characters each (valid UTF-8) over one buffer of
    zeros that numpy allocates lazily: a column of gigabytes that costs the test no memory."""
    offsets = np.arange(n_rows + 1, dtype=np.int64) * value_bytes
    data = np.zeros(n_rows * value_bytes, dtype=np.uint8)
    return pa.Array.from_buffers(pa.large_string(), n_rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def rows_table(rows: Sequence[dict], n_rows: int) -> pa.Table:
    """``n_rows`` of ``rows`` (repeated as needed) as a table of the columns a data team holds."""
    repeated = [rows[i % len(rows)] for i in range(n_rows)]
    return forms.table(repeated)


def unused_column_bomb(rows: Sequence[dict], decoded_mb: int) -> bytes:
    """Some honest rows and a column no model consumes, ZSTD-compressed: a few KB on the wire that
    decode to ``decoded_mb`` MB."""
    data = forms.table(rows)
    per_row = decoded_mb * 1024 * 1024 // len(rows)
    return stream(data.append_column("notes", zeros_text(len(rows), per_row)), compression="zstd")


def consumed_text_bomb(name: str, n_rows: int, value_bytes: int, dictionary: bool) -> bytes:
    """A consumed column of one ``value_bytes``-long text repeated ``n_rows`` times, ZSTD, plain
    or dictionary-encoded: a few KB that a reader expanding it to a string per row grows by
    ``n_rows * value_bytes`` several times over."""
    column = zeros_text(n_rows, value_bytes)
    if dictionary:
        column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n_rows, dtype=np.int32)),
                                                zeros_text(1, value_bytes))
    columns = {"id": pa.array(np.arange(n_rows)), name: column}  # an id bomb replaces the ids
    return stream(pa.table(columns), compression="zstd")


def shared_view_text(n_rows: int, value_bytes: int) -> pa.Array:
    """A string_view column whose ``n_rows`` views all point at one ``value_bytes``-long value:
    ``value_bytes`` of text on the wire, ``n_rows * value_bytes`` once cast to plain strings."""
    views = np.zeros((n_rows, 4), dtype=np.int32)
    views[:, 0] = value_bytes  # length; the prefix (zeros), buffer 0 and offset 0 follow
    data = pa.py_buffer(b"\x00" * value_bytes)
    return pa.Array.from_buffers(pa.string_view(), n_rows, [None, pa.py_buffer(views), data])


def view_text_bomb(name: str, n_rows: int, value_bytes: int) -> bytes:
    """A consumed column of shared views (shared_view_text), uncompressed."""
    return stream(pa.table({name: shared_view_text(n_rows, value_bytes)}))
