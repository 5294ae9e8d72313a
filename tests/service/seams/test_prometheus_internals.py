"""What service/seams/prometheus_internals.py relies on, checked against the installed prometheus_client.

A failure names the pinned version and the function to update after an upgrade.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from service.seams import prometheus_internals as pi

BOUNDS = (1.0, 10.0)


def changed(what: str, function: str) -> str:
    return f"{pi.PINNED}: {what} no longer holds; update {function} in service/seams/prometheus_internals.py"


def test_add_observations_counts_as_one_observe_per_value():
    registry = CollectorRegistry()
    histogram = Histogram("h", "test", ["phase"], buckets=BOUNDS, registry=registry)
    child = histogram.labels("read")
    assert hasattr(child, "_sum") and hasattr(child, "_buckets"), \
        changed("a histogram child's _sum and _buckets value objects", "add_observations")
    assert len(child._buckets) == len(BOUNDS) + 1, changed("one _buckets value per bound and +Inf", "add_observations")
    # 0.5 and 0.7 in the first bucket, 20 in +Inf: as observe(0.5), observe(0.7), observe(20).
    pi.add_observations(child, 21.2, [2, 0, 1])
    samples = {(s.name, s.labels.get("le")): s.value for metric in registry.collect() for s in metric.samples}
    assert samples[("h_sum", None)] == 21.2, changed("_sum.inc adding to h_sum", "add_observations")
    assert [samples[("h_bucket", le)] for le in ("1.0", "10.0", "+Inf")] == [2, 2, 3], \
        changed("_buckets[i].inc counting per bucket (exposed cumulated)", "add_observations")
    assert samples[("h_count", None)] == 3, changed("h_count being the sum of the bucket values", "add_observations")
