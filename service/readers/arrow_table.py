"""Apache Arrow IPC bodies (the streaming format; the file format too): the record batches are
read in place from the body's buffer, columns are taken by name, and only the consumed ones and
``id`` are converted (``lib.tables``)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from lib.batch import RawBatch
from lib.codecs.limits import DecodeLimits
from lib.errors import PayloadError
from lib.tables import batch_from_table
from service.readers.batch import describe_arrow_error

_ARROW_FILE_MAGIC = b"ARROW1"


class ArrowReader:
    """Reads Arrow IPC stream (or file) bodies into batches of the consumed columns."""

    def __init__(self, columns: Sequence[str], limits: DecodeLimits):
        self.columns = tuple(columns)
        self.limits = limits

    def read(self, body: bytes) -> RawBatch:
        """Turn an Arrow IPC body into a batch; raise PayloadError / LimitError."""
        source = pa.py_buffer(body)
        try:
            if body.startswith(_ARROW_FILE_MAGIC):
                table = pa.ipc.open_file(source).read_all()
            else:
                table = pa.ipc.open_stream(source).read_all()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
            raise PayloadError(f"the body is not a valid Arrow IPC stream: {describe_arrow_error(exc)}") from None
        self.limits.check_rows(table.num_rows)
        batch = batch_from_table(table, self.columns)
        batch.names = table.schema.names
        return batch

