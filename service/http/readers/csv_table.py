"""CSV with a header row (the exercise's test file as it is): decoded by ``lib.codecs.csv``, as
the file command decodes a CSV file; columns taken by name, every cell read as text for the
normaliser, the rest never converted."""

from __future__ import annotations

from collections.abc import Sequence

from lib.codecs.columnar import batch_from_table
from lib.codecs.csv import CsvDecoder, header_names
from lib.codecs.limits import DecodeLimits
from lib.core.raw_batch import RawBatch
from lib.core.schema import ID_KEY


class CsvReader:
    """Reads CSV bodies into batches of the consumed columns."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self.limits = limits
        self._decoder = CsvDecoder((*self.columns, ID_KEY))

    def read(self, body: bytes) -> RawBatch:
        """Turn a CSV body into a batch; raise PayloadError / LimitError."""
        table = self._decoder.read(body)
        self.limits.check_rows(table.num_rows)
        batch = batch_from_table(table, self.columns)
        batch.names = header_names(body[:_HEADER_BYTES])  # the header's names, for the column report
        return batch


#: Where ``CsvDecoder`` looks for the header row too.
_HEADER_BYTES = 1 << 16
