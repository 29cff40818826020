"""Progressive delivery and autoscaling: the pure decisions of a ModelService's release.

:mod:`mlkube.operator.release` (the shell) reads the Deployments and Prometheus, then this
module and :mod:`mlkube.operator.rollout` decide: :func:`build_children` turns a rollout
decision into manifests (the stable Deployment keeps the stable revision's template,
rebuilt from ``status.rollout.stableSpec`` while the spec already names the new revision;
the canary Deployment runs the new one; replica counts split by weight; an HTTPRoute for
``gatewayAPI`` routing; an HPA for ``autoscaling.mode: hpa``), :func:`with_rollout` merges
the rollout's say into the status, and :func:`next_pass` says when to look again.
Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from mlkube.api.modelservice import (
    Condition,
    ModelService,
    ModelServiceSpec,
    ModelServiceStatus,
)
from mlkube.api.rollout import (
    AutoscalingMode,
    AutoscalingStatus,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    RolloutStrategy,
    TrafficRouting,
)
from mlkube.operator.autoscaler import (
    build_hpa,
)
from mlkube.operator.builders import (
    CONTAINER_NAME,
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
from mlkube.operator.events import Event
from mlkube.operator.rollout import (
    RolloutDecision,
    degraded_condition,
    describe_split,
    progressing_condition,
    split_replicas,
)
from mlkube.serving.config import env_name

JsonDict = dict[str, Any]

HANDOVER_MANAGER = "mlkube-handover"
"""Field manager that holds the stable Deployment's replica count while it passes to an HPA."""

TICK_SECONDS = 5.0
"""How often a ModelService with a canary in flight or the built-in autoscaler is reconciled.
Decisions use the clock,
not the tick count, so this only bounds how late a step can be."""


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


def track_replicas(total: int, weight: int, shadowed: bool) -> tuple[int, int]:
    """Stable and canary pods for ``weight``: :func:`split_replicas`, except that a shadowed
    canary at 0% runs one pod, which answers only the copies (Service ``N`` does not select
    it then)."""
    stable, canary = split_replicas(total, weight)
    if shadowed and weight == 0 and total > 0:
        canary = 1
    return stable, canary


def shadow_url(ms: ModelService) -> str:
    """Where stable pods send shadow copies: the canary track's Service ``N-canary``."""
    return f"http://{ms.metadata.name}-canary.{ms.metadata.namespace}.svc.cluster.local"


def add_shadow_env(deployment: JsonDict, ms: ModelService, fraction: float) -> None:
    """Point the stable Deployment's runtime at the canary (its pods restart once: the
    env is part of the pod template)."""
    container = next(
        c
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] == CONTAINER_NAME
    )
    names = (env_name(("shadow", "url")), env_name(("shadow", "fraction")))
    container["env"] = [e for e in container["env"] if e["name"] not in names] + [
        {"name": names[0], "value": shadow_url(ms)},
        {"name": names[1], "value": repr(fraction)},
    ]


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
    # No copies while promoting: the stable Deployment runs the canary's revision by then.
    shadow = rollout.shadow if canary is not None and not promoting else None
    if canary is not None:
        stable_n, canary_n = track_replicas(total, weight, shadow is not None)
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
    service = desired.service
    if shadow is not None:
        add_shadow_env(stable_dep, ms, shadow.fraction)
        if weight == 0:
            # At 0% the canary must get no user traffic: Service N selects stable pods only.
            service = copy.deepcopy(service)
            service["spec"]["selector"] = selector_labels(name, "stable")

    objects: list[JsonDict] = [service, stable_dep]
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
    elif shadow is not None:
        # The stable pods address the canary by its own Service.
        routing = [build_track_service(ms, "canary")]
        split = describe_split(stable_n, canary_n if weight else 0, weight)
    else:
        split = describe_split(stable_n, canary_n, weight if canary else 0)
        if canary is None:  # a shadowed canary's Service goes with the canary
            deletions.append(("Service", f"{name}-canary"))

    if shadow is not None:
        split += f"; shadow: {shadow.fraction:.0%} of stable's requests copied to the canary"

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
    events: list[Event] = field(default_factory=list)
    handovers: list[JsonDict] = field(default_factory=list)
    """Applied first with :data:`HANDOVER_MANAGER` (see :func:`replicas_handover`)."""


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

    Everything else is left to the (slower) drift check, so a cluster of settled
    ModelServices costs the API server nothing extra.
    """
    scaling = spec.get("autoscaling")
    if scaling is not None and scaling.get("mode", "builtin") != AutoscalingMode.HPA.value:
        return True
    phase = ((status or {}).get("rollout") or {}).get("phase")
    return spec.get("rollout") is not None and phase in MOVING_PHASES


def next_pass(spec: Any, status: Any, drift_interval: float) -> float:
    """Pure: seconds until a ModelService's next full reconcile (raw ``spec``/``status``)."""
    if needs_ticks(spec or {}, status):
        return min(TICK_SECONDS, drift_interval)
    return drift_interval
