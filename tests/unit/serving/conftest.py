"""Fixtures for the serving unit tests: an in-process app behind aiohttp's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mlkube.serving.app import STATE, create_app
from mlkube.serving.config import ServeConfig, load_config
from mlkube.serving.context import RuntimeContext
from mlkube.serving.metrics import Metrics
from mlkube.serving.store import FeatureStore

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def make_config(
    native_path: bool = True, revision: str = "", **sections: dict[str, Any]
) -> ServeConfig:
    data: dict[str, Any] = {"bandit": {"seed": 7, "native_path": native_path}}
    if revision:
        data["revision"] = revision
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return load_config(data, {})


async def wait_ready(client: TestClient[Any, Any]) -> None:
    import asyncio

    for _ in range(200):
        resp = await client.get("/v2/health/ready")
        if resp.status == 200:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("server never became ready")


@pytest.fixture(autouse=True)
def pinned_ticket_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tickets dated by one fixed second per test: tests compare the answers of apps made
    moments apart (C path vs Python path), which must not differ by a second boundary."""
    import time

    from mlkube.serving import attribution

    now = time.time()
    monkeypatch.setattr(attribution, "clock", lambda: now)


@pytest.fixture(params=[True, False], ids=["native-path", "python-path"])
def native_path(request: pytest.FixtureRequest) -> bool:
    """Every app test runs twice: plain requests through the C request path, then with it
    off (everything through the Python decoder). The answers must not differ."""
    value: bool = request.param
    return value


@pytest.fixture
def config(native_path: bool) -> Callable[..., ServeConfig]:
    """``config(server={...}, bandit={...})``: a validated config with test defaults."""

    def build(**sections: dict[str, Any]) -> ServeConfig:
        return make_config(native_path, **sections)

    return build


@pytest.fixture
async def make_client(native_path: bool) -> AsyncIterator[ClientFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def factory(
        config: ServeConfig | None = None,
        store: FeatureStore | None = None,
        ready: bool = True,
    ) -> TestClient[Any, Any]:
        cfg = config or make_config(native_path)
        metrics = Metrics(cfg.model.name, cfg.model.version, cfg.revision)
        app = create_app(cfg, RuntimeContext(metrics=metrics, store=store))
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        if ready:
            await wait_ready(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient[Any, Any]:
    return await make_client()


@pytest.fixture
def state_of() -> Callable[[TestClient[Any, Any]], Any]:
    return lambda client: client.server.app[STATE]
