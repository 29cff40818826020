"""PyTorchJobs on a real node: a Master and two Workers find each other through the
environment and the per-replica Services the operator makes (examples/pytorchjob-
rendezvous.yaml: a TCP rendezvous with the mlkube image, no torch), a Worker that exits 1
fails the job with Kubeflow's reason, and cleanPodPolicy decides which pods remain."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.cluster.kit import EXAMPLES, apply_docs, condition, get_json, pods, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EXAMPLE = EXAMPLES / "pytorchjob-rendezvous.yaml"
JOB_LABEL = "training.kubeflow.org/job-name"


def example(name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The example's PyTorchJob renamed to ``name``, and every document to apply."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    job = copy.deepcopy(next(d for d in docs if d["kind"] == "PyTorchJob"))
    job["metadata"]["name"] = name
    others = [d for d in docs if d["kind"] != "PyTorchJob"]
    return job, [job, *others]


def ptj(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return get_json(cluster, "-n", namespace, "get", "pytorchjob", name)


def finished(cluster: Any, namespace: str, name: str) -> dict[str, Any] | None:
    job = ptj(cluster, namespace, name)
    for kind in ("Succeeded", "Failed"):
        if condition(job, kind).get("status") == "True":
            return job
    return None


def test_master_and_workers_meet_and_the_job_succeeds(cluster: Any, namespace: str) -> None:
    """Two copies of the example at once: "meet" with cleanPodPolicy Running (finished
    pods stay, so the logs are read after the fact, with no race against the cleanup)
    and "tidy" as the example ships it, cleanPodPolicy All (no pod remains)."""
    meet, docs = example("meet")
    meet["spec"]["runPolicy"]["cleanPodPolicy"] = "Running"
    tidy, _ = example("tidy")
    apply_docs(cluster, namespace, [*docs, tidy])
    for name in ("meet", "tidy"):
        done = wait_until(
            lambda name=name: finished(cluster, namespace, name),
            timeout=240,
            interval=0.5,
            what=f"PyTorchJob {name} to finish",
        )
        assert condition(done, "Succeeded").get("status") == "True", done["status"]
        assert condition(done, "Succeeded")["reason"] == "PyTorchJobSucceeded"

    # cleanPodPolicy Running: the finished Master stays; a Worker still running when the
    # Master succeeded is deleted (its pod shows Running until the kubelet has stopped it,
    # then its final phase until it is gone), one that had finished stays.
    def meet_pods() -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p for p in pods(cluster, namespace, f"{JOB_LABEL}=meet")}

    def settled() -> dict[str, dict[str, Any]] | None:
        now = meet_pods()
        going = [
            name
            for name, p in now.items()
            if p["status"]["phase"] == "Running" or p["metadata"].get("deletionTimestamp")
        ]
        return None if going else now

    kept = wait_until(
        settled,
        timeout=90,
        interval=0.5,
        what="meet's running Workers deleted (cleanPodPolicy Running)",
    )
    assert "meet-master-0" in kept, sorted(kept)
    assert {p["status"]["phase"] for p in kept.values()} == {"Succeeded"}, kept

    def log(pod: str) -> str:
        out: str = cluster.kubectl("-n", namespace, "logs", pod).stdout
        return out

    # The Master heard from every rank over TCP: the rendezvous happened.
    assert "rank 0 of 3: met ranks [0, 1, 2]" in log("meet-master-0")
    for rank, pod in ((1, "meet-worker-0"), (2, "meet-worker-1")):
        if pod in kept:
            assert f"rank {rank} of 3: master meet-master-0:23456 answered" in log(pod)

    # cleanPodPolicy All: no pod of the job remains once it has finished.
    wait_until(
        lambda: not pods(cluster, namespace, f"{JOB_LABEL}=tidy"),
        timeout=60,
        what="the finished job's pods deleted (cleanPodPolicy All)",
    )


def test_a_worker_that_exits_1_fails_the_job_and_none_keeps_its_pods(
    cluster: Any, namespace: str
) -> None:
    job, docs = example("broken")
    job["spec"]["runPolicy"]["cleanPodPolicy"] = "None"
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    worker["env"] = [{"name": "FAIL_RANK", "value": "2"}]
    apply_docs(cluster, namespace, docs)
    done = wait_until(
        lambda: finished(cluster, namespace, "broken"), timeout=240, what="PyTorchJob broken"
    )
    failed = condition(done, "Failed")
    assert failed.get("status") == "True", done["status"]
    assert failed["reason"] == "PyTorchJobFailed", failed
    assert "Worker" in failed["message"], failed
    assert done["status"]["replicaStatuses"]["Worker"].get("failed", 0) >= 1, done["status"]
    # cleanPodPolicy None: the failed Worker's pod stays, with its exit code and log.
    pod = get_json(cluster, "-n", namespace, "get", "pod", "broken-worker-1")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 1, terminated
    log = cluster.kubectl("-n", namespace, "logs", "broken-worker-1").stdout
    assert "rank 2 of 3: failing on purpose" in log


def test_the_hpa_of_elastic_metrics_scales_the_workers(cluster: Any, namespace: str) -> None:
    """The real HPA controller finds the job through its scale subresource and raises the
    Worker replicas to ``elasticPolicy.minReplicas`` (it does so before reading any metric:
    this cluster has no metrics server); the operator then creates the new Worker."""
    job, _ = example("grow")
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    del job["spec"]["pytorchReplicaSpecs"]["Master"]
    worker["replicas"] = 1
    main = worker["template"]["spec"]["containers"][0]
    main["command"] = ["python", "-c", "import time; time.sleep(600)"]
    del main["volumeMounts"]
    del worker["template"]["spec"]["volumes"]
    job["spec"]["elasticPolicy"] = {
        "minReplicas": 2,
        "maxReplicas": 3,
        "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
    }  # fmt: skip
    apply_docs(cluster, namespace, [job])
    wait_until(
        lambda: (
            {p["metadata"]["name"] for p in pods(cluster, namespace, f"{JOB_LABEL}=grow")}
            == {"grow-worker-0", "grow-worker-1"}
        ),
        timeout=120,
        what="the HPA to scale the job to 2 Workers and the operator to create worker-1",
    )
    assert ptj(cluster, namespace, "grow")["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2

    def able_to_scale() -> dict[str, Any] | None:
        hpa = get_json(cluster, "-n", namespace, "get", "hpa", "grow")
        found = [c for c in (hpa.get("status") or {}).get("conditions") or []]
        return next((c for c in found if c["type"] == "AbleToScale"), None)

    able = wait_until(able_to_scale, timeout=60, what="the HPA's AbleToScale condition")
    assert able["status"] == "True", able
