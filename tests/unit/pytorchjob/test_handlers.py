"""The pure helpers of the kopf shell: which children are the job's, whose pod is it."""

from __future__ import annotations

from typing import Any

from mlkube.operator.pytorchjob.handlers import controlling_job, owned


def child(
    name: str, job: str, uid: str, controller: bool = True, kind: str = "PyTorchJob"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"training.kubeflow.org/job-name": job},
            "ownerReferences": [
                {
                    "apiVersion": "mlkube.dev/v1alpha1",
                    "kind": kind,
                    "name": job,
                    "uid": uid,
                    "controller": controller,
                }
            ],
        }
    }


def test_only_children_controlled_by_this_job_instance_count() -> None:
    mine = child("a-master-0", "a", "u1")
    previous_incarnation = child("a-worker-0", "a", "u0")  # same name, deleted and recreated job
    not_controller = child("a-worker-1", "a", "u1", controller=False)
    other_job = child("b-master-0", "b", "u1")
    assert owned([mine, previous_incarnation, not_controller, other_job], "a", "u1") == [mine]


def test_the_owning_job_of_a_pod() -> None:
    assert controlling_job(child("a-master-0", "a", "u1")["metadata"]) == "a"
    assert controlling_job(child("x", "a", "u1", kind="ModelService")["metadata"]) is None
    assert controlling_job(child("x", "a", "u1", controller=False)["metadata"]) is None
    assert controlling_job({}) is None
