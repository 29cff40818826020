"""The I/O shell of progressive delivery and autoscaling: one tick of a ModelService.

The reconcile (:mod:`mlkube.operator.handlers`) asks :func:`plan` what to apply instead of
applying the plain desired state. ``plan`` reads, then lets the pure code decide:

1. the stable (``N``) and canary (``N-canary``) Deployments, from the watch-fed cache;
2. autoscaler tick: query the load signal (Prometheus),
   :func:`~mlkube.operator.autoscaler.desired_replicas`;
3. rollout tick: if :func:`~mlkube.operator.rollout.analysis_due`, run the analysis
   queries, then :func:`~mlkube.operator.rollout.next_step`;
4. :func:`~mlkube.operator.progressive.build_children` (pure) turns the decisions into
   manifests.

How often this runs is the work queue's business: a ModelService with a canary in flight or
the built-in autoscaler asks for its next pass after ``TICK_SECONDS``
(:func:`~mlkube.operator.progressive.next_pass`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlkube.api.actions import Action, parse_action
from mlkube.api.modelservice import ModelService, ModelServiceStatus
from mlkube.api.rollout import (
    AutoscalingMode,
    AutoscalingSpec,
    AutoscalingStatus,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    Verdict,
)
from mlkube.operator import clock, gpu
from mlkube.operator.analysis import (
    AnalysisReport,
    PrometheusQuerier,
    QueryContext,
    QueryStatus,
    evaluate,
    plan_queries,
)
from mlkube.operator.autoscaler import ScaleDecision, desired_replicas, load_query
from mlkube.operator.builders import LABEL_MODELSERVICE, LABEL_REVISION, DesiredState, child_name
from mlkube.operator.events import Event
from mlkube.operator.progressive import (
    TICK_SECONDS,
    Plan,
    build_children,
    deployment_ready,
    initial_replicas,
    replicas_handover,
    rollout_spec,
    track_replicas,
)
from mlkube.operator.rollout import (
    RolloutTarget,
    Workload,
    analysis_due,
    next_step,
)

if TYPE_CHECKING:
    from mlkube.operator.app import OperatorContext

JsonDict = dict[str, Any]
log = logging.getLogger("mlkube.operator.rollout")


def _prometheus_url(ctx: OperatorContext, spec: RolloutSpec | None) -> str | None:
    override = spec.analysis.prometheus_url if spec is not None else None
    return override or ctx.config.prometheus_url


def _pods(ctx: OperatorContext, ms: ModelService) -> dict[str, tuple[str, ...]]:
    """The ModelService's pods by revision, from the cache: what GPU signals select."""
    namespace, name = ms.metadata.namespace, ms.metadata.name
    return gpu.pods_by_revision(
        ctx.cache.owned("Pod", namespace, LABEL_MODELSERVICE, name), LABEL_REVISION
    )


async def _autoscale(
    ctx: OperatorContext,
    ms: ModelService,
    old: AutoscalingStatus | None,
    stable_dep: JsonDict | None,
    revisions: tuple[str, str],
    now: datetime,
) -> tuple[int, AutoscalingStatus | None, list[Event]]:
    """The replica count for both tracks together, and the autoscaling status."""
    scaling = ms.spec.autoscaling
    if scaling is None:
        return ms.spec.replicas, None, []
    if scaling.mode is AutoscalingMode.HPA:
        live = (stable_dep or {}).get("spec", {}).get("replicas")
        total = int(live) if isinstance(live, int) else initial_replicas(ms.spec)
        return (
            total,
            AutoscalingStatus(
                mode="hpa", desired_replicas=total, reason="managed by HorizontalPodAutoscaler"
            ),
            [],
        )

    current = (
        old.desired_replicas
        if old is not None and old.desired_replicas is not None
        else initial_replicas(ms.spec)
    )
    signal, why_missing = await _load_signal(ctx, ms, scaling, revisions)
    decision: ScaleDecision = desired_replicas(
        signal, scaling, current, old.recommendations if old else [], now
    )
    reason = decision.reason if why_missing is None else f"{decision.reason} ({why_missing})"
    records = list(decision.recommendations)
    if (
        len(records) >= 2
        and records[-1].replicas == records[-2].replicas
        and (records[-1].time - records[-2].time).total_seconds() < TICK_SECONDS
    ):
        # Ticks closer than TICK_SECONDS that recommend the same count add nothing to the
        # stabilization windows; dropping them keeps status (and its writes) small.
        records.pop()
    events: list[Event] = []
    changed = decision.replicas != current
    if changed:
        events.append(Event("Normal", "Scaled", reason))
    status = AutoscalingStatus(
        mode="builtin",
        desired_replicas=decision.replicas,
        current_signal=signal,
        last_scale_time=now if changed else (old.last_scale_time if old else None),
        reason=reason,
        recommendations=records,
    )
    return decision.replicas, status, events


async def _load_signal(
    ctx: OperatorContext,
    ms: ModelService,
    scaling: AutoscalingSpec,
    revisions: tuple[str, str],
) -> tuple[float | None, str | None]:
    url = _prometheus_url(ctx, ms.spec.rollout)
    if url is None:
        return None, "no Prometheus URL configured (MLKUBE_PROMETHEUS_URL)"
    stable, canary = revisions
    query_ctx = QueryContext(
        namespace=ms.metadata.namespace,
        name=ms.metadata.name,
        model=ms.spec.model.name,
        stable_revision=stable,
        canary_revision=canary,
        window_seconds=scaling.window_seconds,
        pods=_pods(ctx, ms),
        gpu_labels=ctx.config.gpu_metric_labels,
    )
    querier = PrometheusQuerier(url, timeout_seconds=5.0)
    outcome = (await querier.run({"load": load_query(scaling, query_ctx)}))["load"]
    if outcome.status is QueryStatus.OK:
        return outcome.value, None
    if outcome.status is QueryStatus.EMPTY:
        return None, f"load query returned no data{': ' + outcome.error if outcome.error else ''}"
    return None, f"load query {outcome.status.value}: {outcome.error}"


async def _analyse(
    ctx: OperatorContext, ms: ModelService, rollout: RolloutSpec, status: RolloutStatus
) -> AnalysisReport:
    analysis = rollout.analysis
    url = _prometheus_url(ctx, rollout)
    if analysis.metrics and url is None:
        return AnalysisReport(
            Verdict.WAIT,
            (),
            None,
            "Prometheus unavailable: no URL configured (MLKUBE_PROMETHEUS_URL or "
            "spec.rollout.analysis.prometheusUrl)",
            True,
        )
    query_ctx = QueryContext(
        namespace=ms.metadata.namespace,
        name=ms.metadata.name,
        model=ms.spec.model.name,
        stable_revision=status.stable_revision or "",
        canary_revision=status.canary_revision or "",
        window_seconds=rollout.interval_seconds,
        pods=_pods(ctx, ms),
        gpu_labels=ctx.config.gpu_metric_labels,
    )
    if not analysis.metrics:
        return evaluate(analysis, {})
    querier = PrometheusQuerier(url or "", timeout_seconds=analysis.timeout_seconds)
    outcomes = await querier.run(plan_queries(analysis, query_ctx))
    if any(metric.reward for metric in analysis.metrics):
        # rewardRate's Monte Carlo takes milliseconds of CPU: off the event loop.
        return await asyncio.to_thread(evaluate, analysis, outcomes, status.canary_weight)
    return evaluate(analysis, outcomes)


def pending_action(ms: ModelService, rollout: RolloutStatus | None) -> Action | None:
    """The ``mlkube.dev/action`` the operator has not handled yet (pure)."""
    action, problem = parse_action(ms.metadata.annotations)
    if problem:
        log.warning("%s/%s: %s", ms.metadata.namespace, ms.metadata.name, problem)
    if action is None or rollout is None:
        return None
    if rollout.last_action is not None and rollout.last_action.id == action.id:
        return None
    return action


async def plan(
    ctx: OperatorContext,
    ms: ModelService,
    desired: DesiredState,
    status: ModelServiceStatus | None,
) -> Plan:
    """One rollout + autoscaler tick for ``ms``: read, decide (pure), build (pure)."""
    now = clock.now()
    namespace, name = ms.metadata.namespace, ms.metadata.name
    stable_dep = ctx.cache.get("Deployment", namespace, name)
    canary_dep = ctx.cache.get("Deployment", namespace, child_name(name, "canary"))
    old_rollout = status.rollout if status else None
    old_scaling = status.autoscaling if status else None
    rollout = rollout_spec(ms.spec)

    revisions = (
        (old_rollout.stable_revision or desired.revision) if old_rollout else desired.revision,
        (old_rollout.canary_revision or "") if old_rollout else "",
    )
    total, scaling_status, events = await _autoscale(
        ctx, ms, old_scaling, stable_dep, revisions, now
    )

    # What the Deployments should look like under the current status, to judge readiness.
    if old_rollout is not None and old_rollout.canary_revision is not None:
        expected_stable, expected_canary = track_replicas(
            total, old_rollout.canary_weight, rollout.shadow is not None
        )
        if old_rollout.phase in (RolloutPhase.PROMOTING, RolloutPhase.FAILED):
            expected_stable = total
    else:
        expected_stable, expected_canary = total, 0
    workload = Workload(
        canary_ready=old_rollout is not None
        and old_rollout.canary_revision is not None
        and deployment_ready(canary_dep, old_rollout.canary_revision, expected_canary),
        stable_ready=old_rollout is not None
        and old_rollout.stable_revision is not None
        and deployment_ready(stable_dep, old_rollout.stable_revision, expected_stable),
    )
    target = RolloutTarget(
        rollout, desired.revision, ms.spec.model.version, desired.image, ms.spec.to_kube()
    )
    action = pending_action(ms, old_rollout)
    report = None
    if (
        action is None
        and old_rollout is not None
        and analysis_due(target, old_rollout, now, workload)
    ):
        report = await _analyse(ctx, ms, rollout, old_rollout)
    decision = next_step(target, old_rollout, report, now, workload, action)

    stable_spec = (
        ms.spec.to_kube()
        if decision.stable_revision == desired.revision
        else decision.status.stable_spec
    )
    live_template = None
    if stable_spec is None and decision.stable_revision != desired.revision:
        live = (stable_dep or {}).get("spec", {}).get("template")
        if (
            live
            and (live.get("metadata", {}).get("labels") or {}).get(LABEL_REVISION)
            == decision.stable_revision
        ):
            live_template = live
        log.warning(
            "%s/%s: status.rollout.stableSpec is missing; the stable Deployment %s",
            namespace,
            name,
            "keeps its live pod template" if live_template else "is rebuilt from the current spec",
        )
    hpa = ms.spec.autoscaling is not None and ms.spec.autoscaling.mode is AutoscalingMode.HPA
    children = build_children(
        ms,
        ctx.build,
        desired,
        decision,
        total=total,
        stable_spec=stable_spec,
        hpa=hpa,
        stable_template=live_template,
    )
    deletions = list(children.deletions)
    if canary_dep is None:
        deletions = [d for d in deletions if d != ("Deployment", child_name(name, "canary"))]
    if not hpa and old_scaling is not None and old_scaling.mode == "hpa":
        deletions.append(("HorizontalPodAutoscaler", name))
    new_rollout = decision.status.model_copy(
        update={"stable_spec": stable_spec, "traffic_split": children.traffic_split}
    )
    return Plan(
        handovers=replicas_handover(stable_dep) if hpa else [],
        objects=children.objects,
        deletions=deletions,
        stable_revision=decision.stable_revision,
        stable_replicas=children.stable_replicas,
        rollout=new_rollout,
        autoscaling=scaling_status,
        events=[*decision.events, *events],
    )
