"""GPU signals from dcgm-exporter: which series a query selects, and what the autoscaler and
the canary analysis make of the values (the real-Prometheus test runs these queries)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from mlkube.api.rollout import Analysis, AnalysisMetric, AutoscalingSpec, ScaleRecord, Verdict
from mlkube.operator import gpu
from mlkube.operator.analysis import (
    NO_PODS,
    SAMPLES_KEY,
    PrometheusQuerier,
    QueryContext,
    QueryOutcome,
    QueryStatus,
    canary_key,
    evaluate,
    plan_queries,
    stable_key,
)
from mlkube.operator.autoscaler import desired_replicas, load_query
from mlkube.operator.config import ConfigError, parse_config

PODS = {"aaaa1111": ("ranker-5d8f-abcde", "ranker-5d8f-fghij"), "bbbb2222": ("ranker-canary-7c-x",)}
CTX = QueryContext("prod", "ranker", "ranker", "aaaa1111", "bbbb2222", 60, pods=PODS)
UTIL = gpu.SIGNALS["gpuUtilization"]


def test_the_query_selects_the_pods_under_each_label_mapping_and_keys_them_alike() -> None:
    q = gpu.per_pod_query(UTIL, "prod", ["b.x", "a"], 60)
    direct = 'DCGM_FI_DEV_GPU_UTIL{namespace="prod",pod=~"a|b\\\\.x"}[60s]'
    exported = 'DCGM_FI_DEV_GPU_UTIL{exported_namespace="prod",exported_pod=~"a|b\\\\.x"}[60s]'
    assert q == (
        f'avg by (mlkube_pod) (label_replace(avg_over_time({direct}), "mlkube_pod", "$1", '
        f'"pod", "(.+)")) or avg by (mlkube_pod) (label_replace(avg_over_time({exported}), '
        f'"mlkube_pod", "$1", "exported_pod", "(.+)"))'
    )
    memory = gpu.per_pod_query(gpu.SIGNALS["gpuMemoryUsed"], "prod", ["a"], 30, [
        gpu.LabelMapping("pod_namespace", "pod_name")
    ])  # fmt: skip
    assert memory.startswith("sum by (mlkube_pod) (label_replace(avg_over_time(DCGM_FI_DEV_FB_USED")
    assert 'pod_namespace="prod",pod_name=~"a"}[30s]' in memory
    assert " or " not in memory
    with pytest.raises(ValueError, match="no pods"):
        gpu.per_pod_query(UTIL, "prod", [], 60)


def test_a_namespace_cannot_break_out_of_its_string() -> None:
    q = gpu.service_query(UTIL, 'x",namespace=~".*', ["a"], 60)
    assert 'namespace="x\\",namespace=~\\".*"' in q


def test_label_mappings_parse_and_refuse() -> None:
    assert gpu.parse_label_mappings(" namespace:pod , exported_namespace:exported_pod ") == (
        gpu.DEFAULT_LABEL_MAPPINGS
    )
    for bad in ("", "namespace", "name-space:pod", "a:b:c", "a:b,a:b"):
        with pytest.raises(ValueError, match=r"NAMESPACE_LABEL:POD_LABEL|listed twice"):
            gpu.parse_label_mappings(bad)
    config = parse_config(["--gpu-metric-labels", "pod_namespace:pod_name"], {})
    assert config.gpu_metric_labels == (gpu.LabelMapping("pod_namespace", "pod_name"),)
    assert parse_config([], {}).gpu_metric_labels == gpu.DEFAULT_LABEL_MAPPINGS
    with pytest.raises(ConfigError, match="MLKUBE_GPU_METRIC_LABELS='pod'"):
        parse_config([], {"MLKUBE_GPU_METRIC_LABELS": "pod"})


def test_pods_by_revision_from_cached_pods() -> None:
    def pod(name: str, revision: str | None) -> dict[str, object]:
        labels = {"mlkube.dev/revision": revision} if revision else {}
        return {"metadata": {"name": name, "labels": labels}}

    pods = [pod("b", "r1"), pod("a", "r1"), pod("c", "r2"), pod("d", None)]
    assert gpu.pods_by_revision(pods, "mlkube.dev/revision") == {"r1": ("a", "b"), "r2": ("c",)}


def test_autoscaler_sums_the_signal_over_every_pod_of_the_service() -> None:
    policy = AutoscalingSpec(signal="gpuUtilization", target=60, maxReplicas=10)
    q = load_query(policy, CTX)
    assert q.startswith("sum(avg by (mlkube_pod)")
    assert 'pod=~"ranker-5d8f-abcde|ranker-5d8f-fghij|ranker-canary-7c-x"' in q
    assert load_query(policy, QueryContext("prod", "ranker", "ranker", "a", "", 60)) == NO_PODS

    # Two pods at 90% against 60% per replica: three replicas.
    now = datetime(2026, 1, 1, tzinfo=UTC)
    history = [ScaleRecord(time=now - timedelta(minutes=10), replicas=2)]
    decision = desired_replicas(180.0, policy, 2, history, now)
    assert decision.replicas == 3
    assert "gpuUtilization 180 / target 60 per replica = 3" in decision.reason


def test_analysis_judges_the_canary_pods_typical_gpu() -> None:
    analysis = Analysis(
        metrics=[
            AnalysisMetric(name="gpuUtilization", max=90),
            AnalysisMetric(name="gpuMemoryUsed", compare={"max": 1.2}),
        ],
        minSampleCount=0,
    )
    plan = plan_queries(analysis, CTX)
    canary_util = plan[canary_key(analysis.metrics[0])]
    assert canary_util.startswith("avg(avg by (mlkube_pod)")
    assert 'pod=~"ranker-canary-7c-x"' in canary_util
    assert 'pod=~"ranker-5d8f-abcde|ranker-5d8f-fghij"' in plan[stable_key(analysis.metrics[1])]

    outcomes = {
        SAMPLES_KEY: QueryOutcome.of(0.0),
        canary_key(analysis.metrics[0]): QueryOutcome.of(95.0),
        canary_key(analysis.metrics[1]): QueryOutcome.of(30000.0),
        stable_key(analysis.metrics[1]): QueryOutcome.of(20000.0),
    }
    report = evaluate(analysis, outcomes)
    assert report.verdict is Verdict.FAIL
    assert [r.message for r in report.results] == [
        "metric gpuUtilization 95.0% > 90.0%",
        "metric gpuMemoryUsed canary / stable = 1.5 > 1.2",
    ]


def test_a_revision_without_pods_is_no_data_without_asking_prometheus() -> None:
    analysis = Analysis(metrics=[AnalysisMetric(name="gpuPowerUsage", max=300)], minSampleCount=0)
    ctx = QueryContext("prod", "ranker", "ranker", "aaaa1111", "cccc3333", 60, pods=PODS)
    plan = plan_queries(analysis, ctx)
    assert plan[canary_key(analysis.metrics[0])] == NO_PODS
    # Nothing listens on port 9 here: an EMPTY outcome (not UNAVAILABLE) shows none was sent.
    querier = PrometheusQuerier("http://127.0.0.1:9", timeout_seconds=1)
    outcomes = asyncio.run(querier.run({canary_key(analysis.metrics[0]): NO_PODS}))
    assert outcomes[canary_key(analysis.metrics[0])].status is QueryStatus.EMPTY
    outcomes[SAMPLES_KEY] = QueryOutcome.of(0.0)
    report = evaluate(analysis, outcomes)
    assert report.verdict is Verdict.WAIT
    assert report.results[0].message == "metric gpuPowerUsage: no data (onNoData wait)"
