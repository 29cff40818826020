"""`helm install` into a real Kubernetes API server: the chart works the first time.

The control plane is the e2e tier's (etcd + kube-apiserver built from the pinned release,
RBAC on, no nodes; tests/e2e/controlplane.py, loaded by path). What only a real API
server can say is said here: the chart's crds/ are installed before its templates (so the
kopf peering object of an HA install is accepted), every object passes the server's own
validation and admission, upgrades and uninstalls go through, and the ServiceAccount gets
exactly the rights the chart means as the real RBAC authorizer evaluates them
(`kubectl auth can-i`). The manifests-only path (`helm template | kubectl apply
--server-side`) of docs/install.md is exercised too.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "mlkube"
SA = "system:serviceaccount:mlkube-system:mlkube"


def _controlplane() -> ModuleType:
    """tests/e2e/controlplane.py, under the name the e2e conftest registers it with."""
    name = "mlkube_e2e_controlplane"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "e2e" / "controlplane.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    controlplane = _controlplane()
    with controlplane.running_control_plane(workdir=tmp_path_factory.mktemp("cp")) as cp:
        yield cp


def helm_on(cluster: Any, helm_bin: str, *args: str) -> str:
    """Run the real helm against the control plane; fail with its stderr."""
    proc = subprocess.run(
        [helm_bin, "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=cluster.env(),
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout + proc.stderr


def can_i(cluster: Any, verb: str, resource: str, namespace: str | None = "models") -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={SA}"]
    args += ["-n", namespace] if namespace else []
    proc = cluster.kubectl(*args, check=False)
    return proc.stdout.strip() == "yes"


def test_helm_install_upgrade_uninstall(cluster: Any, helm: str) -> None:
    helm_bin = helm
    # The namespace enforces the restricted Pod Security level and warns on workloads: the
    # API server's PodSecurity admission judges the operator's pod template itself.
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "mlkube-system",
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(namespace))
    out = helm_on(cluster, helm_bin, "install", "mlkube", str(CHART), "-n", "mlkube-system",
                  "--set", "operator.prometheusUrl=http://prom:9090")  # fmt: skip
    assert "PodSecurity" not in out, out
    assert "NOTES:" in out
    assert "kubectl apply -n default -f -" in out
    # the ModelService the NOTES suggest is accepted by the real API server (schema + CEL)
    example = out.split("<<'YAML'\n", 1)[1].split("YAML\n", 1)[0]
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/modelservices.mlkube.dev"
    )
    accepted = cluster.kubectl("apply", "-n", "default", "--dry-run=server", "-f", "-",
                               stdin=example)  # fmt: skip
    assert "modelservice.mlkube.dev/recommender created (server dry run)" in accepted.stdout

    crds = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    for name in (
        "modelservices.mlkube.dev",
        "pytorchjobs.mlkube.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ):
        assert f"customresourcedefinition.apiextensions.k8s.io/{name}" in crds
    deployment = cluster.kubectl_json("-n", "mlkube-system", "get", "deployment", "mlkube-operator")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"

    # the real authorizer, on the real bindings
    assert can_i(cluster, "patch", "modelservices.mlkube.dev/status")
    assert can_i(cluster, "watch", "modelservices.mlkube.dev")
    assert can_i(cluster, "create", "pods")
    assert can_i(cluster, "list", "customresourcedefinitions", None)
    assert not can_i(cluster, "update", "modelservices.mlkube.dev")
    assert not can_i(cluster, "delete", "modelservices.mlkube.dev")
    # Secrets: only `get`, for the S3 Secret a ModelService names; never listed or watched
    assert can_i(cluster, "get", "secrets")
    assert not can_i(cluster, "list", "secrets")
    assert not can_i(cluster, "watch", "secrets")
    assert not can_i(cluster, "patch", "clusterkopfpeerings.kopf.dev", None)

    # to HA: the peering object needs the kopf.dev CRD from crds/, installed on day one
    helm_on(cluster, helm_bin, "upgrade", "mlkube", str(CHART), "-n", "mlkube-system",
          "--reuse-values", "--set", "operator.replicas=2")  # fmt: skip
    peering = cluster.kubectl_json("get", "clusterkopfpeering", "mlkube")
    assert peering["metadata"]["labels"]["app.kubernetes.io/instance"] == "mlkube"
    names = cluster.kubectl(
        "-n", "mlkube-system", "get", "deployments", "-o", "name"
    ).stdout.split()
    assert names == [
        "deployment.apps/mlkube-operator",
        "deployment.apps/mlkube-operator-standby-1",
    ]
    assert cluster.kubectl("-n", "mlkube-system", "get", "pdb", "mlkube-operator").returncode == 0
    proc = cluster.kubectl(
        "auth", "can-i", "patch", "clusterkopfpeerings.kopf.dev/mlkube", f"--as={SA}"
    )
    assert proc.stdout.strip() == "yes"

    helm_on(cluster, helm_bin, "uninstall", "mlkube", "-n", "mlkube-system", "--wait")
    left = cluster.kubectl(
        "get", "clusterroles,clusterrolebindings,clusterkopfpeerings", "-o", "name",
        "-l", "app.kubernetes.io/instance=mlkube",
    ).stdout.split()  # fmt: skip
    assert left == []
    # Helm keeps CRDs (and so every ModelService) on uninstall, as documented
    assert "customresourcedefinition.apiextensions.k8s.io/modelservices.mlkube.dev" in (
        cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    )


def test_manifests_path_kubectl_server_side(cluster: Any, helm: str, tmp_path: Path) -> None:
    """docs/install.md's path without Helm: CRDs, then the rendered chart, server-side."""
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/modelservices.mlkube.dev", "crd/clusterkopfpeerings.kopf.dev",
    )  # fmt: skip
    cluster.kubectl("create", "namespace", "ml-ops", check=False)
    for ns in ("team-a", "team-b"):
        cluster.kubectl("create", "namespace", ns, check=False)
    rendered = subprocess.run(
        [helm, "template", "ml", str(CHART), "-n", "ml-ops",
         "--set", "operator.watchNamespaces={team-a,team-b}",
         "--set", "operator.peering.enabled=true"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    # every rendered object names its namespace, so no -n (it would clash with team-a/b)
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=rendered)
    for doc in docs:
        ns = doc["metadata"].get("namespace")
        args = ["get", doc["kind"], doc["metadata"]["name"], "-o", "json"]
        got = json.loads(cluster.kubectl(*(["-n", ns] if ns else []), *args).stdout)
        assert got["metadata"]["name"] == doc["metadata"]["name"]
    sa = "system:serviceaccount:ml-ops:ml-mlkube"
    for ns, expected in (("team-a", "yes"), ("team-b", "yes"), ("default", "no")):
        proc = cluster.kubectl(
            "auth", "can-i", "patch", "modelservices.mlkube.dev/status", f"--as={sa}", "-n", ns,
            check=False,
        )  # fmt: skip
        assert proc.stdout.strip() == expected, (ns, proc.stdout, proc.stderr)


def test_operator_pod_passes_the_api_servers_pod_security_admission(
    cluster: Any, helm: str
) -> None:
    """The real PodSecurity admission (restricted:latest) on the rendered Deployments,
    including the HA ones, with a broken copy as the control that the check can fail."""
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "psa-restricted",
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(namespace))
    rendered = subprocess.run(
        [helm, "template", "psa", str(CHART), "-n", "psa-restricted",
         "-s", "templates/deployment.yaml", "--set", "operator.replicas=2"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    ok = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
    assert "PodSecurity" not in ok.stderr, ok.stderr
    assert ok.stdout.count("deployment.apps/") == 2

    broken = rendered.replace("runAsNonRoot: true", "runAsNonRoot: false")
    refused = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=broken)
    assert 'would violate PodSecurity "restricted:latest"' in refused.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_gitops_managed_modelservice_stays_in_sync_on_a_real_api_server(
    cluster: Any, tmp_path: Path
) -> None:
    """What Argo CD does with ServerSideApply/ServerSideDiff, done with kubectl: apply the
    manifest from Git as field manager ``argocd-controller``, let the real operator
    reconcile it, then diff server-side as the same manager. No difference, and no other
    manager owns any field of the spec: the operator wrote status and metadata only."""
    manifest = REPO / "examples" / "modelservice-bandit.yaml"
    name = yaml.safe_load(manifest.read_text(encoding="utf-8"))["metadata"]["name"]
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/modelservices.mlkube.dev"
    )
    cluster.kubectl("create", "namespace", "gitops", check=False)
    argocd = ("--server-side", "--field-manager=argocd-controller", "-n", "gitops")
    cluster.kubectl("apply", *argocd, "-f", str(manifest))

    log = tmp_path / "operator.log"
    env = cluster.env(
        {
            "MLKUBE_WATCH_NAMESPACES": "gitops",
            "MLKUBE_PEERING": "",
            "MLKUBE_HEALTH_HOST": "127.0.0.1",
            "MLKUBE_HEALTH_PORT": str(_free_port()),
            "MLKUBE_METRICS_PORT": str(_free_port()),
            "MLKUBE_LOG_FORMAT": "text",
        }
    )
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlkube", "operator"],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip
    try:

        def reconciled() -> bool:
            got = cluster.kubectl("-n", "gitops", "get", "msvc", name, "-o", "json")
            status = json.loads(got.stdout).get("status") or {}
            deployment = cluster.kubectl("-n", "gitops", "get", "deployment", name, check=False)
            return status.get("observedGeneration") == 1 and deployment.returncode == 0

        _controlplane().wait_until(reconciled, timeout=90, what="the operator's reconcile")
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)

    diff = cluster.kubectl("diff", *argocd, "-f", str(manifest), check=False)
    assert diff.returncode == 0, f"OutOfSync after the operator ran:\n{diff.stdout}{diff.stderr}"

    live = json.loads(
        cluster.kubectl(
            "-n", "gitops", "get", "msvc", name, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    spec_owners = {
        entry["manager"]
        for entry in live["metadata"]["managedFields"]
        if "f:spec" in (entry.get("fieldsV1") or {}) and entry.get("subresource") != "status"
    }
    assert spec_owners == {"argocd-controller"}
    operator_writes = [
        entry
        for entry in live["metadata"]["managedFields"]
        if entry["manager"] != "argocd-controller"
    ]
    assert operator_writes, "the operator wrote nothing: the test proves nothing"
    for entry in operator_writes:
        fields = set(entry.get("fieldsV1") or {})
        assert entry.get("subresource") == "status" or fields <= {"f:metadata"}, entry

    # The control, and the one case docs/install.md says needs ignoreDifferences: someone
    # scaling the ModelService through its scale subresource changes a field Git owns.
    cluster.kubectl("-n", "gitops", "scale", "msvc", name, "--replicas=3")
    drift = cluster.kubectl("diff", *argocd, "-f", str(manifest), check=False)
    # kubectl diff exits 1 on a difference, and >1 when the server-side apply would even
    # conflict with the scale subresource's manager; either way .spec.replicas is named
    assert drift.returncode != 0
    assert "replicas" in drift.stdout + drift.stderr
