"""The built-in autoscaler: Cortex's in-flight algorithm as a pure function.

``desired_replicas(signal, policy, current, history, now)`` turns the service's load
signal (in-flight requests summed over its pods, averaged over ``window`` by Prometheus)
into a replica count.  The steps, in Cortex's order:

1. raw recommendation = signal / targetInFlight (or ``target``, the per-replica value of
   a GPU signal), rounded up;
2. within ``tolerance`` of the current count: no change;
3. clamped to [minReplicas, maxReplicas], then recorded in the history;
4. stabilization: scale up only to the *lowest* recommendation of the last
   ``upscaleStabilization``, down only to the *highest* of the last
   ``downscaleStabilization``; until the history covers a window, no move that way at all
   (an operator that just started, or restarted, knows too little to scale down);
5. rate limits: at most ``ceil(current * maxUpscaleFactor)`` (always at least +1) and at
   least ``ceil(current * maxDownscaleFactor)`` (always at most -1) in one step.

The settings and their defaults are Cortex's.  The order - the unlimited recommendation
is recorded, the factors limit each step afterwards - is the one Kubernetes' HPA uses:
recording factor-limited values (as Cortex does) would make every downscale step wait a
whole stabilization window, 25 minutes from 8 replicas to 1 with the defaults.

Missing data (no series, NaN, Prometheus down) is never read as zero load.  With
``onMetricsUnavailable: hold`` (default) the current count is recorded as the
recommendation, which also blocks a downscale for a full window after data returns;
with ``minReplicas`` the recommendation is ``minReplicas``, still subject to the factors
and the downscale stabilization, so a short outage never shrinks the service.

The module also builds the load query (in-flight requests, a GPU signal from
dcgm-exporter: :mod:`mlkube.operator.gpu`, or the user's PromQL) and the autoscaling/v2
HPA for ``mode: hpa``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mlkube.api.rollout import (
    AutoscalingSignal,
    AutoscalingSpec,
    OnMetricsUnavailable,
    ScaleRecord,
    format_duration,
)
from mlkube.operator.analysis import (
    INFLIGHT,
    QueryContext,
    gpu_query,
    promql_string,
    render_custom_query,
)


@dataclass(frozen=True)
class ScaleDecision:
    """The replica count to run, why, and the recommendation history to store in status."""

    replicas: int
    reason: str
    recommendations: tuple[ScaleRecord, ...]
    metrics_available: bool

    def changed(self, current: int) -> bool:
        return self.replicas != current


def _prune(history: Sequence[ScaleRecord], now: datetime, keep: timedelta) -> list[ScaleRecord]:
    """Records inside ``keep``, plus the newest older one: it proves the window is covered."""
    ordered = sorted((r for r in history if r.time <= now), key=lambda r: r.time)
    inside = [r for r in ordered if now - r.time <= keep]
    older = [r for r in ordered if now - r.time > keep]
    return [*older[-1:], *inside]


def desired_replicas(
    signal: float | None,
    policy: AutoscalingSpec,
    current: int,
    history: Sequence[ScaleRecord],
    now: datetime,
) -> ScaleDecision:
    """One autoscaler tick; pure, so every rule is table-tested."""
    low, high = policy.min_replicas, policy.max_replicas
    up_window = timedelta(seconds=policy.upscale_stabilization_seconds)
    down_window = timedelta(seconds=policy.downscale_stabilization_seconds)
    keep = max(up_window, down_window)
    past = _prune(history, now, keep)
    oldest = past[0].time if past else now

    available = signal is not None and math.isfinite(signal) and signal >= 0
    if current < low or current > high:
        # Bounds come from the spec, not from metrics: apply them at once.
        bounded = min(max(current, low), high)
        record = ScaleRecord(time=now, replicas=bounded)
        return ScaleDecision(
            bounded,
            f"replicas {current} outside [{low}, {high}]: set to {bounded}",
            (*past, record),
            available,
        )

    notes: list[str] = []
    if not available:
        if policy.on_metrics_unavailable is OnMetricsUnavailable.HOLD:
            record = ScaleRecord(time=now, replicas=current)
            return ScaleDecision(
                current,
                f"metrics unavailable: holding {current} replicas",
                (*past, record),
                False,
            )
        recommendation = low
        notes.append(f"metrics unavailable: recommending minReplicas {low}")
    else:
        assert signal is not None
        target = policy.per_replica_target
        raw = signal / target
        recommendation = math.ceil(raw - 1e-9)
        what = "load" if policy.signal is AutoscalingSignal.IN_FLIGHT else policy.signal.value
        notes.append(f"{what} {signal:.3g} / target {target:g} per replica = {raw:.3g}")
        if current * (1 - policy.tolerance) < raw < current * (1 + policy.tolerance):
            recommendation = current
            notes.append(f"within tolerance {policy.tolerance:g} of {current}")

    bounded = min(max(recommendation, low, 1), high)
    if bounded != recommendation:
        notes.append(f"bounded to [{low}, {high}]")
        recommendation = bounded

    record = ScaleRecord(time=now, replicas=recommendation)
    recorded = (*past, record)
    desired = recommendation
    if desired < current:
        if now - oldest < down_window:
            desired = current
            notes.append(f"no downscale before {policy.downscale_stabilization} of history")
        else:
            floor_seen = max(r.replicas for r in recorded if now - r.time <= down_window)
            if desired < floor_seen:
                desired = min(floor_seen, current)
                notes.append(
                    f"downscale stabilization {policy.downscale_stabilization}: highest recent {floor_seen}"
                )
    elif desired > current:
        if now - oldest < up_window:
            desired = current
            notes.append(f"no upscale before {policy.upscale_stabilization} of history")
        else:
            ceil_seen = min(r.replicas for r in recorded if now - r.time <= up_window)
            if desired > ceil_seen:
                desired = max(ceil_seen, current)
                notes.append(
                    f"upscale stabilization {policy.upscale_stabilization}: lowest recent {ceil_seen}"
                )

    floor = max(min(current - 1, math.ceil(current * policy.max_downscale_factor)), low, 1)
    ceil = min(max(current + 1, math.ceil(current * policy.max_upscale_factor)), high)
    if desired < floor:
        desired = floor
        notes.append(f"limited by maxDownscaleFactor {policy.max_downscale_factor:g} to {floor}")
    if desired > ceil:
        desired = ceil
        notes.append(f"limited by maxUpscaleFactor {policy.max_upscale_factor:g} to {ceil}")

    if desired == current:
        reason = f"holding {current} replicas: " + "; ".join(notes)
    else:
        reason = f"scaling {current} -> {desired}: " + "; ".join(notes)
    return ScaleDecision(desired, reason, recorded, available)


def history_window(policy: AutoscalingSpec) -> int:
    """Seconds of recommendations worth keeping in status."""
    return max(policy.upscale_stabilization_seconds, policy.downscale_stabilization_seconds)


# ---------------------------------------------------------------------------- queries


def inflight_query(revisions: Sequence[str], window_seconds: int) -> str:
    """Total in-flight requests of the given revisions, averaged over the window.

    Each pod's gauge is averaged over the window first, then summed, so the signal is the
    mean total concurrency and a pod that started half-way counts half.
    """
    if not revisions:
        raise ValueError("no revisions to measure")
    if len(revisions) == 1:
        selector = f"revision={promql_string(revisions[0])}"
    else:
        alternatives = "|".join(_regex_escape(r) for r in sorted(set(revisions)))
        selector = f"revision=~{promql_string(alternatives)}"
    window = format_duration(window_seconds)
    return f"sum(avg_over_time({INFLIGHT}{{{selector}}}[{window}]))"


def _regex_escape(text: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\\" else c for c in text)


def load_query(policy: AutoscalingSpec, ctx: QueryContext) -> str:
    """The load signal: the custom query if given, a GPU signal summed over every pod of
    the service (both tracks), else the in-flight gauge of both tracks."""
    if policy.query is not None:
        return render_custom_query(policy.query, ctx, ctx.canary_revision or ctx.stable_revision)
    if policy.signal is not AutoscalingSignal.IN_FLIGHT:
        return gpu_query(policy.signal.value, ctx, ctx.all_pods(), total=True)
    revisions = [r for r in (ctx.stable_revision, ctx.canary_revision) if r]
    return inflight_query(revisions, policy.window_seconds)


# -------------------------------------------------------------------------------- HPA


def build_hpa(
    name: str,
    namespace: str,
    policy: AutoscalingSpec,
    labels: dict[str, str],
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An autoscaling/v2 HorizontalPodAutoscaler on the stable Deployment ``name``.

    Used for ``mode: hpa``; the operator then leaves the stable Deployment's replica
    count to the HPA (and sizes the canary from it by weight).
    """
    hpa = policy.hpa
    resource = hpa.resource.value if hpa is not None else "cpu"
    utilization = hpa.target_utilization if hpa is not None else 80
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": policy.min_replicas,
            "maxReplicas": policy.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": resource,
                        "target": {"type": "Utilization", "averageUtilization": utilization},
                    },
                }
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": policy.upscale_stabilization_seconds,
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": policy.downscale_stabilization_seconds,
                },
            },
        },
    }
