"""Progressive delivery and autoscaling inside the ModelService reconcile.

The reconcile (:mod:`mlkube.operator.handlers`) asks :func:`plan` what to apply instead of
applying the plain desired state.  ``plan`` is the thin shell around the pure decisions:

1. read the stable (``N``) and canary (``N-canary``) Deployments;
2. autoscaler tick: query the load signal, :func:`~mlkube.operator.autoscaler.desired_replicas`;
3. rollout tick: if :func:`~mlkube.operator.rollout.analysis_due`, run the analysis queries,
   then :func:`~mlkube.operator.rollout.next_step`;
4. :func:`build_children` (pure) turns the decisions into manifests: the stable
   Deployment keeps the stable revision's template (rebuilt from ``status.rollout.stableSpec``
   while the spec already names the new revision), the canary Deployment runs the new one,
   replica counts split by weight, an HTTPRoute for ``gatewayAPI`` routing, an HPA for
   ``autoscaling.mode: hpa``.

A kopf timer (:func:`register`) ticks every ModelService with a canary in flight or the
built-in autoscaler on, so the canary advances and the autoscaler reacts between the
reconcile's slower drift checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import kopf

from mlkube.api.modelservice import (
    GROUP,
    PLURAL,
    VERSION,
    Condition,
    ModelService,
    ModelServiceSpec,
    ModelServiceStatus,
)
from mlkube.api.rollout import (
    AutoscalingMode,
    AutoscalingSpec,
    AutoscalingStatus,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    RolloutStrategy,
    TrafficRouting,
    Verdict,
)
from mlkube.operator.analysis import (
    AnalysisReport,
    PrometheusQuerier,
    QueryContext,
    QueryStatus,
    evaluate,
    plan_queries,
)
from mlkube.operator.autoscaler import (
    ScaleDecision,
    build_hpa,
    desired_replicas,
    load_query,
)
from mlkube.operator.builders import (
    LABEL_REVISION,
    LABEL_TRACK,
    SERVICE_PORT,
    BuildSettings,
    DesiredState,
    build_deployment,
    build_pdb,
    child_metadata,
    child_name,
    cluster_ip_service,
    common_labels,
    owner_reference,
    selector_labels,
)
from mlkube.operator.rollout import (
    RolloutDecision,
    RolloutEvent,
    RolloutTarget,
    Workload,
    analysis_due,
    degraded_condition,
    describe_split,
    next_step,
    progressing_condition,
    split_replicas,
)

if TYPE_CHECKING:
    from mlkube.operator.app import OperatorContext

JsonDict = dict[str, Any]
log = logging.getLogger("mlkube.operator.rollout")

HANDOVER_MANAGER = "mlkube-handover"
"""Field manager that holds the stable Deployment's replica count while it passes to an HPA."""

TICK_SECONDS = 5.0
"""How often the rollout/autoscaler timer runs per ModelService.  Decisions use the clock,
not the tick count, so this only bounds how late a step can be."""


def utcnow() -> datetime:
    return datetime.now(UTC)


clock: Callable[[], datetime] = utcnow
"""The time source of the shell (tests replace it to step through minutes in seconds)."""


# --------------------------------------------------------------------------- pure parts


def rollout_spec(spec: ModelServiceSpec) -> RolloutSpec:
    """Without ``spec.rollout`` a change rolls out in place, like a Deployment update."""
    return spec.rollout or RolloutSpec(strategy=RolloutStrategy.ROLLING)


def deployment_ready(deployment: JsonDict | None, revision: str, replicas: int) -> bool:
    """All ``replicas`` pods of the Deployment run ``revision`` and are available."""
    if deployment is None:
        return False
    template = deployment.get("spec", {}).get("template", {})
    if (template.get("metadata", {}).get("labels") or {}).get(LABEL_REVISION) != revision:
        return False
    status = deployment.get("status") or {}
    if status.get("observedGeneration", 0) < deployment.get("metadata", {}).get("generation", 0):
        return False
    updated = int(status.get("updatedReplicas", 0) or 0)
    available = int(status.get("availableReplicas", 0) or 0)
    total = int(status.get("replicas", 0) or 0)
    return updated >= replicas and available >= replicas and total == updated


def initial_replicas(spec: ModelServiceSpec) -> int:
    """Replica count before any autoscaler decision: ``spec.replicas`` within the bounds."""
    scaling = spec.autoscaling
    if scaling is None:
        return spec.replicas
    return min(max(spec.replicas, scaling.min_replicas), scaling.max_replicas)


@dataclass(frozen=True)
class Children:
    """Manifests to apply and children to remove (kind, name) for one reconcile."""

    objects: list[JsonDict]
    deletions: list[tuple[str, str]]
    stable_replicas: int
    canary_replicas: int
    traffic_split: str


def _stable_model(ms: ModelService, stable_spec: JsonDict | None) -> ModelService:
    if stable_spec is None:
        return ms
    spec = ModelServiceSpec.model_validate(stable_spec)
    return ms.model_copy(update={"spec": spec})


def build_track_service(ms: ModelService, track: str) -> JsonDict:
    """``N-stable`` / ``N-canary``: one Service per track, the HTTPRoute's backends."""
    name = ms.metadata.name
    labels = {**common_labels(name), LABEL_TRACK: track}
    selector = selector_labels(name, "canary" if track == "canary" else "stable")
    return cluster_ip_service(ms, f"{name}-{track}", labels, selector)


def build_httproute(ms: ModelService, rollout: RolloutSpec, canary_weight: int) -> JsonDict:
    """The HTTPRoute ``N`` splitting traffic exactly between the track Services."""
    name = ms.metadata.name
    gateway = rollout.gateway_api
    assert gateway is not None, "schema: gatewayAPI routing needs gatewayAPI"
    parents = []
    for ref in gateway.parent_refs:
        parent: JsonDict = {"group": ref.group, "kind": ref.kind, "name": ref.name}
        if ref.namespace:
            parent["namespace"] = ref.namespace
        if ref.section_name:
            parent["sectionName"] = ref.section_name
        parents.append(parent)
    spec: JsonDict = {
        "parentRefs": parents,
        "rules": [
            {
                "backendRefs": [
                    {
                        "name": f"{name}-stable",
                        "port": SERVICE_PORT,
                        "weight": 100 - canary_weight,
                    },
                    {"name": f"{name}-canary", "port": SERVICE_PORT, "weight": canary_weight},
                ]
            }
        ],
    }
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": child_metadata(ms, name, common_labels(name)),
        "spec": spec,
    }


def build_children(
    ms: ModelService,
    settings: BuildSettings,
    desired: DesiredState,
    decision: RolloutDecision,
    *,
    total: int,
    stable_spec: JsonDict | None,
    hpa: bool,
    stable_template: JsonDict | None = None,
) -> Children:
    """Every child for the rollout decision and replica count (pure).

    While the stable revision differs from the spec's, the stable Deployment is rebuilt
    from the spec that produced it, so it keeps serving exactly what it served (and comes
    back unchanged if deleted).  During promotion the stable Deployment takes the full
    count of the new revision while the canary keeps its share until stable is ready.
    """
    rollout = rollout_spec(ms.spec)
    name = ms.metadata.name
    canary = decision.canary_revision
    weight = decision.canary_weight
    promoting = decision.status.phase in (RolloutPhase.PROMOTING, RolloutPhase.FAILED)
    if canary is not None:
        stable_n, canary_n = split_replicas(total, weight)
        if promoting:
            stable_n = total
    else:
        stable_n, canary_n = total, 0

    if decision.stable_revision == desired.revision:
        stable_dep = build_deployment(ms, settings, revision=desired.revision, replicas=stable_n)
    else:
        stable_dep = build_deployment(
            _stable_model(ms, stable_spec),
            settings,
            revision=decision.stable_revision,
            replicas=stable_n,
        )
        if stable_spec is None and stable_template is not None:
            # The stable spec is not in status (edited away?): keep the pods exactly as
            # they run rather than rebuild them from the new spec under the old label.
            stable_dep["spec"]["template"] = stable_template
    if hpa:
        # The HPA owns the count: leaving the field out of our apply hands it over.
        stable_dep["spec"].pop("replicas", None)

    objects: list[JsonDict] = [desired.service, stable_dep]
    deletions: list[tuple[str, str]] = []
    if canary is not None:
        objects.append(
            build_deployment(ms, settings, revision=canary, track="canary", replicas=canary_n)
        )
    else:
        deletions.append(("Deployment", child_name(name, "canary")))

    routing: list[JsonDict] = []
    if rollout.traffic_routing is TrafficRouting.GATEWAY_API and rollout.gateway_api is not None:
        routing = [
            build_track_service(ms, "stable"),
            build_track_service(ms, "canary"),
            build_httproute(ms, rollout, weight if canary is not None else 0),
        ]
        split = f"canary {weight if canary else 0}% (HTTPRoute weights, exact)"
    else:
        split = describe_split(stable_n, canary_n, weight if canary else 0)

    pdb = build_pdb(ms, replicas=stable_n + canary_n)
    if pdb is not None:
        objects.append(pdb)
    else:
        deletions.append(("PodDisruptionBudget", name))

    scaling = ms.spec.autoscaling
    if hpa and scaling is not None:
        objects.append(
            build_hpa(
                name, ms.metadata.namespace, scaling, common_labels(name), owner_reference(ms)
            )
        )
    # The route last: on a cluster without the Gateway API CRDs everything else still
    # converges before the API server refuses it.
    objects += routing
    return Children(objects, deletions, stable_n, canary_n, split)


def owns_replicas(deployment: JsonDict, manager: str = "mlkube") -> bool:
    """Whether ``manager`` holds ``spec.replicas`` of the Deployment by server-side apply."""
    for entry in deployment.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            return True
    return False


def replicas_handover(deployment: JsonDict | None) -> list[JsonDict]:
    """What to apply before leaving ``spec.replicas`` to an HPA.

    Dropping a field from an apply removes it when no other manager holds it, and the API
    server would default the Deployment to 1 replica until the HPA's next sync.  Applying
    the current count first under a second manager makes the value survive the handover
    (Kubernetes' documented way to transfer ownership); the HPA then takes it from there.
    """
    if deployment is None or not owns_replicas(deployment):
        return []
    replicas = deployment.get("spec", {}).get("replicas")
    if not isinstance(replicas, int):
        return []
    meta = deployment.get("metadata", {})
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
            "spec": {"replicas": replicas},
        }
    ]


def rollout_conditions(status: RolloutStatus) -> dict[str, tuple[str, str, str]]:
    """Condition overrides from the rollout: type -> (status, reason, message).

    ``Ready`` stays what the stable Deployment says (after a rollback the stable revision
    serves, so Ready=True); ``Degraded`` and ``Progressing`` tell the rollout's story.
    """
    out: dict[str, tuple[str, str, str]] = {}
    degraded, reason, message = degraded_condition(status)
    if degraded:
        out["Degraded"] = ("True", reason, message)
    progressing, p_reason, p_message = progressing_condition(status)
    if progressing:
        out["Progressing"] = ("True", p_reason, p_message)
    return out


def current_targets(
    ms: ModelService, status: ModelServiceStatus | None, desired_revision: str
) -> tuple[str, int]:
    """(revision, replicas) the stable Deployment should have now, without stepping:
    what a status-only refresh judges ``Ready`` against."""
    rollout = status.rollout if status else None
    scaling = status.autoscaling if status else None
    total = (
        scaling.desired_replicas
        if scaling is not None and scaling.desired_replicas is not None
        else initial_replicas(ms.spec)
    )
    if rollout is None or rollout.stable_revision is None:
        return desired_revision, total
    stable_n = total
    if rollout.canary_revision is not None and rollout.phase is RolloutPhase.PROGRESSING:
        stable_n, _ = split_replicas(total, rollout.canary_weight)
    return rollout.stable_revision, stable_n


# ---------------------------------------------------------------------------- the shell


@dataclass
class Plan:
    """What one reconcile applies, deletes, writes into status and announces."""

    objects: list[JsonDict]
    deletions: list[tuple[str, str]]
    stable_revision: str
    stable_replicas: int
    rollout: RolloutStatus
    autoscaling: AutoscalingStatus | None
    events: list[RolloutEvent] = field(default_factory=list)
    handovers: list[JsonDict] = field(default_factory=list)
    """Applied first with :data:`HANDOVER_MANAGER` (see :func:`replicas_handover`)."""


def _prometheus_url(ctx: OperatorContext, spec: RolloutSpec | None) -> str | None:
    override = spec.analysis.prometheus_url if spec is not None else None
    return override or ctx.config.prometheus_url


async def _autoscale(
    ctx: OperatorContext,
    ms: ModelService,
    old: AutoscalingStatus | None,
    stable_dep: JsonDict | None,
    revisions: tuple[str, str],
    now: datetime,
) -> tuple[int, AutoscalingStatus | None, list[RolloutEvent]]:
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
    events: list[RolloutEvent] = []
    changed = decision.replicas != current
    if changed:
        events.append(RolloutEvent("Normal", "Scaled", reason))
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
    )
    querier = PrometheusQuerier(url, timeout_seconds=5.0)
    outcome = (await querier.run({"load": load_query(scaling, query_ctx)}))["load"]
    if outcome.status is QueryStatus.OK:
        return outcome.value, None
    if outcome.status is QueryStatus.EMPTY:
        return None, "load query returned no data"
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
    )
    if not analysis.metrics:
        return evaluate(analysis, {})
    querier = PrometheusQuerier(url or "", timeout_seconds=analysis.timeout_seconds)
    outcomes = await querier.run(plan_queries(analysis, query_ctx))
    return evaluate(analysis, outcomes)


async def plan(
    ctx: OperatorContext,
    ms: ModelService,
    desired: DesiredState,
    status: ModelServiceStatus | None,
) -> Plan:
    """One rollout + autoscaler tick for ``ms``: read, decide (pure), build (pure)."""
    now = clock()
    api = ctx.api
    namespace, name = ms.metadata.namespace, ms.metadata.name
    stable_dep = await api.get("Deployment", namespace, name)
    canary_dep = await api.get("Deployment", namespace, child_name(name, "canary"))
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
        expected_stable, expected_canary = split_replicas(total, old_rollout.canary_weight)
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
    target = RolloutTarget(rollout, desired.revision, ms.spec.model.version)
    report = None
    if old_rollout is not None and analysis_due(target, old_rollout, now, workload):
        report = await _analyse(ctx, ms, rollout, old_rollout)
    decision = next_step(target, old_rollout, report, now, workload)

    stable_spec = (
        ms.spec.to_kube()
        if decision.stable_revision == desired.revision
        else (old_rollout.stable_spec if old_rollout else None)
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


def with_rollout(
    new: ModelServiceStatus,
    old: ModelServiceStatus | None,
    rollout_plan: Plan | None,
    *,
    now: str,
    generation: int,
) -> ModelServiceStatus:
    """``new`` (computed from the stable Deployment) plus the rollout's and autoscaler's say.

    The rollout overrides ``Degraded`` (RolledBack, PromotionFailed) unless the pods
    themselves are in trouble (that message is more urgent), and ``Progressing`` while a
    canary runs.  ``lastTransitionTime`` moves only when a condition's status flips.
    Without a plan (a status-only refresh) the rollout status already stored decides, so
    the two kinds of reconcile never disagree about the conditions.
    """
    if rollout_plan is not None:
        rollout, scaling = rollout_plan.rollout, rollout_plan.autoscaling
    elif old is not None and old.rollout is not None:
        rollout, scaling = old.rollout, old.autoscaling
    else:
        return new
    overrides = rollout_conditions(rollout)
    before = {c.type: c for c in (old.conditions if old else [])}
    conditions: list[Condition] = []
    for cond in new.conditions:
        override = overrides.get(cond.type)
        pods_in_trouble = cond.type == "Degraded" and cond.status == "True"
        if override is not None and not pods_in_trouble:
            status, reason, message = override
            prev = before.get(cond.type)
            stamp = (
                prev.last_transition_time
                if prev is not None and prev.status == status and prev.last_transition_time
                else now
            )
            state: Literal["True", "False", "Unknown"] = "True" if status == "True" else "False"
            cond = cond.model_copy(
                update={
                    "status": state,
                    "reason": reason,
                    "message": message,
                    "last_transition_time": stamp,
                    "observed_generation": generation,
                }
            )
        conditions.append(cond)
    return new.model_copy(
        update={"conditions": conditions, "rollout": rollout, "autoscaling": scaling}
    )


MOVING_PHASES = frozenset(
    {RolloutPhase.PROGRESSING.value, RolloutPhase.PROMOTING.value, RolloutPhase.FAILED.value}
)


def needs_ticks(spec: Any, status: Any, **_: Any) -> bool:
    """Tick only what can move: a canary in flight, or the built-in autoscaler.

    Everything else is left to the reconcile's own (slower) drift timer, so a cluster of
    settled ModelServices costs the API server nothing extra.
    """
    scaling = spec.get("autoscaling")
    if scaling is not None and scaling.get("mode", "builtin") != AutoscalingMode.HPA.value:
        return True
    phase = ((status or {}).get("rollout") or {}).get("phase")
    return spec.get("rollout") is not None and phase in MOVING_PHASES


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    """A timer per ModelService with ``spec.rollout`` or ``spec.autoscaling``: it runs the
    same reconcile (one lock per object), which steps the canary and the autoscaler."""
    from mlkube.operator.handlers import converge

    interval = min(TICK_SECONDS, ctx.config.reconcile_interval)

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=interval,
        initial_delay=interval,
        when=needs_ticks,
        registry=registry,
    )
    async def rollout_tick(
        name: str,
        namespace: str | None,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        **_: Any,
    ) -> None:
        await converge(ctx, namespace or "default", name, apply=True, logger=logger)
