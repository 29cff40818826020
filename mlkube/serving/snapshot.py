"""Per-worker snapshots of the bandit's counts, and the background task that refreshes them.

The hot path never talks to the feature store: it reads an immutable
:class:`SegmentSnapshot` (the ids in row order, their posterior parameters as arrays, and an
id -> row :class:`~mlkube.native.ItemTable` in C) and the refresher swaps in a new one every
``refresh_interval``. Row ``-1`` of the arrays holds the prior, so an unknown item maps to
index ``-1`` and gets the prior without any branching. The same table serves the C request
path and the Python path (:func:`lookup_rows`); it is built here, off the hot path, once per
changed read.

Pure functions build snapshots; :class:`SnapshotCache` is the thin I/O shell around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mlkube.native import ItemTable
from mlkube.serving.circuit import CircuitState
from mlkube.serving.store import F64, GuardedStore, SegmentCounts, StoreUnavailable

log = logging.getLogger("mlkube.serving.snapshot")

Rows = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True, slots=True)
class SegmentSnapshot:
    items: list[str]  # the id of each row (distinct: hash fields, request ids seen once)
    alpha: F64  # len(items) + 1; the last entry is the prior
    beta: F64
    table: ItemTable  # id -> row, in C
    read_at: float  # time.monotonic() of the store read it reflects
    version: str = ""  # the store's version of the segment at that read

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: str) -> bool:
        return item in self.table

    def row(self, item: str) -> int:
        """The row of ``item``, or -1 (the prior's) when the snapshot does not know it."""
        return self.table.find(item)


def make_snapshot(
    items: list[str], alpha: F64, beta: F64, read_at: float, version: str = ""
) -> SegmentSnapshot:
    return SegmentSnapshot(items, alpha, beta, ItemTable(items, alpha, beta), read_at, version)


def prior_snapshot(prior_alpha: float, prior_beta: float, read_at: float) -> SegmentSnapshot:
    return make_snapshot([], np.array([prior_alpha]), np.array([prior_beta]), read_at)


def build_snapshot(
    counts: SegmentCounts,
    prior_alpha: float,
    prior_beta: float,
    read_at: float,
    previous: SegmentSnapshot | None = None,
    max_items: int = 5_000_000,
) -> SegmentSnapshot:
    """Snapshot of ``counts``; items that ``previous`` knew but the store has no counts for
    (seen in requests, never rewarded) are kept with zero counts so they are not looked up
    again."""
    items = counts.items
    s, f = counts.successes, counts.failures
    if previous is not None and len(previous):
        known = set(items)
        kept = [k for k in previous.items if k not in known][: max(0, max_items - len(items))]
        if kept:
            items = items + kept
            s = np.concatenate([s, np.zeros(len(kept))])
            f = np.concatenate([f, np.zeros(len(kept))])
    n = len(items)
    alpha = np.empty(n + 1)
    beta = np.empty(n + 1)
    np.add(s, prior_alpha, out=alpha[:n])
    np.add(f, prior_beta, out=beta[:n])
    alpha[n] = prior_alpha
    beta[n] = prior_beta
    return make_snapshot(items, alpha, beta, read_at, counts.version)


def extend_snapshot(
    snapshot: SegmentSnapshot,
    counts: SegmentCounts,
    prior_alpha: float,
    prior_beta: float,
    max_items: int,
) -> SegmentSnapshot:
    """Add newly seen items (with their counts) without touching the others."""
    n = len(snapshot)
    new = np.flatnonzero(snapshot.table.rows_of(counts.items) < 0)[: max(0, max_items - n)]
    if not len(new):
        return snapshot
    alpha = np.concatenate([snapshot.alpha[:n], counts.successes[new] + prior_alpha, [prior_alpha]])
    beta = np.concatenate([snapshot.beta[:n], counts.failures[new] + prior_beta, [prior_beta]])
    items = snapshot.items + [counts.items[i] for i in new.tolist()]
    return make_snapshot(items, alpha, beta, snapshot.read_at, snapshot.version)


def lookup_rows(snapshot: SegmentSnapshot, items: Sequence[str]) -> Rows:
    """Row of each item in the snapshot, -1 (the prior row) for unknown ones; one C pass."""
    return snapshot.table.rows_of(items)


class SnapshotCache:
    """The snapshots of one worker, refreshed in the background from the feature store."""

    def __init__(
        self,
        store: GuardedStore,
        *,
        prior_alpha: float,
        prior_beta: float,
        refresh_interval: float,
        max_staleness: float,
        preload: Sequence[str],
        max_segments: int,
        max_items: int,
        on_staleness: Any = None,
        on_size: Any = None,
        full_read_interval: float = 30.0,
    ) -> None:
        self.store = store
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.refresh_interval = refresh_interval
        self.max_staleness = max_staleness
        self.max_segments = max_segments
        self.max_items = max_items
        self.segments: dict[str, SegmentSnapshot] = {}
        self._preload = list(dict.fromkeys(preload))
        self._pending: dict[str, set[str]] = {}
        self._loading: dict[str, asyncio.Future[SegmentSnapshot]] = {}
        self._wake = asyncio.Event()
        self._full_refresh_due = False
        self._task: asyncio.Task[None] | None = None
        self._on_staleness = on_staleness
        self._on_size = on_size
        self.ready = False
        self._was_failing = False
        self._created = time.monotonic()
        self._last_full_read = self._created
        self.full_read_interval = full_read_interval

    # --- hot path -------------------------------------------------------------------------
    def get(self, segment: str) -> SegmentSnapshot | None:
        return self.segments.get(segment)

    def degraded_reason(self, snapshot: SegmentSnapshot, now: float) -> str | None:
        if self.store.breaker.state is not CircuitState.CLOSED:
            return "feature-store-unavailable"
        if now - snapshot.read_at > self.max_staleness:
            return "stale-snapshot"
        return None

    def note_missing(self, segment: str, items: Sequence[str]) -> None:
        """Items a request asked for that the snapshot does not know: look them up soon."""
        if segment not in self.segments:
            return
        pending = self._pending.setdefault(segment, set())
        if len(pending) < 100_000:
            pending.update(items)
        self._wake.set()

    def request_refresh(self) -> None:
        """Re-read everything now (after a write to a store whose reads are cheap)."""
        self._full_refresh_due = True
        self._wake.set()

    async def segment(self, segment: str) -> SegmentSnapshot:
        """The snapshot of ``segment``, reading it on first sight (one round trip).

        Raises StoreUnavailable when the segment was never read and the store is down.
        """
        snap = self.segments.get(segment)
        if snap is not None:
            return snap
        waiting = self._loading.get(segment)
        if waiting is not None:
            return await asyncio.shield(waiting)
        future: asyncio.Future[SegmentSnapshot] = asyncio.get_running_loop().create_future()
        self._loading[segment] = future
        try:
            counts = (await self.store.read_segments([segment]))[segment]
            assert counts is not None  # no known version was given
            snap = build_snapshot(
                counts, self.prior_alpha, self.prior_beta, time.monotonic(), None, self.max_items
            )
            if len(self.segments) < self.max_segments:
                self.segments[segment] = snap
                self._report()
            future.set_result(snap)
            return snap
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        finally:
            del self._loading[segment]

    def prior_only(self) -> SegmentSnapshot:
        return prior_snapshot(self.prior_alpha, self.prior_beta, float("-inf"))

    # --- background -----------------------------------------------------------------------
    async def start(self) -> None:
        """Try the first read now; the background task keeps trying until it succeeds."""
        await self._initial_read()
        self._task = asyncio.create_task(self._run(), name="mlkube-snapshot-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _initial_read(self) -> bool:
        if self.ready:
            return True
        try:
            counts = await self.store.read_segments(self._preload)
        except StoreUnavailable as exc:
            self._log_failure(exc)
            return False
        now = time.monotonic()
        for name, c in counts.items():
            assert c is not None  # no known version was given
            self.segments[name] = build_snapshot(
                c, self.prior_alpha, self.prior_beta, now, None, self.max_items
            )
        self.ready = True
        self._log_recovery()
        self._report()
        return True

    async def _run(self) -> None:
        next_full = time.monotonic() + self.refresh_interval
        while True:
            timeout = max(0.0, next_full - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if not self.ready:
                await self._initial_read()
                next_full = time.monotonic() + self.refresh_interval
                continue
            now = time.monotonic()
            try:
                read = False
                if now >= next_full or self._full_refresh_due:
                    self._full_refresh_due = False
                    self._pending.clear()
                    next_full = now + self.refresh_interval
                    read = await self.refresh_all()
                elif self._pending:
                    read = await self._read_pending()
                if read:  # recovery is claimed only after a read that worked
                    self._log_recovery()
            except StoreUnavailable as exc:
                self._log_failure(exc)
            self._report()

    async def refresh_all(self) -> bool:
        """Re-read every known segment; False when there was nothing to read."""
        names = list(self.segments)
        if not names:
            return False
        now = time.monotonic()
        known: dict[str, str] | None = None
        if now - self._last_full_read < self.full_read_interval:
            known = {name: snap.version for name, snap in self.segments.items() if snap.version}
        else:
            # Now and then read everything even if unchanged: picks up hashes edited by hand
            # (without bumping the version key).
            self._last_full_read = now
        counts = await self.store.read_segments(names, known)
        now = time.monotonic()
        for name, c in counts.items():
            previous = self.segments.get(name)
            if c is None:  # unchanged in the store: the snapshot is current as of now
                if previous is not None:
                    self.segments[name] = replace(previous, read_at=now)
                continue
            self.segments[name] = build_snapshot(
                c, self.prior_alpha, self.prior_beta, now, previous, self.max_items
            )
        return True

    async def _read_pending(self) -> bool:
        """Read the ids answered with the prior; False when none needed a read."""
        read = False
        pending, self._pending = self._pending, {}
        for name, items in pending.items():
            snap = self.segments.get(name)
            if snap is None:
                continue
            ids = list(items)
            unknown = [ids[i] for i in np.flatnonzero(snap.table.rows_of(ids) < 0).tolist()]
            if not unknown:
                continue
            counts = await self.store.read_items(name, unknown)
            read = True
            current = self.segments.get(name)
            if current is not None:
                self.segments[name] = extend_snapshot(
                    current, counts, self.prior_alpha, self.prior_beta, self.max_items
                )
        return read

    def staleness(self, now: float) -> float:
        if not self.segments:
            return 0.0 if self.ready else now - self._created
        return now - min(s.read_at for s in self.segments.values())

    def _report(self) -> None:
        if self._on_staleness is not None:
            self._on_staleness(self.staleness(time.monotonic()))
        if self._on_size is not None:
            self._on_size(sum(len(s) for s in self.segments.values()))

    def _log_failure(self, exc: StoreUnavailable) -> None:
        if not self._was_failing:
            self._was_failing = True
            log.warning("feature store unavailable; serving from the last snapshot: %s", exc)

    def _log_recovery(self) -> None:
        if self._was_failing:
            self._was_failing = False
            log.info("feature store reachable again; snapshots refreshed")
