"""Percentiles and latency summaries shared by the stress tool and the benchmark."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, as numpy's default; NaN if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p95 and p99 of a list of latencies, in milliseconds."""
    return {name: percentile(seconds, q) * 1000 for name, q in (("p50", 50), ("p95", 95), ("p99", 99))}
