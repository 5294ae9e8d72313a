"""Wire formats of ``POST /predict`` bodies: one module per format, registered here by media type.

Every reader is built once per process with the columns the model consumes and the row limit,
and turns a body into the same ``RawBatch`` (``read(body)``); a streamed format (``streamed =
True``) is read in chunks while the body arrives instead (``read_chunk``). A new format is one
module and one line in ``READERS``; ``body_formats`` picks the reader for each request.
"""

from __future__ import annotations

from lib.codecs.media import ALIASES, ARROW, CSV, JSON, JSON_COLUMNS, NDJSON, PARQUET
from service.http.readers.arrow_table import ArrowReader
from service.http.readers.csv_table import CsvReader
from service.http.readers.json_columns import JsonColumnsReader
from service.http.readers.json_rows import JsonRowsReader
from service.http.readers.ndjson import NdjsonReader
from service.http.readers.parquet_file import ParquetReader

#: format -> reader class (``cls(columns, limits)``, limits a ``lib.codecs.limits.DecodeLimits``).
READERS = {
    JSON: JsonRowsReader,
    JSON_COLUMNS: JsonColumnsReader,
    CSV: CsvReader,
    ARROW: ArrowReader,
    PARQUET: ParquetReader,
    NDJSON: NdjsonReader,
}

#: ``?input=`` values: how a JSON body lays out its rows.
INPUT_LAYOUTS = ("rows", "columns")


def accepted_names(media_type: str) -> frozenset[str]:
    """Every Content-Type value (lower case, without parameters) that selects ``media_type``'s reader."""
    return frozenset({media_type, *(alias for alias, target in ALIASES.items() if target == media_type)})


def media_types() -> list[str]:
    """The registered media types (JSON columns is JSON with ``?input=columns``)."""
    return [media_type for media_type in READERS if media_type != JSON_COLUMNS]


def streamed_media_types() -> frozenset[str]:
    """Every Content-Type value (lower case, without parameters) of a format read while its body
    arrives (``streamed = True``): such a request must reach its reader before its body ends."""
    return frozenset().union(*(accepted_names(media_type) for media_type, reader in READERS.items()
                               if getattr(reader, "streamed", False)))
