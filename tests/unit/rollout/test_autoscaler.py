"""The built-in autoscaler on tables: Cortex's rules, and never scaling on missing data."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from mlkube.api.rollout import AutoscalingSpec, ScaleRecord
from mlkube.operator.analysis import QueryContext
from mlkube.operator.autoscaler import build_hpa, desired_replicas, inflight_query, load_query
from mlkube.operator.rollout import split_replicas

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(seconds=10)


def policy(**kwargs: object) -> AutoscalingSpec:
    base: dict[str, object] = {"maxReplicas": 20, "targetInFlight": 4}
    base.update(kwargs)
    return AutoscalingSpec.model_validate(base)


def steady(replicas: int, minutes: int = 10) -> list[ScaleRecord]:
    """History of a service that recommended ``replicas`` every tick for a while."""
    ticks = minutes * 6
    return [ScaleRecord(time=T0 - TICK * i, replicas=replicas) for i in range(ticks, 0, -1)]


def run(
    signals: Sequence[float | None], p: AutoscalingSpec, current: int, history: list[ScaleRecord]
) -> list[int]:
    """Feed one signal per tick; return the replica count after each tick."""
    out = []
    now = T0
    for signal in signals:
        d = desired_replicas(signal, p, current, history, now)
        current, history = d.replicas, list(d.recommendations)
        out.append(current)
        now += TICK
    return out


def test_defaults_are_cortex_defaults() -> None:
    p = AutoscalingSpec()
    assert (p.min_replicas, p.max_replicas, p.target_in_flight) == (1, 100, 1.0)
    assert (
        p.window_seconds,
        p.upscale_stabilization_seconds,
        p.downscale_stabilization_seconds,
    ) == (60, 60, 300)
    assert (p.max_upscale_factor, p.max_downscale_factor, p.tolerance) == (1.5, 0.75, 0.05)
    assert p.on_metrics_unavailable.value == "hold"


@pytest.mark.parametrize(
    ("signal", "current", "expected"),
    [
        (16.0, 4, 4),  # exactly on target
        (16.6, 4, 4),  # 4.15 replicas: within 5% tolerance
        (17.0, 4, 5),  # 4.25: beyond tolerance, rounded up
        (40.0, 4, 6),  # 10 wanted, at most ceil(4 * 1.5) = 6
        (40.0, 1, 2),  # always at least +1
        (4.0, 8, 6),  # 1 wanted, at least ceil(8 * 0.75) = 6
        (0.0, 2, 1),  # always at most -1
        (0.0, 1, 1),  # minReplicas
        (1000.0, 19, 20),  # maxReplicas
    ],
)
def test_one_decision_with_full_history(signal: float, current: int, expected: int) -> None:
    d = desired_replicas(signal, policy(), current, steady(expected), T0)
    assert d.replicas == expected, d.reason
    assert d.metrics_available


def test_upscale_waits_for_the_upscale_window() -> None:
    # load jumps from 4 replicas' worth to 6 replicas' worth at T0
    out = run([24.0] * 8, policy(), 4, steady(4))
    # the lowest recommendation of the last minute is still 4 until the old ones age out
    assert out[:6] == [4, 4, 4, 4, 4, 4]
    assert out[6:] == [6, 6]


def test_a_short_spike_does_not_scale_up() -> None:
    out = run([4.0] * 3 + [400.0] * 2 + [4.0] * 10, policy(), 1, steady(1))
    assert set(out) == {1}


def test_downscale_waits_for_five_minutes_of_lower_recommendations() -> None:
    out = run([4.0] * 40, policy(), 8, steady(8))
    assert out[:30] == [8] * 30  # 5 minutes of history at 8 still in the window
    # then at most 25% (and at least 1) down per step until the recommendation is reached
    assert out[30:36] == [6, 5, 4, 3, 2, 1]
    assert out[-1] == 1


def test_no_scaling_before_the_history_covers_a_window() -> None:
    # a fresh operator (or one whose status was lost) knows nothing yet
    d = desired_replicas(0.0, policy(), 8, [], T0)
    assert d.replicas == 8
    assert "no downscale before 5m of history" in d.reason
    d = desired_replicas(400.0, policy(), 2, [], T0)
    assert d.replicas == 2


@pytest.mark.parametrize("missing", [None, math.nan, math.inf, -1.0])
def test_missing_metrics_hold_and_never_scale_down(missing: float | None) -> None:
    out = run([missing] * 60, policy(), 8, steady(8))
    assert set(out) == {8}
    d = desired_replicas(missing, policy(), 8, steady(8), T0)
    assert d.reason == "metrics unavailable: holding 8 replicas"
    assert not d.metrics_available


def test_hold_blocks_a_downscale_for_a_window_after_data_returns() -> None:
    p = policy()
    out = run([None] * 30 + [0.0] * 40, p, 8, steady(8))
    assert set(out[:59]) == {8}
    assert out[-1] < 8


def test_on_metrics_unavailable_min_replicas_drifts_down_slowly() -> None:
    p = policy(onMetricsUnavailable="minReplicas", minReplicas=2)
    out = run([None] * 60, p, 8, steady(8))
    assert out[:30] == [8] * 30  # a short outage changes nothing
    assert out[30:35] == [6, 5, 4, 3, 2]
    assert out[-1] == 2
    assert all(b >= min(a - 1, math.ceil(a * 0.75)) for a, b in itertools.pairwise(out))


def test_bounds_from_the_spec_apply_at_once() -> None:
    d = desired_replicas(None, policy(minReplicas=3), 1, [], T0)
    assert d.replicas == 3
    d = desired_replicas(100.0, policy(maxReplicas=5), 9, steady(9), T0)
    assert d.replicas == 5


def test_recommendations_history_is_pruned_but_covers_the_window() -> None:
    d = desired_replicas(16.0, policy(), 4, steady(4, minutes=30), T0)
    times = [r.time for r in d.recommendations]
    assert T0 - times[0] > timedelta(minutes=5)  # one older record proves coverage
    assert T0 - times[1] <= timedelta(minutes=5)
    assert len(d.recommendations) == 32


@pytest.mark.parametrize(
    ("total", "weight", "canary"), [(10, 10, 1), (10, 30, 3), (20, 50, 10), (2, 10, 1)]
)
def test_canary_is_scaled_by_its_traffic_share(total: int, weight: int, canary: int) -> None:
    stable, canary_replicas = split_replicas(total, weight)
    assert canary_replicas == canary
    assert stable == max(1, total - canary)


def test_inflight_query_covers_both_tracks() -> None:
    q = inflight_query(["abc", "def"], 60)
    assert q == 'sum(avg_over_time(mlkube_inflight_requests{revision=~"abc|def"}[60s]))'
    assert inflight_query(["abc"], 30) == (
        'sum(avg_over_time(mlkube_inflight_requests{revision="abc"}[30s]))'
    )
    ctx = QueryContext("ns", "n", "m", "s1", "", 60)
    custom = policy(query='sum(rate(x{namespace="{{ namespace }}"}[{{ window }}]))')
    assert load_query(custom, ctx) == 'sum(rate(x{namespace="ns"}[60s]))'
    assert load_query(policy(), ctx) == inflight_query(["s1"], 60)


def test_build_hpa() -> None:
    p = policy(mode="hpa", hpa={"resource": "memory", "targetUtilization": 70}, minReplicas=2)
    hpa = build_hpa("ranker", "prod", p, {"app.kubernetes.io/instance": "ranker"})
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ranker",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 20)
    assert hpa["spec"]["metrics"][0]["resource"] == {
        "name": "memory",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
