"""The media types of the wire formats, named once for the readers, the answers, the docs and
the clients of the API (the file command and the Spark job name formats by file ending)."""

from __future__ import annotations

JSON = "application/json"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
NDJSON = "application/x-ndjson"
#: JSON of column name → array, chosen by ``?input=columns`` (the media type stays JSON).
JSON_COLUMNS = "application/json;input=columns"

#: Other names clients use for these media types.
ALIASES = {
    "application/csv": CSV,
    "text/comma-separated-values": CSV,
    "application/vnd.apache.arrow.file": ARROW,
    "application/x-parquet": PARQUET,
    "application/jsonl": NDJSON,
    "application/x-jsonlines": NDJSON,
}
