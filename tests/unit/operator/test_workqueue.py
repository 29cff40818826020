"""The work queue: dedup, per-item exclusion, bounded workers, requeues, gate, start/stop.

Scheduling arithmetic is checked with a frozen fake clock (``due_in``); anything that runs
uses real time with delays of a few hundredths of a second, since the dispatcher sleeps
with ``asyncio.wait_for`` on the event loop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sized

import kopf
import pytest

from mlkube.operator import workqueue
from mlkube.operator.workqueue import BACKOFF_MAX, Key, WorkQueue, backoff

KEY: Key = ("ModelService", "ml", "recs")
OTHER: Key = ("ModelService", "ml", "other")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def until(cond: Callable[[], bool], within: float = 1.0) -> None:
    """Wait (polling) until ``cond()`` holds; fail after ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while not cond():  # noqa: ASYNC110 (polls plain state, not an Event)
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError("condition not reached in time") from None


def has(seq: Sized, n: int) -> Callable[[], bool]:
    return lambda: len(seq) == n


class Recorder:
    """A reconcile that records its calls; optionally blocks on ``release``."""

    def __init__(self, block: bool = False) -> None:
        self.calls: list[tuple[Key, bool]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.per_item: dict[tuple[Key, bool], int] = {}
        self.max_per_item = 0
        self.release = asyncio.Event()
        if not block:
            self.release.set()
        self.returns: float | None = None

    async def __call__(self, key: Key, full: bool) -> float | None:
        item = (key, full)
        self.calls.append(item)
        self.in_flight += 1
        self.per_item[item] = self.per_item.get(item, 0) + 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_per_item = max(self.max_per_item, self.per_item[item])
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
            self.per_item[item] -= 1
        return self.returns


@pytest.fixture
async def queues() -> AsyncIterator[list[WorkQueue]]:
    """Queues a test started; all stopped at the end."""
    started: list[WorkQueue] = []
    yield started
    for q in started:
        await q.stop()


async def started(
    queues: list[WorkQueue], q: WorkQueue, ready: asyncio.Future[None] | None = None
) -> WorkQueue:
    await q.start(ready)
    queues.append(q)
    return q


# ---------------------------------------------------------------- pure scheduling


def test_backoff_doubles_from_one_second_and_is_capped() -> None:
    assert [backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert backoff(9) == 256.0
    assert backoff(10) == BACKOFF_MAX == 300.0
    assert backoff(50) == 300.0


def test_a_burst_of_adds_is_one_pending_entry() -> None:
    q = WorkQueue(Recorder(), clock=FakeClock())
    for _ in range(50):
        q.add(KEY, full=True)
    assert len(q) == 1
    assert (KEY, True) in q


def test_the_earlier_due_time_wins() -> None:
    q = WorkQueue(Recorder(), clock=FakeClock())
    q.add(KEY, full=True, delay=10)
    assert q.due_in(KEY) == 10
    q.add(KEY, full=True, delay=3)
    assert q.due_in(KEY) == 3
    q.add(KEY, full=True, delay=5)
    assert q.due_in(KEY) == 3
    q.add(KEY, full=True, delay=-7)  # a negative delay is "now", not the past
    assert q.due_in(KEY) == 0
    assert len(q) == 1


def test_a_refresh_and_a_full_pass_are_separate_entries() -> None:
    q = WorkQueue(Recorder(), clock=FakeClock())
    q.add(KEY, full=False, delay=2)
    q.add(KEY, full=True, delay=8)
    assert len(q) == 2
    assert q.due_in(KEY, full=False) == 2
    assert q.due_in(KEY, full=True) == 8


def test_forget_drops_both_kinds_of_pending_work_for_that_key_only() -> None:
    q = WorkQueue(Recorder(), clock=FakeClock())
    q.add(KEY, full=True)
    q.add(KEY, full=False)
    q.add(OTHER, full=True)
    q.forget(KEY)
    assert len(q) == 1
    assert q.due_in(KEY) is None
    assert q.due_in(KEY, full=False) is None
    assert q.due_in(OTHER) == 0


# ---------------------------------------------------------------- running


async def test_a_burst_of_adds_runs_one_pass(queues: list[WorkQueue]) -> None:
    rec = Recorder()
    q = await started(queues, WorkQueue(rec, workers=4))
    for _ in range(20):
        q.add(KEY, full=True)
    await until(lambda: len(rec.calls) >= 1 and len(q) == 0 and rec.in_flight == 0)
    await asyncio.sleep(0.02)
    assert rec.calls == [(KEY, True)]


async def test_an_earlier_add_overrides_a_long_delay(queues: list[WorkQueue]) -> None:
    rec = Recorder()
    q = await started(queues, WorkQueue(rec))
    q.add(KEY, full=True, delay=60)
    await asyncio.sleep(0.01)
    q.add(KEY, full=True)
    await until(lambda: rec.calls == [(KEY, True)], within=0.5)
    assert len(q) == 0  # the 60 s entry was superseded, not kept as a second pass


async def test_refresh_and_full_pass_both_run(queues: list[WorkQueue]) -> None:
    rec = Recorder()
    q = await started(queues, WorkQueue(rec))
    q.add(KEY, full=False)
    q.add(KEY, full=True)
    await until(lambda: len(rec.calls) == 2)
    assert sorted(rec.calls) == [(KEY, False), (KEY, True)]


async def test_one_item_never_runs_twice_at_once_and_an_add_meanwhile_is_one_more_pass(
    queues: list[WorkQueue],
) -> None:
    rec = Recorder(block=True)
    q = await started(queues, WorkQueue(rec, workers=8))
    q.add(KEY, full=True)
    await until(lambda: rec.in_flight == 1)
    for _ in range(5):  # events while it runs
        q.add(KEY, full=True)
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.01)
    assert rec.calls == [(KEY, True)]  # not started a second time while the first runs
    rec.release.set()
    await until(lambda: len(rec.calls) == 2 and rec.in_flight == 0 and len(q) == 0)
    await asyncio.sleep(0.02)
    assert rec.calls == [(KEY, True), (KEY, True)]
    assert rec.max_per_item == 1


async def test_a_superseded_entry_never_starts_a_second_concurrent_pass(
    queues: list[WorkQueue],
) -> None:
    clock = FakeClock()
    rec = Recorder(block=True)
    q = await started(queues, WorkQueue(rec, workers=4, clock=clock))
    q.add(KEY, full=True, delay=5)  # its heap entry stays behind when...
    q.add(KEY, full=True)  # ...an earlier one supersedes it and starts
    await until(lambda: rec.in_flight == 1)
    clock.t += 5
    q.add(KEY, full=True)  # an event while it runs, due exactly when the old entry was
    q.add(OTHER, full=False)  # wakes the dispatcher
    await until(lambda: (OTHER, False) in rec.calls)
    await asyncio.sleep(0.01)
    assert rec.calls.count((KEY, True)) == 1
    rec.release.set()
    await until(lambda: rec.calls.count((KEY, True)) == 2 and rec.in_flight == 0)
    assert rec.max_per_item == 1


async def test_workers_bound_the_reconciles_in_flight(queues: list[WorkQueue]) -> None:
    rec = Recorder(block=True)
    q = await started(queues, WorkQueue(rec, workers=3))
    keys: list[Key] = [("ModelService", "ml", f"m{i}") for i in range(10)]
    for key in keys:
        q.add(key, full=True)
    await until(lambda: rec.in_flight == 3)
    await asyncio.sleep(0.02)
    assert rec.in_flight == 3
    assert len(rec.calls) == 3
    rec.release.set()
    await until(lambda: len(rec.calls) == 10 and rec.in_flight == 0)
    assert rec.max_in_flight == 3
    assert sorted(k for k, _ in rec.calls) == sorted(keys)


async def test_a_returned_delay_requeues_a_full_pass(queues: list[WorkQueue]) -> None:
    calls: list[tuple[Key, bool]] = []

    async def reconcile(key: Key, full: bool) -> float | None:
        calls.append((key, full))
        return 0.01 if len(calls) == 1 else None

    q = await started(queues, WorkQueue(reconcile))
    q.add(KEY, full=False)  # a refresh that asks to look again
    await until(lambda: len(calls) == 2)
    assert calls == [(KEY, False), (KEY, True)]
    await asyncio.sleep(0.03)
    assert len(calls) == 2  # None: no further pass
    assert len(q) == 0


async def test_a_returned_delay_is_the_due_time(queues: list[WorkQueue]) -> None:
    clock = FakeClock()
    rec = Recorder()
    rec.returns = 42.0
    q = await started(queues, WorkQueue(rec, clock=clock))
    q.add(KEY, full=True)
    await until(lambda: len(rec.calls) == 1 and rec.in_flight == 0)
    await until(lambda: q.due_in(KEY) is not None)
    assert q.due_in(KEY) == 42.0
    assert q.due_in(KEY, full=False) is None


async def test_a_temporary_error_requeues_with_its_delay(queues: list[WorkQueue]) -> None:
    clock = FakeClock()
    calls: list[Key] = []

    async def reconcile(key: Key, full: bool) -> float | None:
        calls.append(key)
        raise kopf.TemporaryError("not yet", delay=7)

    q = await started(queues, WorkQueue(reconcile, clock=clock))
    q.add(KEY, full=True)
    await until(lambda: len(calls) == 1 and q.due_in(KEY) is not None)
    assert q.due_in(KEY) == 7.0


async def test_a_temporary_error_is_retried_after_its_delay(queues: list[WorkQueue]) -> None:
    calls: list[Key] = []

    async def reconcile(key: Key, full: bool) -> float | None:
        calls.append(key)
        if len(calls) == 1:
            raise kopf.TemporaryError("not yet", delay=0.02)
        return None

    q = await started(queues, WorkQueue(reconcile))
    q.add(KEY, full=True)
    await until(lambda: len(calls) == 2)
    await asyncio.sleep(0.03)
    assert calls == [KEY, KEY]
    assert len(q) == 0


async def test_failures_back_off_exponentially_and_the_worker_survives(
    queues: list[WorkQueue],
) -> None:
    clock = FakeClock()
    failing: list[Key] = []
    others: list[Key] = []

    async def reconcile(key: Key, full: bool) -> float | None:
        if key == KEY:
            failing.append(key)
            raise RuntimeError("boom")
        others.append(key)
        return None

    q = await started(queues, WorkQueue(reconcile, workers=1, clock=clock))
    q.add(KEY, full=True)
    expected = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]
    for attempt, delay in enumerate(expected, start=1):
        await until(has(failing, attempt))
        await until(lambda: q.due_in(KEY) is not None)
        assert q.due_in(KEY) == delay, f"retry {attempt}"
        clock.t += delay
        # another object's event wakes the dispatcher; the one worker still serves it
        q.add(("ModelService", "ml", f"tick{attempt}"), full=True)
        await until(has(others, attempt))
    assert len(failing) == len(expected) + 1


async def test_a_success_resets_the_backoff(queues: list[WorkQueue]) -> None:
    clock = FakeClock()
    outcomes = [RuntimeError("1"), RuntimeError("2"), None, RuntimeError("3")]
    calls: list[Key] = []
    ticks: list[Key] = []

    async def reconcile(key: Key, full: bool) -> float | None:
        if key != KEY:
            ticks.append(key)
            return None
        calls.append(key)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise outcome
        return None

    async def advance(seconds: float) -> None:
        """Move the fake clock and wake the dispatcher with another object's event."""
        clock.t += seconds
        q.add(("ModelService", "ml", f"tick{len(ticks)}"), full=True)
        await until(has(ticks, len(ticks) + 1))

    q = await started(queues, WorkQueue(reconcile, workers=1, clock=clock))
    q.add(KEY, full=True)
    await until(lambda: len(calls) == 1 and q.due_in(KEY) is not None)
    assert q.due_in(KEY) == 1.0
    await advance(1)
    await until(lambda: len(calls) == 2 and q.due_in(KEY) is not None)
    assert q.due_in(KEY) == 2.0
    await advance(2)
    await until(lambda: len(calls) == 3)
    assert q.due_in(KEY) is None  # succeeded: nothing queued
    q.add(KEY, full=True)
    await until(lambda: len(calls) == 4 and q.due_in(KEY) is not None)
    assert q.due_in(KEY) == 1.0  # counted from the start again


async def test_forget_resets_the_backoff(queues: list[WorkQueue]) -> None:
    clock = FakeClock()
    calls: list[Key] = []

    async def reconcile(key: Key, full: bool) -> float | None:
        calls.append(key)
        raise RuntimeError("boom")

    q = await started(queues, WorkQueue(reconcile, clock=clock))
    q.add(KEY, full=True)
    await until(lambda: len(calls) == 1 and q.due_in(KEY) is not None)
    assert q.due_in(KEY) == 1.0
    q.forget(KEY)  # deleted; an object of the same name is created again
    q.add(KEY, full=True)
    await until(lambda: len(calls) == 2 and q.due_in(KEY) is not None)
    assert q.due_in(KEY) == 1.0


async def test_forget_drops_pending_work(queues: list[WorkQueue]) -> None:
    rec = Recorder()
    q = await started(queues, WorkQueue(rec))
    q.add(KEY, full=True, delay=0.02)
    q.add(KEY, full=False, delay=0.02)
    q.add(OTHER, full=True, delay=0.02)
    q.forget(KEY)
    await until(lambda: len(rec.calls) == 1)
    await asyncio.sleep(0.03)
    assert rec.calls == [(OTHER, True)]


async def test_a_closed_gate_holds_due_entries_until_it_opens(
    queues: list[WorkQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Standing by, nothing runs; taking over runs what came due meanwhile (the view of the
    peering object may lag kopf's by a moment: dropping would lose that work)."""
    monkeypatch.setattr(workqueue, "STANDBY_RECHECK", 0.01)
    active = False
    rec = Recorder()
    q = await started(queues, WorkQueue(rec, gate=lambda: active))
    q.add(KEY, full=True)
    q.add(OTHER, full=False, delay=0.01)
    await asyncio.sleep(0.05)
    assert rec.calls == []
    assert len(q) == 2
    active = True
    await until(lambda: sorted(rec.calls) == sorted([(KEY, True), (OTHER, False)]))


async def test_start_holds_dispatch_until_ready(queues: list[WorkQueue]) -> None:
    rec = Recorder()
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    q = WorkQueue(rec)
    q.add(KEY, full=True)
    await started(queues, q, ready)
    q.add(OTHER, full=True)
    await asyncio.sleep(0.03)
    assert rec.calls == []
    assert len(q) == 2
    ready.set_result(None)
    await until(lambda: len(rec.calls) == 2)
    assert sorted(rec.calls) == [(OTHER, True), (KEY, True)]


async def failed_ready() -> None:
    """A ``ready`` that fails (e.g. with aiohttp's ServerDisconnectedError)."""
    await asyncio.sleep(0)
    raise RuntimeError("server disconnected while listing the children")


async def test_a_failed_ready_does_not_stall_the_queue_forever() -> None:
    rec = Recorder()
    q = WorkQueue(rec)
    q.add(KEY, full=True)
    await q.start(failed_ready())
    try:
        await until(lambda: rec.calls == [(KEY, True)], within=0.5)
    finally:
        with contextlib.suppress(Exception):
            await q.stop()


async def test_stop_after_a_failed_ready_returns_cleanly() -> None:
    q = WorkQueue(Recorder(), workers=2)
    await q.start(failed_ready())
    await asyncio.sleep(0.01)
    try:
        await q.stop()  # the operator's close() goes on to close its API session after this
    finally:
        for task in asyncio.all_tasks():
            if task.get_name().startswith("mlkube-queue"):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


async def test_stop_cancels_a_running_reconcile_and_nothing_runs_after() -> None:
    cancelled = asyncio.Event()
    calls: list[Key] = []

    async def reconcile(key: Key, full: bool) -> float | None:
        calls.append(key)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    q = WorkQueue(reconcile, workers=2)
    await q.start()
    q.add(KEY, full=True)
    await until(lambda: len(calls) == 1)
    await asyncio.wait_for(q.stop(), 1.0)  # returns, raises nothing
    assert cancelled.is_set()
    q.add(OTHER, full=True)
    await asyncio.sleep(0.02)
    assert calls == [KEY]
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("mlkube-queue")]
