"""Fixtures for the rollout integration tests: a scripted Prometheus HTTP API on loopback.

The mock answers ``/api/v1/query`` the way Prometheus does (``{"status": "success",
"data": {"resultType": "vector", "result": [...]}}``, errors as ``{"status": "error"}``
with 400/422/503); each answer is chosen by the first registered substring the PromQL
contains, so a test states "the canary's p99 is 342ms" without caring about the query's
exact text.  Every query received is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web


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
