"""The real operator (kopf, in-process) against kmock's Kubernetes API emulator: the parts the
operator and rollout integration tests share.

kmock serves discovery, list/watch, create, patch and delete from memory. It does not run
controllers, admission or defaulting, so the tests play those parts where it matters: they
write Deployment and Pod status as the kube-controller-manager and kubelet would, and
``ApiServerEmulator`` bumps ``metadata.generation`` on spec changes as the API server would.
Each area's conftest keeps its own resource table and operator settings.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
import kopf
import pytest

from mlkube.operator.app import OperatorContext, run_operator
from mlkube.operator.config import OperatorConfig

T = TypeVar("T")


#: What the operator itself needs of the API server: its ModelServices (status and scale
#: subresources), pods (their readiness), namespaces (kopf waits for them to be discoverable
#: before it starts any watch) and events. Each conftest adds the child kinds it serves.
OPERATOR_RESOURCES = {
    "mlkube.dev/v1alpha1/modelservices": kmock.ResourceInfo(
        kind="ModelService",
        namespaced=True,
        singular="modelservice",
        shortnames={"msvc"},
        categories={"mlkube"},
        subresources={"status", "scale"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
    ),
    "v1/pods": kmock.ResourceInfo(kind="Pod", namespaced=True, verbs={"get", "list", "watch"}),
    "v1/namespaces": kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"list", "watch"}
    ),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True, verbs={"create", "list"}),
}


class ApplyCreatesEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock plus what kube-apiserver does with a server-side apply of a missing object:
    it creates the object and answers 201 (kmock would answer 404 to the PATCH).

    The request is served as a CREATE. kmock's reactions match recorded requests by
    identity, so the record is replaced too: it stays a PATCH, now with the CREATE action
    it had in effect, which is what tests count as a creation.
    """

    async def _handle(self, request: Any) -> Any:
        if not self._applies_to_missing(request):
            return await self._serve(request)
        created = attrs.evolve(request, action=kmock.action.CREATE)
        self._requests[:] = [created if r is request else r for r in self._requests]
        response = await self._serve(created)
        if response.status == 200:
            response.set_status(201)
        return response

    async def _serve(self, request: Any) -> Any:
        """kmock's handling; subclasses add their bookkeeping here."""
        return await super()._handle(request)

    def _applies_to_missing(self, request: Any) -> bool:
        """A server-side apply (PATCH, ``application/apply-patch+yaml``) of a named object
        that is absent or deleted."""
        content_type = next(
            (v for k, v in request.headers.items() if k.lower() == "content-type"), ""
        )
        if (
            request.action != kmock.action.UPDATE
            or request.name is None
            or request.subresource
            or not content_type.startswith("application/apply-patch")
            or not isinstance(request.data, dict)
        ):
            return False
        key = (request.resource, request.namespace, request.name)
        return key not in self.objects or bool(self.objects[key].deleted)


class ApiServerEmulator(ApplyCreatesEmulator):
    """kmock plus the bookkeeping a real API server does on writes.

    kmock stores objects as given. kopf relies on server-assigned fields: names from
    ``generateName`` (its Events), a ``resourceVersion`` that changes on every write (its
    consistency check after its own patches), and ``generation`` that moves on spec changes
    (our ``observedGeneration``). This subclass adds exactly those, as kmock's docs suggest
    for special field treatment (a server-side apply that creates its object gets them as
    any create does); everything else is kmock's.
    """

    _counter = itertools.count(2)

    #: ``group/plural`` of resources this API server does not serve, as one without their
    #: CRD (e.g. ``gateway.networking.k8s.io/httproutes``): every request is answered as
    #: kube-apiserver answers for an API group it does not know (404, plain text), and
    #: nothing is stored. Tests assign a set per instance.
    unserved: frozenset[str] | set[str] = frozenset()

    #: ``metadata.creationTimestamp`` of created objects; None: the current time.
    creation_timestamp: str | None = None

    async def _serve(self, request: Any) -> Any:
        resource = request.resource
        if resource is not None and f"{resource.group}/{resource.plural}" in self.unserved:
            return aiohttp.web.Response(status=404, text="404 page not found\n")
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            version = str(next(self._counter))
            if request.action == kmock.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{version}"
                meta.setdefault("uid", f"uid-{version}")
                meta.setdefault("generation", 1)
                meta.setdefault(
                    "creationTimestamp",
                    self.creation_timestamp
                    or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
                meta["resourceVersion"] = version
            elif request.action == kmock.action.UPDATE and request.name is not None:
                meta["resourceVersion"] = version
                key = (request.resource, request.namespace, request.name)
                if "spec" in data and not request.subresource and key in self.objects:
                    current = self.objects[key]
                    if not current.deleted and current.get("spec") != merged(
                        current.get("spec"), data["spec"]
                    ):
                        meta["generation"] = (
                            int(current.get("metadata", {}).get("generation", 1)) + 1
                        )
        return await super()._serve(request)


def merged(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386), to tell whether a patch changes the spec."""
    if not isinstance(patch, dict):
        return patch
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merged(out.get(key), value)
    return out


async def eventually(
    probe: Callable[[], Awaitable[T | None]], within: float = 10.0, what: str = ""
) -> T:
    """Poll until ``probe`` returns something truthy (reconciles are asynchronous)."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or probe}; last: {last!r}")


def write_kubeconfig(server: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig at ``path`` pointing at ``server``, made the current one (``KUBECONFIG``,
    not in-cluster): the operator logs in with it like with any."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fast_exit(settings: kopf.OperatorSettings) -> None:
    """Idle per-object workers exit after 5 s by default; tests stop the operator often."""
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 1.0


class RunningOperator:
    """The real operator (kopf, our handlers) in its own thread and event loop, as in
    production; stop() and start() again to play an operator restart.

    A separate loop matters: on shutdown kopf waits for, then cancels, every task created
    in its loop after it started, which would include the test's own tasks.
    """

    def __init__(self, config: OperatorConfig, stop_within: float = 15.0) -> None:
        self.config = config
        self.stop_within = stop_within
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.ctx = OperatorContext(config)

    def _run(self) -> None:
        try:
            asyncio.run(
                run_operator(
                    self.ctx,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                    settings_hook=fast_exit,
                )
            )
        except BaseException as exc:  # reported by stop()
            self.error = exc

    async def start(self) -> None:
        self.ctx = OperatorContext(self.config)  # a fresh process' state on each start
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mlkube-operator", daemon=True)
        self.thread.start()
        started = await asyncio.to_thread(self.ready_flag.wait, 10)
        assert started, f"operator did not start: {self.error!r}"

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and self.error is None

    async def stop(self) -> None:
        if self.thread is None:
            return
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, self.stop_within)
        assert not self.thread.is_alive(), f"operator did not stop within {self.stop_within:g} s"
        self.thread = None
        assert self.error is None, f"operator failed: {self.error!r}"
