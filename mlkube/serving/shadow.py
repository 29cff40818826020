"""Shadow traffic: copy a fraction of real requests to the canary, compare, discard.

A stable pod with ``shadow.url`` set (the canary revision's Service) copies
``shadow.fraction`` of its OIP v2 JSON inference requests there *after* answering them: the
handler only offers ``(path, body, its own answer)`` to a bounded queue (``put_nowait``; a
full queue drops the copy and counts it), and ``shadow.concurrency`` background tasks send
the copies and compare the answers. Nothing the user waits for depends on the canary: no
await on the hot path, no copy when the queue is full, and the canary's answer is read only
to be compared, then discarded.

The comparison, per copy, as Prometheus series of the stable pod (``revision`` its own,
``target`` the revision the canary's answer names in ``Mlkube-Revision``):

* ``mlkube_shadow_requests_total{outcome}``: ``ok``, or ``error`` (a non-2xx answer, a
  timeout, a refused connection);
* ``mlkube_shadow_duration_seconds``: the canary's latency;
* ``mlkube_shadow_ranking_overlap``: |top-k of ours ∩ top-k of the canary's| / k, from the
  ``ranking`` outputs (k = ``shadow.top_k``, or fewer when the rankings are shorter);
* ``mlkube_shadow_score_drift``: mean |our score - the canary's| over the items, from the
  ``scores`` outputs (the bandit samples its scores, so two equal revisions drift by the
  posterior spread, not by zero);
* ``mlkube_shadow_dropped_total``: copies dropped because the queue was full.

The pure comparison is :func:`compare`; :class:`Shadow` is the thin shell around it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

from mlkube.serving.attribution import REVISION_HEADER

log = logging.getLogger("mlkube.serving.shadow")

#: Header on every copy, so that the canary (and its access log) can tell copies apart.
SHADOW_HEADER = "Mlkube-Shadow"
UNKNOWN_TARGET = "unknown"


@dataclass(frozen=True, slots=True)
class Comparison:
    """How the canary's answer differs from ours (None: that output is not comparable)."""

    overlap: float | None
    drift: float | None


def _outputs(answer: Any) -> dict[str, Any]:
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, list):
        return {}
    return {o["name"]: o.get("data") for o in outputs if isinstance(o, dict) and "name" in o}


def ranking_overlap(ours: Sequence[Any], theirs: Sequence[Any], k: int) -> float | None:
    """|top-k ∩ top-k| / k over the first ``k`` of both rankings (fewer when shorter)."""
    depth = min(k, len(ours), len(theirs))
    if depth == 0:
        return None
    return len(set(ours[:depth]) & set(theirs[:depth])) / depth


def score_drift(ours: Sequence[Any], theirs: Sequence[Any]) -> float | None:
    """Mean absolute difference of the scores, item by item (None unless comparable)."""
    if not ours or len(ours) != len(theirs):
        return None
    n = len(ours)
    try:  # fromiter: a third of asarray's time on a list of floats
        diff = np.fromiter(ours, np.float64, n) - np.fromiter(theirs, np.float64, n)
    except (TypeError, ValueError):
        return None
    np.abs(diff, out=diff)
    return float(diff.sum()) / n


def compare(ours: bytes, theirs: bytes, k: int) -> Comparison:
    """Pure: the comparison of two OIP v2 JSON answers to the same request."""
    try:
        a, b = _outputs(orjson.loads(ours)), _outputs(orjson.loads(theirs))
    except orjson.JSONDecodeError:
        return Comparison(None, None)
    overlap = drift = None
    ra, rb = a.get("ranking"), b.get("ranking")
    if isinstance(ra, list) and isinstance(rb, list):
        overlap = ranking_overlap(ra, rb, k)
    sa, sb = a.get("scores"), b.get("scores")
    if isinstance(sa, list) and isinstance(sb, list):
        drift = score_drift(sa, sb)
    return Comparison(overlap, drift)


#: A copy: the request's path and body, and our answer to it.
Copy = tuple[str, bytes, bytes]


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to the canary, spoken directly as an asyncio
    protocol and driven by callbacks: a copy costs one write and the ``data_received`` calls
    of its answer, with no task, future or stream reader per copy (the stable pod pays all
    of it out of the CPU that answers its users)."""

    def __init__(self, sender: _Sender) -> None:
        self.sender = sender
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.pending = b""  # the start of an answer not yet complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sender.connection is self:  # not one the sender has already let go
            self.sender.connection = None
            if self.sender.copy is not None and not self.sender.connecting:
                self.sender.shadow._failed(self.sender)

    def data_received(self, data: bytes) -> None:
        if self.pending:  # the answer came in pieces (usually it is one)
            data = self.pending + data
            self.pending = b""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self.pending = data
            return
        head = data[:end]
        lower = head.lower()
        length = _header(head, lower, b"content-length")
        sender, shadow = self.sender, self.sender.shadow
        if length is None or not length.isdigit():
            shadow._failed(sender)  # chunked or malformed: not reusable
            return
        total = end + 4 + int(length)
        if len(data) < total:
            self.pending = data
            return
        parts = head.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if sender.copy is None or status == 0 or len(data) > total:  # unasked for, not HTTP
            shadow._failed(sender)
            return
        if (_header(head, lower, b"connection") or b"").lower() == b"close":
            sender.close()
        target = _header(head, lower, REVISION_LOWER)
        answer = data[end + 4 :]
        shadow._answered(sender, status, target.decode("latin-1") if target else "", answer)


class _Sender:
    """One of ``shadow.concurrency`` slots: its connection (opened on demand, kept alive)
    and the copy in flight on it."""

    def __init__(self, shadow: Shadow) -> None:
        self.shadow = shadow
        self.connection: _Connection | None = None
        self.copy: Copy | None = None  # the copy in flight, or being connected for
        self.started = 0.0
        self.connecting = False

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    def send(self, copy: Copy) -> None:
        self.copy = copy
        self.started = time.perf_counter()
        connection = self.connection
        if connection is None or connection.transport is None or connection.transport.is_closing():
            self.connecting = True
            self.shadow._connect(self)
            return
        path, body, _ = copy
        connection.transport.write(self.shadow._request_head(path, len(body)) + body)


REVISION_LOWER = REVISION_HEADER.lower().encode()


def _header(head: bytes, lower: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case) in a response head, or None."""
    at = lower.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    at += len(name) + 3
    stop = head.find(b"\r\n", at)
    return head[at : stop if stop >= 0 else len(head)].strip()


class Shadow:
    """The queue and the senders of one worker process.

    ``offer`` appends to a bounded deque (a full one drops the copy and counts it) and, when
    a sender is free, schedules one pump with ``call_soon``: the copy is written after the
    handler has returned its answer. A sender that gets its answer records the comparison
    (tallied, written out with the request metrics) and takes the next waiting copy itself.
    One timer per shadow, every quarter of ``timeout``, fails the copies older than it."""

    def __init__(
        self,
        url: str,
        fraction: float,
        queue_size: int,
        concurrency: int,
        timeout: float,
        top_k: int,
        metrics: Any,
    ) -> None:
        parsed = urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"shadow url {url!r}: only http://host[:port] is supported")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.prefix = parsed.path.rstrip("/")
        self.fraction = fraction
        self.top_k = top_k
        self.timeout = timeout
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.metrics = metrics
        self.waiting: deque[Copy] = deque()
        self._random = random.random
        self._senders: list[_Sender] = []
        self._free: list[_Sender] = []
        self._pump_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._connects: set[asyncio.Task[None]] = set()
        self._heads: dict[str, bytes] = {}
        self._fixed = (
            f"Host: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"{SHADOW_HEADER}: 1\r\nContent-Length: "
        ).encode()

    def offer(self, path: str, body: bytes, answer: bytes) -> None:
        """Called by the handler after it has its answer: copy this request, maybe."""
        if self._random() >= self.fraction:
            return
        if len(self.waiting) >= self.queue_size:
            self.metrics.count_shadow_dropped()
            return
        self.waiting.append((path, body, answer))
        if self._free and not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._senders = [_Sender(self) for _ in range(self.concurrency)]
        self._free = list(self._senders)
        self._watchdog = self._loop.call_later(self.timeout / 4, self._watch)

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for task in self._connects:
            task.cancel()
        await asyncio.gather(*self._connects, return_exceptions=True)
        for sender in self._senders:
            sender.copy = None
            sender.close()
        self._free = []
        self.waiting.clear()

    # --- the senders' callbacks ----------------------------------------------------------

    def _pump(self) -> None:
        self._pump_scheduled = False
        while self._free and self.waiting:
            self._free.pop().send(self.waiting.popleft())

    def _request_head(self, path: str, length: int) -> bytes:
        start = self._heads.get(path)
        if start is None:
            start = self._heads[path] = f"POST {self.prefix}{path} HTTP/1.1\r\n".encode()
        return start + self._fixed + str(length).encode() + b"\r\n\r\n"

    def _connect(self, sender: _Sender) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._open(sender), name="mlkube-shadow-connect")
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)

    async def _open(self, sender: _Sender) -> None:
        assert self._loop is not None
        connection = _Connection(sender)
        try:
            async with asyncio.timeout(self.timeout):
                transport, _ = await self._loop.create_connection(
                    lambda: connection, self.host, self.port
                )
        except (OSError, TimeoutError, ValueError):
            log.debug("shadow connection failed", exc_info=True)
            sender.connecting = False
            self._failed(sender)
            return
        connection.transport = transport
        sender.connection = connection
        sender.connecting = False
        copy = sender.copy
        if copy is None:  # stopped meanwhile
            sender.close()
            return
        path, body, _ = copy
        transport.write(self._request_head(path, len(body)) + body)

    def _release(self, sender: _Sender) -> None:
        sender.copy = None
        if self.waiting:
            sender.send(self.waiting.popleft())
        else:
            self._free.append(sender)

    def _answered(self, sender: _Sender, status: int, target: str, theirs: bytes) -> None:
        copy = sender.copy
        assert copy is not None
        seconds = time.perf_counter() - sender.started
        ok = 200 <= status < 300
        overlap = drift = None
        if ok:
            try:
                comparison = compare(copy[2], theirs, self.top_k)
                overlap, drift = comparison.overlap, comparison.drift
            except Exception:  # a copy must never take its sender down
                log.debug("shadow comparison failed", exc_info=True)
        self.metrics.observe_shadow(target or UNKNOWN_TARGET, ok, seconds, overlap, drift)
        self._release(sender)

    def _failed(self, sender: _Sender) -> None:
        """No usable answer (refused, timed out, closed, not HTTP): the connection goes."""
        if sender.copy is None:
            sender.close()
            return
        seconds = time.perf_counter() - sender.started
        sender.copy = None
        sender.close()
        self.metrics.observe_shadow(UNKNOWN_TARGET, False, seconds, None, None)
        self._release(sender)

    def _watch(self) -> None:
        assert self._loop is not None
        now = time.perf_counter()
        for sender in self._senders:
            busy = sender.copy is not None and not sender.connecting  # (connects time out)
            if busy and now - sender.started > self.timeout:
                self._failed(sender)
        self._watchdog = self._loop.call_later(self.timeout / 4, self._watch)
