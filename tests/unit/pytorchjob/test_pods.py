"""Pod and Service manifests: names, labels, ports, owner references, GPU tolerations."""

from __future__ import annotations

from typing import Any

import pytest
from ptj_builders import container, job_body, make_job

from mlkube.api.pytorchjob import PyTorchJob
from mlkube.operator.pytorchjob.pods import build_pod, build_service, pod_restart_policy


def test_master_pod_name_labels_owner_and_port() -> None:
    job = make_job()
    pod = build_pod(job, "Master", 0)
    meta = pod["metadata"]
    assert meta["name"] == "mnist-master-0"
    assert meta["namespace"] == "ml"
    assert meta["labels"] == {
        "training.kubeflow.org/operator-name": "pytorchjob-controller",
        "training.kubeflow.org/job-name": "mnist",
        "training.kubeflow.org/replica-type": "master",
        "training.kubeflow.org/replica-index": "0",
        "training.kubeflow.org/job-role": "master",
        "app.kubernetes.io/name": "pytorchjob",
        "app.kubernetes.io/instance": "mnist",
        "app.kubernetes.io/component": "master",
        "app.kubernetes.io/managed-by": "mlkube",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "mlkube.dev/v1alpha1",
            "kind": "PyTorchJob",
            "name": "mnist",
            "uid": "0f0e0d0c-0000-4000-8000-000000000001",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    (main,) = pod["spec"]["containers"]
    assert main["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456}]
    assert pod["spec"]["restartPolicy"] == "OnFailure"


def test_workers_have_no_job_role_unless_there_is_no_master() -> None:
    assert (
        "training.kubeflow.org/job-role"
        not in build_pod(make_job(), "Worker", 0)["metadata"]["labels"]
    )
    worker_only = make_job(master=None)
    labels0 = build_pod(worker_only, "Worker", 0)["metadata"]["labels"]
    labels1 = build_pod(worker_only, "Worker", 1)["metadata"]["labels"]
    assert labels0["training.kubeflow.org/job-role"] == "master"
    assert "training.kubeflow.org/job-role" not in labels1
    assert build_pod(worker_only, "Worker", 1)["metadata"]["name"] == "mnist-worker-1"


def test_user_template_is_kept_and_env_goes_to_every_container() -> None:
    body = job_body()
    tmpl = body["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    tmpl["metadata"] = {"labels": {"team": "vision"}, "annotations": {"a": "b"}}
    tmpl["spec"]["containers"] = [
        container(
            env=[{"name": "NCCL_DEBUG", "value": "INFO"}],
            ports=[{"name": "pytorchjob-port", "containerPort": 29500}],
        ),
        container(name="sidecar", image="busybox"),
    ]
    tmpl["spec"]["nodeSelector"] = {"pool": "train"}
    pod = build_pod(PyTorchJob.model_validate(body), "Worker", 1)
    assert pod["metadata"]["labels"]["team"] == "vision"
    assert pod["metadata"]["annotations"] == {"a": "b"}
    assert pod["spec"]["nodeSelector"] == {"pool": "train"}
    main, sidecar = pod["spec"]["containers"]
    assert main["ports"] == [
        {"name": "pytorchjob-port", "containerPort": 29500}
    ]  # kept, not doubled
    assert "ports" not in sidecar
    assert main["env"][0] == {"name": "NCCL_DEBUG", "value": "INFO"}
    for c in (main, sidecar):
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["RANK"] == "2"
        assert env["PYTHONUNBUFFERED"] == "1"
    # The job's own spec is not modified by building a pod from it.
    assert (
        "env"
        not in body["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][1]
    )


@pytest.mark.parametrize(
    ("replica_policy", "job_policy", "pod_policy"),
    [
        ("OnFailure", "PerPod", "OnFailure"),
        ("Always", "PerPod", "Always"),
        ("Never", "PerPod", "Never"),
        ("ExitCode", "PerPod", "Never"),
        ("OnFailure", "RestartAll", "Never"),
        ("Always", "RestartAll", "Never"),
    ],
)
def test_pod_restart_policy(replica_policy: str, job_policy: str, pod_policy: str) -> None:
    job = make_job(restart=replica_policy, runPolicy={"restartPolicy": job_policy})
    assert pod_restart_policy(job, "Worker") == pod_policy
    assert build_pod(job, "Worker", 0)["spec"]["restartPolicy"] == pod_policy


GPU = {"limits": {"nvidia.com/gpu": 1}}


@pytest.mark.parametrize(
    ("resources", "tolerations", "expected"),
    [
        (None, None, None),
        ({"limits": {"cpu": "2"}}, None, None),
        (GPU, None, [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]),
        (
            {"requests": {"amd.com/gpu": "2"}, "limits": {"amd.com/gpu": "2"}},
            None,
            [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        ),
        ({"limits": {"nvidia.com/gpu": 0}}, None, None),
        (
            GPU,
            [
                {
                    "key": "nvidia.com/gpu",
                    "operator": "Equal",
                    "value": "a100",
                    "effect": "NoSchedule",
                }
            ],
            [
                {
                    "key": "nvidia.com/gpu",
                    "operator": "Equal",
                    "value": "a100",
                    "effect": "NoSchedule",
                }
            ],
        ),
        (GPU, [{"operator": "Exists"}], [{"operator": "Exists"}]),
        (
            GPU,
            [{"key": "spot", "operator": "Exists"}],
            [
                {"key": "spot", "operator": "Exists"},
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            ],
        ),
    ],
)
def test_gpu_toleration_is_added_only_when_needed(
    resources: dict[str, Any] | None,
    tolerations: list[dict[str, Any]] | None,
    expected: list[dict[str, Any]] | None,
) -> None:
    body = job_body()
    spec = body["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    if resources is not None:
        spec["containers"][0]["resources"] = resources
    if tolerations is not None:
        spec["tolerations"] = tolerations
    pod = build_pod(PyTorchJob.model_validate(body), "Worker", 0)
    assert pod["spec"].get("tolerations") == expected


def test_scheduling_policy_priority_class_fills_in_only_when_unset() -> None:
    job = make_job(runPolicy={"schedulingPolicy": {"priorityClass": "training", "minAvailable": 3}})
    assert build_pod(job, "Master", 0)["spec"]["priorityClassName"] == "training"
    body = job_body(runPolicy={"schedulingPolicy": {"priorityClass": "training"}})
    body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["priorityClassName"] = (
        "urgent"
    )
    assert (
        build_pod(PyTorchJob.model_validate(body), "Master", 0)["spec"]["priorityClassName"]
        == "urgent"
    )


def test_headless_service_selects_exactly_its_pod() -> None:
    job = make_job()
    svc = build_service(job, "Worker", 1)
    pod = build_pod(job, "Worker", 1)
    assert svc["metadata"]["name"] == pod["metadata"]["name"] == "mnist-worker-1"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"] == [{"name": "pytorchjob-port", "port": 23456, "targetPort": 23456}]
    assert svc["metadata"]["ownerReferences"] == pod["metadata"]["ownerReferences"]
    selector = svc["spec"]["selector"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    other = build_pod(job, "Worker", 0)["metadata"]["labels"]
    assert not selector.items() <= other.items()
    # Kubeflow's dashboards select on operator-name: the Service carries it as well
    assert svc["metadata"]["labels"]["training.kubeflow.org/operator-name"] == (
        "pytorchjob-controller"
    )


def test_a_service_still_selects_a_pod_made_before_the_operator_name_label() -> None:
    """A Service recreated (deleted by hand) for a pod of a running job that an older
    mlkube created must still route to it: the selector leaves operator-name out."""
    job = make_job()
    old_pod_labels = build_pod(job, "Master", 0)["metadata"]["labels"]
    del old_pod_labels["training.kubeflow.org/operator-name"]
    assert build_service(job, "Master", 0)["spec"]["selector"].items() <= old_pod_labels.items()
