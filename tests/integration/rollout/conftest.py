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
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
from aiohttp import web

from mlkube.operator import clock as operator_clock
from mlkube.operator.config import OperatorConfig
from mlkube.operator.kube import KubeAPI
from tests.support import kube
from tests.support.kube import RunningOperator, eventually, free_port, write_kubeconfig


@dataclass
class Error:
    status: int
    message: str = "bad_data: parse error"


@dataclass
class MockPrometheus:
    url: str = ""
    answers: list[tuple[str, float | str | Error | None]] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    times: list[str | None] = field(default_factory=list)  # each query's evaluation time
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
        at = form.get("time")
    else:
        query = request.query.get("query", "")
        at = request.query.get("time")
    mock.queries.append(query)
    mock.times.append(None if at is None else str(at))
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


class ApiServerEmulator(kube.ApiServerEmulator):
    """The shared emulator (tests/support/kube.py), creating objects at the fake clock's
    start so that their ages agree with the rollout clock."""

    creation_timestamp = "2026-01-01T12:00:00Z"


RESOURCES = {
    **kube.OPERATOR_RESOURCES,
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "v1/services": kmock.ResourceInfo(
        kind="Service",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
    ),
    "autoscaling/v2/horizontalpodautoscalers": kmock.ResourceInfo(
        kind="HorizontalPodAutoscaler",
        namespaced=True,
        verbs={"get", "list", "create", "patch", "delete"},
    ),
    "gateway.networking.k8s.io/v1/httproutes": kmock.ResourceInfo(
        kind="HTTPRoute", namespaced=True, verbs={"get", "list", "create", "patch", "delete"}
    ),
}


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Awaitable[Any]]:
    return functools.partial(eventually, within=15.0)


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
    return write_kubeconfig(str(cluster.url).rstrip("/"), tmp_path / "kubeconfig", monkeypatch)


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
    monkeypatch.setattr(operator_clock, "now", fake)
    return fake


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
    running = RunningOperator(config, stop_within=20.0)
    await running.start()
    yield running
    await running.stop()
