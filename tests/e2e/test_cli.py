"""``kubectl mlkube`` against a real API server with the real operator running.

One ModelService goes through a whole release story, each command checked at the state it
acts on: a canary in progress (get, status, ``status --watch`` timing out), paused by hand
(and resumed), promoted by hand (``status --watch`` exits 0), rolled back by ``abort``
(``status --watch`` exits 1), undone to an older revision, retried. After every action the
Git manifest, diffed server-side under Argo CD's field manager, shows no difference: the
commands never touch ``spec``. Then the chart's ``mlkube-release-manager`` ClusterRole,
bound to a ServiceAccount, is proven sufficient (the audit log shows no 403) and exactly
what the commands use; an identity without it gets one line and exit 2, never a traceback.

The commands run through the real ``kubectl`` (its plugin mechanism finds
``kubectl-mlkube`` on PATH). No Prometheus is configured, so the canary waits at its
first step until a person acts; no controller-manager runs, so the test writes Deployment
status where the pods would be ready (as in test_rollout.py).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlkube.kubectl.cli import main
from tests.support.kubectl import modelservice

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

controlplane = importlib.import_module("mlkube_e2e_controlplane")  # loaded by conftest.py
wait_until = controlplane.wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mlkube"
ARGOCD = "argocd-controller"  # the field manager Argo CD's server-side apply uses


def manifest(version: str) -> str:
    spec = {
        "model": {"name": "ranker", "version": version},
        "replicas": 2,
        "rollout": {
            "steps": [20, 50],
            "interval": "10s",
            "analysis": {"minSampleCount": 10, "metrics": [{"name": "successRate", "min": 0.99}]},
        },
    }
    return modelservice("recs", spec)


class Plugin:
    """``kubectl mlkube ...``: through the real kubectl's plugin lookup, or (to keep the
    test short: each process pays the interpreter's start) the same ``main`` in-process."""

    def __init__(self, cluster: Any, namespace: str, bin_dir: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        script = bin_dir / "kubectl-mlkube"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mlkube.kubectl "$@"\n')
        script.chmod(0o755)
        self.env = cluster.env(
            {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
        )

    def words(self, args: tuple[str, ...], kubeconfig: Path | None) -> list[str]:
        return [
            *args,
            "-n",
            self.namespace,
            "--kubeconfig",
            str(kubeconfig or self.cluster.kubeconfig),
        ]

    def __call__(
        self, *args: str, rc: int = 0, kubeconfig: Path | None = None, kubectl: bool = False
    ) -> subprocess.CompletedProcess[str]:
        words = self.words(args, kubeconfig)
        if kubectl:
            proc = subprocess.run(
                [str(self.cluster.kubectl_path), "mlkube", *words],
                capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=90, check=False,
            )  # fmt: skip
        else:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(words, prog="kubectl mlkube")
            proc = subprocess.CompletedProcess(words, code, out.getvalue(), err.getvalue())
        assert proc.returncode == rc, (args, proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.cluster.kubectl_path), "mlkube", *self.words(args, None)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
        )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    return proc.stderr


def get(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def rollout(cluster: Any, namespace: str) -> dict[str, Any]:
    ms = get(cluster, namespace, "msvc", "recs") or {}
    out: dict[str, Any] = (ms.get("status") or {}).get("rollout") or {}
    return out


def mark_rolled_out(cluster: Any, namespace: str, name: str) -> None:
    dep = get(cluster, namespace, "deployment", name)
    assert dep is not None, name
    n = dep["spec"]["replicas"]
    status = {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n,
        "availableReplicas": n,
    }
    cluster.kubectl(
        "-n", namespace, "patch", "deployment", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def version_of(cluster: Any, namespace: str, name: str) -> str | None:
    dep = get(cluster, namespace, "deployment", name)
    if dep is None:
        return None
    labels = dep["spec"]["template"]["metadata"]["labels"]
    return str(labels["app.kubernetes.io/version"])


def apply_from_git(cluster: Any, namespace: str, version: str) -> None:
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", f"--field-manager={ARGOCD}", "-f", "-",
        stdin=manifest(version),
    )  # fmt: skip


def assert_in_sync(cluster: Any, namespace: str, version: str) -> None:
    """Argo CD's view: the Git manifest diffed server-side under its field manager."""
    proc = cluster.kubectl(
        "-n", namespace, "diff", "--server-side", f"--field-manager={ARGOCD}", "-f", "-",
        stdin=manifest(version), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"OutOfSync:\n{proc.stdout}{proc.stderr}"
    assert proc.stdout == ""


def test_release_story_through_kubectl_mlkube(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    start_operator(namespaces=[namespace])
    mlkube = Plugin(cluster, namespace, tmp_path)

    apply_from_git(cluster, namespace, "v1")
    wait_until(lambda: get(cluster, namespace, "deployment", "recs"), what="Deployment")
    mark_rolled_out(cluster, namespace, "recs")
    wait_until(lambda: rollout(cluster, namespace).get("stableRevision"), what="v1 stable")

    # ---------------------------------------------------------------- a canary in progress
    apply_from_git(cluster, namespace, "v2")
    wait_until(lambda: get(cluster, namespace, "deployment", "recs-canary"), what="canary")
    mark_rolled_out(cluster, namespace, "recs-canary")
    mark_rolled_out(cluster, namespace, "recs")
    tree = mlkube("get", "msvc", "recs", kubectl=True).stdout.splitlines()
    assert tree[0].startswith("ModelService recs  ")
    assert "rollout Progressing" in tree[0]
    assert any("(stable, model v1, weight 80%)" in line for line in tree), tree
    assert any("(canary, model v2, weight 20%)" in line for line in tree), tree
    assert any("Deployment recs-canary  1/1 ready" in line for line in tree), tree
    data = json.loads(mlkube("get", "msvc", "recs", "-o", "json").stdout)
    assert [(r["role"], r["weight"]) for r in data["revisions"]] == [("stable", 80), ("canary", 20)]
    listed = yaml.safe_load(mlkube("get", "msvc", "-l", "nothing=here", "-o", "yaml").stdout)
    assert listed == {"items": []}

    status = mlkube("status", "recs").stdout
    assert "Steps:      [20%] -> 50% -> promote" in status
    assert "Weight:     20%" in status
    assert "successRate" in status
    assert "Deadline:   in " in status
    assert "CanaryStarted" in status  # the recent Events
    watched = mlkube("status", "recs", "--watch", "--timeout", "2s", "--interval", "0.5", rc=3)
    assert "\x1b[" not in watched.stdout  # not a terminal: plain lines, no colour
    assert "recs: Progressing | canary " in watched.stdout
    assert "still Progressing after --timeout 2s" in one_line_error(watched)

    # ------------------------------------------------------------------ paused by hand
    assert "paused at 20%" in mlkube("pause", "recs").stdout
    assert "Paused:     yes, by kubectl mlkube pause" in mlkube("status", "recs").stdout
    assert_in_sync(cluster, namespace, "v2")
    assert "resumed at 20%" in mlkube("resume", "recs").stdout

    # ---------------------------------------------------------------- promoted by hand
    assert "canary advanced to 50%" in mlkube("promote", "recs").stdout
    watch = mlkube.start("status", "recs", "--watch", "--timeout", "60s", "--interval", "0.5")
    try:
        assert watch.stdout is not None
        first = watch.stdout.readline()  # the watch has seen the canary at 50%
        assert "recs: Progressing | canary " in first
        assert "promoting" in mlkube("promote", "recs", "--full").stdout
        wait_until(lambda: version_of(cluster, namespace, "recs") == "v2", what="stable on v2")
        mark_rolled_out(cluster, namespace, "recs")
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, (out, err)
    assert "recs: Promoting" in out
    assert out.rstrip().endswith("ModelService recs: rollout Healthy")
    history = mlkube("history", "recs").stdout.splitlines()
    assert history[0].split() == ["#", "REVISION", "MODEL", "IMAGE", "OUTCOME", "STARTED", "TOOK"]
    assert [line.split()[0] for line in history[1:3]] == ["1", "2*"]
    assert "Deployed" in history[1]
    assert "Promoted" in history[2]
    assert " v2 " in history[2]
    rejected = mlkube("promote", "recs", rc=1)
    assert "promote rejected: no rollout in progress (phase Succeeded; last revision" in (
        one_line_error(rejected)
    )
    assert "promoted " in rejected.stderr
    assert " ago)" in rejected.stderr
    assert_in_sync(cluster, namespace, "v2")

    # ------------------------------------------------------------- rolled back by abort
    apply_from_git(cluster, namespace, "v3")
    wait_until(lambda: get(cluster, namespace, "deployment", "recs-canary"), what="canary v3")
    assert "aborted" in mlkube("abort", "recs").stdout
    ended = mlkube("status", "recs", "--watch", "--interval", "0.5", rc=1)
    assert "rollout ended RolledBack" in ended.stdout
    wait_until(lambda: get(cluster, namespace, "deployment", "recs-canary") is None, what="gone")
    tree = mlkube("get", "msvc", "recs").stdout
    assert "rollout RolledBack" in tree
    assert "weight 100%" in tree
    assert_in_sync(cluster, namespace, "v3")

    # ------------------------------------------------ undo to v1, then retry v3's canary
    assert "stable back to" in mlkube("undo", "recs", "--to-revision", "1").stdout
    wait_until(lambda: version_of(cluster, namespace, "recs") == "v1", what="stable on v1")
    assert "undone by hand" in mlkube("status", "recs").stdout
    assert "started again at 20%" in mlkube("retry", "recs").stdout
    wait_until(lambda: version_of(cluster, namespace, "recs-canary") == "v3", what="canary v3")
    assert_in_sync(cluster, namespace, "v3")
    ms = cluster.kubectl_json(
        "-n", namespace, "get", "msvc", "recs", "--show-managed-fields"
    )  # fmt: skip
    managers = {m["manager"] for m in ms["metadata"]["managedFields"]}  # type: ignore[index]
    assert "kubectl-mlkube" in managers  # the annotation's owner, apart from Git's
    assert ms["spec"]["model"]["version"] == "v3"  # type: ignore[index]

    # ------------------------------------------------------------------------ errors
    missing = one_line_error(mlkube("status", "nope", rc=2))
    assert f"ModelService nope not found in namespace {namespace}" in missing
    assert "no running model pods" in one_line_error(mlkube("logs", "recs", rc=2))

    # ----------------------------------------------- RBAC: the chart's release-manager role
    role = release_manager_role()
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(role))
    alice = service_account_kubeconfig(
        cluster, namespace, "alice", tmp_path, role["metadata"]["name"]
    )
    bob = service_account_kubeconfig(cluster, namespace, "bob", tmp_path, None)
    seen_before = len(cluster.audit_events(f"system:serviceaccount:{namespace}:alice"))
    assert "revision" in mlkube("get", "msvc", kubeconfig=alice).stdout
    assert "No PyTorchJobs found" in mlkube("get", "ptj", kubeconfig=alice).stdout
    absent = one_line_error(mlkube("get", "ptj", "ddp", rc=2, kubeconfig=alice))
    assert "PyTorchJob ddp not found" in absent
    mlkube("status", "recs", kubeconfig=alice)
    mlkube("history", "recs", kubeconfig=alice)
    mlkube("pause", "recs", kubeconfig=alice)
    mlkube("logs", "recs", rc=2, kubeconfig=alice)  # no nodes here: no pods to read
    calls = cluster.audit_events(f"system:serviceaccount:{namespace}:alice")[seen_before:]
    refused = [c for c in calls if (c.get("responseStatus") or {}).get("code") == 403]
    assert refused == [], refused
    used = {
        (c["objectRef"].get("apiGroup", ""), resource(c["objectRef"]), c["verb"])
        for c in calls
        if c.get("objectRef")
    }
    granted = {
        (group, res, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    }
    assert used <= granted
    # pods/log is read only from running pods: proven on the cluster tier
    assert granted - used == {("", "pods/log", "get")}, granted - used
    denied = one_line_error(mlkube("get", "msvc", "recs", rc=2, kubeconfig=bob, kubectl=True))
    assert "not allowed to read ModelService recs" in denied
    assert "mlkube-release-manager" in denied
    denied = one_line_error(mlkube("promote", "recs", rc=2, kubeconfig=bob))
    assert "not allowed to read ModelService recs" in denied


def resource(ref: dict[str, Any]) -> str:
    sub = ref.get("subresource")
    return f"{ref['resource']}/{sub}" if sub else str(ref["resource"])


def release_manager_role() -> dict[str, Any]:
    helm = ROOT / ".venv" / "bin" / "helm"
    binary = str(helm) if helm.exists() else shutil.which("helm")
    assert binary, "helm is not installed (make helm)"
    out = subprocess.run(
        [binary, "template", "mlkube", str(CHART), "-n", "mlkube-system",
         "--show-only", "templates/release-manager.yaml"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    role: dict[str, Any] = yaml.safe_load(out)
    assert role["kind"] == "ClusterRole"
    assert role["metadata"]["name"] == "mlkube-release-manager"
    return role


def service_account_kubeconfig(
    cluster: Any, namespace: str, name: str, tmp_path: Path, cluster_role: str | None
) -> Path:
    cluster.kubectl("-n", namespace, "create", "serviceaccount", name)
    if cluster_role:
        cluster.kubectl(
            "-n", namespace, "create", "rolebinding", name, f"--clusterrole={cluster_role}",
            f"--serviceaccount={namespace}:{name}",
        )  # fmt: skip
    token = cluster.kubectl("-n", namespace, "create", "token", name).stdout.strip()
    path = tmp_path / f"{name}.kubeconfig"
    path.write_text(cluster.token_kubeconfig(token))
    return path


def test_shell_completion_in_bash_zsh_and_kubectl(
    cluster: Any, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    """The completion scripts in the real bash and zsh, and kubectl's own completion of a
    plugin (kubectl >= 1.26 runs ``kubectl_complete-mlkube``): commands, flags, and the names
    of the namespace's ModelServices read from the API server."""
    apply_from_git(cluster, namespace, "v1")
    plugin = Plugin(cluster, namespace, tmp_path)
    hook = tmp_path / "kubectl_complete-mlkube"
    hook.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -c '
        "'import sys; from mlkube.kubectl.cli import complete_main; sys.exit(complete_main())' "
        '"$@"\n'
    )
    hook.chmod(0o755)

    def shell(argv: list[str], script: str) -> list[str]:
        proc = subprocess.run(
            [*argv, script], capture_output=True, text=True, env=plugin.env, cwd=ROOT,
            timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
        lines = proc.stdout.splitlines()
        assert all(line.startswith("[") and line.endswith("]") for line in lines), lines
        return [line[1:-1] for line in lines]  # an empty candidate would be ""

    def bash(*words: str) -> list[str]:
        quoted = " ".join(f"'{w}'" for w in words)
        return shell(
            ["bash", "-c"],
            "source <(kubectl-mlkube completion bash)\n"
            f"COMP_WORDS=(kubectl-mlkube {quoted}); COMP_CWORD={len(words)}\n"
            "_kubectl_mlkube\n"
            'for w in "${COMPREPLY[@]}"; do printf "[%s]\\n" "$w"; done\n',
        )

    def zsh(*words: str) -> list[str]:
        quoted = " ".join(f"'{w}'" for w in words)
        return shell(
            ["zsh", "-f", "-c"],
            "autoload -U compinit && compinit -u -D\n"
            "source <(kubectl-mlkube completion zsh)\n"
            # what the widget would offer
            'compadd() { local w; for w in "${(@P)2}"; do print -r -- "[$w]"; done }\n'
            f"words=(kubectl-mlkube {quoted}); CURRENT={len(words) + 1}\n"
            "_kubectl_mlkube\n",
        )

    for complete in (bash, zsh):
        assert complete("pro") == ["promote"], complete
        assert complete("promote", "--f") == ["--full"], complete
        assert complete("status", "-n", namespace, "r") == ["recs"], complete
        assert complete("get", "msvc", "-n", namespace, "") == ["recs"], complete
        assert complete("status", "recs", "") == [], complete
    # kubectl's own: `kubectl mlkube st<TAB>` asks the hook, which ends with cobra's directive
    kubectl = [str(cluster.kubectl_path), "__complete", "mlkube", "status", "-n", namespace, "r"]
    proc = subprocess.run(
        kubectl, capture_output=True, text=True, env=plugin.env, cwd=ROOT, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["recs", ":4"], proc.stdout
