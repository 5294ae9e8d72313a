"""Schemathesis hooks for tests/service/ops/test_operability.py (loaded through SCHEMATHESIS_HOOKS): NDJSON
bodies, which the OpenAPI document describes as arrays of rows sent one row object a line, are
written and read that way."""

from __future__ import annotations

import json

import schemathesis

NDJSON = "application/x-ndjson"


@schemathesis.serializer(NDJSON)
def to_ndjson(ctx, value) -> bytes:
    """An array of rows as NDJSON; anything else as one JSON line (the server must refuse it)."""
    rows = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


@schemathesis.deserializer(NDJSON)
def from_ndjson(ctx, response) -> list:
    """The answer lines as an array, for the schema checks."""
    return [json.loads(line) for line in response.content.splitlines() if line.strip()]
