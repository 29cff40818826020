"""The HTTP edge of the real `mlkube serve`: slow clients, connection limits, drain, restarts.

The clients here speak HTTP/1.1 over raw sockets, so that every byte and every close is the
test's own doing and can be observed: which answer said ``Connection: close``, whether a
request that was written got an answer, when the server closed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.serving.conftest import children, wait_replaced

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]

PREDICT = "/v1/models/bandit:predict"
BODY = orjson.dumps({"instances": ["a", "b", "c"]})
REQUEST = (
    f"POST {PREDICT} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(BODY)}\r\n\r\n"
).encode() + BODY


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One HTTP/1.1 answer with a Content-Length body; IncompleteReadError on EOF."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server closes (a reset counts: closing with unread input sends one)."""
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_headers_that_never_finish_get_408_and_a_close(serve: Any) -> None:
    server = serve("--workers", "1", "--header-timeout", "0.5")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    writer.write(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\n")  # and no more
    answer = await asyncio.wait_for(read_answer(reader), 5)
    waited = time.monotonic() - started
    assert answer.status == 408
    assert answer.closes
    assert orjson.loads(answer.body) == {
        "error": "request: headers not complete within 0.5 s; closing"
    }
    assert 0.4 < waited < 3.0
    assert await closed_by_server(reader, 2)
    # A connection that sent nothing is idle keep-alive, not a slow request: still open,
    # and it serves a request afterwards.
    idle_writer.write(REQUEST)
    assert (await asyncio.wait_for(read_answer(idle_reader), 5)).status == 200
    for w in (writer, idle_writer):
        w.close()


async def test_idle_keep_alive_connections_close_after_the_keepalive_timeout(serve: Any) -> None:
    server = serve("--workers", "1", env={"MLKUBE_KEEPALIVE_TIMEOUT": "1"})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(REQUEST)
    assert (await asyncio.wait_for(read_answer(reader), 5)).status == 200
    started = time.monotonic()
    assert await closed_by_server(reader, 5)
    assert 0.8 < time.monotonic() - started < 3.0
    writer.close()


async def test_a_body_shorter_than_its_length_gets_408(serve: Any) -> None:
    server = serve("--workers", "1", "--body-timeout", "0.5")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"POST {PREDICT} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"instances": ['
    )
    answer = await asyncio.wait_for(read_answer(reader), 5)
    assert answer.status == 408
    assert answer.closes
    assert orjson.loads(answer.body)["error"] == "body: not received within 0.5 s; closing"
    assert await closed_by_server(reader, 2)
    writer.close()
    _status, metrics = server.get("/metrics")
    deadline = time.monotonic() + 5
    while b'code="408",endpoint="predict"' not in metrics and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        _status, metrics = server.get("/metrics")
    assert b'code="408",endpoint="predict"' in metrics


async def test_connections_beyond_the_cap_get_503_until_one_closes(serve: Any) -> None:
    server = serve("--workers", "1", "--max-connections", "2")
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
    for reader, writer in held:  # both really open and served
        writer.write(REQUEST)
        assert (await asyncio.wait_for(read_answer(reader), 5)).status == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    answer = await asyncio.wait_for(read_answer(reader), 5)
    assert answer.status == 503
    assert answer.headers["retry-after"] == "1"
    assert "limit of 2 connections" in orjson.loads(answer.body)["error"]
    assert await closed_by_server(reader, 2)
    writer.close()
    held[0][1].close()
    await held[0][1].wait_closed()
    for _ in range(50):  # the worker notices the close on its next loop turn
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(REQUEST)
        answer = await asyncio.wait_for(read_answer(reader), 5)
        writer.close()
        if answer.status == 200:
            break
        await asyncio.sleep(0.05)
    assert answer.status == 200


async def test_a_keep_alive_connection_ends_after_its_share_of_requests(serve: Any) -> None:
    server = serve("--workers", "1", "--max-requests-per-connection", "3")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    closes = []
    for _ in range(3):
        writer.write(REQUEST)
        answer = await asyncio.wait_for(read_answer(reader), 5)
        assert answer.status == 200
        closes.append(answer.closes)
    assert closes == [False, False, True]
    assert await closed_by_server(reader, 2)
    writer.close()


@dataclass
class Tally:
    answered: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # written, then no complete answer
    refused: int = 0  # could not connect: nothing was sent
    closes_from_draining: int = 0


async def _keep_alive_client(
    ports: dict[str, int], target: list[str], tally: Tally, stop: asyncio.Event
) -> None:
    """Requests over one keep-alive connection at a time; a new connection goes to
    ``target[0]`` (what a Service routes to), an open one stays where it is until closed."""
    while not stop.is_set():
        where = target[0]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[where])
        except OSError:
            tally.refused += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while not stop.is_set():
                writer.write(REQUEST)
                try:
                    answer = await asyncio.wait_for(read_answer(reader), 10)
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
                    tally.lost.append(f"{where}: {type(exc).__name__}")
                    break
                tally.answered[f"{where}-{answer.status}"] += 1
                if answer.closes:
                    if where == "old" and target[0] == "new":
                        tally.closes_from_draining += 1
                    break
        finally:
            writer.close()


async def test_a_drained_server_drops_nothing_across_sigterm(serve: Any) -> None:
    """32 keep-alive connections on a server that gets SIGTERM: during the drain every
    answer says `Connection: close`, so each connection moves (here to a second server, as a
    Service would route it once the endpoint is gone) and no written request goes unanswered."""
    old = serve("--workers", "2", "--drain-seconds", "2", "--grace-seconds", "5")
    new = serve("--workers", "1")
    ports = {"old": old.port, "new": new.port}
    target = ["old"]
    tally = Tally()
    stop = asyncio.Event()
    clients = [
        asyncio.create_task(_keep_alive_client(ports, target, tally, stop)) for _ in range(32)
    ]
    await asyncio.sleep(1.0)
    before = tally.answered["old-200"]
    assert before > 100, tally
    old.terminate()
    target[0] = "new"  # the endpoint is gone: new connections go elsewhere
    rc = await asyncio.to_thread(old.wait, 30)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*clients)
    assert rc == 0, old.log()[-3000:]
    assert tally.lost == [], tally
    assert tally.refused == 0, tally
    assert set(tally.answered) == {"old-200", "new-200"}, tally
    assert tally.closes_from_draining == 32, tally  # every connection was told to move
    assert tally.answered["new-200"] > 0


async def test_grace_seconds_bounds_the_shutdown(serve: Any, tmp_path: Path) -> None:
    """A request that would take 30 s: after SIGTERM the worker waits --grace-seconds for
    it, not twice that, then stops."""
    (tmp_path / "slow_model_for_test.py").write_text(
        "import asyncio\n"
        "from mlkube.serving import SimpleModel, InferenceResponse\n"
        "class Slow(SimpleModel):\n"
        "    async def load(self):\n"
        "        pass\n"
        "    @property\n"
        "    def ready(self):\n"
        "        return True\n"
        "    async def predict(self, batch):\n"
        "        await asyncio.sleep(30)\n"
        "        return [InferenceResponse([]) for _ in batch]\n"
    )
    server = serve(
        "--workers", "1", "--grace-seconds", "1.5", "--model-format", "custom",
        "--model-class", "slow_model_for_test:Slow", "--model-name", "slow",
        env={"PYTHONPATH": f"{REPO}:{tmp_path}"},
    )  # fmt: skip
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(REQUEST.replace(b"/bandit:", b"/slow:"))
    await asyncio.sleep(0.3)  # the request is in the model
    started = time.monotonic()
    server.terminate()
    rc = await asyncio.to_thread(server.wait, 30)
    took = time.monotonic() - started
    writer.close()
    assert rc == 0
    assert 1.4 < took < 2.6, took  # grace 1.5 s (+ process exit), not 2 x 1.5 s
    assert "grace period over; cancelling requests still in flight" in server.log()


class AccessLog:
    """The workers' access-log lines in a `Serve` log, read on from where the last read
    stopped; only complete lines (the workers are writing while the test reads)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0

    def pids(self) -> list[int]:
        """The worker PID of each request logged since the last call."""
        with self._path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        return [
            orjson.loads(line)["pid"]
            for line in data[:end].splitlines()
            if line.startswith(b"{") and b'"msg":"access"' in line
        ]


# A stretch of the access log the respawned worker's share is judged on: with 16 clients and
# 50 requests per connection, about one reconnection per client.
SPREAD_WINDOW = 800
SPREAD_WINDOWS = 8
SPREAD_SHARE = 0.25


async def test_connections_spread_again_after_a_worker_restarts(serve: Any) -> None:
    """16 keep-alive clients on 2 workers; one worker is killed and restarted. With a bounded
    number of requests per connection the clients reconnect and the new worker gets its
    share without any client doing anything special.

    Two things here are not the test's to decide, so it waits for them instead of guessing:

    - when the new worker serves: it imports and loads its model after the fork, about a
      second on an idle 2-core machine and several seconds on a busy one; the stretch that is
      judged starts at its first answer, not after a fixed sleep;
    - where a reconnection lands: the kernel's SO_REUSEPORT hash of the client's port, a coin
      toss per connection, so the share over any stretch is random. The share is judged over
      successive windows of SPREAD_WINDOW requests and passes at the first above
      SPREAD_SHARE (a fair spread gives 50 %). The first window is a ramp (every client
      starts on the old worker) and fails about half the time; later ones fail with
      p = 0.0066, or 0.035 after a failed one (the windows share placements). All
      SPREAD_WINDOWS failing: about 5.4e-3 * 0.035**6 = 1e-11 (Monte Carlo, taking every
      connection to be equally fast; in fact a worker with fewer connections answers each
      faster, which pulls the share towards 50 %). A worker that gets no or few
      connections fails every window.
    """
    server = serve(
        "--workers", "2", "--max-requests-per-connection", "50",
        "--access-log-sample-rate", "1", "--log-level", "INFO",
    )  # fmt: skip
    workers = children(server.proc.pid)
    assert len(workers) == 2
    tally = Tally()
    stop = asyncio.Event()
    ports = {"old": server.port}
    clients = [
        asyncio.create_task(_keep_alive_client(ports, ["old"], tally, stop)) for _ in range(16)
    ]
    try:
        await asyncio.sleep(0.5)
        access = AccessLog(server.log_path)
        os.kill(workers[0], signal.SIGKILL)  # a worker we started, by PID
        now = await asyncio.to_thread(wait_replaced, server.proc.pid, workers[0], 2)
        assert workers[0] not in now, ("not restarted", workers, now)
        assert len(now) == 2, ("not restarted", workers, now)
        respawned = next(p for p in now if p != workers[1])
        deadline = time.monotonic() + 60  # only against a hang: the windows decide
        while respawned not in access.pids():
            assert time.monotonic() < deadline, f"restarted worker {respawned} never answered"
            await asyncio.sleep(0.1)
        shares: list[float] = []
        window: Counter[int] = Counter()
        while len(shares) < SPREAD_WINDOWS and (not shares or shares[-1] <= SPREAD_SHARE):
            assert time.monotonic() < deadline, ("too slow to judge", shares, window)
            await asyncio.sleep(0.1)
            window.update(access.pids())
            if window.total() >= SPREAD_WINDOW:
                shares.append(round(window[respawned] / window.total(), 3))
                window.clear()
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert shares[-1] > SPREAD_SHARE, (respawned, shares)
