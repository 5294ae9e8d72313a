"""Reading the text of /metrics, with prometheus_client's own parser (never by splitting lines):
a label value holding a space, a comma or a brace, or the order of labels, cannot fool it."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

#: A series: the sample's name (``http_requests_total``) and its labels, sorted.
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def metric_families(text: str) -> dict[str, Metric]:
    """The families of ``text`` by name (counters without their ``_total``), with type and samples."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def metric_samples(text: str) -> dict[SeriesKey, float]:
    """Every sample of ``text``, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``: 0 when there is
    none (Prometheus reads a series never written as 0)."""
    return sum(value for (sample, sample_labels), value in metric_samples(text).items()
               if sample == name and labels.items() <= dict(sample_labels).items())
