"""Fixtures for the e2e tier: one real control plane (etcd + kube-apiserver) per session.

The binaries are built on first use by scripts/e2e-build (minutes, once per
machine; cached under ~/.cache/mlkube by version); each session then pays only
the warm start (certificates + etcd + API server up to /readyz, a few seconds).
Tests talk to it with the real ``kubectl`` built from the same release and run
the real operator (``mlkube operator``) as a subprocess against the kubeconfig.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CRDS_DIR = ROOT / "crds"
EXAMPLES_DIR = ROOT / "examples"


def _load_controlplane() -> ModuleType:
    """Import controlplane.py by path (pytest runs with --import-mode=importlib).

    It is registered as ``mlkube_e2e_controlplane`` so test modules reach its
    helpers with ``importlib.import_module("mlkube_e2e_controlplane")``.
    """
    name = "mlkube_e2e_controlplane"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "controlplane.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


controlplane = _load_controlplane()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find cached) binaries before any e2e test starts.

    The first build takes minutes; done here it is not charged to the first test's
    pytest-timeout. ``make test`` has already run scripts/e2e-build, so there it is
    a no-op lookup.
    """
    if any(item.get_closest_marker("e2e") for item in session.items):
        controlplane.build_binaries()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running control plane; yields controlplane.ControlPlane."""
    workdir = tmp_path_factory.mktemp("control-plane")
    with controlplane.running_control_plane(workdir=workdir) as cp:
        sys.stderr.write(f"\n[e2e] control plane warm start: {cp.start_seconds:.1f} s\n")
        yield cp


@pytest.fixture(scope="session")
def crds_installed(cluster: Any) -> list[str]:
    """``kubectl apply --server-side -f crds/`` and wait until every CRD is Established."""
    files = sorted(CRDS_DIR.glob("*.yaml"))
    if not files:
        pytest.fail("crds/ holds no CRD manifests (run `mlkube crds --output-dir crds/`)")
    cluster.kubectl("apply", "--server-side", "-f", str(CRDS_DIR))
    names = [
        line.split("/", 1)[1]
        for line in cluster.kubectl("get", "-f", str(CRDS_DIR), "-o", "name").stdout.split()
    ]
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        *[f"crd/{n}" for n in names],
    )  # fmt: skip
    return names


_ns_counter = itertools.count()


@pytest.fixture
def namespace(cluster: Any) -> str:
    """A fresh namespace per test, so tests never see each other's objects.

    There is no namespace controller to finish deleting them, so they are left
    for the control plane's teardown.
    """
    name = f"e2e-{os.getpid() % 10000}-{next(_ns_counter)}"
    cluster.kubectl("create", "namespace", name)
    return name


class OperatorProcess:
    """``mlkube operator`` running as a child process, stopped by PID."""

    def __init__(
        self, proc: subprocess.Popen[bytes], log: Path, health_url: str, metrics_url: str
    ) -> None:
        self.proc = proc
        self.log = log
        self.health_url = health_url
        self.metrics_url = metrics_url

    def full_passes(self, kind: str = "ModelService") -> float:
        """Full reconciles of ``kind`` so far, whatever their result (its /metrics)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("mlkube_operator_reconciles_total{") and f'kind="{kind}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"mlkube operator exited with {self.proc.returncode}:\n{self.output()[-4000:]}"
            )

    def healthy(self) -> bool:
        """The operator's own liveness endpoint answers 200."""
        self.assert_alive()
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace)


StartOperator = Callable[..., OperatorProcess]


@pytest.fixture
def start_operator(cluster: Any, tmp_path: Path) -> Iterator[StartOperator]:
    """Start ``mlkube operator`` subprocesses against the cluster; all stopped at test end.

    ``namespaces`` limits what it watches (tests run side by side in one control
    plane, each in its own namespace); ``kubeconfig`` runs it as another identity
    (the chart's service account); ``reconcile_interval`` shortens the drift timer
    so tests can watch several periodic reconciles in seconds. It returns once the
    operator's liveness endpoint answers.
    """
    started: list[OperatorProcess] = []

    def start(
        namespaces: Sequence[str] = (),
        kubeconfig: Path | None = None,
        reconcile_interval: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> OperatorProcess:
        port = controlplane.free_port()
        metrics_port = controlplane.free_port()
        op_env = cluster.env(
            {
                "MLKUBE_LOG_FORMAT": "text",
                "MLKUBE_LOG_LEVEL": "INFO",
                "MLKUBE_WATCH_NAMESPACES": ",".join(namespaces),
                "MLKUBE_PEERING": "",
                "MLKUBE_HEALTH_HOST": "127.0.0.1",
                "MLKUBE_HEALTH_PORT": str(port),
                # the default 8082 would clash between operators started side by side
                "MLKUBE_METRICS_PORT": str(metrics_port),
                "MLKUBE_RECONCILE_INTERVAL": str(reconcile_interval),
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            }
        )
        if kubeconfig is not None:
            op_env["KUBECONFIG"] = str(kubeconfig)
        log = tmp_path / f"operator-{len(started)}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlkube", "operator"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=op_env,
                cwd=ROOT,
                start_new_session=True,
            )
        op = OperatorProcess(
            proc,
            log,
            f"http://127.0.0.1:{port}/healthz",
            f"http://127.0.0.1:{metrics_port}/metrics",
        )
        started.append(op)
        controlplane.wait_until(op.healthy, timeout=60, what="the operator's /healthz")
        return op

    try:
        yield start
    finally:
        for op in started:
            op.stop()
