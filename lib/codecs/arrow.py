"""Apache Arrow IPC bodies (the stream format, and the file format by the stream it embeds),
decoded once for every entry point: the API's reader (``service/http/readers/arrow_table.py``) and any
command that reads Arrow IPC.

pyarrow's IPC reader trusts what a body says: a record batch whose lengths claim more values
than its buffers hold is read anyway (values are then read from memory the body does not own:
a crash, or rows scored from garbage), dictionary indices are not checked, and every compressed
buffer is decompressed to the size its prefix declares. So a body is decoded in two passes:

1. the messages' headers (flatbuffers, a few hundred bytes each; no value is read): the first
   message must be the schema; the declared uncompressed size of every compressed buffer of a
   consumed column, of ``id`` and of every dictionary is charged to ``MAX_DECODED_MB``
   (``DecodeLimits.check_decoded``) before anything is decompressed;
2. the record batches, one at a time, with only the consumed columns and ``id``
   (``IpcReadOptions(included_fields=...)``: the other columns are never decompressed): the rows
   read so far plus the next batch's declared length are checked against ``MAX_ROWS`` before the
   batch is decoded, then the batch is validated in full (lengths, offsets, null counts, UTF-8,
   dictionary indices against the dictionary in force for that batch) before a value is read.

Delta and replacement dictionaries are read as the format defines them: a batch's indices mean
the dictionary in force when the batch comes (pyarrow's stream reader keeps it per batch, and
``lib.codecs.columnar`` converts each batch's column through its own dictionary). A file (``ARROW1``) is read
as the stream it embeds, between its magic and its footer: its footer's claims are not used.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from lib.codecs.arrow_messages import (
    DICTIONARY_BATCH,
    RECORD_BATCH,
    MessageHeader,
    buffer_count,
    decoded_size,
    read_header,
)
from lib.codecs.limits import DecodeLimits
from lib.codecs.text_cells import value_lengths
from lib.core.errors import LimitError, PayloadError
from lib.core.schema import ID_KEY

ARROW_FILE_MAGIC = b"ARROW1"
#: Record batches and dictionaries per body: each costs Python work whatever it holds (an empty
#: batch too), so a body of many tiny ones would hold a worker for minutes; honest writers send
#: a few large batches (100,000 rows in batches of 20 are 5,000 messages).
MAX_MESSAGES = 10_000
_FILE_TRAILER = 4 + len(ARROW_FILE_MAGIC)  # the footer's length (int32), then the magic
_FILE_HEADER = 8  # the magic, padded to 8 bytes
#: What the stream reader's own errors are (a truncated body, a flatbuffer that does not verify, ...).
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowIndexError,
                pa.ArrowKeyError, OSError, ValueError, EOFError, IndexError)


def describe_arrow_error(exc: BaseException) -> str:
    """pyarrow's reason for refusing a body, first line only and cut short: never the body."""
    return str(exc).strip().split("\n", 1)[0][:200]


class _Budget:
    """The running total of decoded bytes of one body, checked against MAX_DECODED_MB."""

    def __init__(self, limits: DecodeLimits):
        self.limits = limits
        self.total = 0

    def charge(self, n_bytes: int, what: str) -> None:
        self.total += n_bytes
        self.limits.check_decoded(self.total, f"the Arrow body (at {what})")


def _stream_part(body: pa.Buffer) -> pa.Buffer:
    """The body's stream: all of it, or a file's stream between its magic and its footer."""
    if body.size < len(ARROW_FILE_MAGIC) or body[:len(ARROW_FILE_MAGIC)].to_pybytes() != ARROW_FILE_MAGIC:
        return body
    if body.size < _FILE_HEADER + _FILE_TRAILER or body[-len(ARROW_FILE_MAGIC):].to_pybytes() != ARROW_FILE_MAGIC:
        raise PayloadError("the body is not a valid Arrow IPC file: it does not end with the ARROW1 magic")
    (footer,) = struct.unpack_from("<i", memoryview(body), body.size - _FILE_TRAILER)
    end = body.size - _FILE_TRAILER - footer
    if footer < 0 or end < _FILE_HEADER:
        raise PayloadError("the body is not a valid Arrow IPC file: its footer length is out of range")
    return body.slice(_FILE_HEADER, end - _FILE_HEADER)


def _check_footer(body: pa.Buffer, schema: pa.Schema, n_batches: int) -> None:
    """A file's footer must describe the stream it holds: its stream is what is read, and a reader
    that believes the footer would read other columns or types, or other record batches (one
    left out of the stream, or one repeated in it), from the same bytes."""
    footer = pa.ipc.open_file(body)  # the footer only: no batch is read
    if not footer.schema.equals(schema):
        raise PayloadError("the body is not a valid Arrow IPC file: its footer's schema differs from its "
                           "stream's (send the stream format, application/vnd.apache.arrow.stream)")
    if footer.num_record_batches != n_batches:
        raise PayloadError(f"the body is not a valid Arrow IPC file: its footer lists {footer.num_record_batches} "
                           f"record batches, its stream holds {n_batches} (send the stream format, "
                           "application/vnd.apache.arrow.stream)")


#: Schemas an ArrowDecoder keeps read, and buffer layouts per schema (view columns' counts).
_KNOWN_SCHEMAS, _KNOWN_LAYOUTS = 16, 64


class ArrowDecoder:
    """Decodes Arrow IPC bodies to validated record batches of the consumed columns and ``id``."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.wanted = frozenset((*columns, ID_KEY))
        self.limits = limits
        # Schema message bytes -> (schema, wanted field indices, their buffer spans): clients send
        # the same schema request after request, and reading it and laying out its buffers
        # costs 2 ms for 100 columns. At most _KNOWN_SCHEMAS are kept, the oldest dropped first.
        self._schemas: dict[bytes, tuple[pa.Schema, list[int], _Spans]] = {}

    def decode(self, body: bytes | pa.Buffer) -> pa.Table:
        """The body's consumed columns and ``id`` as a table, every batch validated; raise
        PayloadError (malformed, invalid values), LimitError (MAX_ROWS, MAX_DECODED_MB)."""
        return self.decode_named(body)[0]

    def decode_named(self, body: bytes | pa.Buffer) -> tuple[pa.Table, tuple[str, ...]]:
        """``decode``'s table, and the names of every column of the body (for the column report)."""
        whole = body if isinstance(body, pa.Buffer) else pa.py_buffer(body)
        stream = _stream_part(whole)
        budget = _Budget(self.limits)
        try:
            schema, included, lengths = self._check_messages(stream, budget)
            if stream is not whole:
                _check_footer(whole, schema, len(lengths))
            reader = pa.ipc.open_stream(stream, options=pa.ipc.IpcReadOptions(included_fields=included))
        except ARROW_ERRORS as exc:
            raise PayloadError(f"the body is not a valid Arrow IPC stream: {describe_arrow_error(exc)}") from None
        batches = []
        n_rows = 0
        for declared in lengths:
            self.limits.check_more_rows(n_rows + declared)
            try:
                batch = reader.read_next_batch()
            except StopIteration:  # pass 1 counted one more: the stream cannot be what it read
                raise PayloadError("the body is not a valid Arrow IPC stream: it ends before its "
                                   "record batches") from None
            except ARROW_ERRORS as exc:
                raise PayloadError(f"the body is not a valid Arrow IPC stream: {describe_arrow_error(exc)}") from None
            _validate(batch, len(batches))
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                budget.charge(_expanded_size(name, column), f"column {name!r} of record batch {len(batches)}")
            n_rows += batch.num_rows
            batches.append(batch)
        self.limits.check_rows(n_rows)
        projected = pa.schema([schema.field(i) for i in included])
        table = pa.Table.from_batches(batches, schema=projected)
        if len(batches) > 1:
            # lib.codecs.columnar works chunk by chunk: many small batches would cost Python per batch and
            # column. One chunk per column, except dictionaries: each batch's indices mean its own.
            table = pa.Table.from_arrays([column if pa.types.is_dictionary(column.type) else column.combine_chunks()
                                          for column in table.columns], schema=projected)
        return table, tuple(schema.names)

    def _check_messages(self, stream: pa.Buffer, budget: _Budget) -> tuple[pa.Schema, list[int], list[int]]:
        """Pass 1, headers only: the schema, the indices of the wanted fields, and each record
        batch's declared length; every decoded byte of what pass 2 decodes is charged first."""
        messages = pa.ipc.MessageReader.open_stream(stream)
        try:
            first = messages.read_next_message()
        except StopIteration:
            raise PayloadError("the body is empty: send an Arrow IPC stream (a schema, then record batches)") from None
        if first.type != "schema":
            raise PayloadError(f"the body is not a valid Arrow IPC stream: it starts with a {first.type} "
                               "message, not the schema")
        schema, included, spans = self._schema_of(first)
        lengths = []
        for number, message in enumerate(messages, start=1):
            if number > MAX_MESSAGES:
                raise LimitError(f"the Arrow body holds more than {MAX_MESSAGES:,} record batches and dictionaries: "
                                 "send fewer, larger batches")
            header = read_header(message.metadata.to_pybytes())
            if header.kind == DICTIONARY_BATCH:
                # Every dictionary is decoded, consumed column or not: all of it counts.
                budget.charge(decoded_size(message.body, header.buffers, header.compressed),
                              f"dictionary {header.dictionary_id}")
            elif header.kind == RECORD_BATCH:
                budget.charge(self._wanted_size(spans, header, message.body),
                              f"record batch {len(lengths)}")
                lengths.append(max(header.length, 0))
            else:
                raise PayloadError(f"the body is not a valid Arrow IPC stream: message {number} is a "
                                   f"{message.type}, not a record batch or a dictionary")
        return schema, included, lengths

    def _schema_of(self, message: pa.ipc.Message) -> tuple[pa.Schema, list[int], _Spans]:
        key = message.metadata.to_pybytes()
        known = self._schemas.pop(key, None)
        if known is None:
            schema = pa.ipc.read_schema(message)
            included = [i for i, name in enumerate(schema.names) if name in self.wanted]
            known = (schema, included, _Spans(schema, included))
            while len(self._schemas) >= _KNOWN_SCHEMAS:
                del self._schemas[next(iter(self._schemas))]
        self._schemas[key] = known  # the most recently used last
        return known

    @staticmethod
    def _wanted_size(spans: _Spans, header: MessageHeader, body: pa.Buffer) -> int:
        wanted = spans.of(header)
        if wanted is None:
            # Not the schema's layout: pyarrow will refuse the batch; until then count it all.
            return decoded_size(body, header.buffers, header.compressed)
        return sum(decoded_size(body, header.buffers[start:end], header.compressed) for start, end in wanted)


class _Spans:
    """Where each wanted field's buffers are among a record batch's: fixed by the schema, except
    for the data buffers of view columns, which each batch counts (so kept per such count)."""

    def __init__(self, schema: pa.Schema, included: list[int]):
        self.schema = schema
        self.included = included
        self.known: dict[tuple[int, ...], tuple[int, list[tuple[int, int]]]] = {}

    def of(self, header: MessageHeader) -> list[tuple[int, int]] | None:
        """The wanted fields' (start, end) among ``header``'s buffers; None if they do not add up."""
        key = tuple(header.variadic_counts)
        if key not in self.known:
            if len(self.known) >= _KNOWN_LAYOUTS:  # kept across bodies: bounded
                self.known.clear()
            variadic = iter(key)
            spans, start = [], 0
            for field in self.schema:
                count = buffer_count(field.type, variadic)
                spans.append((start, start + count))
                start += count
            self.known[key] = (start, [spans[i] for i in self.included])
        total, wanted = self.known[key]
        return wanted if total == len(header.buffers) else None


def _validate(batch: pa.RecordBatch, number: int) -> None:
    """Refuse a batch whose buffers do not hold what its lengths claim (PayloadError naming the
    column): one full validation of the batch, and a second, column by column, only to name it."""
    try:
        batch.validate(full=True)
        return
    except ARROW_ERRORS as exc:
        reason = describe_arrow_error(exc)
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            column.validate(full=True)
        except ARROW_ERRORS as exc:
            raise PayloadError(f"record batch {number} of the Arrow body is invalid: column {name!r}: "
                               f"{describe_arrow_error(exc)}") from None
    raise PayloadError(f"record batch {number} of the Arrow body is invalid: {reason}")


def _expanded_size(name: str, column: pa.Array) -> int:
    """What converting a validated column adds beyond its buffers: views are cast to plain
    strings, and an id column's dictionary values are echoed once per row in the answer (a
    consumed column is converted through its dictionary, lib.codecs.columnar, and adds nothing)."""
    data_type = column.type
    if pa.types.is_dictionary(data_type):
        return text_bytes(column) if name == ID_KEY else _view_bytes(column.dictionary)
    return _view_bytes(column)


def _view_bytes(array: pa.Array) -> int:
    return text_bytes(array) if pa.types.is_string_view(array.type) or pa.types.is_binary_view(array.type) else 0


def text_bytes(array: pa.Array) -> int:
    """The bytes of text a column of strings (plain, large, view; or the dictionary values its
    indices pick) spells out once every row is materialised: what a cast or a list of Python
    strings of it would take. Views and dictionaries can point many rows at one value, so this
    can be far more than the body holds."""
    valid = np.asarray(array.is_valid(), dtype=bool)
    if pa.types.is_dictionary(array.type):
        lengths = value_lengths(array.dictionary)
        indices = array.indices.to_numpy(zero_copy_only=False)
        return int(lengths[indices[valid].astype(np.intp)].sum())
    return int(value_lengths(array)[valid].sum())
