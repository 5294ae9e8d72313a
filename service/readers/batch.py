"""How readers word a body that their library cannot read."""

from __future__ import annotations


def describe_arrow_error(exc: Exception) -> str:
    """pyarrow's reason for refusing a body, first line only and cut short: never the body."""
    return str(exc).strip().split("\n", 1)[0][:200]
