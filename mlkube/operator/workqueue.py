"""The operator's work queue: which object to reconcile next, and when.

kopf delivers watch events; the controllers only note *which* object changed and put its
key here. A fixed pool of workers takes keys in due order and runs the controller's
level-based reconcile, which reads everything from the watch-fed cache. So:

* a burst of events for one object (its own status write, a Deployment rolling, pods
  starting) collapses into one pending entry: the reconcile sees the latest state anyway;
* one object is never reconciled by two workers at once; an event that arrives while it
  is being reconciled schedules one more pass right after;
* the number of reconciles in flight is bounded (``workers``), so a thousand objects
  applied at once cannot open a thousand API requests, and a refresh queued behind them
  waits for a worker, never for all of them;
* periodic work (drift checks, canary and autoscaler ticks, a job's deadline) is the same
  entry with a due time: the reconcile returns when it wants to look again.

A reconcile that raises is retried with a per-key exponential backoff (or the delay a
:class:`kopf.TemporaryError` names), logged, and never stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import kopf

log = logging.getLogger("mlkube.operator.queue")

Key = tuple[str, str, str]
"""(kind, namespace, name)."""

Reconcile = Callable[[Key, bool], Awaitable[float | None]]
"""``reconcile(key, full)`` → seconds until the object wants another pass, or None."""

STANDBY_RECHECK = 2.0
"""Seconds between looks at an entry that came due while this instance stood by."""
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0


def backoff(failures: int, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> float:
    """Pure: the delay before retry number ``failures`` (1, 2, 4, ... capped)."""
    return float(min(cap, first * 2 ** max(0, failures - 1)))


Item = tuple[Key, bool]
"""A key and whether the pass applies (True) or only refreshes the status (False)."""


@dataclass
class WorkQueue:
    """Deduplicating delayed queue with ``workers`` concurrent reconciles."""

    reconcile: Reconcile
    workers: int = 16
    clock: Callable[[], float] = time.monotonic
    gate: Callable[[], bool] = lambda: True
    """False while this instance stands by (peering): due entries wait, they do not run."""
    _pending: dict[Item, float] = field(default_factory=dict)
    _heap: list[tuple[float, int, Item]] = field(default_factory=list)
    _running: set[Item] = field(default_factory=set)
    _failures: dict[Item, int] = field(default_factory=dict)
    _ready: asyncio.Queue[Item] | None = None
    _wake: asyncio.Event | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    # ------------------------------------------------------------------ scheduling

    def add(self, key: Key, *, full: bool, delay: float = 0.0) -> None:
        """Reconcile ``key`` after ``delay`` seconds (sooner if already due sooner).

        ``full``: apply the desired state; otherwise only refresh the status. A key has at
        most one pending entry of each kind (the earlier due time wins), so a burst of
        events is one pass; the controller's per-object lock orders a refresh and a full
        pass of the same object.
        """
        item = (key, full)
        due = self.clock() + max(0.0, delay)
        pending = self._pending.get(item)
        if pending is not None and pending <= due:
            return
        self._pending[item] = due
        if item not in self._running:
            heapq.heappush(self._heap, (due, next(self._seq), item))
            if self._wake is not None:
                self._wake.set()

    def forget(self, key: Key) -> None:
        """Drop pending work for a deleted object (a pass already running finishes)."""
        for full in (True, False):
            self._pending.pop((key, full), None)
            self._failures.pop((key, full), None)

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, item: Hashable) -> bool:
        return item in self._pending

    def due_in(self, key: Key, full: bool = True) -> float | None:
        """Seconds until ``key`` is due (for tests), or None if not queued."""
        due = self._pending.get((key, full))
        return None if due is None else due - self.clock()

    # ------------------------------------------------------------------ running

    async def start(self, ready: Awaitable[None] | None = None) -> None:
        """Start the workers; with ``ready``, nothing is dispatched until it completes
        (entries added meanwhile wait)."""
        self._ready = asyncio.Queue()
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._dispatch(ready), name="mlkube-queue-dispatch")]
        self._tasks += [
            loop.create_task(self._work(), name=f"mlkube-queue-worker-{i}")
            for i in range(max(1, self.workers))
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # already dead: say so, and stop the others all the same
                log.exception("work queue task %s had failed", task.get_name())
        self._tasks = []

    async def _dispatch(self, ready: Awaitable[None] | None) -> None:
        """Move due keys to the workers; sleep until the next due time or a new entry."""
        assert self._ready is not None
        assert self._wake is not None
        if ready is not None:
            try:
                await ready
            except Exception:  # a half-primed cache beats an operator that never acts
                log.exception("preparing the work queue failed; dispatching anyway")
        while True:
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                due, _, item = heapq.heappop(self._heap)
                if self._pending.get(item) != due or item in self._running:
                    continue  # superseded, forgotten, or re-pushed when its pass ends
                if not self.gate():
                    # Standing by: the active peer does the work. Kept and looked at again
                    # later, not dropped: this instance's view of the peering object and
                    # kopf's own may disagree for a moment when the active peer leaves.
                    again = now + STANDBY_RECHECK
                    self._pending[item] = again
                    heapq.heappush(self._heap, (again, next(self._seq), item))
                    continue
                self._running.add(item)
                self._ready.put_nowait(item)
            self._wake.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _work(self) -> None:
        assert self._ready is not None
        while True:
            item = await self._ready.get()
            due = self._pending.pop(item, None)
            try:
                if due is not None:
                    await self._one(item)
            finally:
                self._running.discard(item)
                again = self._pending.get(item)
                if again is not None:  # changed while it ran, or requeued by the pass
                    heapq.heappush(self._heap, (again, next(self._seq), item))
                    assert self._wake is not None
                    self._wake.set()

    async def _one(self, item: Item) -> None:
        key, full = item
        try:
            after = await self.reconcile(key, full)
        except asyncio.CancelledError:
            raise
        except kopf.TemporaryError as exc:
            failures = self._failures[item] = self._failures.get(item, 0) + 1
            delay = float(exc.delay) if exc.delay is not None else backoff(failures)
            log.warning("%s %s/%s: %s; retrying in %.0f s", *key, exc, delay)
            self.add(key, full=full, delay=delay)
            return
        except Exception:
            failures = self._failures[item] = self._failures.get(item, 0) + 1
            delay = backoff(failures)
            log.exception("reconcile of %s %s/%s failed; retrying in %.0f s", *key, delay)
            self.add(key, full=full, delay=delay)
            return
        self._failures.pop(item, None)
        if after is not None:
            self.add(key, full=True, delay=after)
