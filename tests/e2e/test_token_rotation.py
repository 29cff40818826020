"""The operator keeps working when its ServiceAccount token is rotated under it.

The operator runs as a ServiceAccount bound to the chart's ClusterRoles, with a kubeconfig
whose user names a ``tokenFile`` (how a rotated token reaches a client outside a pod).
Tokens are bound to a Secret, so deleting the Secret revokes the token at the API server:
the test rotates by writing a token bound to a new Secret into the file and deleting the
old Secret. The operator still holds the old token in memory; its next requests get 401,
it logs in again (reading the file) and carries on.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

controlplane = importlib.import_module("mlkube_e2e_controlplane")  # loaded by conftest.py
wait_until = controlplane.wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mlkube"
SA = "mlkube-rotated"


def helm() -> str:
    """The helm the Makefile installs into the venv, else one on PATH."""
    for candidate in (ROOT / ".venv" / "bin" / "helm", Path(sys.executable).parent / "helm"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("helm")
    assert found, "helm is not installed (make helm)"
    return found


def chart_cluster_roles() -> list[dict[str, Any]]:
    """The ClusterRoles the chart gives the operator (cluster-wide install)."""
    out = subprocess.run(
        [helm(), "template", "mlkube", str(CHART), "--namespace", "mlkube-system"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if isinstance(d, dict)]
    bound = {
        d["roleRef"]["name"]
        for d in docs
        if d.get("kind") == "ClusterRoleBinding"
        and any(s.get("kind") == "ServiceAccount" for s in d.get("subjects", []))
    }
    roles = [d for d in docs if d.get("kind") == "ClusterRole" and d["metadata"]["name"] in bound]
    assert roles, "the chart binds no ClusterRole to its ServiceAccount"
    return roles


def manifest(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "mlkube.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": name},
            "spec": {"model": {"name": "ranker", "version": "v1"}, "replicas": 1},
        }
    )


def issue_token(cluster: Any, namespace: str, secret: str) -> str:
    """A token of the ServiceAccount that is valid only while ``secret`` exists."""
    cluster.kubectl("-n", namespace, "create", "secret", "generic", secret)
    return str(
        cluster.kubectl(
            "-n", namespace, "create", "token", SA, "--duration=1h",
            "--bound-object-kind=Secret", f"--bound-object-name={secret}",
        ).stdout.strip()
    )  # fmt: skip


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def reconciled(cluster: Any, namespace: str, name: str) -> bool:
    """The Deployment exists and the ModelService's status is written for its spec."""
    dep = cluster.kubectl("-n", namespace, "get", "deployment", name, check=False)
    if dep.returncode != 0:
        return False
    ms = cluster.kubectl_json("-n", namespace, "get", "msvc", name)
    status = ms.get("status") or {}
    assert isinstance(status, dict)
    meta = ms["metadata"]
    assert isinstance(meta, dict)
    return bool(status.get("observedGeneration") == meta["generation"])


def answer(cluster: Any, namespace: str, kubeconfig: Path) -> str:
    """How the API server answers a read with ``kubeconfig``: "ok" or kubectl's error."""
    proc = cluster.kubectl(
        "-n", namespace, "get", "msvc", "-o", "name", kubeconfig=kubeconfig, check=False
    )
    return "ok" if proc.returncode == 0 else proc.stderr.strip()


def test_operator_survives_a_rotated_service_account_token(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    # the chart's ClusterRoles, under names of this test's own, bound to its ServiceAccount
    cluster.kubectl("-n", namespace, "create", "serviceaccount", SA)
    rbac: list[dict[str, Any]] = []
    for role in chart_cluster_roles():
        name = f"{namespace}-{role['metadata']['name']}"
        rbac.append({**role, "metadata": {"name": name}})
        rbac.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": namespace}],
            }
        )
    rbac_list = json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac})
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=rbac_list)
    try:
        rotate_under_a_running_operator(cluster, namespace, start_operator, tmp_path)
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=rbac_list)


def rotate_under_a_running_operator(
    cluster: Any, namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    write_atomically(token_file, issue_token(cluster, namespace, "token-a"))
    old_token = token_file.read_text()
    config = json.loads(cluster.token_kubeconfig("unused"))
    config["users"][0]["user"] = {"tokenFile": str(token_file)}
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    old_kubeconfig = tmp_path / "old-token.kubeconfig"
    old_kubeconfig.write_text(cluster.token_kubeconfig(old_token))
    assert answer(cluster, namespace, kubeconfig) == "ok"

    op = start_operator(namespaces=[namespace], kubeconfig=kubeconfig)
    cluster.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", stdin=manifest("before"))
    wait_until(lambda: reconciled(cluster, namespace, "before"), timeout=60, what="before")
    assert "401" not in op.output()

    # Rotate: the new token goes into the file, then the old one is revoked.
    write_atomically(token_file, issue_token(cluster, namespace, "token-b"))
    cluster.kubectl("-n", namespace, "delete", "secret", "token-a")
    # The API server caches successful authentications for a few seconds; then the old
    # token is refused while the file's new one is accepted.
    refused = wait_until(
        lambda: (a := answer(cluster, namespace, old_kubeconfig)) != "ok" and a,
        timeout=60,
        what="the old token to be refused",
    )
    assert "Unauthorized" in refused or "must be logged in" in refused, refused
    assert answer(cluster, namespace, kubeconfig) == "ok"

    cluster.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", stdin=manifest("after"))
    wait_until(lambda: reconciled(cluster, namespace, "after"), timeout=90, what="after")

    op.assert_alive()
    log = op.output()
    relogins = [
        line
        for line in log.splitlines()
        if "Re-authentication has been initiated" in line
        or "re-authenticated after 401 Unauthorized" in line
    ]
    assert relogins, f"no re-login in the operator's log:\n{log[-4000:]}"
    sys.stderr.write("\n[e2e] after the rotation:\n" + "\n".join(relogins) + "\n")
    assert "Traceback" not in log, log[-4000:]
    assert "no new credentials to retry with" not in log, log[-4000:]
