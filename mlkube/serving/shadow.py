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
    try:
        a = np.asarray(ours, dtype=np.float64)
        b = np.asarray(theirs, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return float(np.abs(a - b).mean())


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


class CopyFailed(Exception):
    """A copy got no usable answer (connection, timeout, framing)."""


class _Connection:
    """One keep-alive HTTP/1.1 connection to the canary, spoken directly over asyncio
    streams: a copy costs a write and two reads, about a tenth of what aiohttp's client
    spends per request (which the stable pod would pay out of its own CPU)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.head = (
            f"Host: {host}:{port}\r\nContent-Type: application/json\r\n{SHADOW_HEADER}: 1\r\n"
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        assert reader is not None
        writer.write(
            f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise CopyFailed(f"bad status line {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            raise CopyFailed("answer without Content-Length")
        answer = await reader.readexactly(int(length))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(parts[1]), headers, answer


class Shadow:
    """The queue and the senders of one worker process."""

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
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[str, bytes, bytes]] = asyncio.Queue(queue_size)
        self._random = random.random
        self._tasks: list[asyncio.Task[None]] = []

    def offer(self, path: str, body: bytes, answer: bytes) -> None:
        """Called by the handler after it has its answer: copy this request, maybe."""
        if self._random() >= self.fraction:
            return
        try:
            self.queue.put_nowait((path, body, answer))
        except asyncio.QueueFull:
            self.metrics.shadow_dropped_child.inc()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._send_loop(), name=f"mlkube-shadow-{i}")
            for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send_loop(self) -> None:
        connection = _Connection(self.host, self.port)
        try:
            while True:
                path, body, ours = await self.queue.get()
                try:
                    self._record(await self._send_one(connection, path, body), ours)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a copy must never take its sender down
                    log.debug("shadow copy failed", exc_info=True)
        finally:
            connection.close()

    async def _send_one(
        self, connection: _Connection, path: str, body: bytes
    ) -> tuple[str, bool, float, bytes]:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                status, headers, theirs = await connection.post(self.prefix + path, body)
        except (CopyFailed, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            connection.close()  # whatever state it is in, it is not reusable
            return UNKNOWN_TARGET, False, time.perf_counter() - start, b""
        target = headers.get(REVISION_HEADER.lower()) or UNKNOWN_TARGET
        return target, 200 <= status < 300, time.perf_counter() - start, theirs

    def _record(self, sent: tuple[str, bool, float, bytes], ours: bytes) -> None:
        target, ok, seconds, theirs = sent
        comparison = compare(ours, theirs, self.top_k) if ok else None
        self.metrics.observe_shadow(target, ok, seconds, comparison)
