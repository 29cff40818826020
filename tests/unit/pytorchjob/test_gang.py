"""Gang scheduling (PodGroups) and the elastic HPA, as the planner decides them."""

from __future__ import annotations

from typing import Any

import pytest
from ptj_builders import T0, at, make_job, pod, stamp

from mlkube.api.pytorchjob import PyTorchJob
from mlkube.operator.cache import UnwatchedChildren
from mlkube.operator.pytorchjob.gang import PodGroupAPI
from mlkube.operator.pytorchjob.planner import HPA, Extra, Plan, plan

SP = PodGroupAPI.SCHEDULER_PLUGINS
VOLCANO = PodGroupAPI.VOLCANO
BOTH = (SP, VOLCANO)
OWNER = {
    "apiVersion": "mlkube.dev/v1alpha1",
    "kind": "PyTorchJob",
    "name": "mnist",
    "uid": "0f0e0d0c-0000-4000-8000-000000000001",
    "controller": True,
    "blockOwnerDeletion": True,
}


def gang_job(scheduling: dict[str, Any] | None = None, **spec: Any) -> PyTorchJob:
    run = {"schedulingPolicy": scheduling if scheduling is not None else {"minAvailable": 3}}
    return make_job(runPolicy={**run, **spec.pop("runPolicy", {})}, **spec)


def volcano_job(**scheduling: Any) -> PyTorchJob:
    job = gang_job(scheduling or {"queue": "training"})
    for spec in job.spec.pytorch_replica_specs.values():
        spec.template["spec"]["schedulerName"] = "volcano"
    return job


def extras(out: Plan) -> dict[str, dict[str, Any] | None]:
    return {e.resource: e.manifest for e in out.extras}


def conds(out: Plan) -> dict[str, tuple[str, str | None]]:
    return {c.type.value: (c.status, c.reason) for c in out.status.conditions}


# ------------------------------------------------------------------------------ PodGroup


def test_no_scheduling_policy_no_gang() -> None:
    out = plan(make_job(), [], [], at(0), BOTH)
    assert out.extras == []
    assert all("schedulerName" not in p["spec"] for p in out.create_pods)
    # priorityClass alone is not a gang (it becomes the pods' priorityClassName).
    out = plan(gang_job({"priorityClass": "high"}), [], [], at(0), BOTH)
    assert out.extras == []
    assert {p["spec"]["priorityClassName"] for p in out.create_pods} == {"high"}


def test_scheduler_plugins_pod_group_and_members() -> None:
    job = gang_job({"scheduleTimeoutSeconds": 600, "minResources": {"cpu": "6"}})
    out = plan(job, [], [], at(0), (SP,))
    group = extras(out)[SP.resource]
    assert group == {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {
            "name": "mnist",
            "namespace": "ml",
            "labels": group["metadata"]["labels"],
            "ownerReferences": [OWNER],
        },
        # minAvailable unset: every replica (Master + 2 Workers) must fit at once.
        "spec": {"minMember": 3, "minResources": {"cpu": "6"}, "scheduleTimeoutSeconds": 600},
    }
    assert group["metadata"]["labels"]["training.kubeflow.org/job-name"] == "mnist"
    assert len(out.create_pods) == 3
    for manifest in out.create_pods:
        assert manifest["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "mnist"
        assert manifest["spec"]["schedulerName"] == "scheduler-plugins-scheduler"


def test_min_available_and_a_template_scheduler_name() -> None:
    job = gang_job({"minAvailable": 2})
    job.spec.pytorch_replica_specs["Worker"].template["spec"]["schedulerName"] = (
        "default-scheduler"  # coscheduling compiled into the default scheduler
    )
    out = plan(job, [], [], at(0), BOTH)
    group = extras(out)[SP.resource]
    assert group is not None
    assert group["spec"] == {"minMember": 2}
    assert extras(out)[VOLCANO.resource] is None  # the other API: must not hold a group
    schedulers = {p["metadata"]["name"]: p["spec"]["schedulerName"] for p in out.create_pods}
    assert schedulers == {
        "mnist-master-0": "scheduler-plugins-scheduler",
        "mnist-worker-0": "default-scheduler",
        "mnist-worker-1": "default-scheduler",
    }


def test_volcano_pod_group_and_members() -> None:
    job = volcano_job(queue="training", priorityClass="high")
    out = plan(job, [], [], at(0), BOTH)
    assert extras(out)[SP.resource] is None
    group = extras(out)[VOLCANO.resource]
    assert group is not None
    assert group["apiVersion"] == "scheduling.volcano.sh/v1beta1"
    assert group["spec"] == {"minMember": 3, "queue": "training", "priorityClassName": "high"}
    assert group["metadata"]["ownerReferences"] == [OWNER]
    for manifest in out.create_pods:
        assert manifest["spec"]["schedulerName"] == "volcano"
        annotations = manifest["metadata"]["annotations"]
        assert annotations["scheduling.k8s.io/group-name"] == "mnist"
        rtype = manifest["metadata"]["labels"]["training.kubeflow.org/replica-type"]
        assert annotations["volcano.sh/task-spec"] == rtype
        assert "scheduling.x-k8s.io/pod-group" not in manifest["metadata"]["labels"]


def test_volcano_when_it_is_the_only_api_served() -> None:
    out = plan(gang_job(), [], [], at(0), (VOLCANO,))
    group = extras(out)[VOLCANO.resource]
    assert group is not None
    assert group["spec"] == {"minMember": 3, "queue": "default"}
    assert {p["spec"]["schedulerName"] for p in out.create_pods} == {"volcano"}


@pytest.mark.parametrize(
    ("job", "served", "names"),
    [
        (gang_job(), (), "podgroups.scheduling.x-k8s.io or podgroups.scheduling.volcano.sh"),
        (volcano_job(), (SP,), "podgroups.scheduling.volcano.sh"),
    ],
)
def test_no_pod_starts_while_the_gang_scheduler_is_missing(
    job: PyTorchJob, served: tuple[PodGroupAPI, ...], names: str
) -> None:
    out = plan(job, [], [], at(0), served)
    assert out.create_pods == []
    assert len(out.create_services) == 3  # names resolve once the pods come
    assert conds(out)["GangScheduling"] == ("False", "PyTorchJobPodGroupUnavailable")
    message = out.status.conditions[-1].message or ""
    assert names in message
    assert "no pod is created" in message
    assert out.status.conditions[-1].type.value == "GangScheduling"  # the State column
    assert [(e.type, e.reason) for e in out.events] == [
        ("Warning", "PyTorchJobPodGroupUnavailable")
    ]
    assert out.requeue_after == 5  # looks again for the scheduler soon
    # Still missing: nothing new to say.
    job = job.model_copy(update={"status": out.status})
    again = plan(job, [], [], at(5), served)
    assert again.events == []
    assert again.create_pods == []
    # Installed: the PodGroup, then the pods, and the condition says so.
    now = plan(job, [], [], at(12), BOTH)
    assert len(now.create_pods) == 3
    assert conds(now)["GangScheduling"] == ("True", "PyTorchJobPodGroupCreated")
    assert [e.reason for e in now.events] == ["PyTorchJobPodGroupCreated"]


def test_finished_or_suspended_jobs_hold_no_pod_group() -> None:
    finished = gang_job(
        status={
            "conditions": [{"type": "Succeeded", "status": "True"}],
            "startTime": stamp(T0),
            "completionTime": stamp(T0),
        }
    )
    assert plan(finished, [], [], at(5), BOTH).extras == [
        Extra(SP.resource, "mnist", None),
        Extra(VOLCANO.resource, "mnist", None),
    ]
    suspended = gang_job(runPolicy={"suspend": True})
    out = plan(suspended, [pod("mnist", "Master", 0)], [], at(5), (SP,))
    assert out.extras == [Extra(SP.resource, "mnist", None)]
    assert "GangScheduling" not in conds(out)


# ------------------------------------------------------------------------------------ HPA

METRICS = [
    {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
    }
]


def elastic_job(**elastic: Any) -> PyTorchJob:
    return make_job(master=None, workers=2, elasticPolicy=elastic)


def test_elastic_metrics_get_a_horizontal_pod_autoscaler_on_the_job() -> None:
    out = plan(elastic_job(minReplicas=1, maxReplicas=4, metrics=METRICS), [], [], at(0))
    assert extras(out) == {
        HPA: {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": "mnist",
                "namespace": "ml",
                "labels": extras(out)[HPA]["metadata"]["labels"],  # type: ignore[index]
                "ownerReferences": [OWNER],
            },
            "spec": {
                # the scale subresource: spec.pytorchReplicaSpecs.Worker.replicas
                "scaleTargetRef": {
                    "apiVersion": "mlkube.dev/v1alpha1",
                    "kind": "PyTorchJob",
                    "name": "mnist",
                },
                "minReplicas": 1,
                "maxReplicas": 4,
                "metrics": METRICS,
            },
        }
    }


def test_hpa_bounds_follow_kubeflow_defaulting() -> None:
    hpa = extras(plan(elastic_job(maxReplicas=5, metrics=METRICS), [], [], at(0)))[HPA]
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (5, 5)
    hpa = extras(plan(elastic_job(metrics=METRICS), [], [], at(0)))[HPA]
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 2)


def test_no_metrics_no_hpa() -> None:
    assert extras(plan(elastic_job(minReplicas=1, maxReplicas=4), [], [], at(0))) == {HPA: None}
    assert plan(make_job(), [], [], at(0)).extras == []  # not elastic: nothing to look at


@pytest.mark.parametrize(
    "status",
    [
        {"conditions": [{"type": "Succeeded", "status": "True"}], "completionTime": stamp(T0)},
        {"conditions": [{"type": "Failed", "status": "True"}], "completionTime": stamp(T0)},
    ],
)
def test_a_finished_job_keeps_no_hpa(status: dict[str, Any]) -> None:
    job = make_job(
        master=None, workers=2, elasticPolicy={"maxReplicas": 4, "metrics": METRICS}, status=status
    )
    assert extras(plan(job, [], [], at(5))) == {HPA: None}


def test_a_suspended_job_keeps_no_hpa() -> None:
    job = make_job(
        master=None,
        workers=2,
        elasticPolicy={"maxReplicas": 4, "metrics": METRICS},
        runPolicy={"suspend": True},
    )
    assert extras(plan(job, [], [], at(5))) == {HPA: None}


# ------------------------------------------------------------- children nothing watches


def test_unwatched_children_are_written_only_when_due() -> None:
    memo = UnwatchedChildren()
    key = (HPA, "ml", "mnist")
    manifest: dict[str, Any] = {"spec": {"maxReplicas": 4}}
    assert memo.apply_due(key, manifest, at(0), 60)
    memo.applied(key, manifest, at(0))
    assert not memo.apply_due(key, {"spec": {"maxReplicas": 4}}, at(30), 60)
    assert memo.apply_due(key, {"spec": {"maxReplicas": 5}}, at(30), 60)  # changed
    assert memo.apply_due(key, manifest, at(60), 60)  # drift check
    assert memo.present("ml", "mnist") == [key]
    assert memo.delete_due(key, probe_unknown=False)  # applied here: delete it
    memo.absent(key, at(61))
    assert not memo.delete_due(key, probe_unknown=True)  # gone: no request
    assert memo.present("ml", "mnist") == []
    other = (HPA, "ml", "other")
    assert memo.delete_due(other, probe_unknown=True)  # unknown after a restart: look once
    assert not memo.delete_due(other, probe_unknown=False)
    memo.forget("ml", "mnist")
    assert memo.apply_due(key, manifest, at(62), 60)
