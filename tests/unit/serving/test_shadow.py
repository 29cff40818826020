"""Shadow traffic: copies to the canary after answering, compared, dropped under pressure."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mlkube.serving.config import ConfigError, load_config
from mlkube.serving.shadow import Comparison, compare, ranking_overlap, score_drift

INFER = "/v2/models/bandit/infer"


def v2(items: list[str]) -> bytes:
    tensor = {"name": "items", "datatype": "BYTES", "shape": [len(items)], "data": items}
    return orjson.dumps({"inputs": [tensor]})


def answer(ranking: list[str], scores: list[float]) -> bytes:
    return orjson.dumps(
        {
            "model_name": "m",
            "outputs": [
                {"name": "scores", "datatype": "FP64", "shape": [len(scores)], "data": scores},
                {"name": "ranking", "datatype": "BYTES", "shape": [len(ranking)], "data": ranking},
            ],
        }
    )


def series(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# ------------------------------------------------------------------------------- pure


def test_ranking_overlap_at_k_and_score_drift() -> None:
    assert ranking_overlap(["a", "b", "c", "d"], ["b", "a", "d", "c"], 2) == 1.0
    assert ranking_overlap(["a", "b", "c", "d"], ["c", "d", "a", "b"], 2) == 0.0
    assert ranking_overlap(["a", "b", "c"], ["a", "x", "y"], 10) == pytest.approx(1 / 3)
    assert ranking_overlap([], ["a"], 3) is None
    assert score_drift([0.5, 0.25], [0.25, 0.5]) == 0.25
    assert score_drift([0.5], [0.5, 0.1]) is None
    assert compare(answer(["a", "b"], [0.9, 0.1]), answer(["b", "a"], [0.2, 0.8]), 1) == (
        Comparison(0.0, 0.7)
    )
    assert compare(b"{}", b"not json", 3) == Comparison(None, None)


# ---------------------------------------------------------------------------- the app


def _config(native_path: bool, revision: str, **shadow: Any) -> Any:
    data: dict[str, Any] = {
        "bandit": {"seed": 7, "native_path": native_path},
        "revision": revision,
    }
    if shadow:
        data["shadow"] = shadow
    return load_config(data, {})


async def _metrics(client: Any) -> str:
    text: str = await (await client.get("/metrics")).text()
    return text


async def _eventually(check: Any, within: float = 5.0) -> None:
    end = time.monotonic() + within
    while not await check():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_stable_pods_copy_requests_to_the_canary_and_compare_the_answers(
    make_client: Any, native_path: bool
) -> None:
    canary = await make_client(_config(native_path, "canary-rev"))
    url = str(canary.make_url("")).rstrip("/")
    stable = await make_client(_config(native_path, "stable-rev", url=url, fraction=1.0))
    # Binary tensor requests are not copied (only OIP v2 JSON is): sent first, so that a
    # copy of it would be among the answers counted below.
    raw = b"".join(len(i).to_bytes(4, "little") + i for i in (b"a", b"b"))
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "items",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    resp = await stable.post(
        INFER, data=head + raw, headers={"Inference-Header-Content-Length": str(len(head))}
    )
    assert resp.status == 200
    for i in range(20):
        resp = await stable.post(INFER, data=v2([f"item-{i}", "a", "b", "c"]))
        assert resp.status == 200
        assert resp.headers["Mlkube-Revision"] == "stable-rev"  # the user's answer: stable's

    async def compared() -> bool:
        text = await _metrics(stable)
        return series(text, "mlkube_shadow_ranking_overlap_count", target="canary-rev") == 20

    await _eventually(compared)
    text = await _metrics(stable)
    labels = {"revision": "stable-rev", "target": "canary-rev"}
    assert series(text, "mlkube_shadow_requests_total", outcome="ok", **labels) == 20
    assert series(text, "mlkube_shadow_requests_total", outcome="error") == 0  # any target
    assert series(text, "mlkube_shadow_duration_seconds_count", **labels) == 20
    assert series(text, "mlkube_shadow_score_drift_count", **labels) == 20
    overlap_sum = series(text, "mlkube_shadow_ranking_overlap_sum", **labels)
    assert 0 < overlap_sum <= 20  # 4 items, k=10: the same items, so the overlap is 1
    assert overlap_sum == 20
    assert series(text, "mlkube_shadow_dropped_total") == 0
    # The canary answered the copies (its own metrics count them as inference requests).
    canary_text = await _metrics(canary)
    assert (
        series(
            canary_text,
            "mlkube_requests_total",
            endpoint="infer",
            code="200",
            revision="canary-rev",
        )
        == 20
    )


async def test_a_slow_canary_drops_copies_and_never_delays_the_answer(
    make_client: Any, native_path: bool
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await release.wait()
        return web.json_response({"outputs": []}, headers={"Mlkube-Revision": "slow-rev"})

    app = web.Application()
    app.router.add_post(INFER, slow)
    server = TestServer(app)
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        stable = await make_client(
            _config(native_path, "stable-rev", url=url, fraction=1.0, queue_size=2, concurrency=1)
        )
        started = time.perf_counter()
        for _ in range(30):
            assert (await stable.post(INFER, data=v2(["a", "b"]))).status == 200
        assert time.perf_counter() - started < 5  # the canary has not answered any copy yet
        text = await _metrics(stable)
        # one copy in flight, two queued, the rest dropped
        assert series(text, "mlkube_shadow_dropped_total", revision="stable-rev") == 27
        release.set()

        async def answered() -> bool:
            text = await _metrics(stable)
            return series(text, "mlkube_shadow_requests_total", target="slow-rev") == 3

        await _eventually(answered)
    finally:
        release.set()
        await server.close()


async def test_an_unreachable_canary_counts_errors(make_client: Any, native_path: bool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    stable = await make_client(
        _config(native_path, "stable-rev", url=f"http://127.0.0.1:{port}", fraction=1.0)
    )
    for _ in range(5):
        assert (await stable.post(INFER, data=v2(["a"]))).status == 200

    async def failed() -> bool:
        text = await _metrics(stable)
        return series(text, "mlkube_shadow_requests_total", outcome="error", target="unknown") == 5

    await _eventually(failed)


def test_a_shadow_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match=r"shadow\.url .*must start with http://"):
        _config(True, "r", url="canary:8080", fraction=0.1)


async def test_a_canary_that_does_not_answer_in_time_counts_errors_and_the_next_copies_go(
    make_client: Any, native_path: bool
) -> None:
    calls = 0
    release = asyncio.Event()

    async def first_hangs(request: web.Request) -> web.Response:
        nonlocal calls
        await request.read()
        calls += 1
        if calls == 1:
            await release.wait()  # past the copy's timeout: the stable gives up on it
        return web.json_response({"outputs": []}, headers={"Mlkube-Revision": "canary-rev"})

    app = web.Application()
    app.router.add_post(INFER, first_hangs)
    server = TestServer(app)
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        stable = await make_client(
            _config(native_path, "stable-rev", url=url, fraction=1.0, concurrency=1, timeout=0.2)
        )
        for _ in range(3):
            assert (await stable.post(INFER, data=v2(["a", "b"]))).status == 200

        async def settled() -> bool:
            text = await _metrics(stable)
            errors = series(text, "mlkube_shadow_requests_total", outcome="error", target="unknown")
            ok = series(text, "mlkube_shadow_requests_total", outcome="ok", target="canary-rev")
            return errors == 1 and ok == 2

        await _eventually(settled)
        text = await _metrics(stable)
        timed_out = series(text, "mlkube_shadow_duration_seconds_sum", target="unknown")
        assert 0.2 <= timed_out < 1.0  # failed at its timeout (the check runs every 0.05 s)
    finally:
        release.set()
        await server.close()


async def test_answers_that_arrive_in_pieces_are_put_together(
    make_client: Any, native_path: bool
) -> None:
    """A canary whose answers come in several TCP segments, over one kept-alive connection."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            body = b'{"outputs":[{"name":"ranking","datatype":"BYTES","shape":[1],"data":["a"]}]}'
            answer = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Mlkube-Revision: piece-rev\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            for start in range(0, len(answer), 40):
                writer.write(answer[start : start + 40])
                await writer.drain()
                await asyncio.sleep(0.005)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        stable = await make_client(
            _config(
                native_path, "stable-rev", url=f"http://127.0.0.1:{port}", fraction=1.0,
                concurrency=1,
            )
        )  # fmt: skip
        for _ in range(3):
            assert (await stable.post(INFER, data=v2(["a", "b"]))).status == 200

        async def answered() -> bool:
            text = await _metrics(stable)
            return series(text, "mlkube_shadow_requests_total", target="piece-rev") == 3

        await _eventually(answered)
        text = await _metrics(stable)
        assert series(text, "mlkube_shadow_requests_total", outcome="error") == 0
        assert series(text, "mlkube_shadow_ranking_overlap_count", target="piece-rev") == 3
        assert connections == 1
    finally:
        server.close()
        await server.wait_closed()
