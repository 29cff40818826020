"""The real operator runs PyTorchJobs against kmock: children, phases, cleanup, suspend, TTL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ptj_builders import job_body

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "pytorchjob-ddp-cpu.yaml"
ALL = {"ddp-cpu-master-0", "ddp-cpu-worker-0", "ddp-cpu-worker-1"}


def example_job() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    job: dict[str, Any] = next(d for d in docs if d["kind"] == "PyTorchJob")
    return job


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    (main,) = [c for c in pod["spec"]["containers"] if c["name"] == "pytorch"]
    return {e["name"]: e["value"] for e in main["env"]}


async def test_example_job_gets_its_pods_and_services(operator: Any, cluster: Any) -> None:
    await operator()
    await cluster.create_job(example_job())
    await cluster.eventually(lambda: set(cluster.pods()) == ALL, what="three pods")
    await cluster.eventually(lambda: set(cluster.services()) == ALL, what="three services")
    pods = cluster.pods()
    job_uid = cluster.job("ddp-cpu")["metadata"]["uid"]
    for pod in pods.values():
        ref = pod["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "PyTorchJob",
            "ddp-cpu",
            job_uid,
            True,
        )
        assert pod["metadata"]["labels"]["training.kubeflow.org/job-name"] == "ddp-cpu"
        assert (
            pod["spec"]["restartPolicy"] == "Never"
        )  # RestartAll: restarts go through the operator
        env = env_of(pod)
        assert env["MASTER_ADDR"] == "ddp-cpu-master-0"
        assert env["MASTER_PORT"] == "23456"
        assert env["WORLD_SIZE"] == "3"
        assert env["PYTHONUNBUFFERED"] == "1"
        main = next(c for c in pod["spec"]["containers"] if c["name"] == "pytorch")
        assert {"name": "pytorchjob-port", "containerPort": 23456} in main["ports"]
        assert main["command"][:2] == ["python", "/opt/mlkube/ddp_train.py"]
    assert {p: env_of(pods[p])["RANK"] for p in pods} == {
        "ddp-cpu-master-0": "0",
        "ddp-cpu-worker-0": "1",
        "ddp-cpu-worker-1": "2",
    }
    assert (
        pods["ddp-cpu-master-0"]["metadata"]["labels"]["training.kubeflow.org/job-role"] == "master"
    )
    svc = cluster.services()["ddp-cpu-worker-1"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"]["training.kubeflow.org/replica-index"] == "1"
    await cluster.eventually(lambda: cluster.state("ddp-cpu") == "Created", what="Created")


async def test_running_then_succeeded_with_cleanup(operator: Any, cluster: Any) -> None:
    await operator()
    await cluster.create_job(example_job())  # cleanPodPolicy: Running
    await cluster.eventually(lambda: set(cluster.pods()) == ALL)
    for pod in ALL:
        await cluster.set_phase(pod, "Running")
    await cluster.eventually(
        lambda: (
            cluster.state("ddp-cpu") == "Running"
            and cluster.job("ddp-cpu")["status"]["replicaStatuses"]["Worker"]["active"] == 2
        ),
        what="Running with 2 active workers",
    )
    status = cluster.job("ddp-cpu")["status"]
    assert status["replicaStatuses"]["Worker"]["selector"] == (
        "training.kubeflow.org/job-name=ddp-cpu,training.kubeflow.org/replica-type=worker"
    )
    await cluster.set_phase("ddp-cpu-worker-0", "Succeeded", exit_code=0)
    await cluster.set_phase("ddp-cpu-master-0", "Succeeded", exit_code=0)
    # Kubeflow: the Master decides at once; worker-1, still running, counts as succeeded
    # and goes with cleanPodPolicy Running.
    await cluster.eventually(lambda: cluster.state("ddp-cpu") == "Succeeded", what="Succeeded")
    status = cluster.job("ddp-cpu")["status"]
    assert status["completionTime"]
    worker = status["replicaStatuses"]["Worker"]
    assert (worker.get("active", 0), worker["succeeded"]) == (0, 2)
    await cluster.eventually(
        lambda: "ddp-cpu-worker-1" not in cluster.pods(), what="worker-1 deleted"
    )
    assert {c["type"]: c["status"] for c in status["conditions"]}["Running"] == "False"
    # cleanPodPolicy Running keeps the finished pods (for their logs), no new pods appear.
    assert set(cluster.pods()) == {"ddp-cpu-master-0", "ddp-cpu-worker-0"}
    await cluster.eventually(lambda: bool(cluster.events("PyTorchJobSucceeded")), what="event")


async def test_restart_all_then_backoff_failure(operator: Any, cluster: Any) -> None:
    await operator()
    body = example_job()
    body["spec"]["runPolicy"]["backoffLimit"] = 2
    body["spec"]["runPolicy"]["cleanPodPolicy"] = "None"
    await cluster.create_job(body)
    await cluster.eventually(lambda: set(cluster.pods()) == ALL)
    for pod in ALL:
        await cluster.set_phase(pod, "Running")
    await cluster.eventually(lambda: cluster.state("ddp-cpu") == "Running")

    await cluster.set_phase("ddp-cpu-worker-1", "Failed", exit_code=1)
    # RestartAll: every pod is replaced, the job says Restarting, then Running again.
    await cluster.eventually(
        lambda: cluster.job("ddp-cpu")["status"].get("restartCount") == 1, what="restartCount 1"
    )

    def replaced() -> bool:  # fresh pods have no phase yet; the old ones were Running/Failed
        pods = cluster.pods()
        return set(pods) == ALL and not any(
            (p.get("status") or {}).get("phase") for p in pods.values()
        )

    await cluster.eventually(replaced, what="all three pods recreated")
    assert any(c["type"] == "Restarting" for c in cluster.job("ddp-cpu")["status"]["conditions"])
    for pod in ALL:
        await cluster.set_phase(pod, "Running")
    await cluster.eventually(lambda: cluster.state("ddp-cpu") == "Running", what="Running again")

    await cluster.set_phase("ddp-cpu-master-0", "Failed", exit_code=1)
    await cluster.eventually(lambda: cluster.state("ddp-cpu") == "Failed", what="Failed")
    message = cluster.job("ddp-cpu")["status"]["conditions"][-1]["message"]
    assert "backoff limit" in message
    # #3419/#1579: the running workers are stopped, the failed master is kept (None).
    await cluster.eventually(lambda: set(cluster.pods()) == {"ddp-cpu-master-0"}, what="cleanup")


async def test_exit_code_policy_fails_on_a_permanent_error(operator: Any, cluster: Any) -> None:
    await operator()
    await cluster.create_job(
        job_body(name="ec", restart="ExitCode", runPolicy={"cleanPodPolicy": "All"})
    )
    names = {"ec-master-0", "ec-worker-0", "ec-worker-1"}
    await cluster.eventually(lambda: set(cluster.pods()) == names)
    for pod in names:
        await cluster.set_phase(pod, "Running")
    await cluster.eventually(lambda: cluster.state("ec") == "Running")
    await cluster.set_phase("ec-worker-0", "Failed", exit_code=137)  # OOM-killed: retried
    # Restarting lasts one reconcile (the Master still runs, so the job is Running again as
    # soon as worker-0's replacement exists): wait for what persists, the restart count,
    # and read the transition from the status writes rather than polling for it.
    await cluster.eventually(
        lambda: cluster.job("ec")["status"].get("restartCount") == 1, what="restartCount 1"
    )
    assert cluster.state_history("ec")[:3] == ["Created", "Running", "Restarting"]
    restarting = next(
        s for s in cluster.status_writes("ec") if s["conditions"][-1]["type"] == "Restarting"
    )
    assert restarting["conditions"][-1]["reason"] == "PyTorchJobRestarting"
    assert restarting["restartCount"] == 1
    await cluster.eventually(
        lambda: bool(cluster.events("PyTorchJobRestarting")), what="Restarting event"
    )
    await cluster.eventually(
        lambda: (
            "phase"
            not in cluster.pods().get("ec-worker-0", {"status": {"phase": 1}}).get("status", {})
        ),
        what="worker-0 recreated",
    )
    await cluster.set_phase("ec-worker-0", "Failed", exit_code=3)  # a bug: not retried
    await cluster.eventually(lambda: cluster.state("ec") == "Failed", what="Failed")
    # Every state the job went through, in order: the permanent error ends the job.
    assert cluster.state_history("ec") == ["Created", "Running", "Restarting", "Running", "Failed"]
    await cluster.eventually(
        lambda: cluster.pods() == {} and cluster.services() == {}, what="cleanPodPolicy All"
    )


async def test_suspend_and_resume(operator: Any, cluster: Any) -> None:
    await operator()
    await cluster.create_job(job_body(name="sus"))
    names = {"sus-master-0", "sus-worker-0", "sus-worker-1"}
    await cluster.eventually(lambda: set(cluster.pods()) == names)
    await cluster.patch_job("sus", {"spec": {"runPolicy": {"suspend": True}}})
    await cluster.eventually(
        lambda: cluster.pods() == {} and cluster.services() == {}, what="suspended: no children"
    )
    await cluster.eventually(lambda: cluster.state("sus") == "Suspended")
    await cluster.patch_job("sus", {"spec": {"runPolicy": {"suspend": False}}})
    await cluster.eventually(lambda: set(cluster.pods()) == names, what="resumed: pods back")
    await cluster.eventually(
        lambda: (
            {c["type"]: c["reason"] for c in cluster.job("sus")["status"]["conditions"]}.get(
                "Suspended"
            )
            == "PyTorchJobResumed"
        ),
        what="Suspended=False (resumed)",
    )
    conditions = {c["type"]: c for c in cluster.job("sus")["status"]["conditions"]}
    assert conditions["Suspended"]["status"] == "False"
    await cluster.eventually(lambda: bool(cluster.events("PyTorchJobResumed")), what="event")
    assert cluster.events("PyTorchJobSuspended")


async def test_deleted_pod_comes_back_and_ttl_deletes_the_job(operator: Any, cluster: Any) -> None:
    await operator()
    await cluster.create_job(
        job_body(name="ttl", workers=1, runPolicy={"ttlSecondsAfterFinished": 1})
    )
    await cluster.eventually(lambda: set(cluster.pods()) == {"ttl-master-0", "ttl-worker-0"})
    await cluster.delete("pods", "ttl-worker-0")
    await cluster.eventually(lambda: "ttl-worker-0" in cluster.pods(), what="pod recreated")
    await cluster.set_phase("ttl-worker-0", "Succeeded", exit_code=0)
    await cluster.set_phase("ttl-master-0", "Succeeded", exit_code=0)
    # completionTime has second precision (metav1.Time), so a 1 s TTL may expire a moment
    # after the job succeeds: read the Succeeded state from the writes, not the live object.
    await cluster.eventually(lambda: cluster.job("ttl") is None, within=10, what="TTL deletion")
    assert cluster.state_history("ttl")[-1] == "Succeeded"
    writes = cluster.status_writes("ttl")
    assert any("completionTime" in w for w in writes), "deleted without a completionTime"


async def test_invalid_spec_fails_the_job_and_the_operator_lives(
    operator: Any, cluster: Any
) -> None:
    await operator()
    bad = job_body(name="bad")
    bad["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"] = (
        "main"
    )
    await cluster.create_job(bad)
    await cluster.eventually(lambda: cluster.state("bad") == "Failed", what="Failed")
    assert "pytorch" in cluster.job("bad")["status"]["conditions"][-1]["message"]
    assert cluster.pods() == {}
    good = job_body(name="good", workers=0)
    main = good["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    main["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    await cluster.create_job(good)
    await cluster.eventually(
        lambda: set(cluster.pods()) == {"good-master-0"}, what="next job still served"
    )
    tolerations = cluster.pods()["good-master-0"]["spec"]["tolerations"]
    assert tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert env_of(cluster.pods()["good-master-0"])["WORLD_SIZE"] == "1"


async def test_a_restarted_operator_carries_on_without_double_counting(
    operator: Any, cluster: Any
) -> None:
    """Level-based: the restart count lives in the status, the pods have fixed names."""
    first = await operator()
    await cluster.create_job(job_body(name="rs", workers=1, runPolicy={"backoffLimit": 2}))
    names = {"rs-master-0", "rs-worker-0"}
    await cluster.eventually(lambda: set(cluster.pods()) == names)
    for pod in names:
        await cluster.set_phase(pod, "Running")
    await cluster.eventually(lambda: cluster.state("rs") == "Running")
    await first.stop()

    await cluster.set_phase("rs-worker-0", "Failed", exit_code=1)  # while no operator runs
    await operator()
    await cluster.eventually(
        lambda: cluster.job("rs")["status"].get("restartCount") == 1, what="one restart"
    )
    await cluster.eventually(
        lambda: (
            set(cluster.pods()) == names
            and not (cluster.pods()["rs-worker-0"].get("status") or {}).get("phase")
        ),
        what="worker recreated",
    )
    for pod in names:
        await cluster.set_phase(pod, "Running")
    await cluster.eventually(lambda: cluster.state("rs") == "Running", what="Running again")
    assert cluster.job("rs")["status"]["restartCount"] == 1
