"""Prometheus metrics of the web service, correct across gunicorn workers.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` is set by gunicorn.conf.py before the app is
imported, so every worker writes its samples to files there and ``/metrics`` aggregates
them. Without it (Flask's test client) each app keeps its own in-process registry.

In multiprocess mode every sample write takes a lock and stores into a memory-mapped file; a
one-row request makes a dozen, about a tenth of its CPU time. So requests add to plain numbers
in the worker's memory (``PendingWrites``), and those reach the files in bulk at most
FLUSH_SECONDS later, and at once before the worker answers ``/metrics``.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from lib.core.columns import ColumnReport
from lib.core.drift import DriftCounts
from lib.core.errors import CellError
from lib.core.normalize import rejection_reason
from lib.core.schema import NUMERIC_KINDS, kind_of
from service.seams.prometheus_internals import add_observations

FLUSH_SECONDS = 0.5
ROW_BUCKETS = (1, 10, 100, 1_000, 10_000, 100_000)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# A phase of a one-row request takes tens of microseconds; of a 100,000-row request, seconds.
PHASE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1, 2.5, 5, 10, 30)

class PendingWrites:
    """Increments of one process not yet written to the metric values.

    Counters are flushed with ``inc``; a histogram's pending observations are flushed as one
    increment of its sum and one per touched bucket (``service.seams.prometheus_internals``: the public
    API observes one value at a time). A daemon thread flushes every FLUSH_SECONDS, so an idle worker's
    counts are never held back longer than that.
    """

    def __init__(self, flush_seconds: float = FLUSH_SECONDS):
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.counters: dict = {}
        self.histograms: dict = {}
        threading.Thread(target=self._flush_every, args=(flush_seconds,), name="metrics-flush", daemon=True).start()
        atexit.register(self.flush)

    def add(self, counter, amount: float) -> None:
        """Add ``amount`` to a counter child (call with ``lock`` held)."""
        self.counters[counter] = self.counters.get(counter, 0) + amount

    def observe(self, histogram, bounds: tuple[float, ...], value: float) -> None:
        """Record one observation of a histogram child whose upper bounds are ``bounds`` (lock held)."""
        entry = self.histograms.get(histogram)
        if entry is None:
            entry = self.histograms[histogram] = [0.0, [0] * len(bounds)]
        entry[0] += value
        entry[1][bisect_left(bounds, value)] += 1

    def flush(self) -> None:
        """Write everything pending to the metric values."""
        with self.lock:
            counters, self.counters = self.counters, {}
            histograms, self.histograms = self.histograms, {}
        for counter, amount in counters.items():
            counter.inc(amount)
        for histogram, (total, counts) in histograms.items():
            add_observations(histogram, total, counts)

    def _flush_every(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            self.flush()


def _bounds(buckets: Sequence[float]) -> tuple[float, ...]:
    return (*map(float, buckets), float("inf"))


class Metrics:
    """The service's metric objects, registered in a registry of their own.

    With ``enabled`` false every ``observe_*`` call returns at once (the overhead baseline);
    ``/metrics`` then lists the families without counting (``model_info`` stays 1).
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, phases: Sequence[str], enabled: bool = True):
        """The model's own labels (``model_info``, the per-column counters) come with ``set_model``."""
        self.enabled = enabled
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("http_requests", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=r)
        self.duration = Histogram("http_request_duration_seconds", "Request duration by endpoint",
                                  ["endpoint"], buckets=DURATION_BUCKETS, registry=r)
        self.rows = Histogram("predict_rows_per_request", "Rows per /predict request that was read",
                              buckets=ROW_BUCKETS, registry=r)
        self.rows_scored = Counter("predict_rows_scored", "Rows answered with a prediction", registry=r)
        self.rows_invalid = Counter("predict_rows_invalid", "Rows with at least one invalid cell", registry=r)
        self.rows_rejected = Counter(
            "predict_rows_rejected", "Invalid cells by column and reason (a row with two bad cells counts twice)",
            ["column", "reason"], registry=r)
        self.positives = Counter("predict_positive_rows", "Rows predicted positive", registry=r)
        self.phase = Histogram("predict_phase_seconds", "Time per phase of a scored /predict request",
                               ["phase"], buckets=PHASE_BUCKETS, registry=r)
        self.missing = Counter("predict_column_missing", "Missing values in scored rows, per consumed column",
                               ["column"], registry=r)
        self.out_of_range = Counter(
            "predict_column_out_of_range", "Scored values outside the training range, per consumed numeric column",
            ["column"], registry=r)
        self.column_problems = Counter(
            "predict_column_problems", "Column report of /predict bodies, per consumed column: absent (requests), "
            "near_miss (requests with a name that nearly matches it), far_outside_training (values)",
            ["column", "problem"], registry=r)
        # The info-metric convention (a gauge of 1 whose labels carry the facts): prometheus_client's
        # Info type does not work in multiprocess mode.
        self.model = Gauge("model_info", "The served model (1; 0 for a version this worker switched away from)",
                           ["version", "created_at"], registry=r, multiprocess_mode="livemax")
        self.switches = Counter("model_switches", "Switches of a worker to another model version, by version",
                                ["version"], registry=r)
        self.switch_failures = Counter(
            "model_switch_failures", "Versions a worker could not switch to (it kept its model), by version",
            ["version"], registry=r)
        # API keys (service/http/auth.py): requests let through per key name, and refusals per reason.
        self.key_requests = Counter("api_key_requests", "Requests to protected paths by API key name", ["key"],
                                    registry=r)
        self.key_refusals = Counter("api_key_refusals", "Requests refused with 401, by reason (missing, unknown)",
                                    ["reason"], registry=r)
        self.key_file_failures = Counter(
            "api_key_file_failures", "Changes of the API key file that could not be read (the last good keys stay)",
            registry=r)
        self._model = None
        # set_model runs in a worker's switch thread; render re-sets the gauge in a request.
        self._model_lock = threading.Lock()
        # Resolved once: labels() takes a lock and a dict lookup on every call.
        self._phases = {p: self.phase.labels(p) for p in phases}
        self._missing: dict[str, Counter] = {}
        self._out_of_range: dict[str, Counter] = {}
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._duration_bounds = _bounds(DURATION_BUCKETS)
        self._row_bounds = _bounds(ROW_BUCKETS)
        self._phase_bounds = _bounds(PHASE_BUCKETS)
        self._pending_writes: PendingWrites | None = None
        self._labelled: dict[tuple[Counter, str], Counter] = {}

    def set_model(self, version: str, created_at: str, consumed_columns: Sequence[str]) -> None:
        """Name the model now served in ``model_info`` (the one before goes to 0), and make the
        per-column counters of its consumed columns (listed at zero until counted)."""
        with self._model_lock:
            if self._model is not None:
                self._model.set(0)
            self._model = self.model.labels(version=version, created_at=created_at)
            self._model.set(1)
        for column in consumed_columns:
            if column not in self._missing:
                self._missing[column] = self.missing.labels(column)
            if kind_of(column) in NUMERIC_KINDS and column not in self._out_of_range:
                self._out_of_range[column] = self.out_of_range.labels(column)

    def count_switch(self, version: str, failed: bool = False) -> None:
        """Count a switch of this worker to ``version``, or a failed attempt (``failed``)."""
        (self.switch_failures if failed else self.switches).labels(version).inc()

    def _pending(self) -> PendingWrites:
        """This process's pending writes; a forked worker starts its own (with its own thread)."""
        pending = self._pending_writes
        if pending is None or pending.pid != os.getpid():
            pending = self._pending_writes = PendingWrites()
        return pending

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float, key: str | None = None) -> None:
        """Count one finished request (``key``: the name of the API key it came with)."""
        if not self.enabled:
            return
        if key is not None:
            self._count(self.key_requests, key)
        key = (endpoint, method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(endpoint, method, str(status))
        histogram = self._durations.get(endpoint)
        if histogram is None:
            histogram = self._durations[endpoint] = self.duration.labels(endpoint)
        pending = self._pending()
        with pending.lock:
            pending.add(counter, 1)
            pending.observe(histogram, self._duration_bounds, seconds)

    def observe_refusal(self, reason: str) -> None:
        """Count one request refused for its API key (missing or unknown)."""
        if self.enabled:
            self._count(self.key_refusals, reason)

    def count_key_file_failure(self) -> None:
        """Count a change of the key file that could not be read (counted even with metrics off:
        it is rare and an operator must see it)."""
        self.key_file_failures.inc()

    def _count(self, family: Counter, label: str) -> None:
        """One more on the child ``label`` of ``family``, through the pending writes."""
        child = self._labelled.get((family, label))
        if child is None:
            child = self._labelled[(family, label)] = family.labels(label)
        pending = self._pending()
        with pending.lock:
            pending.add(child, 1)

    def observe_prediction(self, *, n_rows: int, n_scored: int, n_invalid: int, n_positive: int,
                           errors: Iterable[CellError], phases: dict[str, float] | None = None,
                           drift: DriftCounts | None = None) -> None:
        """Count the rows of one /predict request that was read: scored (possibly with inline
        errors, with its phase times and drift counts) or refused with 422 (nothing scored)."""
        if not self.enabled:
            return
        rejections = _count_rejections(errors)
        pending = self._pending()
        with pending.lock:
            pending.observe(self.rows, self._row_bounds, n_rows)
            if n_scored:
                pending.add(self.rows_scored, n_scored)
            if n_positive:
                pending.add(self.positives, n_positive)
            if n_invalid:
                pending.add(self.rows_invalid, n_invalid)
            for (column, reason), count in rejections.items():
                pending.add(self.rows_rejected.labels(column, reason), count)
            for phase, seconds in (phases or {}).items():
                pending.observe(self._phases[phase], self._phase_bounds, seconds)
            if drift is not None:
                for column, count in drift.missing.items():
                    pending.add(self._missing[column], count)
                for column, count in drift.out_of_range.items():
                    pending.add(self._out_of_range[column], count)

    def observe_columns(self, report: ColumnReport) -> None:
        """Count one body's column report (lib.core.columns): labels are consumed columns only."""
        if not self.enabled or not report:
            return
        counts = [(column, "absent", 1) for column in report.absent]
        counts += [(column, "near_miss", 1) for column in dict.fromkeys(report.suggestions.values())]
        counts += [(column, "far_outside_training", n) for column, n in report.far.items()]
        pending = self._pending()
        for column, problem, count in counts:
            child = self._labelled.get((self.column_problems, (column, problem)))
            if child is None:
                child = self._labelled[(self.column_problems, (column, problem))] = \
                    self.column_problems.labels(column, problem)
            with pending.lock:
                pending.add(child, count)

    def render(self) -> bytes:
        """The Prometheus text exposition, aggregated over workers when under gunicorn."""
        if self._pending_writes is not None and self._pending_writes.pid == os.getpid():
            self._pending_writes.flush()
        # Written again by the worker that answers: gunicorn clears the samples directory after
        # the preloading master wrote it, and "livemax" drops the gauges of dead workers.
        with self._model_lock:
            if self._model is not None:
                self._model.set(1)
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def _count_rejections(errors: Iterable[CellError]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for error in errors:
        key = (error.column, rejection_reason(error.column, error.message))
        counts[key] = counts.get(key, 0) + 1
    return counts
