"""The dynamic batcher: size and delay bounds, result routing, failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlkube.serving.batcher import DynamicBatcher, ThreadedBatcher


class FirstBatchHeld:
    """A batch function that records each batch and holds the first one until ``gate`` is
    set (``running`` says it has started): a model busy with a batch."""

    def __init__(self) -> None:
        self.calls: list[list[object]] = []
        self.started: list[float] = []
        self.gate, self.running = asyncio.Event(), asyncio.Event()

    async def __call__(self, batch: Sequence[object]) -> list[object]:
        self.calls.append(list(batch))
        self.started.append(time.monotonic())
        if len(self.calls) == 1:
            self.running.set()
            await self.gate.wait()
        return list(batch)


async def test_full_batch_flushes_without_waiting() -> None:
    calls: list[list[int]] = []

    async def double(batch: Sequence[int]) -> list[int]:
        calls.append(list(batch))
        return [x * 2 for x in batch]

    batcher = DynamicBatcher(double, max_batch_size=4, max_delay=10.0)
    start = time.monotonic()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(8)))
    assert time.monotonic() - start < 1.0
    assert results == [i * 2 for i in range(8)]
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7]]


async def test_an_idle_model_takes_the_requests_at_once() -> None:
    """No batch in flight: what arrived together goes together, without waiting max_delay."""
    sizes: list[int] = []

    async def echo(batch: Sequence[str]) -> list[str]:
        return list(batch)

    batcher = DynamicBatcher(echo, max_batch_size=100, max_delay=10.0, on_batch=sizes.append)
    start = time.monotonic()
    assert await asyncio.gather(batcher.submit("a"), batcher.submit("b")) == ["a", "b"]
    assert await batcher.submit("c") == "c"
    assert time.monotonic() - start < 1.0
    assert sizes == [2, 1]


async def test_requests_accumulate_while_a_batch_runs() -> None:
    """While the model runs, new requests wait and go as one batch when it finishes."""
    fn = FirstBatchHeld()
    calls, gate, running = fn.calls, fn.gate, fn.running
    batcher = DynamicBatcher(fn, max_batch_size=100, max_delay=10.0)
    first = asyncio.ensure_future(batcher.submit(0))
    await running.wait()
    rest = asyncio.gather(*(batcher.submit(i) for i in (1, 2, 3)))
    await asyncio.sleep(0.05)
    assert calls == [[0]]  # the three wait for the running batch
    start = time.monotonic()
    gate.set()
    assert await first == 0
    assert await rest == [1, 2, 3]
    assert time.monotonic() - start < 1.0  # sent when the batch finished, not after 10 s
    assert calls == [[0], [1, 2, 3]]


async def test_waiting_is_bounded_by_max_delay_even_while_the_model_runs() -> None:
    fn = FirstBatchHeld()
    started, gate, running = fn.started, fn.gate, fn.running
    batcher = DynamicBatcher(fn, max_batch_size=100, max_delay=0.02)
    first = asyncio.ensure_future(batcher.submit("slow"))
    await running.wait()
    submitted = time.monotonic()
    assert await batcher.submit("next") == "next"  # the first batch is still running
    assert 0.015 <= started[1] - submitted < 0.5
    gate.set()
    assert await first == "slow"


async def test_a_full_batch_goes_while_another_runs() -> None:
    fn = FirstBatchHeld()
    calls, gate, running = fn.calls, fn.gate, fn.running
    batcher = DynamicBatcher(fn, max_batch_size=2, max_delay=10.0)
    first = asyncio.ensure_future(batcher.submit(0))
    await running.wait()
    assert await asyncio.gather(batcher.submit(1), batcher.submit(2)) == [1, 2]
    assert calls == [[0], [1, 2]]
    gate.set()
    assert await first == 0


async def test_failing_batch_fails_only_its_callers() -> None:
    async def fn(batch: Sequence[int]) -> list[int]:
        if 13 in batch:
            raise ValueError("unlucky")
        return list(batch)

    batcher = DynamicBatcher(fn, max_batch_size=2, max_delay=0.001)
    bad = asyncio.gather(batcher.submit(13), batcher.submit(1), return_exceptions=True)
    results = await bad
    assert all(isinstance(r, ValueError) for r in results)
    assert await batcher.submit(5) == 5


async def test_an_exception_in_place_of_a_result_fails_that_caller_only() -> None:
    async def reciprocal(batch: Sequence[int]) -> list[float | Exception]:
        return [ValueError(f"item {x}: zero") if x == 0 else 1 / x for x in batch]

    batcher = DynamicBatcher(reciprocal, max_batch_size=3, max_delay=10.0)
    results = await asyncio.gather(*(batcher.submit(x) for x in (2, 0, 4)), return_exceptions=True)
    assert results[0] == 0.5
    assert isinstance(results[1], ValueError)
    assert str(results[1]) == "item 0: zero"
    assert results[2] == 0.25


async def test_wrong_result_count_is_an_error() -> None:
    async def fn(batch: Sequence[int]) -> list[int]:
        return []

    batcher = DynamicBatcher(fn, max_batch_size=1, max_delay=0.0)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await batcher.submit(1)


async def test_close_flushes_waiting_items() -> None:
    async def fn(batch: Sequence[int]) -> list[int]:
        return list(batch)

    batcher = DynamicBatcher(fn, max_batch_size=10, max_delay=60.0)
    pending = asyncio.ensure_future(batcher.submit(3))
    await asyncio.sleep(0)
    await batcher.close()
    assert await pending == 3


def test_bounds_are_validated() -> None:
    async def fn(batch: Sequence[int]) -> list[int]:
        return list(batch)

    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(fn, max_batch_size=0, max_delay=0.0)
    with pytest.raises(ValueError, match="max_delay"):
        DynamicBatcher(fn, max_batch_size=1, max_delay=-1.0)


async def test_threaded_batcher_routes_results_and_isolates_errors() -> None:
    """The synchronous batch function runs in the executor's thread, not the loop's."""
    threads: set[str] = set()

    def reciprocal(batch: Sequence[int]) -> list[float | Exception]:
        threads.add(threading.current_thread().name)
        return [ValueError(f"item {x}: zero") if x == 0 else 1 / x for x in batch]

    def fails(batch: Sequence[int]) -> list[float]:
        raise RuntimeError("the session broke")

    with ThreadPoolExecutor(1, thread_name_prefix="batch") as pool:
        batcher = ThreadedBatcher(reciprocal, pool, max_batch_size=8, max_delay=10.0)
        results = await asyncio.gather(
            *(batcher.submit(x) for x in (2, 0, 4)), return_exceptions=True
        )
        assert results[0] == 0.5
        assert results[2] == 0.25
        assert isinstance(results[1], ValueError)
        assert threads
        assert all(name.startswith("batch") for name in threads)
        await batcher.close()

        broken = ThreadedBatcher(fails, pool, max_batch_size=8, max_delay=10.0)
        outcome = await asyncio.gather(broken.submit(1), broken.submit(2), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in outcome)


async def test_threaded_batcher_gathers_the_next_batch_while_one_runs() -> None:
    sizes: list[int] = []
    release = threading.Event()

    def fn(batch: Sequence[int]) -> list[int]:
        release.wait(5.0)
        return list(batch)

    with ThreadPoolExecutor(1) as pool:
        batcher = ThreadedBatcher(
            fn, pool, max_batch_size=32, max_delay=10.0, on_batch=sizes.append
        )
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)
        second = asyncio.gather(*(batcher.submit(i) for i in range(1, 4)))  # queued behind
        await asyncio.sleep(0.01)
        third = asyncio.gather(*(batcher.submit(i) for i in range(4, 9)))  # accumulate
        await asyncio.sleep(0.05)
        assert sizes == [1, 3]
        release.set()
        assert await first == 0
        assert await second == [1, 2, 3]
        assert await third == [4, 5, 6, 7, 8]
        assert sizes == [1, 3, 5]
        await batcher.close()
