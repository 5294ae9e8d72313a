"""What a request body may decode to: its rows (``MAX_ROWS``) and the bytes its consumed columns
expand to once decompressed and decoded (``MAX_DECODED_MB``).

Both are checked by the codecs while they decode, against what the data holds (never against
what a header or a footer claims), and before the next part is materialised, so that a small
body cannot grow a worker far past what the largest honest request grows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib.core.errors import LimitError, PayloadError

MB = 1024 * 1024


@dataclass(frozen=True)
class DecodeLimits:
    """The limits of one decoded body: rows, and bytes of decoded consumed columns."""

    max_rows: int
    max_decoded_bytes: int = 96 * MB

    def check_rows(self, n_rows: int) -> None:
        """Refuse a body without rows (PayloadError) or with more than ``max_rows`` (LimitError)."""
        if n_rows == 0:
            raise PayloadError("the body holds no rows: send at least one row")
        self.check_more_rows(n_rows)

    def check_more_rows(self, n_rows: int) -> None:
        """Refuse ``n_rows`` decoded so far (or about to be) when over ``max_rows`` (LimitError)."""
        if n_rows > self.max_rows:
            raise LimitError(f"{n_rows} rows is over the limit of {self.max_rows} rows per request (MAX_ROWS)")

    def check_decoded(self, n_bytes: int, what: str) -> None:
        """Refuse ``n_bytes`` of decoded data (``what`` names it) when over ``max_decoded_bytes``."""
        if n_bytes > self.max_decoded_bytes:
            raise LimitError(f"{what} would decode to {n_bytes:,} bytes, over the limit of "
                             f"{self.max_decoded_bytes // MB} MB per request (MAX_DECODED_MB)")
