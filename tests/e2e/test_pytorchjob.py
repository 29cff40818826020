"""A PyTorchJob through the real operator (subprocess) and the real API server.

No kubelet runs, so the test plays it: it writes pod phases and exit codes through the
pods' status subresource. Everything else is real: the API server validates the pods and
headless Services the operator builds (env, ports, tolerations, owner references), the
status subresource takes the operator's writes, the printer columns and the scale
subresource read them, and an unscheduled pod is deleted at once, as on a cluster.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

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
    # cleanPodPolicy Running: the finished master stays for its logs, the rest are gone.
    assert set(pods(cluster, namespace)) == {f"{JOB}-master-0"}


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
