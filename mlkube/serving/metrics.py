"""Prometheus metrics of the serving runtime, correct across worker processes.

``mlkube serve`` runs several worker processes; prometheus-client's multiprocess mode (every
process writes its values to mmap'd files under ``PROMETHEUS_MULTIPROC_DIR``, ``/metrics``
merges them) makes one scrape see all of them. The directory must be set in the environment
before prometheus_client is imported, which the CLI's master process does first thing.

Label children for the hot path are resolved once and cached: ``labels()`` is a dict lookup
plus tuple building that is not worth paying per request.

The per-request metrics (requests, latency histogram, items scored, in-flight requests) are
tallied in plain Python and written to prometheus-client's values by :meth:`Metrics.flush`,
which the runtime calls every :data:`FLUSH_INTERVAL` seconds, before serving ``/metrics`` and
at shutdown. A multiprocess value update takes a lock, asks for the process id (a system
call) and writes the mmap'd file: the six a request made cost about 5 us of its CPU time
(``bench/serve.py --breakdown``). A scrape therefore sees the other workers' counts at most
``FLUSH_INTERVAL`` late, and its own exactly.

prometheus-client has no public way to add many observations to a histogram at once, and the
values must land in the mmap'd files that ``MultiProcessCollector`` merges (a custom collector
in the worker would never be read by ``/metrics``, which reads only those files). So the
flusher adds to the histogram child's own value cells, the ones ``observe`` increments: the
only use of prometheus-client internals in mlkube, confined to :func:`_histogram_cells`,
verified for the range pinned in ``pyproject.toml`` and pinned down by
``tests/unit/serving/test_metrics.py`` in single-process and real multiprocess mode.
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
SHARE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

CONTENT_TYPE = CONTENT_TYPE_LATEST
FLUSH_INTERVAL = 0.25  # seconds between writes of the per-request tallies
# Upper bounds of the latency histogram's buckets, +Inf included (as prometheus-client has them).
_LATENCY_BOUNDS = (*LATENCY_BUCKETS, math.inf)
_SHARE_BOUNDS = (*SHARE_BUCKETS, math.inf)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """All runtime metrics, with the constant labels model/version/revision bound."""

    def __init__(self, model: str, version: str, revision: str) -> None:
        self.model, self.version, self.revision = model, version, revision
        # Metrics always live in a private registry: in multiprocess mode the values go to the
        # mmap files anyway and /metrics reads those; in single-process mode (tests) each app
        # gets its own registry so several apps can coexist in one interpreter.
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        base = ["model", "version", "revision"]

        def revision_gauge(
            name: str, documentation: str, mode: Literal["livesum", "livemax", "max"]
        ) -> Gauge:
            """A gauge of the pods of one revision (labels model and revision): ``mode``
            says how the workers' values merge into one series."""
            return Gauge(
                name, documentation, ["model", "revision"], multiprocess_mode=mode, registry=reg
            )

        self.requests = Counter(
            "mlkube_requests_total",
            "Requests answered, by endpoint and HTTP status code.",
            [*base, "endpoint", "code"],
            registry=reg,
        )
        self.duration = Histogram(
            "mlkube_request_duration_seconds",
            "Time from request start to response ready, by endpoint.",
            [*base, "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.inflight = revision_gauge(
            "mlkube_inflight_requests",
            "Requests being processed now (summed over workers).",
            "livesum",
        )
        self.items_scored = Counter(
            "mlkube_items_scored_total",
            "Candidate items scored by predictions.",
            base,
            registry=reg,
        )
        self.feedback_items = Counter(
            "mlkube_feedback_items_total",
            "Feedback (item, reward) pairs applied to the feature store.",
            base,
            registry=reg,
        )
        # Rewards by the revision that scored the items (the feedback's ticket), whichever pod
        # received the feedback: the canary analysis' rewardRate reads these two.
        self.reward_items = Counter(
            "mlkube_reward_items_total",
            "Scored items with feedback, by the revision that scored them.",
            ["model", "revision"],
            registry=reg,
        )
        self.rewards = Counter(
            "mlkube_rewards_total",
            "Sum of the rewards of scored items, by the revision that scored them.",
            ["model", "revision"],
            registry=reg,
        )
        self.unattributed = Counter(
            "mlkube_feedback_unattributed_items_total",
            "Feedback items credited to no revision: ticket missing, unknown or expired.",
            ["model", "reason"],
            registry=reg,
        )
        # Shadow copies this (stable) pod sent to the canary: ``target`` is the revision the
        # canary's answer named.
        shadow_labels = ["model", "revision", "target"]
        self.shadow_requests = Counter(
            "mlkube_shadow_requests_total",
            "Shadow copies answered by the target revision, by outcome (ok or error).",
            [*shadow_labels, "outcome"],
            registry=reg,
        )
        self.shadow_dropped = Counter(
            "mlkube_shadow_dropped_total",
            "Shadow copies dropped because the queue was full.",
            ["model", "revision"],
            registry=reg,
        )
        self.shadow_duration = Histogram(
            "mlkube_shadow_duration_seconds",
            "Latency of the target revision's answers to shadow copies.",
            shadow_labels,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.shadow_overlap = Histogram(
            "mlkube_shadow_ranking_overlap",
            "Share of our top-k ranking that the target's top-k ranking also holds.",
            shadow_labels,
            buckets=SHARE_BUCKETS,
            registry=reg,
        )
        self.shadow_drift = Histogram(
            "mlkube_shadow_score_drift",
            "Mean absolute difference of our scores and the target's, per copy.",
            shadow_labels,
            buckets=SHARE_BUCKETS,
            registry=reg,
        )
        self.degraded = Counter(
            "mlkube_degraded_responses_total",
            "Predictions answered in degraded mode (stale snapshot or open circuit).",
            [*base, "reason"],
            registry=reg,
        )
        self.store_duration = Histogram(
            "mlkube_feature_store_duration_seconds",
            "Feature-store call latency, by operation.",
            ["model", "revision", "operation"],
            buckets=STORE_BUCKETS,
            registry=reg,
        )
        self.store_errors = Counter(
            "mlkube_feature_store_errors_total",
            "Feature-store calls that failed (or were refused by the open circuit).",
            ["model", "revision", "operation"],
            registry=reg,
        )
        self.staleness = revision_gauge(
            "mlkube_feature_store_staleness_seconds",
            "Age of the oldest feature snapshot a worker serves from (max over workers).",
            "livemax",
        )
        self.staleness_bound = revision_gauge(
            "mlkube_feature_store_staleness_bound_seconds",
            "Configured staleness bound; older snapshots make predictions degraded.",
            "max",
        )
        self.circuit = revision_gauge(
            "mlkube_circuit_state",
            "Feature-store circuit breaker: 0 closed, 1 open, 2 half-open (max over workers).",
            "livemax",
        )
        self.batch_size = Histogram(
            "mlkube_batch_size",
            "Requests per predict call made by the dynamic batcher.",
            ["model", "revision"],
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.snapshot_items = revision_gauge(
            "mlkube_feature_snapshot_items",
            "Items held in a worker's feature snapshot (summed over workers).",
            "livesum",
        )
        self.execution_provider = Gauge(
            "mlkube_model_execution_provider",
            "1 for the execution provider the model runs on (ONNX models: "
            "CPUExecutionProvider, CUDAExecutionProvider, ...).",
            ["model", "revision", "provider"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        self._request_children: dict[tuple[str, int], Any] = {}
        # The latency histogram's value cells by endpoint: (one per bound, the sum).
        self._duration_cells: dict[str, tuple[list[Any], Any]] = {}
        # Tallies since the last flush(): requests by (endpoint, code); latency bucket counts
        # by endpoint (one per bound, then the sum of the seconds); items scored.
        self._requests_tally: dict[tuple[str, int], int] = {}
        self._latency_tally: dict[str, list[float]] = {}
        self._items_tally = 0
        # Shadow copies since the last flush, by target: see observe_shadow().
        self._shadow_tally: dict[str, _ShadowTally] = {}
        self._shadow_dropped_tally = 0
        # Cached children per (series, target): the copies' targets are few.
        self._shadow_children: dict[tuple[str, str], Any] = {}
        self.inflight_now = 0  # requests being processed now (published by flush())
        self.inflight_child = self.inflight.labels(model, revision)
        self.items_child = self.items_scored.labels(model, version, revision)
        self.feedback_child = self.feedback_items.labels(model, version, revision)
        self.staleness_child = self.staleness.labels(model, revision)
        self.circuit_child = self.circuit.labels(model, revision)
        self.batch_child = self.batch_size.labels(model, revision)
        self.snapshot_items_child = self.snapshot_items.labels(model, revision)
        self.shadow_dropped_child = self.shadow_dropped.labels(model, revision)
        self.circuit_child.set(0)
        self.staleness_child.set(0)
        # This revision's reward series exist from the start (at 0), so that Prometheus'
        # increase() counts the first feedback credited to it on this pod.
        self.reward_items.labels(model, revision)
        self.rewards.labels(model, revision)
        # Fail at worker start, not at the first flush, on a prometheus-client whose Histogram
        # no longer has the layout the flusher relies on (the batch histogram's cells are as
        # good a probe as any: same class).
        _histogram_cells(self.batch_child, len(BATCH_BUCKETS) + 1)

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        """Count one answered request and its latency (written out by flush())."""
        key = (endpoint, code)
        tally = self._requests_tally
        tally[key] = tally.get(key, 0) + 1
        latency = self._latency_tally.get(endpoint)
        if latency is None:
            latency = self._latency_tally[endpoint] = [0.0] * (len(_LATENCY_BOUNDS) + 1)
        latency[bisect_left(_LATENCY_BOUNDS, seconds)] += 1
        latency[-1] += seconds

    def count_items(self, n: int) -> None:
        """Count ``n`` candidate items scored (written out by flush())."""
        self._items_tally += n

    def flush(self) -> None:
        """Write the tallies since the last flush to the Prometheus values."""
        requests, self._requests_tally = self._requests_tally, {}
        for (endpoint, code), n in requests.items():
            child = self._request_children.get((endpoint, code))
            if child is None:
                child = self.requests.labels(
                    self.model, self.version, self.revision, endpoint, code
                )
                self._request_children[(endpoint, code)] = child
            child.inc(n)
        latency, self._latency_tally = self._latency_tally, {}
        for endpoint, counts in latency.items():
            cells = self._duration_cells.get(endpoint)
            if cells is None:
                hist = self.duration.labels(self.model, self.version, self.revision, endpoint)
                cells = self._duration_cells[endpoint] = _histogram_cells(
                    hist, len(_LATENCY_BOUNDS)
                )
            buckets, total = cells
            for value, count in zip(buckets, counts, strict=False):
                if count:
                    value.inc(count)
            total.inc(counts[-1])
        if self._items_tally:
            self.items_child.inc(self._items_tally)
            self._items_tally = 0
        if self._shadow_dropped_tally:
            self.shadow_dropped_child.inc(self._shadow_dropped_tally)
            self._shadow_dropped_tally = 0
        shadow, self._shadow_tally = self._shadow_tally, {}
        for target, tally in shadow.items():
            self._flush_shadow(target, tally)
        self.inflight_child.set(self.inflight_now)

    def observe_store(self, operation: str, seconds: float | None) -> None:
        """Record one store call; ``seconds=None`` records a failure."""
        if seconds is None:
            self.store_errors.labels(self.model, self.revision, operation).inc()
        else:
            self.store_duration.labels(self.model, self.revision, operation).observe(seconds)

    def count_rewards(self, revision: str, items: int, rewards: float) -> None:
        """Credit one applied feedback request to the revision that scored its items."""
        self.reward_items.labels(self.model, revision).inc(items)
        self.rewards.labels(self.model, revision).inc(rewards)

    def count_unattributed(self, reason: str, items: int) -> None:
        self.unattributed.labels(self.model, reason).inc(items)

    def count_shadow_dropped(self) -> None:
        """One shadow copy dropped: the queue was full (written out by flush())."""
        self._shadow_dropped_tally += 1

    def observe_shadow(
        self, target: str, ok: bool, seconds: float, overlap: float | None, drift: float | None
    ) -> None:
        """One shadow copy's outcome, latency and comparison (None: not comparable, or the
        copy failed); tallied like the requests and written out by flush()."""
        tally = self._shadow_tally.get(target)
        if tally is None:
            tally = self._shadow_tally[target] = _ShadowTally()
        if ok:
            tally.ok += 1
        else:
            tally.error += 1
        tally.duration[bisect_left(_LATENCY_BOUNDS, seconds)] += 1
        tally.duration[-1] += seconds
        if overlap is not None:
            tally.overlap[bisect_left(_SHARE_BOUNDS, overlap)] += 1
            tally.overlap[-1] += overlap
        if drift is not None:
            tally.drift[bisect_left(_SHARE_BOUNDS, drift)] += 1
            tally.drift[-1] += drift

    def _shadow_child(self, series: str, target: str) -> Any:
        child = self._shadow_children.get((series, target))
        if child is None:
            labels = (self.model, self.revision, target)
            if series == "ok" or series == "error":
                child = self.shadow_requests.labels(*labels, series)
            else:
                hist = {
                    "duration": self.shadow_duration,
                    "overlap": self.shadow_overlap,
                    "drift": self.shadow_drift,
                }[series]
                n_bounds = len(_LATENCY_BOUNDS if series == "duration" else _SHARE_BOUNDS)
                child = _histogram_cells(hist.labels(*labels), n_bounds)
            self._shadow_children[(series, target)] = child
        return child

    def _flush_shadow(self, target: str, tally: _ShadowTally) -> None:
        # Series are created on their first observation, as observe() would.
        for outcome, n in (("ok", tally.ok), ("error", tally.error)):
            if n:
                self._shadow_child(outcome, target).inc(n)
        for series, counts in (
            ("duration", tally.duration),
            ("overlap", tally.overlap),
            ("drift", tally.drift),
        ):
            if not any(counts[:-1]):
                continue
            buckets, total = self._shadow_child(series, target)
            for value, count in zip(buckets, counts, strict=False):
                if count:
                    value.inc(count)
            total.inc(counts[-1])

    def mark_degraded(self, reason: str) -> None:
        self.degraded.labels(self.model, self.version, self.revision, reason).inc()

    def set_execution_provider(self, provider: str) -> None:
        self.execution_provider.labels(self.model, self.revision, provider).set(1)

    def set_staleness_bound(self, seconds: float) -> None:
        self.staleness_bound.labels(self.model, self.revision).set(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format, merged over all workers in multiprocess mode.

        Call flush() first (in the thread that records requests) for this worker's latest."""
        if multiprocess_dir() is not None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


class _ShadowTally:
    """One target's shadow copies since the last flush: outcomes, and per histogram the
    count of each bucket (one per bound, +Inf included) then the sum."""

    __slots__ = ("drift", "duration", "error", "ok", "overlap")

    def __init__(self) -> None:
        self.ok = self.error = 0
        self.duration = [0.0] * (len(_LATENCY_BOUNDS) + 1)
        self.overlap = [0.0] * (len(_SHARE_BOUNDS) + 1)
        self.drift = [0.0] * (len(_SHARE_BOUNDS) + 1)


def _histogram_cells(child: Histogram, n_bounds: int) -> tuple[list[Any], Any]:
    """The value cells a labelled Histogram child's ``observe`` increments: (buckets, sum).

    prometheus-client has no bulk observe, so :meth:`Metrics.flush` adds a whole interval's
    bucket counts and seconds to these cells with ``inc(n)`` instead of calling ``observe``
    once per request. This relies on prometheus-client internals (checked with the tests on
    0.20.0, 0.21.1, 0.22.1, 0.23.1, 0.24.1, 0.25.0 and 0.26.0; ``pyproject.toml`` pins
    ``>=0.20,<0.27``):

    - ``child._buckets``: a list with one value per upper bound, ``+Inf`` included, in bound
      order, each holding the count of its bucket alone (not cumulative: exposition adds
      them up);
    - ``child._sum``: the value holding the sum of the observations;
    - each value is a ``prometheus_client.values.ValueClass`` instance whose ``inc(amount)``
      adds ``amount``; in multiprocess mode that is the mmap'd value under the same key that
      ``observe`` writes, so ``MultiProcessCollector`` merges it like any observation.

    A missing attribute or a different bucket count raises here, first at worker start (the
    :class:`Metrics` constructor probes its batch histogram, a child of the same class); a
    changed meaning of the cells fails the exact-exposition tests in
    ``tests/unit/serving/test_metrics.py``.
    """
    try:
        buckets, total = child._buckets, child._sum
    except AttributeError as exc:
        raise RuntimeError(
            f"prometheus-client's Histogram internals changed ({exc}): the metrics flusher "
            "cannot add tallies; use a prometheus-client in the range pyproject.toml pins"
        ) from exc
    if len(buckets) != n_bounds or not callable(getattr(total, "inc", None)):
        raise RuntimeError(
            f"prometheus-client's Histogram layout changed ({len(buckets)} bucket values for "
            f"{n_bounds} bounds): the metrics flusher cannot add tallies; use a "
            "prometheus-client in the range pyproject.toml pins"
        )
    return list(buckets), total
