"""Apache Arrow IPC bodies (the stream format; the file format too): decoded and validated by
``lib.codecs.arrow`` (only the consumed columns and ``id``), then converted by ``lib.codecs.columnar``."""

from __future__ import annotations

from collections.abc import Sequence

from lib.codecs.arrow import ArrowDecoder
from lib.codecs.columnar import batch_from_table
from lib.codecs.limits import DecodeLimits
from lib.core.raw_batch import RawBatch


class ArrowReader:
    """Reads Arrow IPC stream (or file) bodies into batches of the consumed columns."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self.decoder = ArrowDecoder(self.columns, limits)

    def read(self, body: bytes) -> RawBatch:
        """Turn an Arrow IPC body into a batch; raise PayloadError / LimitError."""
        table, names = self.decoder.decode_named(body)
        batch = batch_from_table(table, self.columns)
        batch.names = names
        return batch
