"""NDJSON (one JSON row object a line), read in chunks of complete lines while the body is still
arriving: the streamed request (``service/http/streaming.py``) hands each chunk over and scores the
batch it gets back before reading on. The lines are decoded by ``lib.codecs.ndjson``, as the file
command decodes an NDJSON file; blank lines are skipped; cells follow the rules of JSON rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lib.codecs.limits import DecodeLimits
from lib.codecs.ndjson import LinesDecoder
from lib.core.errors import PayloadError
from lib.core.raw_batch import RawBatch, make_batch
from lib.core.schema import ID_KEY


@dataclass(frozen=True)
class Chunk:
    """The rows of one chunk of lines, and the first malformed line's problem, if any (the
    stream ends there)."""

    batch: RawBatch
    malformed: PayloadError | None = None


class NdjsonReader:
    """Reads chunks of NDJSON lines into batches of the consumed columns; build once per process."""

    #: Read while the body arrives, in chunks, and answered as NDJSON: never whole.
    streamed = True

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self._decoder = LinesDecoder((*self.columns, ID_KEY), reported=self.columns)

    def read_chunk(self, chunk: bytes, first_line: int) -> Chunk:
        """Decode ``chunk`` (whole lines; line numbers from ``first_line``, counted from 1)."""
        lines = self._decoder.decode(chunk, first_line)
        values = lines.values
        batch = make_batch(self.columns, lines.n_rows, [values[c] for c in self.columns], values[ID_KEY])
        batch.names = lines.names
        return Chunk(batch, lines.malformed)
