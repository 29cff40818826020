"""The operator runs with exactly the rights the Helm chart grants, and needs no more.

The chart's ServiceAccount, ClusterRoles/Roles and bindings are rendered with the
real ``helm template`` and applied to the real API server (RBAC on); the operator
then runs with a token of that ServiceAccount through a full ModelService life
cycle. The API server's audit log is the judge: any request of the
ServiceAccount answered 403 names a permission the chart lacks.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

controlplane = importlib.import_module("mlkube_e2e_controlplane")  # loaded by conftest.py
wait_until = controlplane.wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mlkube"
RELEASE_NS = "mlkube-system"
SA_USER = f"system:serviceaccount:{RELEASE_NS}:mlkube"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def helm() -> str:
    """The helm the Makefile installs into the venv, else one on PATH."""
    venv_helm = ROOT / ".venv" / "bin" / "helm"
    if venv_helm.exists():
        return str(venv_helm)
    found = shutil.which("helm")
    assert found, "helm is not installed (make helm)"
    return found


def render_rbac(watch_namespaces: list[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The chart's RBAC objects and its operator container's plain env values."""
    args = [helm(), "template", "mlkube", str(CHART), "--namespace", RELEASE_NS]
    for i, ns in enumerate(watch_namespaces):
        args += ["--set", f"operator.watchNamespaces[{i}]={ns}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if isinstance(d, dict)]
    rbac = [d for d in docs if d.get("kind") in RBAC_KINDS]
    env: dict[str, str] = {}
    for d in docs:
        if d.get("kind") == "Deployment":
            for container in d["spec"]["template"]["spec"]["containers"]:
                for var in container.get("env", []):
                    if "value" in var:
                        env[var["name"]] = str(var["value"])
    return rbac, env


def manifest(name: str, version: str, replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": "mlkube.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": name},
            "spec": {"model": {"name": "m", "version": version}, "replicas": replicas},
        }
    )


def exists(cluster: Any, namespace: str, kind: str, name: str) -> bool:
    proc = cluster.kubectl("-n", namespace, "get", kind, name, check=False)
    return bool(proc.returncode == 0)


def status_of(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    ms = cluster.kubectl_json("-n", namespace, "get", "msvc", name)
    status = ms.get("status") or {}
    assert isinstance(status, dict)
    status["_generation"] = ms["metadata"]["generation"]
    return status


@pytest.mark.parametrize("scope", ["cluster-wide", "namespaced"])
def test_operator_needs_nothing_beyond_the_charts_rbac(
    cluster: Any,
    crds_installed: list[str],
    namespace: str,
    start_operator: Any,
    tmp_path: Path,
    scope: str,
) -> None:
    watch = [namespace] if scope == "namespaced" else []
    rbac, chart_env = render_rbac(watch)
    kinds = sorted({d["kind"] for d in rbac})
    assert "ServiceAccount" in kinds
    if scope == "namespaced":
        assert "Role" in kinds
        assert "RoleBinding" in kinds
    cluster.kubectl("create", "namespace", RELEASE_NS, check=False)  # both cases share it
    rbac_list = json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac})
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=rbac_list)
    try:
        run_life_cycle(cluster, namespace, start_operator, tmp_path, watch, chart_env)
    finally:
        # the other scope must not inherit these grants
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=rbac_list)


def run_life_cycle(
    cluster: Any,
    namespace: str,
    start_operator: Any,
    tmp_path: Path,
    watch: list[str],
    chart_env: dict[str, str],
) -> None:
    token = cluster.kubectl("-n", RELEASE_NS, "create", "token", "mlkube").stdout.strip()
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.write_text(cluster.token_kubeconfig(token))
    audited_before = len(cluster.audit_events(SA_USER))

    env = {k: v for k, v in chart_env.items() if k.startswith("MLKUBE_")}
    env.pop("MLKUBE_METRICS_PORT", None)  # a fixed port; the liveness one is chosen per test
    env["MLKUBE_LOG_FORMAT"] = "text"
    op = start_operator(namespaces=watch, kubeconfig=kubeconfig, reconcile_interval=1.0, env=env)

    # a whole life cycle: create, roll out, update, scale down (PDB removed), drift repair
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", stdin=manifest("svc", "v1", 2)
    )
    for kind in ("deployment", "service", "pdb"):
        wait_until(lambda k=kind: exists(cluster, namespace, k, "svc"), what=f"{kind}/svc")
    wait_until(
        lambda: status_of(cluster, namespace, "svc").get("observedGeneration") == 1,
        what="status for generation 1",
    )
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", stdin=manifest("svc", "v2", 1)
    )
    wait_until(lambda: not exists(cluster, namespace, "pdb", "svc"), what="the PDB to be removed")
    wait_until(
        lambda: (
            (s := status_of(cluster, namespace, "svc")).get("observedGeneration")
            == s["_generation"]
            and s.get("modelVersion") == "v2"
        ),
        what="status for v2",
    )
    cluster.kubectl("-n", namespace, "delete", "service", "svc", "--wait=false")
    wait_until(lambda: exists(cluster, namespace, "service", "svc"), what="the Service back")
    # a hand-edited Service port: the repair reads the Service and JSON-patches it
    edit = '[{"op": "replace", "path": "/spec/ports/0/port", "value": 81}]'
    cluster.kubectl("-n", namespace, "patch", "service", "svc", "--type=json", "-p", edit)
    wait_until(
        lambda: (
            [
                p["port"]
                for p in cluster.kubectl_json("-n", namespace, "get", "service", "svc")["spec"][
                    "ports"
                ]
            ]
            == [80, 8081]
        ),
        what="the Service back on port 80",
    )
    op.assert_alive()

    events = cluster.audit_events(SA_USER)[audited_before:]
    assert events, "the operator made no requests as the chart's ServiceAccount"
    refused = sorted(
        {
            (
                e["verb"],
                e.get("objectRef", {}).get("apiGroup", ""),
                e.get("objectRef", {}).get("resource", ""),
                e.get("objectRef", {}).get("subresource", ""),
                e.get("objectRef", {}).get("namespace", ""),
            )
            for e in events
            if e.get("responseStatus", {}).get("code") == 403
        }
    )
    assert refused == [], f"the chart's RBAC lacks: {refused}\n{op.output()[-3000:]}"
    assert "forbidden" not in op.output().lower()
