"""Progress of a long scoring run: a tqdm bar on a terminal, a plain line every few seconds elsewhere.

The total is the file's row count when the format records it (Parquet); otherwise it is estimated
from the bytes read so far (rows per byte × the file's size), so text formats get an ETA as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm


@dataclass(frozen=True)
class Summary:
    """What a finished run scored."""

    rows: int
    invalid: int
    positives: int
    seconds: float
    #: CPU time of this process over the run (all its threads), when measured.
    cpu_seconds: float | None = None

    def text(self) -> str:
        """``scored 10,000 rows in 0.52 s (19,231 rows/s, 0.50 s of CPU); 12 invalid; positive share
        49.83 % of 9,988 scored``."""
        cpu = "" if self.cpu_seconds is None else f", {self.cpu_seconds:,.2f} s of CPU"
        rate = f" ({self.rows / self.seconds:,.0f} rows/s{cpu})" if self.seconds > 0 else ""
        scored = self.rows - self.invalid
        share = f"{100 * self.positives / scored:.2f} %" if scored else "n/a"
        return (f"scored {self.rows:,} rows in {self.seconds:,.2f} s{rate}; {self.invalid:,} invalid; "
                f"positive share {share} of {scored:,} scored")


class Progress:
    """Reports rows done, rows/s and the estimated time left on ``stream``."""

    def __init__(self, stream: TextIO, total_rows: int | None, total_bytes: int, every_seconds: float = 5.0,
                 bar: bool | None = None):
        """``bar``: a tqdm bar (default: when ``stream`` is a terminal); else a line every ``every_seconds``."""
        self.stream = stream
        self.total_rows = total_rows
        self.total_bytes = total_bytes
        self.every_seconds = every_seconds
        self.rows = 0
        self.started = self._last_line = time.monotonic()
        use_bar = stream.isatty() if bar is None else bar
        self._bar = tqdm(total=total_rows, unit=" rows", unit_scale=True, file=stream, dynamic_ncols=True,
                         smoothing=0.1) if use_bar else None

    def estimated_total(self, bytes_read: int) -> int | None:
        """The file's rows: recorded, or extrapolated from the rows in the first ``bytes_read`` bytes."""
        if self.total_rows is not None:
            return self.total_rows
        if bytes_read <= 0 or not self.rows:
            return None
        return max(self.rows, round(self.rows * self.total_bytes / bytes_read))

    def update(self, rows: int, bytes_read: int) -> None:
        """Count ``rows`` more rows, the file having been read up to ``bytes_read``."""
        self.rows += rows
        total = self.estimated_total(bytes_read)
        if self._bar is not None:
            if total != self._bar.total:
                self._bar.total = total
            self._bar.update(rows)
            return
        now = time.monotonic()
        if now - self._last_line >= self.every_seconds:
            self._last_line = now
            print(self.line(total, now - self.started), file=self.stream, flush=True)

    def line(self, total: int | None, seconds: float) -> str:
        """``scored 1,200,000 of ~5,000,000 rows (24 %), 950,000 rows/s, about 4 s left``."""
        rate = self.rows / seconds if seconds > 0 else 0.0
        text = f"scored {self.rows:,} rows"
        if total:
            approximate = "" if self.total_rows is not None else "~"
            text = f"scored {self.rows:,} of {approximate}{total:,} rows ({100 * self.rows / total:.0f} %)"
        text += f", {rate:,.0f} rows/s"
        if total and rate > 0:
            text += f", about {max(total - self.rows, 0) / rate:,.0f} s left"
        return text

    def close(self) -> None:
        """End the bar (at the true total)."""
        if self._bar is not None:
            self._bar.total = self.rows
            self._bar.refresh()
            self._bar.close()
