"""The real mlkube operator (kopf, all its handlers) against kmock's Kubernetes emulator.

kmock serves discovery, lists, watches, creates, merge-patches and deletes from memory; the
test plays kubelet by patching pod phases and container exit codes, and reads back what
the operator created, deleted and wrote into the job's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "pytorchjob"))

from mlkube.operator.app import OperatorContext, run_operator
from mlkube.operator.config import OperatorConfig
from tests.support.kube import ApiServerEmulator

NS = "ml"
JOBS = "mlkube.dev/v1alpha1/pytorchjobs"
PODS = "v1/pods"
SERVICES = "v1/services"


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    """kmock with what a real API server does on writes (resourceVersion on every write,
    names from generateName): the operator orders watch events by resourceVersion."""
    return {**kmock_options, "cls": ApiServerEmulator}


class Cluster:
    """Test-side view of the emulated API: objects in, objects out, kubelet moves."""

    def __init__(self, kmock: Any) -> None:
        self.kmock = kmock

    def _live(self, resource: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for (res, ns, name), obj in list(self.kmock.objects.items()):
            if str(res.plural) == resource.rsplit("/", 1)[-1] and ns == NS and not obj.deleted:
                out[name] = copy.deepcopy(dict(obj.raw))
        return out

    def pods(self) -> dict[str, dict[str, Any]]:
        return self._live(PODS)

    def services(self) -> dict[str, dict[str, Any]]:
        return self._live(SERVICES)

    def job(self, name: str) -> dict[str, Any] | None:
        return self._live(JOBS).get(name)

    def state(self, name: str) -> str | None:
        job = self.job(name)
        conditions = ((job or {}).get("status") or {}).get("conditions") or []
        return conditions[-1]["type"] if conditions else None

    async def create_job(self, body: dict[str, Any]) -> None:
        body = copy.deepcopy(body)
        body["metadata"]["namespace"] = NS
        body["metadata"].setdefault("uid", f"uid-{body['metadata']['name']}-{time.monotonic_ns()}")
        body["metadata"].setdefault("resourceVersion", "1")  # kopf patches with a test on it
        resp = await self.kmock.post(
            f"/apis/mlkube.dev/v1alpha1/namespaces/{NS}/pytorchjobs", json=body
        )
        assert resp.status < 300, await resp.text()

    async def patch_job(self, name: str, patch: dict[str, Any]) -> None:
        resp = await self.kmock.patch(
            f"/apis/mlkube.dev/v1alpha1/namespaces/{NS}/pytorchjobs/{name}",
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert resp.status < 300, await resp.text()

    async def set_phase(self, pod: str, phase: str, exit_code: int | None = None) -> None:
        """Play kubelet: move a pod to ``phase`` (with the pytorch container's exit code)."""
        state: dict[str, Any] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
        if exit_code is not None:
            state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                }
            }
        status = {
            "phase": phase,
            "containerStatuses": [{"name": "pytorch", "restartCount": 0, "state": state}],
        }
        resp = await self.kmock.patch(
            f"/api/v1/namespaces/{NS}/pods/{pod}/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert resp.status < 300, await resp.text()

    async def delete(self, plural: str, name: str) -> None:
        resp = await self.kmock.delete(f"/api/v1/namespaces/{NS}/{plural}/{name}")
        assert resp.status < 300, await resp.text()

    async def eventually(
        self, check: Callable[[], bool], within: float = 10.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or check}")
            await asyncio.sleep(0.05)

    def status_writes(self, name: str) -> list[dict[str, Any]]:
        """Every status the operator wrote on job ``name``, oldest first (from the request log).

        Some states last a single reconcile (``Restarting`` gives way to ``Running`` as soon
        as the replacement pod exists while the Master still runs), so polling the live
        object can miss them; the writes themselves cannot be missed.
        """
        out = []
        for request in list(self.kmock):
            if request.resource is None or str(request.resource.plural) != "pytorchjobs":
                continue
            if request.name != name or request.subresource != "status":
                continue
            if str(request.method.value).upper() != "PATCH" or not isinstance(request.data, dict):
                continue
            out.append(request.data.get("status") or {})
        return out

    def state_history(self, name: str) -> list[str]:
        """The successive states (newest condition type) the operator wrote on job ``name``."""
        history: list[str] = []
        for status in self.status_writes(name):
            conditions = status.get("conditions") or []
            if conditions and (not history or history[-1] != conditions[-1]["type"]):
                history.append(conditions[-1]["type"])
        return history

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        """Events posted so far (read from the request log: kmock ignores generateName)."""
        out = []
        for request in list(self.kmock):
            if request.resource is None or str(request.resource.plural) != "events":
                continue
            if str(request.method.value).upper() != "POST" or not isinstance(request.data, dict):
                continue
            if reason is None or request.data.get("reason") == reason:
                out.append(request.data)
        return out


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "clusters": [{"name": "kmock", "cluster": {"server": url}}],
                "users": [{"name": "kmock", "user": {"token": "test"}}],
                "contexts": [
                    {
                        "name": "kmock",
                        "context": {"cluster": "kmock", "user": "kmock", "namespace": NS},
                    }
                ],
            }
        )
    )
    return path


class Operator:
    """One running operator: its context, and a way to stop it (as a pod would be killed)."""

    def __init__(self, ctx: OperatorContext, thread: threading.Thread, stop: threading.Event):
        self.ctx = ctx
        self.thread = thread
        self._stop = stop

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self.thread.join, 15)
        assert not self.thread.is_alive(), "operator did not stop"


Start = Callable[[], Awaitable[Operator]]


@pytest.fixture
async def operator(
    kmock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Start]:
    """Start the real operator (``run_operator``) against kmock; stopped at teardown."""
    kmock.resources[JOBS] = kmock.ResourceInfo(
        kind="PyTorchJob",
        singular="pytorchjob",
        namespaced=True,
        verbs={"list", "watch", "get", "create", "patch", "update", "delete"},
        shortnames={"ptj"},
        subresources={"status", "scale"},
    )
    for resource, kind in ((PODS, "Pod"), (SERVICES, "Service"), ("v1/events", "Event")):
        kmock.resources[resource] = kmock.ResourceInfo(
            kind=kind,
            namespaced=True,
            verbs={"list", "watch", "get", "create", "patch", "update", "delete"},
            subresources={"status"} if kind == "Pod" else set(),
        )
    # kopf's backbone: it waits for these to be discoverable (cluster-wide, it lists neither).
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"list", "watch", "get"}
    )
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch", "get"}
    )
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))))
    running: list[Operator] = []

    async def start() -> Operator:
        # Cluster-wide: kmock cannot parse the namespace list that a namespaced kopf reads.
        config = OperatorConfig(namespaces=(), reconcile_interval=0.5, request_timeout=10.0)
        ctx = OperatorContext(config)
        stop, ready = threading.Event(), threading.Event()

        def serve() -> None:
            # kopf cancels every task created after it starts when it stops, so it gets a
            # loop of its own (kopf's documented way to embed an operator).
            asyncio.run(run_operator(ctx, stop_flag=stop, ready_flag=ready, liveness=False))

        thread = threading.Thread(target=serve, name="mlkube-operator", daemon=True)
        thread.start()
        running.append(Operator(ctx, thread, stop))
        assert await asyncio.to_thread(ready.wait, 10), "operator did not start"
        return running[-1]

    yield start
    # Delete the jobs first: kopf stops their timers cleanly on deletion, whereas a timer
    # still armed at shutdown costs kopf's 5-second grace for hung tasks.
    if any(op.thread.is_alive() for op in running):
        for (res, ns, name), obj in list(kmock.objects.items()):
            if str(res.plural) == "pytorchjobs" and not obj.deleted:
                await kmock.delete(f"/apis/mlkube.dev/v1alpha1/namespaces/{ns}/pytorchjobs/{name}")
        with contextlib.suppress(AssertionError):  # a slow deletion only costs the grace
            await Cluster(kmock).eventually(
                lambda: (
                    not any(
                        str(res.plural) == "pytorchjobs" and not obj.deleted
                        for (res, _, _), obj in list(kmock.objects.items())
                    )
                ),
                within=5,
            )
    for op in running:
        await op.stop()


@pytest.fixture
def cluster(kmock: Any) -> Cluster:
    return Cluster(kmock)
