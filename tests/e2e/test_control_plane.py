"""The control plane itself: the release we pinned, healthy, and enforcing RBAC.

These guard the fixture: if the API server were silently something else (an
old Debian kubectl talking to nothing, authorization off), every later e2e
assertion about what is refused or allowed would mean nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def pinned_kube_version() -> str:
    """The k8s.io/kubernetes version e2e/kube/go.mod pins."""
    text = (ROOT / "e2e" / "kube" / "go.mod").read_text()
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\S+)", text, re.MULTILINE)
    assert match, "e2e/kube/go.mod does not require k8s.io/kubernetes"
    return match.group(1)


def test_server_and_kubectl_are_the_pinned_release(cluster: Any) -> None:
    versions = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    pinned = pinned_kube_version()
    assert versions["serverVersion"]["gitVersion"] == pinned
    assert versions["clientVersion"]["gitVersion"] == pinned


def test_readyz_passes_every_check(cluster: Any) -> None:
    out = cluster.kubectl("get", "--raw", "/readyz?verbose").stdout
    assert out.rstrip().endswith("readyz check passed")
    assert "[-]" not in out  # no failed check


def test_rbac_is_enforced_for_service_accounts(
    cluster: Any, namespace: str, tmp_path: Path
) -> None:
    """A token for a ServiceAccount with no bindings is authenticated but refused."""
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "nobody")
    token = cluster.kubectl("-n", namespace, "create", "token", "nobody").stdout.strip()
    kubeconfig = tmp_path / "nobody.kubeconfig"
    kubeconfig.write_text(
        cluster.token_kubeconfig(token)  # same server and CA, bearer token
    )
    who = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:nobody"
    denied = cluster.kubectl(
        "-n", namespace, "get", "configmaps", kubeconfig=kubeconfig, check=False
    )
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr
    assert f"system:serviceaccount:{namespace}:nobody" in denied.stderr


def test_deployments_get_no_pods_without_a_controller_manager(cluster: Any, namespace: str) -> None:
    """envtest semantics: objects are stored and validated, nothing acts on them."""
    cluster.kubectl(
        "-n", namespace, "create", "deployment", "web", "--image=registry.invalid/web:1",
        "--replicas=2",
    )  # fmt: skip
    deployment = cluster.kubectl_json("-n", namespace, "get", "deployment", "web")
    assert deployment["spec"]["replicas"] == 2
    pods = cluster.kubectl_json("-n", namespace, "get", "pods")
    assert pods["items"] == []
