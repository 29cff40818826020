"""Per-request metrics are tallied in the worker and written out by flush()."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mlkube.serving.metrics import LATENCY_BUCKETS, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
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
