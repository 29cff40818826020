"""Per-request metrics are tallied in the worker and written out by flush()."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from mlkube.serving.metrics import LATENCY_BUCKETS, Metrics, _histogram_cells


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return parse(metrics.exposition())


def parse(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by (name, the labels that vary here); model/version/revision are constant."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            labels = tuple(
                sorted((k, v) for k, v in s.labels.items() if k in ("endpoint", "code", "le"))
            )
            out[(s.name, labels)] = s.value
    return out


def test_flush_writes_exactly_what_was_observed() -> None:
    metrics = Metrics("bandit", "1", "r1")
    latencies = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.2, 7.0]  # edges, middles, beyond +Inf
    for seconds in latencies:
        metrics.observe_request("infer", 200, seconds)
    metrics.observe_request("infer", 400, 0.001)
    metrics.count_items(400)
    metrics.count_items(3)
    metrics.inflight_now = 2

    before = samples(metrics)
    assert ("mlkube_requests_total", (("code", "200"), ("endpoint", "infer"))) not in before

    metrics.flush()
    metrics.flush()  # nothing new: nothing added twice
    got = samples(metrics)
    assert got["mlkube_requests_total", (("code", "200"), ("endpoint", "infer"))] == 7
    assert got["mlkube_requests_total", (("code", "400"), ("endpoint", "infer"))] == 1
    observed = [*latencies, 0.001]
    for bound in LATENCY_BUCKETS:
        key = (
            "mlkube_request_duration_seconds_bucket",
            (("endpoint", "infer"), ("le", str(bound))),
        )
        assert got[key] == sum(1 for s in observed if s <= bound), bound
    inf = ("mlkube_request_duration_seconds_bucket", (("endpoint", "infer"), ("le", "+Inf")))
    assert got[inf] == len(observed)
    assert got["mlkube_request_duration_seconds_count", (("endpoint", "infer"),)] == len(observed)
    total = got["mlkube_request_duration_seconds_sum", (("endpoint", "infer"),)]
    assert abs(total - sum(observed)) < 1e-9
    assert got["mlkube_items_scored_total", ()] == 403
    assert got["mlkube_inflight_requests", ()] == 2

    metrics.observe_request("infer", 200, 0.002)
    metrics.inflight_now = 0
    metrics.flush()
    got = samples(metrics)
    assert got["mlkube_requests_total", (("code", "200"), ("endpoint", "infer"))] == 8
    assert got["mlkube_inflight_requests", ()] == 0


# --- the flusher's use of prometheus-client internals (_histogram_cells) ---------------------
#
# The flusher adds whole bucket counts to the histogram child's private value cells; these
# tests pin what that must produce, in the mode production runs in (multiprocess: separate
# processes writing mmap'd files, merged by MultiProcessCollector) and in single-process mode.
# A prometheus-client that changes those internals fails here, loudly.

# Two workers' requests: (endpoint, code, seconds). Latencies below the first bound, on bounds
# (a bound is inclusive: le), between bounds and beyond the last (+Inf only).
WORKER_REQUESTS = (
    [
        ("infer", 200, 0.0001),
        ("infer", 200, 0.0005),
        ("infer", 200, 0.003),
        ("infer", 200, 0.005),
        ("infer", 500, 0.2),
        ("explain", 200, 5.0),
        ("explain", 200, 7.0),
    ],
    [
        ("infer", 200, 0.0007),
        ("infer", 200, 0.003),
        ("infer", 400, 0.001),
        ("infer", 200, 2.4),
        ("explain", 200, 0.05),
    ],
)
WORKER_ITEMS = ([400, 3], [7])

# One worker process: tallies its share in two flushes (the second adds to values the first
# wrote), then exits. The directory is in the environment before prometheus_client is imported,
# as `mlkube serve` does it.
_WORKER = """
import json, sys
from mlkube.serving.metrics import Metrics
requests, items = json.loads(sys.argv[1])
metrics = Metrics("bandit", "1", "r1")
half = len(requests) // 2
for part in (requests[:half], requests[half:]):
    for endpoint, code, seconds in part:
        metrics.observe_request(endpoint, code, seconds)
    metrics.flush()
for n in items:
    metrics.count_items(n)
metrics.flush()
metrics.flush()  # nothing new: nothing added twice
"""


def expected_samples(
    requests: list[tuple[str, int, float]], items: list[int]
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What the exposition must say for these requests, computed without prometheus-client."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for endpoint, code, _ in requests:
        key = ("mlkube_requests_total", (("code", str(code)), ("endpoint", endpoint)))
        out[key] = out.get(key, 0) + 1
    for endpoint in {e for e, _, _ in requests}:
        seen = [s for e, _, s in requests if e == endpoint]
        for bound in (*LATENCY_BUCKETS, math.inf):
            le = "+Inf" if bound == math.inf else str(bound)
            out["mlkube_request_duration_seconds_bucket", (("endpoint", endpoint), ("le", le))] = (
                sum(1 for s in seen if s <= bound)
            )
        out["mlkube_request_duration_seconds_count", (("endpoint", endpoint),)] = len(seen)
        out["mlkube_request_duration_seconds_sum", (("endpoint", endpoint),)] = sum(seen)
    out["mlkube_items_scored_total", ()] = sum(items)
    return out


def assert_flushed(
    got: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    requests: list[tuple[str, int, float]],
    items: list[int],
) -> None:
    want = expected_samples(requests, items)
    names = {name for name, _ in want}
    # Exactly these series: no bucket, code or endpoint more or less.
    assert {k for k in got if k[0] in names} == set(want)
    for key, value in want.items():
        if key[0].endswith("_sum"):
            assert math.isclose(got[key], value, rel_tol=1e-12), key
        else:
            assert got[key] == value, key


def test_flush_in_multiprocess_mode_merges_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps([requests, items])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for requests, items in zip(WORKER_REQUESTS, WORKER_ITEMS, strict=True)
    ]
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, f"worker failed:\n{out}\n{err}"
    assert len(list(tmp_path.glob("histogram_*.db"))) == 2  # one per worker process

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    merged = parse(generate_latest(registry))
    all_requests = [r for requests in WORKER_REQUESTS for r in requests]
    all_items = [n for items in WORKER_ITEMS for n in items]
    assert_flushed(merged, all_requests, all_items)
    # The runtime's own /metrics body is that same merge.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert parse(Metrics("bandit", "1", "r1").exposition()) == merged


def test_flush_in_single_process_mode_matches_observe() -> None:
    """The bulk flush gives what prometheus-client's own observe() gives for the same requests."""
    requests = [r for reqs in WORKER_REQUESTS for r in reqs]
    metrics = Metrics("bandit", "1", "r1")
    reference = Histogram(
        "mlkube_request_duration_seconds",
        "reference",
        ["endpoint"],
        buckets=LATENCY_BUCKETS,
        registry=CollectorRegistry(),
    )
    for endpoint, code, seconds in requests:
        metrics.observe_request(endpoint, code, seconds)
        reference.labels(endpoint).observe(seconds)
    metrics.count_items(11)
    metrics.flush()
    got = samples(metrics)
    assert_flushed(got, requests, [11])
    for family in reference.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            key = (s.name, tuple(sorted(s.labels.items())))
            assert math.isclose(got[key], s.value, rel_tol=1e-12), key


def test_histogram_cells_refuses_an_unknown_layout() -> None:
    child = Histogram("h", "h", ["a"], buckets=(1.0, 2.0), registry=CollectorRegistry()).labels("x")
    buckets, total = _histogram_cells(child, 3)
    assert len(buckets) == 3
    assert callable(total.inc)
    with pytest.raises(RuntimeError, match="layout changed"):
        _histogram_cells(child, 4)
    with pytest.raises(RuntimeError, match="internals changed"):
        _histogram_cells(Counter("c", "c", registry=CollectorRegistry()), 3)  # type: ignore[arg-type]
