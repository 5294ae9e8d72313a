"""What every reader checks on the rows it decoded: the row-count limits of a request."""

from __future__ import annotations

from lib.errors import LimitError, PayloadError


def check_row_count(n_rows: int, max_rows: int) -> None:
    """Refuse a body without rows (PayloadError) or with more than ``max_rows`` (LimitError)."""
    if n_rows == 0:
        raise PayloadError("the body holds no rows: send at least one row")
    if n_rows > max_rows:
        raise LimitError(f"{n_rows} rows is over the limit of {max_rows} rows per request (MAX_ROWS)")
