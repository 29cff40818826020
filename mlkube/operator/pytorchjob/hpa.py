"""The HorizontalPodAutoscaler of an elastic PyTorchJob with ``elasticPolicy.metrics``.

As in Kubeflow training-operator v1: an ``autoscaling/v2`` HPA named after the job, owned
by it, whose ``scaleTargetRef`` is the PyTorchJob itself. The CRD's scale subresource maps
to ``pytorchReplicaSpecs.Worker.replicas`` (status: ``replicaStatuses.Worker.active``,
selector: ``replicaStatuses.Worker.selector``), so the HPA controller adds and removes
Workers between ``elasticPolicy.minReplicas`` and ``maxReplicas`` (after Kubeflow's
defaulting) on the metrics given, which are passed through as written. The HPA exists only
while the job runs: removing ``metrics``, suspending the job or its finishing deletes it
(Kubeflow leaves it behind on the last two).
"""

from __future__ import annotations

from typing import Any

from mlkube.api.pytorchjob import GROUP, KIND, VERSION, PyTorchJob
from mlkube.operator.pytorchjob.pods import job_labels, owner_reference


def build_hpa(job: PyTorchJob) -> dict[str, Any] | None:
    """The HPA ``job`` asks for, or None when it asks for none."""
    policy = job.spec.elastic_policy
    bounds = job.spec.elastic_bounds()
    if policy is None or not policy.metrics or bounds is None:
        return None
    low, high = bounds
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": job.name,
            "namespace": job.namespace,
            "labels": job_labels(job.name),
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": job.name},
            # An HPA's minReplicas is at least 1 (0 needs the HPAScaleToZero feature gate).
            "minReplicas": max(low, 1),
            "maxReplicas": max(high, 1),
            "metrics": policy.metrics,
        },
    }
