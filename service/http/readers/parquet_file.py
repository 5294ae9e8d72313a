"""Parquet bodies, decoded by the shared codec (``lib.codecs.parquet``): the footer and page
headers checked before any value is read, rows counted from the data against ``MAX_ROWS``, the
decoded bytes against ``MAX_DECODED_MB``; only the consumed columns and ``id`` are decoded."""

from __future__ import annotations

from collections.abc import Sequence

from lib.codecs.columnar import batch_from_table
from lib.codecs.limits import DecodeLimits
from lib.codecs.parquet import FittingSchemas, ParquetDecoder
from lib.core.raw_batch import RawBatch


class ParquetReader:
    """Reads Parquet bodies into batches of the consumed columns."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self.limits = limits
        self._schemas = FittingSchemas()

    def read(self, body: bytes) -> RawBatch:
        """Turn a Parquet body into a batch; raise PayloadError / LimitError."""
        decoder = ParquetDecoder(body, self.columns, self.limits, schemas=self._schemas)
        batch = batch_from_table(decoder.table(), self.columns)
        batch.names = decoder.names
        return batch
