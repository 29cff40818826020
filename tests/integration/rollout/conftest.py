"""Fixtures for the rollout integration tests: a scripted Prometheus HTTP API on loopback,
kmock's Kubernetes API emulator, the real operator in-process, and a clock the tests move.

The mock answers ``/api/v1/query`` the way Prometheus does (``{"status": "success",
"data": {"resultType": "vector", "result": [...]}}``, errors as ``{"status": "error"}``
with 400/422/503); each answer is chosen by the first registered substring the PromQL
contains, so a test states "the canary's p99 is 342ms" without caring about the query's
exact text.  Every query received is recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import kmock
import kopf
import pytest
from aiohttp import web

from mlkube.operator import progressive
from mlkube.operator.app import OperatorContext, run_operator
from mlkube.operator.config import OperatorConfig
from mlkube.operator.kube import KubeAPI

T = TypeVar("T")


@dataclass
class Error:
    status: int
    message: str = "bad_data: parse error"


@dataclass
class MockPrometheus:
    url: str = ""
    answers: list[tuple[str, float | str | Error | None]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    delay: float = 0.0

    def answer(self, contains: str, value: float | str | Error | None) -> None:
        """Answer queries containing ``contains`` (later registrations win)."""
        self.answers.insert(0, (contains, value))

    def clear(self) -> None:
        self.answers.clear()

    def lookup(self, query: str) -> float | str | Error | None:
        for contains, value in self.answers:
            if contains in query:
                return value
        return None


async def _handle(request: web.Request) -> web.Response:
    mock = request.app[MOCK]
    if request.method == "POST":
        form = await request.post()
        query = str(form.get("query", ""))
    else:
        query = request.query.get("query", "")
    mock.queries.append(query)
    if mock.delay:
        await asyncio.sleep(mock.delay)
    value = mock.lookup(query)
    if isinstance(value, Error):
        return web.json_response(
            {"status": "error", "errorType": "bad_data", "error": value.message},
            status=value.status,
        )
    result = [] if value is None else [{"metric": {}, "value": [1700000000.0, str(value)]}]
    return web.json_response(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    )


MOCK = web.AppKey("mock", MockPrometheus)


@pytest.fixture
async def prometheus() -> AsyncIterator[MockPrometheus]:
    mock = MockPrometheus()
    app = web.Application()
    app[MOCK] = mock
    app.router.add_route("*", "/api/v1/query", _handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    mock.url = f"http://127.0.0.1:{port}"
    try:
        yield mock
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ Kubernetes (kmock)


class ApiServerEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock plus the bookkeeping a real API server does on writes (the same approach as
    tests/integration/operator): names from ``generateName`` (kopf's Events), a changing
    ``resourceVersion``, and ``generation`` bumped on spec changes."""

    _counter = itertools.count(2)

    async def _handle(self, request: Any) -> Any:
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            version = str(next(self._counter))
            if request.action == kmock.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{version}"
                meta.setdefault("uid", f"uid-{version}")
                meta.setdefault("generation", 1)
                meta.setdefault("creationTimestamp", "2026-01-01T12:00:00Z")
                meta["resourceVersion"] = version
            elif request.action == kmock.action.UPDATE and request.name is not None:
                meta["resourceVersion"] = version
                key = (request.resource, request.namespace, request.name)
                if "spec" in data and not request.subresource and key in self.objects:
                    current = self.objects[key]
                    if not current.deleted and current.get("spec") != _merged(
                        current.get("spec"), data["spec"]
                    ):
                        generation = int(current.get("metadata", {}).get("generation", 1))
                        meta["generation"] = generation + 1
        return await super()._handle(request)


def _merged(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386), to tell whether a patch changes the spec."""
    if not isinstance(patch, dict):
        return patch
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merged(out.get(key), value)
    return out


RESOURCES = {
    "mlkube.dev/v1alpha1/modelservices": kmock.ResourceInfo(
        kind="ModelService",
        namespaced=True,
        singular="modelservice",
        shortnames={"msvc"},
        categories={"mlkube"},
        subresources={"status", "scale"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
    ),
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "v1/services": kmock.ResourceInfo(
        kind="Service", namespaced=True, verbs={"get", "list", "create", "patch", "delete"}
    ),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget",
        namespaced=True,
        verbs={"get", "list", "create", "patch", "delete"},
    ),
    "autoscaling/v2/horizontalpodautoscalers": kmock.ResourceInfo(
        kind="HorizontalPodAutoscaler",
        namespaced=True,
        verbs={"get", "list", "create", "patch", "delete"},
    ),
    "gateway.networking.k8s.io/v1/httproutes": kmock.ResourceInfo(
        kind="HTTPRoute", namespaced=True, verbs={"get", "list", "create", "patch", "delete"}
    ),
    "v1/pods": kmock.ResourceInfo(kind="Pod", namespaced=True, verbs={"get", "list", "watch"}),
    # kopf waits for namespaces to be discoverable before it starts any watch.
    "v1/namespaces": kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"list", "watch"}
    ),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True, verbs={"create", "list"}),
}


async def eventually(
    probe: Callable[[], Awaitable[T | None]], limit: float = 15.0, what: str = ""
) -> T:
    """Poll until ``probe`` returns something truthy (reconciles are asynchronous)."""
    deadline = time.monotonic() + limit
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or probe}; last: {last!r}")


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Awaitable[Any]]:
    return eventually


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
    path = tmp_path / "kubeconfig"
    server = str(cluster.url).rstrip("/")
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


class FakeClock:
    """The operator's rollout clock; tests move it instead of waiting whole intervals."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progressive, "clock", fake)
    return fake


class RunningOperator:
    """The real operator (kopf, our handlers) in its own thread and event loop, as in
    production (kopf cancels every task of its loop on shutdown, the test's included);
    stop() and start() again to play an operator restart."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(
                run_operator(
                    OperatorContext(self.config),
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                    settings_hook=_fast_exit,
                )
            )
        except BaseException as exc:  # reported by stop()
            self.error = exc

    async def start(self) -> None:
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mlkube-operator", daemon=True)
        self.thread.start()
        assert await asyncio.to_thread(self.ready_flag.wait, 10), "operator did not start"

    async def stop(self) -> None:
        if self.thread is None:
            return
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 20)
        assert not self.thread.is_alive(), "operator did not stop within 20 s"
        self.thread = None
        assert self.error is None, f"operator failed: {self.error!r}"


def _fast_exit(settings: kopf.OperatorSettings) -> None:
    """Idle per-object workers exit after 5 s by default; tests stop the operator often."""
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 1.0


@pytest.fixture
async def operator(
    kubeconfig: Path, prometheus: MockPrometheus, clock: FakeClock
) -> AsyncIterator[RunningOperator]:
    """The operator ticking every 0.2s, asking the scripted Prometheus."""
    config = OperatorConfig(
        default_image="ghcr.io/mlkube/mlkube:test",
        reconcile_interval=0.2,
        prometheus_url=prometheus.url,
        health_host="127.0.0.1",
        health_port=free_port(),
        watch_server_timeout=30,
        watch_client_timeout=40.0,
    )
    running = RunningOperator(config)
    await running.start()
    yield running
    await running.stop()
