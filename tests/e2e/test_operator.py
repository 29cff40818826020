"""The real operator (``mlkube operator`` as a subprocess) against a real API server.

No kubelet or controller-manager runs, so Deployments never get pods; where a test
needs a Deployment to look rolled out it writes the Deployment's status through the
status subresource, as envtest users do. Everything else is the real thing: kopf's
watches, server-side apply with field manager ``mlkube``, owner references, the
status subresource, resourceVersions.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.kubectl import watched_objects, watching

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

controlplane = importlib.import_module("mlkube_e2e_controlplane")  # loaded by conftest.py
wait_until = controlplane.wait_until

USER = "alice"  # the field manager the "user" applies with


def manifest(name: str, version: str = "v1", replicas: int = 2) -> str:
    return json.dumps(
        {
            "apiVersion": "mlkube.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": "ranker", "version": version, "format": "bandit"},
                "replicas": replicas,
                "runtime": {
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "128Mi"},
                        "limits": {"cpu": "1", "memory": "256Mi"},
                    }
                },
            },
        }
    )


def apply(cluster: Any, namespace: str, body: str) -> None:
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", f"--field-manager={USER}", "-f", "-",
        stdin=body,
    )  # fmt: skip


def get(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl(
        "-n", namespace, "get", kind, name, "-o", "json", "--show-managed-fields", check=False
    )
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def must_get(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any]:
    obj = get(cluster, namespace, kind, name)
    assert obj is not None, f"{kind}/{name} not found"
    return obj


def conditions(ms: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ms.get("status", {}).get("conditions", [])}


def reconciled(cluster: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The ModelService once its status reflects its current generation."""
    ms = get(cluster, namespace, "msvc", name)
    if ms is None:
        return None
    status = ms.get("status", {})
    if status.get("observedGeneration") != ms["metadata"]["generation"]:
        return None
    return ms


def children(cluster: Any, namespace: str, name: str) -> dict[str, dict[str, Any]] | None:
    found = {k: get(cluster, namespace, k, name) for k in ("deployment", "service", "pdb")}
    if any(v is None for v in found.values()):
        return None
    return {k: v for k, v in found.items() if v is not None}


def mark_rolled_out(cluster: Any, namespace: str, name: str) -> None:
    """Play the Deployment controller: every replica updated, ready and available."""
    dep = must_get(cluster, namespace, "deployment", name)
    n = dep["spec"]["replicas"]
    status = {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n,
        "availableReplicas": n,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }
    cluster.kubectl(
        "-n", namespace, "patch", "deployment", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def test_modelservice_becomes_deployment_service_and_pdb(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    op = start_operator(namespaces=[namespace])
    apply(cluster, namespace, manifest("ranker"))
    kids = wait_until(lambda: children(cluster, namespace, "ranker"), what="children")
    ms = wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status")

    uid = ms["metadata"]["uid"]
    for kind, obj in kids.items():
        owners = obj["metadata"]["ownerReferences"]
        assert owners == [
            {
                "apiVersion": "mlkube.dev/v1alpha1",
                "kind": "ModelService",
                "name": "ranker",
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], kind

    dep = kids["deployment"]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"]["matchLabels"] == {
        "mlkube.dev/modelservice": "ranker",
        "mlkube.dev/track": "stable",
    }
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/managed-by"] == "mlkube"
    assert pod_labels["app.kubernetes.io/version"] == "v1"
    assert pod_labels["mlkube.dev/revision"] == ms["status"]["revision"]
    # the API server accepted the whole pod template (probes, security context, ...)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "256Mi"}

    svc = kids["service"]
    assert svc["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {"http", "grpc"}
    assert ports["http"]["port"] == 80
    assert (ports["grpc"]["port"], ports["grpc"]["appProtocol"]) == (8081, "kubernetes.io/h2c")
    # the targets are 8080 and 8081, by number or through the container's ports of that name
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    targets = {
        name: named.get(p["targetPort"]) if isinstance(p["targetPort"], str) else p["targetPort"]
        for name, p in ports.items()
    }
    assert targets == {"http": 8080, "grpc": 8081}
    assert svc["spec"]["selector"]["mlkube.dev/modelservice"] == "ranker"
    assert kids["pdb"]["spec"]["selector"]["matchLabels"]["mlkube.dev/modelservice"] == "ranker"

    status = ms["status"]
    assert status["url"] == f"http://ranker.{namespace}.svc.cluster.local"
    assert status["modelVersion"] == "v1"
    conds = conditions(ms)
    assert conds["Ready"]["status"] == "False"
    assert conds["Progressing"]["status"] == "True"
    assert conds["Degraded"]["status"] == "False"
    for cond in conds.values():
        assert cond["observedGeneration"] == ms["metadata"]["generation"]
        assert cond["lastTransitionTime"]
    # every transition is a Kubernetes Event on the ModelService
    events = cluster.kubectl_json("-n", namespace, "get", "events")["items"]
    mine = [
        e
        for e in events
        if e["involvedObject"]["kind"] == "ModelService" and e["involvedObject"]["uid"] == uid
    ]
    assert mine, events
    op.assert_alive()


def test_status_follows_the_deployment_and_printer_columns_show_it(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    start_operator(namespaces=[namespace])
    apply(cluster, namespace, manifest("ranker"))
    wait_until(lambda: children(cluster, namespace, "ranker"), what="children")
    mark_rolled_out(cluster, namespace, "ranker")

    def ready() -> dict[str, Any] | None:
        ms = reconciled(cluster, namespace, "ranker")
        if ms and conditions(ms).get("Ready", {}).get("status") == "True":
            return ms
        return None

    ms = wait_until(ready, what="Ready=True after the Deployment rolled out")
    assert ms["status"]["readyReplicas"] == 2
    assert conditions(ms)["Progressing"]["reason"] == "Complete"
    cluster.kubectl(
        "-n", namespace, "wait", "--for=condition=Ready", "--timeout=10s", "msvc/ranker"
    )
    row = cluster.kubectl("-n", namespace, "get", "msvc", "ranker", "--no-headers").stdout
    name, ready_col, version, replicas, _age = row.split()
    assert (name, ready_col, version, replicas) == ("ranker", "True", "v1", "2")
    wide = cluster.kubectl("-n", namespace, "get", "msvc", "-o", "wide", "--no-headers").stdout
    assert f"http://ranker.{namespace}.svc.cluster.local" in wide
    assert ms["status"]["revision"] in wide


def test_spec_change_updates_the_deployment_in_place(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    start_operator(namespaces=[namespace])
    apply(cluster, namespace, manifest("ranker", version="v1"))
    before = wait_until(lambda: children(cluster, namespace, "ranker"), what="children")
    first = wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status")

    apply(cluster, namespace, manifest("ranker", version="v2", replicas=1))

    def updated() -> dict[str, Any] | None:
        dep = get(cluster, namespace, "deployment", "ranker")
        labels = (dep or {}).get("spec", {}).get("template", {}).get("metadata", {})
        if labels.get("labels", {}).get("app.kubernetes.io/version") == "v2":
            return dep
        return None

    dep = wait_until(updated, what="the Deployment on v2")
    assert dep["metadata"]["uid"] == before["deployment"]["metadata"]["uid"]  # not recreated
    assert dep["spec"]["replicas"] == 1
    ms = wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status for gen 2")
    assert ms["metadata"]["generation"] == 2
    assert ms["status"]["modelVersion"] == "v2"
    assert ms["status"]["revision"] != first["status"]["revision"]
    # one replica needs no PodDisruptionBudget: the operator removes the one it made
    wait_until(
        lambda: get(cluster, namespace, "pdb", "ranker") is None, what="the PDB to be removed"
    )


def resource_versions(cluster: Any, namespace: str, name: str) -> dict[str, str]:
    out = {}
    for kind in ("msvc", "deployment", "service", "pdb"):
        out[kind] = must_get(cluster, namespace, kind, name)["metadata"]["resourceVersion"]
    return out


def test_reapplying_the_same_object_changes_nothing(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    """Level-based and idempotent: periodic reconciles of a settled object write nothing."""
    op = start_operator(namespaces=[namespace], reconcile_interval=1.0)
    apply(cluster, namespace, manifest("ranker"))
    wait_until(lambda: children(cluster, namespace, "ranker"), what="children")
    mark_rolled_out(cluster, namespace, "ranker")
    wait_until(
        lambda: (
            (ms := reconciled(cluster, namespace, "ranker"))
            and conditions(ms)["Ready"]["status"] == "True"
        ),
        what="Ready",
    )
    # let the status writes that follow the rollout settle, then snapshot
    settled = op.full_passes() + 2
    controlplane.wait_until(
        lambda: op.full_passes() >= settled, timeout=30, what="two drift checks"
    )
    before = resource_versions(cluster, namespace, "ranker")
    checks_before = op.full_passes()

    apply(cluster, namespace, manifest("ranker"))  # the user (or Argo CD) re-applies
    # at least three more full reconciles
    wait_until(
        lambda: op.full_passes() >= checks_before + 3,
        timeout=30,
        what="three more drift checks",
    )
    after = resource_versions(cluster, namespace, "ranker")
    assert after == before
    op.assert_alive()


def managers(obj: dict[str, Any]) -> list[tuple[str, str, str, list[str]]]:
    """(manager, operation, subresource, top-level fields) for each managedFields entry."""
    return [
        (
            entry["manager"],
            entry["operation"],
            entry.get("subresource", ""),
            sorted(entry.get("fieldsV1", {})),
        )
        for entry in obj["metadata"]["managedFields"]
    ]


def test_server_side_apply_ownership(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    """Children's fields belong to ``mlkube``; the ModelService spec to the user only."""
    start_operator(namespaces=[namespace], reconcile_interval=1.0)
    apply(cluster, namespace, manifest("ranker"))
    kids = wait_until(lambda: children(cluster, namespace, "ranker"), what="children")
    ms = wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status")

    for kind, obj in kids.items():
        entries = managers(obj)
        spec_owners = {m for m, _, sub, fields in entries if "f:spec" in fields and not sub}
        assert spec_owners == {"mlkube"}, (kind, entries)
        assert all(op == "Apply" for m, op, sub, _ in entries if m == "mlkube" and not sub)

    entries = managers(ms)
    spec_owners = {m for m, _, sub, fields in entries if "f:spec" in fields}
    assert spec_owners == {USER}, entries  # the operator never writes the spec
    assert (USER, "Apply", "", ["f:spec"]) in [
        (m, op, sub, [f for f in fields if f != "f:metadata"]) for m, op, sub, fields in entries
    ]
    status_writers = [(m, sub) for m, _, sub, fields in entries if "f:status" in fields]
    assert status_writers, entries
    assert all(sub == "status" for _, sub in status_writers)  # only via /status

    # someone edits a field the operator owns: the next reconcile takes it back
    generation = must_get(cluster, namespace, "deployment", "ranker")["metadata"]["generation"]
    cluster.kubectl("-n", namespace, "scale", "deployment", "ranker", "--replicas", "5")

    def replicas_restored() -> dict[str, Any] | None:
        dep = must_get(cluster, namespace, "deployment", "ranker")
        return dep if dep["spec"]["replicas"] == 2 else None

    dep = wait_until(replicas_restored, timeout=30, what="the Deployment back at 2 replicas")
    # two spec changes happened: the edit to 5 and the operator's revert to 2
    assert dep["metadata"]["generation"] >= generation + 2
    owners = {m for m, _, _, fields in managers(dep) if "f:spec" in fields}
    assert owners == {"mlkube"}, managers(dep)


def test_status_is_written_by_field_manager_mlkube(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    """Status writes are attributed to ``mlkube`` too, not to the HTTP client's user agent."""
    start_operator(namespaces=[namespace])
    apply(cluster, namespace, manifest("ranker"))
    ms = wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status")
    status_writers = {m for m, _, sub, fields in managers(ms) if "f:status" in fields}
    assert status_writers == {"mlkube"}


def test_deleted_children_come_back(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    start_operator(namespaces=[namespace], reconcile_interval=1.0)
    apply(cluster, namespace, manifest("ranker"))
    before = wait_until(lambda: children(cluster, namespace, "ranker"), what="children")
    cluster.kubectl("-n", namespace, "delete", "service", "ranker", "--wait=false")
    cluster.kubectl("-n", namespace, "delete", "deployment", "ranker", "--wait=false")

    def recreated() -> dict[str, dict[str, Any]] | None:
        kids = children(cluster, namespace, "ranker")
        if kids is None:
            return None
        for kind in ("service", "deployment"):
            if kids[kind]["metadata"]["uid"] == before[kind]["metadata"]["uid"]:
                return None
        return kids

    wait_until(recreated, timeout=30, what="the Service and Deployment to come back")


def test_kubectl_scale_reaches_the_deployment(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    start_operator(namespaces=[namespace])
    apply(cluster, namespace, manifest("ranker", replicas=2))
    wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status")
    cluster.kubectl("-n", namespace, "scale", "msvc/ranker", "--replicas", "3")
    wait_until(
        lambda: must_get(cluster, namespace, "deployment", "ranker")["spec"]["replicas"] == 3,
        what="the Deployment at 3 replicas",
    )
    ms = wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status for gen 2")
    scale = json.loads(
        cluster.kubectl(
            "get", "--raw",
            f"/apis/mlkube.dev/v1alpha1/namespaces/{namespace}/modelservices/ranker/scale",
        ).stdout
    )  # fmt: skip
    assert scale["spec"]["replicas"] == 3
    # the selector an HPA would use, from status.selector
    assert scale["status"]["selector"] == ms["status"]["selector"]
    assert "mlkube.dev/modelservice=ranker" in scale["status"]["selector"]


def test_operator_restart_converges_without_duplicates(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    """A change made while the operator is down is picked up when it comes back.

    After the restart the Deployment watch and the ModelService's resume handler race;
    whichever runs first, no status may claim generation 2 while it describes the v1
    Deployment (every status version is recorded with a watch, not sampled by polling).
    """
    first = start_operator(namespaces=[namespace])
    apply(cluster, namespace, manifest("ranker", version="v1"))
    before = wait_until(lambda: children(cluster, namespace, "ranker"), what="children")
    wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status")
    first.stop()

    log = tmp_path / "watch.json"
    with watching(cluster, namespace, "msvc", "ranker", log):
        apply(cluster, namespace, manifest("ranker", version="v2"))
        start_operator(namespaces=[namespace])
        ms = wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status for v2")
        wait_until(
            lambda: any(
                o.get("status", {}).get("observedGeneration") == 2 for o in watched_objects(log)
            ),
            what="the watch to see the final status",
        )
    assert ms["status"]["modelVersion"] == "v2"
    claimed = [
        o["status"].get("modelVersion")
        for o in watched_objects(log)
        if o.get("status", {}).get("observedGeneration") == 2
    ]
    assert claimed
    assert set(claimed) == {"v2"}, claimed
    dep = must_get(cluster, namespace, "deployment", "ranker")
    assert dep["metadata"]["uid"] == before["deployment"]["metadata"]["uid"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == "v2"
    listed = cluster.kubectl("-n", namespace, "get", "deployments", "-o", "name").stdout.split()
    assert listed == ["deployment.apps/ranker"]


def test_deleting_a_modelservice_is_not_blocked(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    """Whatever the operator puts in metadata.finalizers, it lets go on delete."""
    start_operator(namespaces=[namespace])
    apply(cluster, namespace, manifest("ranker"))
    wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status")
    cluster.kubectl("-n", namespace, "delete", "msvc", "ranker", "--timeout=30s")
    assert get(cluster, namespace, "msvc", "ranker") is None


def test_no_finalizer_so_delete_completes_while_the_operator_is_stopped(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    """Children are owned (owner references), so the operator holds nothing back: with it
    uninstalled or down, `kubectl delete msvc` must still finish, not hang on a finalizer."""
    op = start_operator(namespaces=[namespace], reconcile_interval=1.0)
    apply(cluster, namespace, manifest("ranker"))
    wait_until(lambda: children(cluster, namespace, "ranker"), what="children")
    wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status")
    # several drift checks: whatever they would add has been added by now
    wait_until(lambda: op.full_passes() >= 2, what="two drift checks")
    ms = must_get(cluster, namespace, "msvc", "ranker")
    assert ms["metadata"].get("finalizers", []) == []
    op.stop()

    cluster.kubectl("-n", namespace, "delete", "msvc", "ranker", "--timeout=30s")
    assert get(cluster, namespace, "msvc", "ranker") is None
    # the children carry the owner reference the garbage collector follows
    assert must_get(cluster, namespace, "deployment", "ranker")["metadata"]["ownerReferences"]


def test_a_finalizer_left_by_an_older_operator_is_released(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    """Objects marked by an operator version that still added mlkube.dev/finalizer are not
    stuck: the current operator removes it (kopf drops a finalizer no handler needs)."""
    body = json.loads(manifest("ranker"))
    body["metadata"]["finalizers"] = ["mlkube.dev/finalizer"]
    apply(cluster, namespace, json.dumps(body))
    start_operator(namespaces=[namespace])
    wait_until(
        lambda: not must_get(cluster, namespace, "msvc", "ranker")["metadata"].get("finalizers"),
        what="the old finalizer removed",
    )
    cluster.kubectl("-n", namespace, "delete", "msvc", "ranker", "--timeout=30s")
    assert get(cluster, namespace, "msvc", "ranker") is None


def test_a_hand_edited_service_port_is_taken_back(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    """Service ports are a map list keyed by port and protocol: after a hand edit of the
    port, a plain apply would add port 80 next to the edited entry, and the API server
    refuses two ports named http. The operator removes the conflicting entry first."""
    op = start_operator(namespaces=[namespace], reconcile_interval=1.0)
    apply(cluster, namespace, manifest("ranker"))
    wait_until(lambda: children(cluster, namespace, "ranker"), what="children")
    wait_until(lambda: reconciled(cluster, namespace, "ranker"), what="status")
    edit = [{"op": "replace", "path": "/spec/ports/0/port", "value": 81}]
    patched = cluster.kubectl(
        "-n", namespace, "patch", "svc", "ranker", "--type=json", "-p", json.dumps(edit),
        "-o", "json",
    )  # fmt: skip
    # The edit took (read from the patch's own answer: a fresh GET may already see the
    # operator's repair, which is what the next lines wait for).
    assert [p["port"] for p in json.loads(patched.stdout)["spec"]["ports"]] == [81, 8081]

    def restored() -> list[dict[str, Any]] | None:
        ports: list[dict[str, Any]] = must_get(cluster, namespace, "svc", "ranker")["spec"]["ports"]
        return ports if sorted(p["port"] for p in ports) == [80, 8081] else None

    ports = wait_until(restored, timeout=30, what="the Service back on ports 80 and 8081 alone")
    by_port = {p["port"]: (p["name"], p["protocol"]) for p in ports}
    assert by_port == {80: ("http", "TCP"), 8081: ("grpc", "TCP")}
    ms = must_get(cluster, namespace, "msvc", "ranker")
    assert conditions(ms)["Degraded"]["status"] == "False", conditions(ms)["Degraded"]
    assert "Duplicate value" not in op.output()
    op.assert_alive()


SCHEDULER_SAYS = (
    "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are "
    "available: 1 No preemption victims found for incoming pod."
)


def test_a_gpu_pod_the_scheduler_cannot_place_is_reported_unschedulable(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any
) -> None:
    start_operator(namespaces=[namespace])
    body = json.loads(manifest("ranker", replicas=1))
    body["spec"]["gpu"] = {"count": 1}
    apply(cluster, namespace, json.dumps(body))
    dep = wait_until(lambda: get(cluster, namespace, "deployment", "ranker"), what="Deployment")
    template = dep["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        template["spec"]["tolerations"]
    )

    # Play the ReplicaSet controller and the scheduler (neither runs here): the pod from
    # the template, then the scheduler's verdict through the pod's status subresource.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ranker-6f9c8-abcde", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    cluster.kubectl("-n", namespace, "create", "-f", "-", stdin=json.dumps(pod))
    verdict = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": SCHEDULER_SAYS,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    cluster.kubectl(
        "-n", namespace, "patch", "pod", "ranker-6f9c8-abcde", "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": verdict}),
    )  # fmt: skip

    def unschedulable() -> dict[str, Any] | None:
        ms = reconciled(cluster, namespace, "ranker")
        ready = conditions(ms).get("Ready", {}) if ms else {}
        return ready if ready.get("reason") == "Unschedulable" else None

    ready = wait_until(unschedulable, what="Ready=False/Unschedulable")
    assert ready["status"] == "False"
    assert ready["message"] == (
        f"0/1 pods ready; pod ranker-6f9c8-abcde cannot be scheduled: {SCHEDULER_SAYS}"
    )
    events = cluster.kubectl_json("-n", namespace, "get", "events")["items"]
    warnings = [
        e for e in events
        if e["involvedObject"]["kind"] == "ModelService" and e["reason"] == "Unschedulable"
    ]  # fmt: skip
    assert warnings, events
    assert warnings[0]["type"] == "Warning"
    assert SCHEDULER_SAYS in warnings[0]["message"]
