"""Wire formats of ``POST /predict`` bodies: one module per format, registered here by media type.

Every reader is built once per process with the columns the model consumes and the row limit,
and turns a body into the same ``RawBatch``. A new format is one module and one line in
``READERS``; ``preprocess_input_json.py`` picks the reader for each request.
"""

from __future__ import annotations

from service.readers.csv_table import CsvReader
from service.readers.json_rows import JsonRowsReader

JSON = "application/json"
CSV = "text/csv"

#: media type -> reader class (``cls(columns, max_rows)``, then ``.read(body) -> RawBatch``).
READERS = {
    JSON: JsonRowsReader,
    CSV: CsvReader,
}

#: Other names clients use for the registered media types.
ALIASES = {
    "application/csv": CSV,
    "text/comma-separated-values": CSV,
}


def accepted_names(media_type: str) -> frozenset[str]:
    """Every Content-Type value (lower case, without parameters) that selects ``media_type``'s reader."""
    return frozenset({media_type, *(alias for alias, target in ALIASES.items() if target == media_type)})
