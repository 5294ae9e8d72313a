"""Parquet bodies: the footer is read first, then only the consumed columns and ``id`` are
decoded from the column chunks; every other column stays unread bytes (``lib.tables``)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from lib.batch import RawBatch
from lib.codecs.limits import DecodeLimits
from lib.errors import PayloadError
from lib.schema import ID_KEY
from lib.tables import batch_from_table
from service.readers.batch import describe_arrow_error


class ParquetReader:
    """Reads Parquet bodies into batches of the consumed columns."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self.wanted = {*self.columns, ID_KEY}
        self.limits = limits

    def read(self, body: bytes) -> RawBatch:
        """Turn a Parquet body into a batch; raise PayloadError / LimitError."""
        try:
            parquet = pq.ParquetFile(pa.BufferReader(body))
            self.limits.check_rows(parquet.metadata.num_rows)
            names = parquet.schema_arrow.names
            table = parquet.read(columns=[n for n in names if n in self.wanted], use_threads=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
            raise PayloadError(f"the body is not a valid Parquet file: {describe_arrow_error(exc)}") from None
        batch = batch_from_table(table, self.columns)
        batch.names = names
        return batch
