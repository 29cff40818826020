"""Gang scheduling: the PodGroup of a PyTorchJob and how its pods point at it.

A distributed job whose pods start one by one can hold half a cluster's GPUs while the rest
of its ranks wait for room that never comes. A gang scheduler places the whole group or
none of it; it learns the group from a PodGroup object and from a label or annotation on
each pod. Kubeflow training-operator v1 supports two, chosen by an operator flag; mlkube
detects at run time which PodGroup API the cluster serves and needs no flag:

* scheduler-plugins' coscheduling (``podgroups.scheduling.x-k8s.io``, v1alpha1): PodGroup
  ``spec.minMember``/``minResources``/``scheduleTimeoutSeconds``; pods labelled
  ``scheduling.x-k8s.io/pod-group: <job>`` and scheduled by ``scheduler-plugins-scheduler``
  (the scheduler-plugins chart's second scheduler) unless the template names one;
* Volcano (``podgroups.scheduling.volcano.sh``, v1beta1): PodGroup ``spec.minMember``/
  ``queue``/``priorityClassName``/``minResources``; pods annotated
  ``scheduling.k8s.io/group-name: <job>`` and ``volcano.sh/task-spec: <replica type>`` and
  scheduled by ``volcano``.

A job asks for a gang through ``runPolicy.schedulingPolicy`` (``minAvailable``, ``queue``,
``minResources`` or ``scheduleTimeoutSeconds``) or a pod template naming the ``volcano``
scheduler. Volcano is used when a template names it, or when it is the only API served;
otherwise scheduler-plugins. When the API the job needs is not served, no pod is created
(a gang that starts half its pods is what the user asked to avoid) and the job says why.
The PodGroup is named after the job, owned by it, and exists only while the job runs
(deleted when it finishes or is suspended, as in Kubeflow). ``minMember`` is
``minAvailable``, else every replica of the job.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from enum import StrEnum
from typing import Any

from mlkube.api.pytorchjob import PyTorchJob
from mlkube.operator.pytorchjob.pods import job_labels, owner_reference

VOLCANO_SCHEDULER = "volcano"
SCHEDULER_PLUGINS_SCHEDULER = "scheduler-plugins-scheduler"
LABEL_POD_GROUP = "scheduling.x-k8s.io/pod-group"
ANNOTATION_GROUP_NAME = "scheduling.k8s.io/group-name"
ANNOTATION_TASK_SPEC = "volcano.sh/task-spec"
DEFAULT_VOLCANO_QUEUE = "default"


class PodGroupAPI(StrEnum):
    """A PodGroup API a gang scheduler serves (its apiVersion)."""

    SCHEDULER_PLUGINS = "scheduling.x-k8s.io/v1alpha1"
    VOLCANO = "scheduling.volcano.sh/v1beta1"

    @property
    def crd(self) -> str:
        """The CustomResourceDefinition that serves it."""
        return f"podgroups.{self.value.split('/', 1)[0]}"

    @property
    def resource(self) -> str:
        """Its key in :data:`mlkube.operator.kube.RESOURCES`."""
        return f"PodGroup.{self.value.split('/', 1)[0]}"


def template_schedulers(job: PyTorchJob) -> set[str]:
    """The ``schedulerName`` values the job's pod templates set."""
    names = set()
    for spec in job.spec.pytorch_replica_specs.values():
        name = (spec.template.get("spec") or {}).get("schedulerName")
        if name:
            names.add(str(name))
    return names


def gang_requested(job: PyTorchJob) -> bool:
    """Whether the job asks for gang scheduling (see the module docstring)."""
    policy = job.spec.run_policy.scheduling_policy
    if policy is not None and (
        policy.min_available is not None
        or policy.queue
        or policy.min_resources
        or policy.schedule_timeout_seconds is not None
    ):
        return True
    return VOLCANO_SCHEDULER in template_schedulers(job)


def wanted_api(job: PyTorchJob, served: Collection[PodGroupAPI]) -> PodGroupAPI | None:
    """The PodGroup API for this job among those ``served``; None when the one it needs
    is not served."""
    if VOLCANO_SCHEDULER in template_schedulers(job):
        return PodGroupAPI.VOLCANO if PodGroupAPI.VOLCANO in served else None
    if PodGroupAPI.SCHEDULER_PLUGINS in served:
        return PodGroupAPI.SCHEDULER_PLUGINS
    if PodGroupAPI.VOLCANO in served:
        return PodGroupAPI.VOLCANO
    return None


def unavailable_message(job: PyTorchJob) -> str:
    if VOLCANO_SCHEDULER in template_schedulers(job):
        needed = f"{PodGroupAPI.VOLCANO.crd} (the pod template names the volcano scheduler)"
    else:
        needed = f"{PodGroupAPI.SCHEDULER_PLUGINS.crd} or {PodGroupAPI.VOLCANO.crd}"
    return (
        f"runPolicy.schedulingPolicy asks for gang scheduling but the cluster serves no "
        f"{needed}; no pod is created until it does"
    )


def min_member(job: PyTorchJob) -> int:
    """``minAvailable``, else every replica (Kubeflow's default)."""
    policy = job.spec.run_policy.scheduling_policy
    if policy is not None and policy.min_available is not None:
        return policy.min_available
    return job.spec.total_replicas()


def build_pod_group(job: PyTorchJob, api: PodGroupAPI) -> dict[str, Any]:
    """The PodGroup of ``job`` for ``api`` (fields as Kubeflow fills them)."""
    policy = job.spec.run_policy.scheduling_policy
    spec: dict[str, Any] = {"minMember": min_member(job)}
    min_resources = policy.min_resources if policy is not None else None
    if min_resources:
        spec["minResources"] = {k: str(v) for k, v in min_resources.items()}
    if api is PodGroupAPI.VOLCANO:
        spec["queue"] = (policy.queue if policy is not None else None) or DEFAULT_VOLCANO_QUEUE
        if policy is not None and policy.priority_class:
            spec["priorityClassName"] = policy.priority_class
    elif policy is not None and policy.schedule_timeout_seconds is not None:
        spec["scheduleTimeoutSeconds"] = policy.schedule_timeout_seconds
    return {
        "apiVersion": api.value,
        "kind": "PodGroup",
        "metadata": {
            "name": job.name,
            "namespace": job.namespace,
            "labels": job_labels(job.name),
            "ownerReferences": [owner_reference(job)],
        },
        "spec": spec,
    }


def gang_pod(
    pod: dict[str, Any], job: PyTorchJob, replica_type: str, api: PodGroupAPI
) -> dict[str, Any]:
    """``pod`` as the gang scheduler of ``api`` recognises a member of the job's group; a
    ``schedulerName`` the template sets is kept."""
    out = copy.deepcopy(pod)
    meta, spec = out["metadata"], out["spec"]
    if api is PodGroupAPI.VOLCANO:
        spec.setdefault("schedulerName", VOLCANO_SCHEDULER)
        annotations = meta.setdefault("annotations", {})
        annotations[ANNOTATION_GROUP_NAME] = job.name
        annotations[ANNOTATION_TASK_SPEC] = replica_type.lower()
    else:
        spec.setdefault("schedulerName", SCHEDULER_PLUGINS_SCHEDULER)
        meta.setdefault("labels", {})[LABEL_POD_GROUP] = job.name
    return out
