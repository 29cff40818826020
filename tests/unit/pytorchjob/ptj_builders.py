"""Builders shared by the PyTorchJob tests: jobs, and pods as the API server reports them.

Imported as a plain module (the conftest puts this directory on ``sys.path``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mlkube.api.pytorchjob import PyTorchJob

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def container(
    name: str = "pytorch", image: str = "pytorch/pytorch:2.4.1", **extra: Any
) -> dict[str, Any]:
    return {"name": name, "image": image, **extra}


def replica(replicas: int = 1, restart: str | None = None, **spec: Any) -> dict[str, Any]:
    pod_spec = {"containers": [container()], **spec}
    out: dict[str, Any] = {"replicas": replicas, "template": {"spec": pod_spec}}
    if restart is not None:
        out["restartPolicy"] = restart
    return out


def job_body(
    name: str = "mnist",
    master: int | None = 1,
    workers: int | None = 2,
    restart: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    specs: dict[str, Any] = {}
    if master is not None:
        specs["Master"] = replica(master, restart)
    if workers is not None:
        specs["Worker"] = replica(workers, restart)
    return {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": "0f0e0d0c-0000-4000-8000-000000000001",
            "generation": 1,
        },
        "spec": {"pytorchReplicaSpecs": specs, **spec},
    }


def make_job(
    name: str = "mnist",
    master: int | None = 1,
    workers: int | None = 2,
    restart: str | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> PyTorchJob:
    body = job_body(name, master, workers, restart, **spec)
    if status is not None:
        body["status"] = status
    return PyTorchJob.model_validate(body)


def pod(
    job: str,
    rtype: str,
    index: int,
    phase: str = "Running",
    exit_code: int | None = None,
    restarts: int = 0,
    deleting: datetime | None = None,
) -> dict[str, Any]:
    """A pod as the API server reports it, labelled the way the operator labels it."""
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code}}
    metadata: dict[str, Any] = {
        "name": f"{job}-{rtype.lower()}-{index}",
        "labels": {
            "training.kubeflow.org/job-name": job,
            "training.kubeflow.org/replica-type": rtype.lower(),
            "training.kubeflow.org/replica-index": str(index),
        },
    }
    if deleting is not None:
        metadata["deletionTimestamp"] = stamp(deleting)
    return {
        "metadata": metadata,
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "pytorch", "restartCount": restarts, "state": state}],
        },
    }


def service(job: str, rtype: str, index: int) -> dict[str, Any]:
    return {"metadata": {"name": f"{job}-{rtype.lower()}-{index}"}}
