"""The API calls one reconcile of a PyTorchJob makes: ``plan(job, pods, services, now)``.

Pure and level-based: given the job and the pods and services it owns right now, it says
which pods and services to create and delete, whether the job itself is due for deletion
(TTL), the status to write, the events to record, and when to look again. Running it
twice on the same inputs gives the same plan; applying a plan and planning again converges
(deleted children come back, finished ones are not recreated).

Pods are only created for missing replica slots (``replicas: 0`` creates nothing, #1709),
never while the job is finished, suspended or restarting, never under a name that a
Terminating pod still holds, and never while the gang scheduler the job asks for is not
installed (:mod:`.gang`). The job's optional children, its PodGroup and its HPA
(:mod:`.hpa`), are planned as :class:`Extra`: the manifest wanted, or None for "must not
exist".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlkube.api.pytorchjob import KIND, ConditionType, PyTorchJob, PyTorchJobStatus
from mlkube.operator.events import Event
from mlkube.operator.pytorchjob.env import replica_name
from mlkube.operator.pytorchjob.gang import (
    PodGroupAPI,
    build_pod_group,
    gang_pod,
    gang_requested,
    unavailable_message,
    wanted_api,
)
from mlkube.operator.pytorchjob.hpa import build_hpa
from mlkube.operator.pytorchjob.pods import build_pod, build_service
from mlkube.operator.pytorchjob.status import PodState, assess, condition, set_condition

HPA = "HorizontalPodAutoscaler"
#: Seconds between looks at whether a missing gang scheduler has been installed.
GANG_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Extra:
    """An optional child of the job: the manifest wanted, or None (must not exist)."""

    resource: str
    """Its key in :data:`mlkube.operator.kube.RESOURCES`."""
    name: str
    manifest: dict[str, Any] | None


@dataclass
class Plan:
    """Everything one reconcile does, as data."""

    status: PyTorchJobStatus
    create_pods: list[dict[str, Any]] = field(default_factory=list)
    create_services: list[dict[str, Any]] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    force_delete_pods: list[str] = field(default_factory=list)
    delete_services: list[str] = field(default_factory=list)
    delete_job: bool = False
    extras: list[Extra] = field(default_factory=list)
    """Applied before any pod is created (a gang's PodGroup must exist first)."""
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None

    @property
    def idle(self) -> bool:
        """Nothing to create or delete (the status may still change)."""
        return not (
            self.create_pods
            or self.create_services
            or self.delete_pods
            or self.force_delete_pods
            or self.delete_services
            or self.delete_job
        )


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def desired_slots(job: PyTorchJob) -> list[tuple[str, int]]:
    """Every (replica type, index) that should have a pod, Master first."""
    slots: list[tuple[str, int]] = []
    for rtype in ("Master", "Worker"):
        spec = job.spec.pytorch_replica_specs.get(rtype)
        if spec is not None:
            slots += [(rtype, i) for i in range(spec.replicas)]
    return slots


def plan(
    job: PyTorchJob,
    pods: Sequence[Mapping[str, Any]],
    services: Sequence[Mapping[str, Any]],
    now: datetime,
    pod_group_apis: Collection[PodGroupAPI] = (),
) -> Plan:
    """The whole reconcile of ``job`` (see the module docstring); ``pod_group_apis`` are
    the PodGroup APIs the cluster serves (looked up only for jobs that ask for a gang)."""
    verdict = assess(job, pods, now)
    if verdict.delete_job:
        # Garbage collection removes the children with the job.
        return Plan(status=verdict.status, delete_job=True, events=list(verdict.events))
    out = Plan(
        status=verdict.status,
        delete_pods=list(verdict.delete),
        force_delete_pods=list(verdict.force_delete),
        events=list(verdict.events),
        requeue_after=verdict.requeue_after,
    )
    live = not (verdict.finished or verdict.suspended)
    if job.spec.elastic_policy is not None:
        out.extras.append(Extra(HPA, job.name, build_hpa(job) if live else None))
    gang = _gang(job, out, now, pod_group_apis) if live else None
    if not live:
        out.extras += [Extra(api.resource, job.name, None) for api in pod_group_apis]

    pod_names = {_name(pod) for pod in pods}
    service_names = [_name(svc) for svc in services]
    going = set(out.delete_pods) | set(out.force_delete_pods)
    slots = desired_slots(job)
    slot_names = {replica_name(job.name, rtype, index): (rtype, index) for rtype, index in slots}

    if not live:
        kept_pods = {
            v.name
            for v in verdict.views
            if v.name not in going and v.state is not PodState.TERMINATING
        }
        for name in service_names:
            # A replica's headless service goes with its pod (cleanPodPolicy, Kubeflow's
            # rule), and every one while suspended.
            if verdict.suspended or name in going or name not in kept_pods:
                out.delete_services.append(name)
        return out

    blocked = gang_requested(job) and gang is None
    for name in service_names:
        if name not in slot_names:
            out.delete_services.append(name)  # scaled down
    for name, (rtype, index) in slot_names.items():
        if name not in service_names:
            out.create_services.append(build_service(job, rtype, index))
        if verdict.create_pods and not blocked and name not in pod_names:
            manifest = build_pod(job, rtype, index)
            if gang is not None:
                manifest = gang_pod(manifest, job, rtype, gang)
            out.create_pods.append(manifest)
    return out


def _gang(
    job: PyTorchJob, out: Plan, now: datetime, served: Collection[PodGroupAPI]
) -> PodGroupAPI | None:
    """Plan the PodGroup of a running job; the API its pods join, or None (no gang wanted,
    or the one wanted is not installed: the job then says so and looks again soon)."""
    if not gang_requested(job):
        return None
    api = wanted_api(job, served)
    out.extras += [
        Extra(other.resource, job.name, build_pod_group(job, api) if other is api else None)
        for other in served
    ]
    at = now.replace(microsecond=0)
    status = out.status
    if api is None:
        message = unavailable_message(job)
        status.conditions, changed = set_condition(
            status.conditions,
            ConditionType.GANG_SCHEDULING,
            "False",
            f"{KIND}PodGroupUnavailable",
            message,
            at,
        )
        if changed:
            out.events.append(Event("Warning", f"{KIND}PodGroupUnavailable", message))
        if out.requeue_after is None or out.requeue_after > GANG_RETRY_SECONDS:
            out.requeue_after = GANG_RETRY_SECONDS
        return None
    before = condition(status.conditions, ConditionType.GANG_SCHEDULING)
    if before is not None and before.status != "True":
        message = f"PodGroup {job.name} ({api.crd}) created; the pods are created now"
        status.conditions, _ = set_condition(
            status.conditions,
            ConditionType.GANG_SCHEDULING,
            "True",
            f"{KIND}PodGroupCreated",
            message,
            at,
        )
        out.events.append(Event("Normal", f"{KIND}PodGroupCreated", message))
    return api
