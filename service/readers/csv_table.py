"""CSV with a header row (the exercise's test file as it is): columns taken by name, the rest
never parsed, every cell read as text for the normaliser."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd

from lib.batch import RawBatch, make_batch
from lib.codecs.limits import DecodeLimits
from lib.codecs.text import describe_invalid_csv_utf8
from lib.errors import PayloadError
from lib.file_readers import CSV_OPTIONS
from lib.schema import ID_KEY


class CsvReader:
    """Reads CSV bodies into batches of the consumed columns."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self.limits = limits

    def read(self, body: bytes) -> RawBatch:
        """Turn a CSV body into a batch; raise PayloadError / LimitError."""
        wanted = set(self.columns) | {ID_KEY}
        options = CSV_OPTIONS
        try:
            frame = pd.read_csv(io.BytesIO(body), usecols=lambda name: name in wanted, **options)
            if frame.columns.empty:
                # Without any wanted column pandas reads no rows either: count them on the
                # first column (each such row is all missing values).
                frame = pd.read_csv(io.BytesIO(body), usecols=[0], **options)[[]]
        except UnicodeDecodeError:
            raise PayloadError(f"the CSV body is {describe_invalid_csv_utf8(body)}") from None
        except (ValueError, pd.errors.ParserError) as exc:
            raise PayloadError(f"malformed CSV: {str(exc).strip()[:200]}") from None
        n = len(frame)
        self.limits.check_rows(n)
        values = [frame[c].tolist() if c in frame.columns else [None] * n for c in self.columns]
        ids = frame[ID_KEY].tolist() if ID_KEY in frame.columns else [None] * n
        return make_batch(self.columns, n, values, ids)
