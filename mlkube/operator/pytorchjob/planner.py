"""The API calls one reconcile of a PyTorchJob makes: ``plan(job, pods, services, now)``.

Pure and level-based: given the job and the pods and services it owns right now, it says
which pods and services to create and delete, whether the job itself is due for deletion
(TTL), the status to write, the events to record, and when to look again. Running it
twice on the same inputs gives the same plan; applying a plan and planning again converges
(deleted children come back, finished ones are not recreated).

Pods are only created for missing replica slots (``replicas: 0`` creates nothing, #1709),
never while the job is finished, suspended or restarting, and never under a name that a
Terminating pod still holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlkube.api.pytorchjob import PyTorchJob, PyTorchJobStatus
from mlkube.operator.events import Event
from mlkube.operator.pytorchjob.env import replica_name
from mlkube.operator.pytorchjob.pods import build_pod, build_service
from mlkube.operator.pytorchjob.status import PodState, assess


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
) -> Plan:
    """The whole reconcile of ``job`` (see the module docstring)."""
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

    pod_names = {_name(pod) for pod in pods}
    service_names = [_name(svc) for svc in services]
    going = set(out.delete_pods) | set(out.force_delete_pods)
    slots = desired_slots(job)
    slot_names = {replica_name(job.name, rtype, index): (rtype, index) for rtype, index in slots}

    if verdict.finished or verdict.suspended:
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

    for name in service_names:
        if name not in slot_names:
            out.delete_services.append(name)  # scaled down
    for name, (rtype, index) in slot_names.items():
        if name not in service_names:
            out.create_services.append(build_service(job, rtype, index))
        if verdict.create_pods and name not in pod_names:
            out.create_pods.append(build_pod(job, rtype, index))
    return out
