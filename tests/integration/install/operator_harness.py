"""The real operator against kmock, for the install tier's tests (RBAC, HA peering).

Loaded as a plain module (conftest.py puts this directory on ``sys.path``); the fixtures
that use it live in conftest.py. The operator runs in-process (``run_operator``) and logs
in with its own token, so the requests it sends can be told apart from the test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import kmock
import kopf

from mlkube.operator.app import OperatorContext, run_operator
from mlkube.operator.config import OperatorConfig

NS = "ml"
OPERATOR_TOKEN = "operator-token"
HARNESS_TOKEN = "harness-token"
WAIT_SECONDS = 60.0
T = TypeVar("T")

_ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
RESOURCES = {
    "mlkube.dev/v1alpha1/modelservices": kmock.ResourceInfo(
        kind="ModelService", namespaced=True, subresources={"status", "scale"}, verbs=_ALL_VERBS
    ),
    "mlkube.dev/v1alpha1/pytorchjobs": kmock.ResourceInfo(
        kind="PyTorchJob", namespaced=True, subresources={"status", "scale"}, verbs=_ALL_VERBS
    ),
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment", namespaced=True, subresources={"status"}, verbs=_ALL_VERBS
    ),
    "v1/services": kmock.ResourceInfo(kind="Service", namespaced=True, verbs=_ALL_VERBS),
    "autoscaling/v2/horizontalpodautoscalers": kmock.ResourceInfo(
        kind="HorizontalPodAutoscaler", namespaced=True, verbs=_ALL_VERBS
    ),
    "gateway.networking.k8s.io/v1/httproutes": kmock.ResourceInfo(
        kind="HTTPRoute", namespaced=True, verbs=_ALL_VERBS
    ),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget", namespaced=True, verbs=_ALL_VERBS
    ),
    "v1/pods": kmock.ResourceInfo(
        kind="Pod", namespaced=True, subresources={"status"}, verbs=_ALL_VERBS
    ),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True, verbs=_ALL_VERBS),
    # Both gang schedulers' PodGroup CRDs, as if installed.
    "scheduling.x-k8s.io/v1alpha1/podgroups": kmock.ResourceInfo(
        kind="PodGroup", namespaced=True, verbs=_ALL_VERBS
    ),
    "scheduling.volcano.sh/v1beta1/podgroups": kmock.ResourceInfo(
        kind="PodGroup", namespaced=True, verbs=_ALL_VERBS
    ),
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=_ALL_VERBS),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=_ALL_VERBS
    ),
    "kopf.dev/v1/clusterkopfpeerings": kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, verbs=_ALL_VERBS
    ),
    "kopf.dev/v1/kopfpeerings": kmock.ResourceInfo(
        kind="KopfPeering", namespaced=True, verbs=_ALL_VERBS
    ),
}


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str = "", within: float = WAIT_SECONDS
) -> T:
    """Poll until ``probe`` answers; the default is generous because rollout steps wait for
    the operator's 5 s timer, on a machine under load."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within:.0f} s waiting for {what}; last: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fast_settings(settings: kopf.OperatorSettings) -> None:
    """Idle per-object workers exit after 5 s by default; the scenarios stop the operator."""
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 1.0


@contextlib.asynccontextmanager
async def operator_running(config: OperatorConfig) -> AsyncIterator[None]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_operator(
            OperatorContext(config), stop_flag=stop, ready_flag=ready, settings_hook=fast_settings
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), timeout=15)
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=20)


def config(namespaces: tuple[str, ...], peering: str) -> OperatorConfig:
    return OperatorConfig(
        namespaces=namespaces,
        peering=peering,
        default_image="ghcr.io/mlkube/mlkube:test",
        reconcile_interval=0.5,
        health_host="127.0.0.1",
        health_port=free_port(),
        watch_server_timeout=30,
        watch_client_timeout=40.0,
    )


MS: dict[str, Any] = {
    "apiVersion": "mlkube.dev/v1alpha1",
    "kind": "ModelService",
    # kmock keeps resourceVersion as given; kopf guards its finalizer patch with it
    "metadata": {
        "name": "recs",
        "namespace": NS,
        "uid": "uid-recs",
        "generation": 1,
        "resourceVersion": "1",
    },
    "spec": {"model": {"name": "ranker", "version": "v1"}, "replicas": 2},
}
