"""The planner: which pods and services to create and delete; convergence and idempotence."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ptj_builders import T0, at, make_job, pod, service, stamp

from mlkube.api.pytorchjob import PyTorchJob
from mlkube.operator.pytorchjob.planner import Plan, plan


def names(objs: list[dict[str, Any]]) -> list[str]:
    return [o["metadata"]["name"] for o in objs]


ALL = ["mnist-master-0", "mnist-worker-0", "mnist-worker-1"]


def test_a_new_job_gets_every_pod_and_service() -> None:
    out = plan(make_job(), [], [], at(0))
    assert names(out.create_pods) == ALL
    assert names(out.create_services) == ALL
    assert out.delete_pods == out.delete_services == []


def test_planning_again_with_everything_in_place_changes_nothing() -> None:
    job = make_job()
    first = plan(job, [], [], at(0))
    job.status = first.status
    pods = [pod("mnist", "Master", 0), pod("mnist", "Worker", 0), pod("mnist", "Worker", 1)]
    services = [
        service("mnist", "Master", 0),
        service("mnist", "Worker", 0),
        service("mnist", "Worker", 1),
    ]
    second = plan(job, pods, services, at(5))
    assert second.idle
    job.status = second.status
    third = plan(job, pods, services, at(6))
    assert third.idle
    assert third.status == second.status


def test_deleted_children_come_back() -> None:
    job = make_job()
    pods = [pod("mnist", "Master", 0), pod("mnist", "Worker", 0)]
    services = [service("mnist", "Master", 0), service("mnist", "Worker", 1)]
    out = plan(job, pods, services, at(5))
    assert names(out.create_pods) == ["mnist-worker-1"]
    assert names(out.create_services) == ["mnist-worker-0"]


def test_zero_workers_create_no_worker() -> None:
    """kubeflow/trainer #1709."""
    out = plan(make_job(workers=0), [], [], at(0))
    assert names(out.create_pods) == ["mnist-master-0"]
    assert names(out.create_services) == ["mnist-master-0"]


def test_scale_down_deletes_the_extra_worker_and_its_service() -> None:
    job = make_job(workers=1)
    pods = [pod("mnist", "Master", 0), pod("mnist", "Worker", 0), pod("mnist", "Worker", 1)]
    services = [
        service("mnist", "Master", 0),
        service("mnist", "Worker", 0),
        service("mnist", "Worker", 1),
    ]
    out = plan(job, pods, services, at(5))
    assert out.delete_pods == ["mnist-worker-1"]
    assert out.delete_services == ["mnist-worker-1"]
    assert out.create_pods == []


def test_a_terminating_pod_holds_its_name() -> None:
    job = make_job()
    pods = [
        pod("mnist", "Master", 0),
        pod("mnist", "Worker", 0),
        pod("mnist", "Worker", 1, deleting=at(10)),
    ]
    out = plan(job, pods, [], at(5))
    assert "mnist-worker-1" not in names(out.create_pods)


def test_suspended_job_keeps_no_children() -> None:
    job = make_job(runPolicy={"suspend": True})
    pods = [pod("mnist", "Master", 0)]
    services = [service("mnist", "Master", 0), service("mnist", "Worker", 0)]
    out = plan(job, pods, services, at(5))
    assert out.delete_pods == ["mnist-master-0"]
    assert out.delete_services == ["mnist-master-0", "mnist-worker-0"]
    assert out.create_pods == out.create_services == []


def _succeeded(policy: str, ttl: int | None = None) -> PyTorchJob:
    run: dict[str, Any] = {"cleanPodPolicy": policy}
    if ttl is not None:
        run["ttlSecondsAfterFinished"] = ttl
    return make_job(
        runPolicy=run,
        status={
            "conditions": [{"type": "Succeeded", "status": "True"}],
            "startTime": stamp(T0),
            "completionTime": stamp(T0),
        },
    )


def test_finished_job_services_follow_their_pods() -> None:
    """Kubeflow's cleanPodPolicy: None keeps every pod (a Worker still running too) and its
    service; Running deletes the running pods and their services; All deletes everything."""
    pods = [
        pod("mnist", "Master", 0, "Succeeded", exit_code=0),
        pod("mnist", "Worker", 0, "Running"),
    ]
    services = [
        service("mnist", "Master", 0),
        service("mnist", "Worker", 0),
        service("mnist", "Worker", 1),
    ]
    none = plan(_succeeded("None"), pods, services, at(5))
    assert none.delete_pods == []
    assert none.delete_services == ["mnist-worker-1"]  # its pod is gone
    running = plan(_succeeded("Running"), pods, services, at(5))
    assert running.delete_pods == ["mnist-worker-0"]
    assert running.delete_services == ["mnist-worker-0", "mnist-worker-1"]
    everything = plan(_succeeded("All"), pods, services, at(5))
    assert everything.delete_pods == ["mnist-master-0", "mnist-worker-0"]
    assert everything.delete_services == ["mnist-master-0", "mnist-worker-0", "mnist-worker-1"]


def test_ttl_deletes_the_job_and_nothing_else() -> None:
    out = plan(_succeeded("None", ttl=30), [pod("mnist", "Worker", 0, "Running")], [], at(30))
    assert out.delete_job
    assert out.delete_pods == []


# ------------------------------------------------------------------- a simulated cluster


class Cluster:
    """Applies plans the way the API server and kubelet would, one step at a time."""

    def __init__(self, job: PyTorchJob) -> None:
        self.job = job
        self.pods: dict[str, dict[str, Any]] = {}
        self.services: set[str] = set()
        self.created: list[str] = []

    def reconcile(self, now: datetime) -> Plan:
        out = plan(
            self.job,
            list(self.pods.values()),
            [{"metadata": {"name": n}} for n in self.services],
            now,
        )
        self.job.status = out.status
        for name in out.delete_pods:
            self.pods[name]["metadata"]["deletionTimestamp"] = stamp(now)
        for name in out.force_delete_pods:
            del self.pods[name]
        for name in out.delete_services:
            self.services.discard(name)
        for manifest in out.create_pods:
            meta = manifest["metadata"]
            rtype = meta["labels"]["training.kubeflow.org/replica-type"].capitalize()
            self.pods[meta["name"]] = pod(
                "mnist",
                rtype,
                int(meta["labels"]["training.kubeflow.org/replica-index"]),
                "Pending",
            )
            self.created.append(meta["name"])
        for manifest in out.create_services:
            self.services.add(manifest["metadata"]["name"])
        return out

    def kubelet_removes_deleted(self) -> None:
        self.pods = {n: p for n, p in self.pods.items() if "deletionTimestamp" not in p["metadata"]}

    def set_phase(self, name: str, phase: str, exit_code: int | None = None) -> None:
        rtype, index = name.split("-")[1].capitalize(), int(name.split("-")[2])
        self.pods[name] = pod("mnist", rtype, index, phase, exit_code=exit_code)

    def state(self) -> str:
        return self.job.status.conditions[-1].type.value


def test_restart_all_cycle_converges() -> None:
    cluster = Cluster(make_job(runPolicy={"restartPolicy": "RestartAll", "backoffLimit": 2}))
    cluster.reconcile(at(0))
    for name in ALL:
        cluster.set_phase(name, "Running")
    cluster.reconcile(at(1))
    assert cluster.state() == "Running"

    cluster.set_phase("mnist-worker-1", "Failed", exit_code=1)
    out = cluster.reconcile(at(2))
    assert cluster.state() == "Restarting"
    assert sorted(out.delete_pods) == ALL
    out = cluster.reconcile(at(3))  # old pods still terminating: nothing new yet
    assert out.create_pods == []
    cluster.kubelet_removes_deleted()
    out = cluster.reconcile(at(4))
    assert names(out.create_pods) == ALL
    for name in ALL:
        cluster.set_phase(name, "Running")
    cluster.reconcile(at(5))
    assert cluster.state() == "Running"
    assert cluster.job.status.restart_count == 1

    # The second failure would be the second restart, reaching backoffLimit 2: Failed,
    # running pods stopped, the failed one kept.
    cluster.set_phase("mnist-master-0", "Failed", exit_code=1)
    out = cluster.reconcile(at(6))
    assert cluster.state() == "Failed"
    assert sorted(out.delete_pods) == ["mnist-worker-0", "mnist-worker-1"]
    cluster.kubelet_removes_deleted()
    out = cluster.reconcile(at(7))
    assert out.idle
    assert list(cluster.pods) == ["mnist-master-0"]
    assert cluster.created.count("mnist-worker-1") == 2
