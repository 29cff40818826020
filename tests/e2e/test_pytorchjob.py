"""A PyTorchJob through the real operator (subprocess) and the real API server.

No kubelet runs, so the test plays it: it writes pod phases and exit codes through the
pods' status subresource. Everything else is real: the API server validates the pods and
headless Services the operator builds (env, ports, tolerations, owner references), the
status subresource takes the operator's writes, the printer columns and the scale
subresource read them, and an unscheduled pod is deleted at once, as on a cluster.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from mlkube.kubectl.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

controlplane = importlib.import_module("mlkube_e2e_controlplane")  # loaded by conftest.py
wait_until = controlplane.wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pytorchjob-ddp-cpu.yaml"
JOB = "ddp-cpu"
PODS = {f"{JOB}-master-0", f"{JOB}-worker-0", f"{JOB}-worker-1"}


def pods(cluster: Any, namespace: str) -> dict[str, dict[str, Any]]:
    listed = cluster.kubectl_json(
        "-n", namespace, "get", "pods", "-l", f"training.kubeflow.org/job-name={JOB}"
    )
    return {p["metadata"]["name"]: p for p in listed["items"]}


def job(cluster: Any, namespace: str) -> dict[str, Any]:
    data: dict[str, Any] = cluster.kubectl_json("-n", namespace, "get", "ptj", JOB)
    return data


def state(cluster: Any, namespace: str) -> str | None:
    conditions = job(cluster, namespace).get("status", {}).get("conditions") or []
    return conditions[-1]["type"] if conditions else None


def kubelet(
    cluster: Any, namespace: str, pod: str, phase: str, exit_code: int | None = None
) -> None:
    """Write what the kubelet would: the phase and the pytorch container's state."""
    state: dict[str, Any] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    if exit_code is not None:
        state = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": "2026-01-01T00:00:00Z",
                "finishedAt": "2026-01-01T00:01:00Z",
            }
        }
    status = {
        "phase": phase,
        "containerStatuses": [
            {
                "name": "pytorch",
                "image": "pytorch/pytorch:2.4.1-cuda12.1-cudnn9-runtime",
                "imageID": "",
                "ready": phase == "Running",
                "restartCount": 0,
                "state": state,
            }
        ],
    }
    cluster.kubectl(
        "-n", namespace, "patch", "pod", pod, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def test_example_job_runs_scales_and_succeeds(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    start_operator(namespaces=[namespace], reconcile_interval=2.0)
    cluster.kubectl("-n", namespace, "apply", "--server-side", "-f", str(EXAMPLE))

    found = wait_until(
        lambda: (p := pods(cluster, namespace)) and set(p) == PODS and p, what="pods"
    )
    uid = job(cluster, namespace)["metadata"]["uid"]
    for pod in found.values():
        assert pod["metadata"]["ownerReferences"][0]["uid"] == uid
        main = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env["MASTER_ADDR"] == f"{JOB}-master-0"
        assert env["WORLD_SIZE"] == "3"
        assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in main[
            "ports"
        ]
        assert pod["spec"]["restartPolicy"] == "Never"  # RestartAll
    services = cluster.kubectl_json(
        "-n", namespace, "get", "services", "-l", f"training.kubeflow.org/job-name={JOB}"
    )["items"]
    assert {s["metadata"]["name"] for s in services} == PODS
    assert all(s["spec"]["clusterIP"] == "None" for s in services)

    for name in PODS:
        kubelet(cluster, namespace, name, "Running")
    wait_until(lambda: state(cluster, namespace) == "Running", what="Running")
    table = cluster.kubectl("-n", namespace, "get", "ptj", JOB).stdout
    assert "STATE" in table
    assert "Running" in table
    tree = mlkube_get_ptj(cluster, namespace)
    assert tree[0].startswith(f"PyTorchJob {JOB}  Running  restarts 0")
    assert tree[1] == "├─ Master x1  active 1, succeeded 0, failed 0"
    assert tree[2].startswith(f"│  └─ Pod {JOB}-master-0  Running  ready 1/1  restarts 0")
    assert tree[3] == "└─ Worker x2  active 2, succeeded 0, failed 0"

    # The scale subresource moves the Worker replicas; the new worker gets its pod.
    cluster.kubectl("-n", namespace, "scale", "ptj", JOB, "--replicas=3")
    wait_until(lambda: f"{JOB}-worker-2" in pods(cluster, namespace), what="worker-2")
    scale = json.loads(
        cluster.kubectl(
            "get",
            "--raw",
            f"/apis/mlkube.dev/v1alpha1/namespaces/{namespace}/pytorchjobs/{JOB}/scale",
        ).stdout
    )
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["selector"] == (
        f"training.kubeflow.org/job-name={JOB},training.kubeflow.org/replica-type=worker"
    )

    # The master finishes: the job succeeds at once; the workers still running go with
    # cleanPodPolicy Running.
    kubelet(cluster, namespace, f"{JOB}-master-0", "Succeeded", exit_code=0)
    wait_until(lambda: state(cluster, namespace) == "Succeeded", what="Succeeded")
    status = job(cluster, namespace)["status"]
    assert status["completionTime"]
    # As Kubeflow reports it: the two Workers running then count as succeeded (worker-2,
    # still Pending, as nothing).
    worker = status["replicaStatuses"]["Worker"]
    assert (worker.get("active", 0), worker.get("succeeded")) == (0, 2), worker
    # cleanPodPolicy Running: the finished master stays for its logs, the rest are gone.
    assert set(pods(cluster, namespace)) == {f"{JOB}-master-0"}
    tree = mlkube_get_ptj(cluster, namespace)
    assert tree[0].startswith(f"PyTorchJob {JOB}  Succeeded")
    assert f"Pod {JOB}-master-0  Completed  ready 0/1  restarts 0  exit 0" in tree[2]


def mlkube_get_ptj(cluster: Any, namespace: str) -> list[str]:
    """``kubectl mlkube get ptj`` (in-process): the job -> replicas -> pods tree."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["get", "ptj", JOB, "-n", namespace, "--kubeconfig", str(cluster.kubeconfig)])
    assert code == 0, err.getvalue()
    return out.getvalue().splitlines()


def test_no_finalizer_so_delete_completes_while_the_operator_is_stopped(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    op = start_operator(namespaces=[namespace], reconcile_interval=1.0)
    cluster.kubectl("-n", namespace, "apply", "--server-side", "-f", str(EXAMPLE))
    wait_until(lambda: set(pods(cluster, namespace)) == PODS, what="pods")
    wait_until(lambda: state(cluster, namespace), what="a status condition")
    wait_until(lambda: op.full_passes("PyTorchJob") >= 2, what="two drift checks")
    assert job(cluster, namespace)["metadata"].get("finalizers", []) == []
    op.stop()

    cluster.kubectl("-n", namespace, "delete", "ptj", JOB, "--timeout=30s")
    assert "NotFound" in cluster.kubectl("-n", namespace, "get", "ptj", JOB, check=False).stderr


def _job(name: str, run_policy: dict[str, Any]) -> str:
    worker = {
        "replicas": 1,
        "template": {"spec": {"containers": [{"name": "pytorch", "image": "trainer:1"}]}},
    }
    return json.dumps(
        {
            "apiVersion": "mlkube.dev/v1alpha1",
            "kind": "PyTorchJob",
            "metadata": {"name": name},
            "spec": {"runPolicy": run_policy, "pytorchReplicaSpecs": {"Worker": worker}},
        }
    )


def test_long_names_kubeflow_labels_and_jobs_managed_elsewhere(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    """A 63-character job (Kubeflow's limit) gets pods and Services the API server accepts,
    labelled as Kubeflow labels them; a job handed to Kueue's MultiKueue gets nothing."""
    op = start_operator(namespaces=[namespace], reconcile_interval=1.0)
    long_name = "l" * 63
    remote = "remote"
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-",
        stdin=_job(remote, {"managedBy": "kueue.x-k8s.io/multikueue"}),
    )  # fmt: skip
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", stdin=_job(long_name, {})
    )  # fmt: skip

    def children(kind: str, job: str) -> list[dict[str, Any]]:
        selector = f"training.kubeflow.org/job-name={job}"
        items: list[dict[str, Any]] = cluster.kubectl_json(
            "-n", namespace, "get", kind, "-l", selector
        )["items"]
        return items

    pods = wait_until(lambda: children("pods", long_name), what="the long-named job's pod")
    services = wait_until(lambda: children("services", long_name), what="its Service")
    for obj in (pods[0], services[0]):
        assert len(obj["metadata"]["name"]) <= 63
        assert obj["metadata"]["name"].endswith("-worker-0")
        labels = obj["metadata"]["labels"]
        assert labels["training.kubeflow.org/operator-name"] == "pytorchjob-controller"
        assert labels["training.kubeflow.org/job-role"] == "master"
    assert services[0]["metadata"]["name"] == pods[0]["metadata"]["name"]
    # the other job was seen by several passes and left alone: no children, no status
    passes = op.full_passes("PyTorchJob")
    wait_until(lambda: op.full_passes("PyTorchJob") >= passes + 2, what="two more passes")
    assert children("pods", remote) == []
    assert children("services", remote) == []
    assert "status" not in cluster.kubectl_json("-n", namespace, "get", "ptj", remote)


# ------------------------------------------------------------ gang scheduling and the HPA

# Minimal PodGroup CRDs of the two gang schedulers: only the spec fields the operator sets,
# typed as upstream types them, so the API server prunes a misspelt field (the stored
# PodGroup then lacks it) and refuses a wrongly typed one.
_QUANTITIES = {
    "type": "object",
    "additionalProperties": {"x-kubernetes-int-or-string": True, "anyOf": [
        {"type": "integer"}, {"type": "string"}]},
}  # fmt: skip
POD_GROUP_SPECS = {
    "scheduling.x-k8s.io": ("v1alpha1", {
        "minMember": {"type": "integer", "format": "int32"},
        "minResources": _QUANTITIES,
        "scheduleTimeoutSeconds": {"type": "integer", "format": "int32"},
    }),
    "scheduling.volcano.sh": ("v1beta1", {
        "minMember": {"type": "integer", "format": "int32"},
        "minResources": _QUANTITIES,
        "queue": {"type": "string"},
        "priorityClassName": {"type": "string"},
    }),
}  # fmt: skip


def install_pod_group_crd(cluster: Any, group: str) -> None:
    version, spec = POD_GROUP_SPECS[group]
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"podgroups.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "podgroups", "singular": "podgroup", "kind": "PodGroup"},
            "versions": [{
                "name": version, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": spec},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                }}},
            }],
        },
    }  # fmt: skip
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(crd))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", f"crd/podgroups.{group}"
    )


def small_job(name: str, replicas: dict[str, int], **spec: Any) -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "pytorch", "image": "pytorch/pytorch:2.4.1"}]}}
    return {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {
            "pytorchReplicaSpecs": {
                rtype: {"replicas": n, "template": json.loads(json.dumps(template))}
                for rtype, n in replicas.items()
            },
            **spec,
        },
    }


def get(cluster: Any, namespace: str, *what: str) -> dict[str, Any] | None:
    found = cluster.kubectl("-n", namespace, "get", *what, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def job_pods(cluster: Any, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    listed = cluster.kubectl_json(
        "-n", namespace, "get", "pods", "-l", f"training.kubeflow.org/job-name={name}"
    )
    return {p["metadata"]["name"]: p for p in listed["items"]}


def gang_condition(cluster: Any, namespace: str, name: str) -> dict[str, Any] | None:
    body = get(cluster, namespace, "ptj", name) or {}
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond["type"] == "GangScheduling":
            return dict(cond)
    return None


def test_gang_scheduling_waits_for_its_scheduler_then_creates_the_pod_group(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    for group in POD_GROUP_SPECS:  # a session that ran this before left them behind
        cluster.kubectl("delete", "crd", f"podgroups.{group}", "--ignore-not-found", "--wait")
    start_operator(namespaces=[namespace], reconcile_interval=2.0)
    gang = small_job(
        "gang", {"Master": 1, "Worker": 2},
        runPolicy={"cleanPodPolicy": "All", "schedulingPolicy": {
            "minAvailable": 2, "scheduleTimeoutSeconds": 300, "minResources": {"cpu": "2"}}},
    )  # fmt: skip
    cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(gang))

    # No gang scheduler installed: the job says so, and not one pod starts.
    blocked = wait_until(
        lambda: gang_condition(cluster, namespace, "gang"), what="the GangScheduling condition"
    )
    assert blocked["status"] == "False", blocked
    assert blocked["reason"] == "PyTorchJobPodGroupUnavailable"
    assert "podgroups.scheduling.x-k8s.io" in blocked["message"]
    table = cluster.kubectl("-n", namespace, "get", "ptj", "gang").stdout
    assert "GangScheduling" in table  # the State column
    assert job_pods(cluster, namespace, "gang") == {}

    # scheduler-plugins is installed: the PodGroup comes first, then every pod joins it.
    install_pod_group_crd(cluster, "scheduling.x-k8s.io")
    found = wait_until(
        lambda: len(p := job_pods(cluster, namespace, "gang")) == 3 and p,
        timeout=30,
        what="the pods, once the PodGroup API is served",
    )
    group = get(cluster, namespace, "podgroups.scheduling.x-k8s.io", "gang")
    assert group is not None
    assert group["spec"] == {"minMember": 2, "minResources": {"cpu": "2"},
                             "scheduleTimeoutSeconds": 300}  # fmt: skip
    owner = group["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("PyTorchJob", "gang", True)
    for pod in found.values():
        assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "gang"
        assert pod["spec"]["schedulerName"] == "scheduler-plugins-scheduler"
    created = wait_until(
        lambda: (c := gang_condition(cluster, namespace, "gang")) and c["status"] == "True" and c,
        what="GangScheduling True",
    )
    assert created["reason"] == "PyTorchJobPodGroupCreated"

    # Volcano, asked for by the pod template's schedulerName.
    install_pod_group_crd(cluster, "scheduling.volcano.sh")
    vgang = small_job("vgang", {"Worker": 2},
                      runPolicy={"schedulingPolicy": {"queue": "research"}})  # fmt: skip
    for spec in vgang["spec"]["pytorchReplicaSpecs"].values():
        spec["template"]["spec"]["schedulerName"] = "volcano"
    cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(vgang))
    vpods = wait_until(
        lambda: len(p := job_pods(cluster, namespace, "vgang")) == 2 and p, what="vgang pods"
    )
    vgroup = get(cluster, namespace, "podgroups.scheduling.volcano.sh", "vgang")
    assert vgroup is not None
    assert vgroup["spec"] == {"minMember": 2, "queue": "research"}
    for pod in vpods.values():
        assert pod["spec"]["schedulerName"] == "volcano"
        assert pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "vgang"
        assert pod["metadata"]["annotations"]["volcano.sh/task-spec"] == "worker"
    assert get(cluster, namespace, "podgroups.scheduling.x-k8s.io", "vgang") is None

    # The job ends: its PodGroup goes (and, cleanPodPolicy All, its pods).
    kubelet(cluster, namespace, "gang-master-0", "Succeeded", exit_code=0)
    wait_until(
        lambda: get(cluster, namespace, "podgroups.scheduling.x-k8s.io", "gang") is None,
        what="the finished job's PodGroup deleted",
    )
    wait_until(lambda: not job_pods(cluster, namespace, "gang"), what="cleanPodPolicy All")


def test_elastic_metrics_get_an_hpa_on_the_scale_subresource(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    start_operator(namespaces=[namespace], reconcile_interval=2.0)
    metrics = [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]  # fmt: skip
    body = small_job(
        "elastic", {"Worker": 2},
        elasticPolicy={"minReplicas": 1, "maxReplicas": 3, "metrics": metrics},
    )  # fmt: skip
    cluster.kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(body))
    hpa = wait_until(lambda: get(cluster, namespace, "hpa", "elastic"), what="the HPA")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "mlkube.dev/v1alpha1", "kind": "PyTorchJob", "name": "elastic"}  # fmt: skip
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["metrics"] == metrics
    assert hpa["metadata"]["ownerReferences"][0]["name"] == "elastic"
    # What the HPA controller reads and writes: the job's scale subresource.
    scale = json.loads(cluster.kubectl(
        "get", "--raw",
        f"/apis/mlkube.dev/v1alpha1/namespaces/{namespace}/pytorchjobs/elastic/scale",
    ).stdout)  # fmt: skip
    assert scale["spec"]["replicas"] == 2

    # A metric the API server refuses becomes a Warning Event, not a crash loop.
    cluster.kubectl(
        "-n", namespace, "patch", "ptj", "elastic", "--type=json", "-p",
        json.dumps([{"op": "replace", "path": "/spec/elasticPolicy/metrics",
                     "value": [{"type": "Resource"}]}]),
    )  # fmt: skip
    wait_until(
        lambda: (
            "PyTorchJobInvalidAutoscaler"
            in cluster.kubectl("-n", namespace, "get", "events").stdout
        ),
        what="the InvalidAutoscaler event",
    )
    # Metrics removed: the HPA goes.
    cluster.kubectl(
        "-n", namespace, "patch", "ptj", "elastic", "--type=json", "-p",
        json.dumps([{"op": "remove", "path": "/spec/elasticPolicy/metrics"}]),
    )  # fmt: skip
    wait_until(lambda: get(cluster, namespace, "hpa", "elastic") is None, what="HPA deleted")
