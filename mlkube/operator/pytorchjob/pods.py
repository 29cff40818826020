"""Pod and headless-Service manifests for one replica of a PyTorchJob.

Names and labels are Kubeflow's, so dashboards, ``kubectl logs -l`` one-liners and scripts
that resolve ``<job>-master-0`` keep working: one pod per replica named
``<job>-<type>-<index>``, a headless Service of the same name selecting exactly that pod,
labels ``training.kubeflow.org/{operator-name,job-name,replica-type,replica-index,job-role}``
with Kubeflow v1's values (``operator-name: pytorchjob-controller``; ``job-role: master`` on
the Master, or Worker 0 without one), plus the ``app.kubernetes.io/*`` labels every mlkube
object carries. A Service selects its pod by job name, replica type and index only (Kubeflow
adds operator-name): pods created before operator-name was added lack it, and a Service
recreated for such a running pod must still find it. Pods are created directly (no
Deployment or Job in between) because the controller decides every restart itself.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from mlkube.api.pytorchjob import (
    DEFAULT_CONTAINER_NAME,
    DEFAULT_PORT,
    DEFAULT_PORT_NAME,
    GROUP,
    KIND,
    MASTER,
    VERSION,
    WORKER,
    JobRestartPolicy,
    PyTorchJob,
    RestartPolicy,
)
from mlkube.operator.builders import LABEL_COMPONENT, LABEL_INSTANCE, LABEL_NAME
from mlkube.operator.builders import LABEL_MANAGED_BY as LABEL_MANAGED_BY
from mlkube.operator.pytorchjob.env import merge_env, pod_env, replica_name

LABEL_JOB_NAME = "training.kubeflow.org/job-name"
LABEL_REPLICA_TYPE = "training.kubeflow.org/replica-type"
LABEL_REPLICA_INDEX = "training.kubeflow.org/replica-index"
LABEL_JOB_ROLE = "training.kubeflow.org/job-role"
LABEL_OPERATOR_NAME = "training.kubeflow.org/operator-name"
OPERATOR_NAME = "pytorchjob-controller"
"""Kubeflow's value for PyTorchJob children: queries written for Kubeflow select on it."""
APP_NAME = "pytorchjob"
MANAGED_BY = "mlkube"


def job_labels(job_name: str) -> dict[str, str]:
    """Labels on every pod and service of a job; the first one is what the operator lists by."""
    return {
        LABEL_JOB_NAME: job_name,
        LABEL_OPERATOR_NAME: OPERATOR_NAME,
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: job_name,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def is_master_role(job: PyTorchJob, replica_type: str, index: int) -> bool:
    """The Master, or Worker 0 when there is no Master (Kubeflow's ``job-role: master``)."""
    if MASTER in job.spec.pytorch_replica_specs:
        return replica_type == MASTER
    return replica_type == WORKER and index == 0


def replica_labels(job: PyTorchJob, replica_type: str, index: int) -> dict[str, str]:
    labels = job_labels(job.name)
    labels[LABEL_REPLICA_TYPE] = replica_type.lower()
    labels[LABEL_REPLICA_INDEX] = str(index)
    labels[LABEL_COMPONENT] = replica_type.lower()
    if is_master_role(job, replica_type, index):
        labels[LABEL_JOB_ROLE] = "master"
    return labels


def replica_selector(job_name: str, replica_type: str) -> dict[str, str]:
    """What selects all pods of one replica type (status ``selector``, scale subresource)."""
    return {LABEL_JOB_NAME: job_name, LABEL_REPLICA_TYPE: replica_type.lower()}


def format_selector(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def owner_reference(job: PyTorchJob) -> dict[str, Any]:
    """The controller reference: garbage collection deletes the children with the job."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": job.name,
        "uid": str(job.metadata.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def with_default_port(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """Add ``pytorchjob-port`` 23456 to the ``pytorch`` container unless it has that port."""
    out = copy.deepcopy(pod_spec)
    containers = out.get("containers") or []
    target = next(
        (c for c in containers if c.get("name") == DEFAULT_CONTAINER_NAME),
        containers[0] if containers else None,
    )
    if target is None:
        return out
    ports = target.setdefault("ports", [])
    if not any(p.get("name") == DEFAULT_PORT_NAME for p in ports):
        ports.append({"name": DEFAULT_PORT_NAME, "containerPort": DEFAULT_PORT})
    return out


def _is_gpu_resource(name: str) -> bool:
    return "gpu" in name.lower()


def _nonzero(quantity: Any) -> bool:
    text = str(quantity).strip()
    return text not in ("", "0", "0.0", "0m")


def gpu_resources(pod_spec: dict[str, Any]) -> list[str]:
    """GPU resource names (``nvidia.com/gpu``, ``amd.com/gpu``...) the pod asks for."""
    found: set[str] = set()
    for container in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]:
        resources = container.get("resources") or {}
        for section in ("limits", "requests"):
            for name, quantity in (resources.get(section) or {}).items():
                if _is_gpu_resource(name) and _nonzero(quantity):
                    found.add(name)
    return sorted(found)


def _tolerates(tolerations: Iterable[dict[str, Any]], key: str) -> bool:
    for toleration in tolerations:
        if toleration.get("key") == key:
            return True
        if not toleration.get("key") and toleration.get("operator") == "Exists":
            return True  # tolerates every taint
    return False


def with_gpu_tolerations(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """GPU nodes are commonly tainted with the resource name (``nvidia.com/gpu:NoSchedule``);
    a pod asking for that resource gets the matching toleration unless it has one."""
    out = copy.deepcopy(pod_spec)
    tolerations = list(out.get("tolerations") or [])
    for resource in gpu_resources(out):
        if not _tolerates(tolerations, resource):
            tolerations.append({"key": resource, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        out["tolerations"] = tolerations
    return out


def pod_restart_policy(job: PyTorchJob, replica_type: str) -> str:
    """The pod-level restartPolicy. ExitCode needs the pod to stop so the controller can read
    the exit code (Never); RestartAll needs every restart to go through the controller too."""
    policy = job.spec.pytorch_replica_specs[replica_type].restart_policy
    if job.spec.run_policy.restart_policy is JobRestartPolicy.RESTART_ALL:
        return "Never"
    if policy is RestartPolicy.EXIT_CODE:
        return "Never"
    return str(policy)


def build_pod(job: PyTorchJob, replica_type: str, index: int) -> dict[str, Any]:
    """The pod of one replica: the user's template plus name, labels, env, port, policies."""
    replica = job.spec.pytorch_replica_specs[replica_type]
    template = copy.deepcopy(replica.template)
    template_meta: dict[str, Any] = template.get("metadata") or {}
    pod_spec = with_gpu_tolerations(with_default_port(template.get("spec") or {}))

    env = pod_env(job.name, job.spec, replica_type, index)
    for container in pod_spec.get("containers") or []:
        container["env"] = merge_env(container.get("env"), env)
    pod_spec["restartPolicy"] = pod_restart_policy(job, replica_type)
    scheduling = job.spec.run_policy.scheduling_policy
    if (
        scheduling is not None
        and scheduling.priority_class
        and not pod_spec.get("priorityClassName")
    ):
        pod_spec["priorityClassName"] = scheduling.priority_class

    labels = {**(template_meta.get("labels") or {}), **replica_labels(job, replica_type, index)}
    metadata: dict[str, Any] = {
        "name": replica_name(job.name, replica_type, index),
        "namespace": job.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(job)],
    }
    if template_meta.get("annotations"):
        metadata["annotations"] = dict(template_meta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def build_service(job: PyTorchJob, replica_type: str, index: int) -> dict[str, Any]:
    """The headless Service that gives the replica's pod a stable DNS name.

    ``publishNotReadyAddresses`` lets peers resolve the name as soon as the pod has an
    address, so a worker starting before the master is Ready does not fail its first lookup.
    """
    template = job.spec.pytorch_replica_specs[replica_type].template
    pod_spec = with_default_port(template.get("spec") or {})
    ports = []
    for container in pod_spec.get("containers") or []:
        if container.get("name") != DEFAULT_CONTAINER_NAME:
            continue
        for port in container.get("ports") or []:
            entry: dict[str, Any] = {"port": int(port["containerPort"])}
            if port.get("name"):
                entry["name"] = port["name"]
            entry["targetPort"] = int(port["containerPort"])
            ports.append(entry)
    labels = replica_labels(job, replica_type, index)
    # not the operator-name label: pods created before it existed must stay selected
    selector = {
        LABEL_JOB_NAME: job.name,
        LABEL_REPLICA_TYPE: replica_type.lower(),
        LABEL_REPLICA_INDEX: str(index),
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": replica_name(job.name, replica_type, index),
            "namespace": job.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": selector,
            "ports": ports,
            "publishNotReadyAddresses": True,
        },
    }
