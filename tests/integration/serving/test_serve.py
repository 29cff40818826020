"""The real `mlkube serve` (master + workers) against a real redis-server.

* Redis killed under load: predictions keep coming from the last snapshot, marked degraded;
  feedback answers 503 + Retry-After; when Redis is back everything recovers by itself and no
  acknowledged feedback is lost.
* SIGTERM under load: readiness false at once, every accepted request is answered.
* Feedback counts are exact with concurrent writers and retried idempotent requests.
* /metrics sums over worker processes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
import pytest

from mlkube.serving.metrics import FLUSH_INTERVAL
from tests.integration.serving.conftest import children, wait_replaced

pytestmark = pytest.mark.slow

FEEDBACK = "/v1/models/bandit:feedback"
PREDICT = "/v1/models/bandit:predict"


def redis_env(redis_server: Any, **extra: str) -> dict[str, str]:
    return {
        "MLKUBE_FEATURE_STORE": "redis",
        "MLKUBE_REDIS_URL": redis_server.url,
        "MLKUBE_REFRESH_INTERVAL": "0.1",
        "MLKUBE_MAX_STALENESS": "0.5",
        # generous: the test machine is shared and may starve Redis of CPU for a while
        "MLKUBE_REDIS_TIMEOUT": "3",
        **extra,
    }


def stored(redis_server: Any, item: str, segment: str = "default") -> tuple[float, float]:
    r = redis_server.client()
    s = r.hget(f"mlkube:bandit:seg:{segment}:s", item)
    f = r.hget(f"mlkube:bandit:seg:{segment}:f", item)
    return float(s or 0), float(f or 0)


async def test_exact_counts_through_http_with_retries(redis_server: Any, serve: Any) -> None:
    server = serve("--workers", "2", env=redis_env(redis_server))
    acks = 0
    async with aiohttp.ClientSession(
        server.base, connector=aiohttp.TCPConnector(limit=32, force_close=True)
    ) as session:

        async def send(n: int) -> None:
            nonlocal acks
            body = orjson.dumps(
                {"feedback": [{"item": "a", "reward": 1}, {"item": "b", "reward": 0.5}]}
            )
            # the original and two retries (one concurrent, one after) of the same request
            headers = {"Idempotency-Key": f"client-7-{n}"}
            replies = await asyncio.gather(
                session.post(FEEDBACK, data=body, headers=headers),
                session.post(FEEDBACK, data=body, headers=headers),
            )
            late = await session.post(FEEDBACK, data=body, headers=headers)
            results = [await r.json() for r in [*replies, late]]
            assert all(r.status == 200 for r in [*replies, late])
            assert sorted(r["duplicate"] for r in results) == [False, True, True]
            acks += 1

        await asyncio.gather(*(send(n) for n in range(150)))
    assert acks == 150
    assert stored(redis_server, "a") == (150.0, 0.0)
    assert stored(redis_server, "b") == (75.0, 75.0)


async def test_redis_outage_degrades_then_recovers(durable_redis_server: Any, serve: Any) -> None:
    redis_server = durable_redis_server
    # A kill is seen at once (connection refused); the long timeout only keeps a slow fsync
    # on a busy disk from being mistaken for an outage.
    env = redis_env(redis_server, MLKUBE_GRACE_SECONDS="5", MLKUBE_REDIS_TIMEOUT="10")
    server = serve("--workers", "2", env=env)
    items = [f"item-{i}" for i in range(100)]
    stats: Counter[str] = Counter()
    acked = 0
    stop = asyncio.Event()

    async with aiohttp.ClientSession(server.base) as session:
        fb = orjson.dumps({"feedback": [{"item": "item-1", "reward": 1}]})
        for _ in range(20):
            assert (await session.post(FEEDBACK, data=fb)).status == 200
            acked += 1

        async def predict_load() -> None:
            body = orjson.dumps({"instances": items})
            while not stop.is_set():
                async with session.post(PREDICT, data=body) as resp:
                    await resp.read()
                    degraded = "Mlkube-Degraded" in resp.headers
                    stats[f"{resp.status}{'-degraded' if degraded else ''}"] += 1

        load = [asyncio.create_task(predict_load()) for _ in range(4)]
        await asyncio.sleep(0.5)
        redis_server.kill()
        # Feedback is refused with 503 + Retry-After, never acknowledged.
        for _ in range(100):
            async with session.post(FEEDBACK, data=fb) as resp:
                if resp.status == 503:
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert (await resp.json())["error"].startswith("feature store:")
                    break
                assert resp.status == 200
                acked += 1
            await asyncio.sleep(0.02)
        else:
            pytest.fail("feedback never answered 503 while Redis was down")
        # Predictions go on, degraded, from the last snapshot.
        deadline = time.monotonic() + 5
        while stats["200-degraded"] < 20 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert stats["200-degraded"] >= 20
        metrics = (await (await session.get("/metrics")).read()).decode()
        assert 'mlkube_circuit_state{model="bandit",revision=""} 1.0' in metrics
        assert "mlkube_degraded_responses_total" in metrics
        assert "mlkube_feature_store_errors_total" in metrics
        # Readiness stays true: the pod can still serve predictions.
        assert (await session.get("/v2/health/ready")).status == 200

        redis_server.start()  # same port, same AOF
        deadline = time.monotonic() + 10
        recovered = False
        while time.monotonic() < deadline:
            async with session.post(FEEDBACK, data=fb) as resp:
                if resp.status == 200:
                    acked += 1
                    recovered = True
                    break
            await asyncio.sleep(0.1)
        assert recovered, "feedback did not recover after Redis came back"
        # Every worker closes its circuit by itself (after circuit_reset_timeout at most).
        closed = 'mlkube_circuit_state{model="bandit",revision=""} 0.0'
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            metrics = (await (await session.get("/metrics")).read()).decode()
            if closed in metrics:
                break
            await asyncio.sleep(0.1)
        assert closed in metrics
        await asyncio.sleep(0.3)  # a refresh interval or two: every snapshot is fresh again
        stop.set()
        await asyncio.gather(*load)
        body = orjson.dumps({"instances": items})
        for _ in range(20):  # fresh connections, so both workers answer some
            async with aiohttp.ClientSession(server.base) as fresh:
                resp = await fresh.post(PREDICT, data=body)
                assert resp.status == 200
                assert "Mlkube-Degraded" not in resp.headers

    assert set(stats) <= {"200", "200-degraded"}, stats  # no 5xx for predictions, ever
    assert stored(redis_server, "item-1") == (float(acked), 0.0)  # nothing acknowledged lost


async def test_sigterm_under_load_drops_no_accepted_request(redis_server: Any, serve: Any) -> None:
    server = serve(
        "--workers",
        "2",
        env=redis_env(redis_server, MLKUBE_DRAIN_SECONDS="1.0", MLKUBE_GRACE_SECONDS="10"),
    )
    acked = 0
    statuses: Counter[int] = Counter()
    connection_errors = 0
    stop = asyncio.Event()
    sent_after_term = 0
    term_at: float | None = None

    async with aiohttp.ClientSession(server.base) as session:

        async def client(c: int) -> None:
            nonlocal acked, connection_errors, sent_after_term
            n = 0
            while not stop.is_set():
                n += 1
                body = orjson.dumps(
                    {"feedback": [{"item": "x", "reward": 1}], "idempotency_key": f"{c}-{n}"}
                )
                try:
                    async with session.post(FEEDBACK, data=body) as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                        if resp.status == 200:
                            acked += 1
                            if term_at is not None:
                                sent_after_term += 1
                except aiohttp.ClientError:
                    connection_errors += 1
                    await asyncio.sleep(0.01)

        clients = [asyncio.create_task(client(c)) for c in range(16)]
        await asyncio.sleep(1.0)
        server.terminate()
        term_at = time.monotonic()
        await asyncio.sleep(0.2)
        assert server.get("/v2/health/ready")[0] == 503  # readiness false while draining
        rc = await asyncio.to_thread(server.wait, 30)
        stop.set()
        await asyncio.gather(*clients)

    assert rc == 0, server.log()
    assert set(statuses) == {200}, (statuses, server.log()[-4000:])  # no 5xx, no error answer
    assert sent_after_term > 0  # requests kept being served during the drain period
    # Every request the server applied was answered: Redis holds exactly the acknowledged ones.
    assert stored(redis_server, "x") == (float(acked), 0.0)


async def test_metrics_sum_over_workers(serve: Any) -> None:
    server = serve("--workers", "2", env={"MLKUBE_REVISION": "rev1"})
    body = orjson.dumps({"instances": ["a", "b", "c"]})
    async with aiohttp.ClientSession(
        server.base, connector=aiohttp.TCPConnector(force_close=True)
    ) as session:
        for _ in range(60):  # new connection each: SO_REUSEPORT spreads them over workers
            assert (await session.post(PREDICT, data=body)).status == 200

        # Each worker writes its tallies every FLUSH_INTERVAL: the other worker's show up
        # within that, never more than were answered. A scrape is not atomic across series
        # (it may read a worker's files while that worker is between writing its requests
        # and its items), so the test waits for both totals.
        def value(text: str, prefix: str) -> float:
            line = next(line for line in text.splitlines() if line.startswith(prefix))
            assert 'revision="rev1"' in line, line
            return float(line.split()[-1])

        deadline = time.monotonic() + 40 * FLUSH_INTERVAL
        while True:
            text = (await (await session.get("/metrics")).read()).decode()
            requests = value(text, 'mlkube_requests_total{code="200",endpoint="predict"')
            items = value(text, "mlkube_items_scored_total")
            assert requests <= 60.0, requests
            assert items <= 180.0, items
            if (requests, items) == (60.0, 180.0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(FLUSH_INTERVAL / 2)
    assert (requests, items) == (60.0, 180.0)
    assert "mlkube_inflight_requests" in text


async def test_master_restarts_a_worker_that_died(serve: Any) -> None:
    import os
    import signal

    server = serve("--workers", "2")
    workers = children(server.proc.pid)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)  # a worker we started, by PID
    now = await asyncio.to_thread(wait_replaced, server.proc.pid, workers[0], 2)
    assert len(now) == 2
    assert workers[0] not in now
    assert workers[1] in now
    server.wait_ready()
    assert "restarting" in server.log()


def test_port_in_use_fails_at_start_naming_the_field(serve: Any) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = serve("--host", "127.0.0.1", "--port", str(port), ready=False)
        assert server.wait(30) == 2
        assert "server.port: cannot listen on 127.0.0.1:" in server.log()


def test_model_that_fails_to_load_stops_the_server(serve: Any, tmp_path: Any) -> None:
    """A custom model whose load() raises: workers exit, the master exits non-zero."""
    from pathlib import Path

    (tmp_path / "broken_model_for_test.py").write_text(
        "from mlkube.serving import SimpleModel\n"
        "class Broken(SimpleModel):\n"
        "    async def load(self):\n"
        "        raise RuntimeError('weights not found at s3://nowhere')\n"
        "    @property\n"
        "    def ready(self):\n"
        "        return False\n"
        "    async def predict(self, batch):\n"
        "        return []\n"
    )
    repo = Path(__file__).resolve().parents[3]
    server = serve(
        "--workers", "2", "--model-format", "custom",
        "--model-class", "broken_model_for_test:Broken", "--model-name", "broken",
        env={"PYTHONPATH": f"{repo}:{tmp_path}"},
        ready=False,
    )  # fmt: skip
    assert server.wait(30) == 1
    log = server.log()
    assert "weights not found at s3://nowhere" in log
    assert "could not start" in log


def test_a_model_module_that_raises_at_import_is_one_clear_line(serve: Any, tmp_path: Any) -> None:
    """`mlkube serve` with a custom module that raises while imported: exit 2 and one
    line naming the field, the module, the error and where it was raised; no traceback."""
    from pathlib import Path

    (tmp_path / "raising_model_for_test.py").write_text(
        "import os\nLIMIT = int(os.environ.get('NOT_SET_ANYWHERE', 'ten'))\n"
    )
    repo = Path(__file__).resolve().parents[3]
    server = serve(
        "--model-format", "custom", "--model-class", "raising_model_for_test:Model",
        env={"PYTHONPATH": f"{repo}:{tmp_path}"},
        ready=False,
    )  # fmt: skip
    assert server.wait(30) == 2
    log = server.log().strip()
    assert "Traceback" not in log
    assert log.splitlines() == [
        "mlkube serve: model.class: importing 'raising_model_for_test' raised ValueError: "
        "invalid literal for int() with base 10: 'ten' "
        f"(at {tmp_path}/raising_model_for_test.py:2)"
    ]


async def test_a_client_that_leaves_mid_body_is_not_a_server_error(serve: Any) -> None:
    """A client that closes its connection before sending the whole body: counted under
    499 (client closed request), not as a 500, and no ERROR in the log."""
    server = serve("--workers", "1")
    port = int(server.base.rsplit(":", 1)[1])
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.close()
    async with aiohttp.ClientSession(server.base) as session:
        deadline = time.monotonic() + 10 * FLUSH_INTERVAL
        while True:
            text = (await (await session.get("/metrics")).read()).decode()
            if 'code="499",endpoint="predict"' in text or time.monotonic() > deadline:
                break
            await asyncio.sleep(FLUSH_INTERVAL / 2)
    assert 'code="499",endpoint="predict"' in text
    assert 'code="500"' not in text
    assert '"level":"error"' not in server.log()
