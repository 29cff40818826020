"""The real operator (kopf, in-process) against kmock's Kubernetes API emulator.

kmock serves discovery, list/watch, create, patch and delete from memory. It does not run
controllers, admission or defaulting, so the tests play those parts where it matters: they
write Deployment and Pod status as the kube-controller-manager and kubelet would, and bump
``metadata.generation`` on spec changes as the API server would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest

from mlkube.operator.config import OperatorConfig
from mlkube.operator.kube import KubeAPI
from tests.support import kube
from tests.support.kube import (
    ApiServerEmulator,
    RunningOperator,
    eventually,
    free_port,
    write_kubeconfig,
)

NAMESPACE = "ml"

RESOURCES = {
    **kube.OPERATOR_RESOURCES,
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment", namespaced=True, verbs={"get", "list", "watch", "create", "patch"}
    ),
    "v1/services": kmock.ResourceInfo(
        kind="Service", namespaced=True, verbs={"get", "list", "watch", "create", "patch"}
    ),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch"},
    ),
}


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": ApiServerEmulator}


@pytest.fixture
def cluster(kmock: Any) -> Any:
    for key, info in RESOURCES.items():
        kmock.resources[key] = info
    return kmock


@pytest.fixture
async def api(cluster: Any) -> AsyncIterator[KubeAPI]:
    client = KubeAPI(kopf.ConnectionInfo(server=str(cluster.url).rstrip("/")))
    yield client
    await client.close()


@pytest.fixture
def kubeconfig(cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig pointing at the emulator; the operator logs in with it like with any."""
    return write_kubeconfig(str(cluster.url).rstrip("/"), tmp_path / "kubeconfig", monkeypatch)


@pytest.fixture
async def operator(kubeconfig: Path) -> AsyncIterator[RunningOperator]:
    config = OperatorConfig(
        default_image="ghcr.io/mlkube/mlkube:test",
        reconcile_interval=0.5,
        health_host="127.0.0.1",
        health_port=free_port(),
        watch_server_timeout=30,
        watch_client_timeout=40.0,
    )
    running = RunningOperator(config, stop_within=15.0)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Awaitable[Any]]:
    return eventually
