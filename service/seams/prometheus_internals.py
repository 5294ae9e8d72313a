"""Every use the service makes of prometheus_client's internals, in one module.

prometheus_client's public API observes one value at a time (``Histogram.observe``), and in
multiprocess mode each observation takes a lock and writes a memory-mapped file twice (its
bucket and its sum). ``service.ops.metrics.PendingWrites`` adds a worker's observations up in plain
numbers and writes them in bulk, which needs the values behind a histogram child. This holds for
the pinned version (``PINNED``, requirements.txt); tests/service/seams/test_prometheus_internals.py checks it
against the installed prometheus_client and names the function to update when an upgrade changed
what it relies on.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The prometheus_client whose internals this module was written against (requirements.txt pins it).
PINNED = "prometheus_client 0.26.0"


def add_observations(histogram, total: float, bucket_counts: Sequence[int]) -> None:
    """Add many observations to a histogram child at once: ``total`` to its sum and
    ``bucket_counts[i]`` to its i-th bucket (upper bounds in order, ``+Inf`` last; a count per
    bucket, not cumulative). Relies on the child's value objects ``_sum`` and ``_buckets`` (one
    per bound, each with ``inc``), which ``Histogram.observe`` increments one observation at a
    time."""
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, bucket_counts, strict=True):
        if count:
            bucket.inc(count)
