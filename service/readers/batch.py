"""What every reader checks on the rows it decoded (the row-count limits of a request), and how
readers word a body that their library cannot read."""

from __future__ import annotations

from lib.errors import LimitError, PayloadError


def check_row_count(n_rows: int, max_rows: int) -> None:
    """Refuse a body without rows (PayloadError) or with more than ``max_rows`` (LimitError)."""
    if n_rows == 0:
        raise PayloadError("the body holds no rows: send at least one row")
    if n_rows > max_rows:
        raise LimitError(f"{n_rows} rows is over the limit of {max_rows} rows per request (MAX_ROWS)")


def describe_arrow_error(exc: Exception) -> str:
    """pyarrow's reason for refusing a body, first line only and cut short: never the body."""
    return str(exc).strip().split("\n", 1)[0][:200]
