"""Prometheus metrics of the web service, correct across gunicorn workers.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` is set by gunicorn.conf.py before the app is
imported, so every worker writes its samples to files there and ``/metrics`` aggregates
them. Without it (Flask's test client) each app keeps its own in-process registry.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

ROW_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The service's metric objects, registered in a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_version: str):
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("http_requests", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=r)
        self.duration = Histogram("http_request_duration_seconds", "Request duration by endpoint",
                                  ["endpoint"], buckets=DURATION_BUCKETS, registry=r)
        self.rows = Histogram("predict_rows_per_request", "Rows per accepted /predict request",
                              buckets=ROW_BUCKETS, registry=r)
        self.rows_scored = Counter("predict_rows_scored", "Rows answered with a prediction", registry=r)
        self.rows_rejected = Counter("predict_rows_rejected", "Invalid cells by column", ["column"], registry=r)
        self.positives = Counter("predict_positive_rows", "Rows predicted positive", registry=r)
        self.model = Gauge("model_info", "The loaded model version (value 1)", ["version"],
                           registry=r, multiprocess_mode="max")
        self.model.labels(version=model_version).set(1)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        self.requests.labels(endpoint, method, str(status)).inc()
        self.duration.labels(endpoint).observe(seconds)

    def observe_scores(self, n_rows: int, n_scored: int, n_positive: int, rejected_columns: list[str]) -> None:
        """Count the rows of one accepted /predict request."""
        self.rows.observe(n_rows)
        self.rows_scored.inc(n_scored)
        self.positives.inc(n_positive)
        for column in rejected_columns:
            self.rows_rejected.labels(column).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition, aggregated over workers when under gunicorn."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
