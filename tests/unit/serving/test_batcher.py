"""The dynamic batcher: size and delay bounds, result routing, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from mlkube.serving.batcher import DynamicBatcher


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


async def test_partial_batch_waits_at_most_max_delay() -> None:
    sizes: list[int] = []

    async def echo(batch: Sequence[str]) -> list[str]:
        return list(batch)

    batcher = DynamicBatcher(echo, max_batch_size=100, max_delay=0.02, on_batch=sizes.append)
    start = time.monotonic()
    assert await asyncio.gather(batcher.submit("a"), batcher.submit("b")) == ["a", "b"]
    assert 0.015 <= time.monotonic() - start < 0.5
    assert sizes == [2]


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
