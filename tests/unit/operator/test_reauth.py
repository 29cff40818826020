"""The API client follows kopf's credentials and logs in again on 401.

A small real aiohttp server stands in for the API server: it accepts only the tokens in
``valid`` and answers anything else 401 with a Kubernetes Status, as kube-apiserver does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import kopf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mlkube.operator import kube
from mlkube.operator.app import OperatorContext
from mlkube.operator.config import OperatorConfig
from mlkube.operator.kube import ApiError, KubeAPI

PATH = "/api/v1/namespaces/ml/services/recs"


@dataclass
class FakeApiServer:
    valid: set[str] = field(default_factory=set)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, token
    delay: float = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append((request.method, request.path, token))
        if self.delay:
            await asyncio.sleep(self.delay)
        if token not in self.valid:
            status = {"kind": "Status", "status": "Failure", "reason": "Unauthorized"}
            return web.json_response({**status, "message": "Unauthorized", "code": 401}, status=401)
        if request.method == "PATCH":
            status = {"kind": "Status", "status": "Failure", "reason": "NotFound"}
            return web.json_response({**status, "message": "not found", "code": 404}, status=404)
        return web.json_response({"kind": "Service", "metadata": {"name": "recs"}, "token": token})

    def tokens(self) -> list[str]:
        return [token for _, _, token in self.seen]


async def start(fake: FakeApiServer) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApiServer, str]]:
    fake = FakeApiServer(valid={"new"})
    server = await start(fake)
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


class Credentials:
    """A credentials source whose re-login hands out the next token, counted."""

    def __init__(self, server: str, token: str, next_token: str, delay: float = 0.0) -> None:
        self.info = kopf.ConnectionInfo(server=server, token=token)
        self.next_token = next_token
        self.delay = delay
        self.logins = 0

    def current(self) -> kopf.ConnectionInfo:
        return self.info

    async def relogin(self) -> kopf.ConnectionInfo:
        self.logins += 1
        await asyncio.sleep(self.delay)
        self.info = kopf.ConnectionInfo(server=self.info.server, token=self.next_token)
        return self.info


async def test_a_401_logs_in_again_once_and_the_request_succeeds(
    fake: tuple[FakeApiServer, str],
) -> None:
    server, url = fake
    creds = Credentials(url, "old", "new")
    api = KubeAPI(creds.current, relogin=creds.relogin)
    try:
        assert (await api.get("Service", "ml", "recs") or {})["token"] == "new"
        assert (await api.get("Service", "ml", "recs") or {})["token"] == "new"
    finally:
        await api.close()
    assert creds.logins == 1
    assert server.tokens() == ["old", "new", "new"]


async def test_concurrent_401s_share_one_relogin(fake: tuple[FakeApiServer, str]) -> None:
    server, url = fake
    server.delay = 0.02
    creds = Credentials(url, "old", "new", delay=0.1)
    api = KubeAPI(creds.current, relogin=creds.relogin)
    try:
        results = await asyncio.gather(*(api.get("Service", "ml", "recs") for _ in range(10)))
    finally:
        await api.close()
    assert [(r or {})["token"] for r in results] == ["new"] * 10
    assert creds.logins == 1
    assert sorted(server.tokens()) == ["new"] * 10 + ["old"] * 10


async def test_a_persistent_401_raises_after_one_relogin(fake: tuple[FakeApiServer, str]) -> None:
    server, url = fake
    creds = Credentials(url, "old", "also-revoked")
    api = KubeAPI(creds.current, relogin=creds.relogin)
    try:
        with pytest.raises(ApiError) as caught:
            await api.get("Service", "ml", "recs")
    finally:
        await api.close()
    assert caught.value.status == 401
    assert caught.value.reason == "Unauthorized"
    assert creds.logins == 1
    assert server.tokens() == ["old", "also-revoked"]


async def test_a_relogin_with_unchanged_credentials_is_not_retried(
    fake: tuple[FakeApiServer, str],
) -> None:
    server, url = fake
    creds = Credentials(url, "old", "old")
    api = KubeAPI(creds.current, relogin=creds.relogin)
    try:
        with pytest.raises(ApiError) as caught:
            await api.get("Service", "ml", "recs")
    finally:
        await api.close()
    assert caught.value.status == 401
    assert creds.logins == 1
    assert server.tokens() == ["old"]


async def test_a_changed_connection_is_used_without_a_401(
    fake: tuple[FakeApiServer, str],
) -> None:
    """kopf's own re-login sets ctx.connection (our login handler): the next request
    carries it, and the HTTP session (same server, same TLS) is kept."""
    server, url = fake
    server.valid = {"first", "second"}
    ctx = OperatorContext(OperatorConfig(default_image="ghcr.io/mlkube/mlkube:test"))
    ctx.connection = kopf.ConnectionInfo(server=url, token="first")
    try:
        api = ctx.api
        assert (await api.get("Service", "ml", "recs") or {})["token"] == "first"
        session = await api.session()
        ctx.connection = kopf.ConnectionInfo(server=url, token="second")
        assert (await api.get("Service", "ml", "recs") or {})["token"] == "second"
        assert await api.session() is session
    finally:
        await ctx.close()
    assert server.tokens() == ["first", "second"]


async def test_a_changed_server_gets_a_new_session(fake: tuple[FakeApiServer, str]) -> None:
    first, url = fake
    other = FakeApiServer(valid={"new"})
    other_server = await start(other)
    ctx = OperatorContext(OperatorConfig(default_image="ghcr.io/mlkube/mlkube:test"))
    ctx.connection = kopf.ConnectionInfo(server=url, token="new")
    try:
        await ctx.api.get("Service", "ml", "recs")
        ctx.connection = kopf.ConnectionInfo(
            server=str(other_server.make_url("")).rstrip("/"), token="new"
        )
        await ctx.api.get("Service", "ml", "recs")
    finally:
        await ctx.close()
        await other_server.close()
    assert first.tokens() == ["new"]
    assert other.tokens() == ["new"]


def write_kubeconfig(path: Path, server: str, user: dict[str, str]) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )


async def test_the_operator_relogin_reads_a_rotated_token_file(
    fake: tuple[FakeApiServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path in the operator: the login handler's function reads the kubeconfig's
    tokenFile (relative to the kubeconfig); after the file is rotated, a 401 makes the
    client log in again and ctx.connection follows."""
    server, url = fake
    (tmp_path / "token").write_text("old\n")
    write_kubeconfig(tmp_path / "kubeconfig", url, {"tokenFile": "token", "token": "inline"})
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = kopf.OperatorSettings()
    ctx = OperatorContext(OperatorConfig(default_image="ghcr.io/mlkube/mlkube:test"))
    ctx.logged_in(kube.login(settings=settings), settings)
    assert ctx.connection is not None
    assert ctx.connection.token == "old"  # the file wins over the inline token

    (tmp_path / "token").write_text("new\n")
    try:
        assert (await ctx.api.get("Service", "ml", "recs") or {})["token"] == "new"
    finally:
        await ctx.close()
    assert ctx.connection.token == "new"
    assert server.tokens() == ["old", "new"]


def test_an_inline_token_without_a_token_file_is_kopfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_kubeconfig(tmp_path / "kubeconfig", "https://k8s:6443", {"token": "inline"})
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    info = kube.login(settings=kopf.OperatorSettings())
    assert info is not None
    assert info.token == "inline"
    assert info.server == "https://k8s:6443"


async def test_apply_of_a_missing_object_is_not_retried_as_a_create(
    fake: tuple[FakeApiServer, str],
) -> None:
    """A real API server creates on apply; a 404 is an error, never a reason to POST."""
    server, url = fake
    api = KubeAPI(kopf.ConnectionInfo(server=url, token="new"))
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "recs"}}
    try:
        with pytest.raises(ApiError) as caught:
            await api.apply({**service, "metadata": {"name": "recs", "namespace": "ml"}})
    finally:
        await api.close()
    assert caught.value.status == 404
    assert [(m, p) for m, p, _ in server.seen] == [("PATCH", PATH)]
