"""Dynamic batching: gather concurrent calls into one batch call, bounded in size and delay.

Models whose cost per call is high and per item low (a GPU forward pass, a vectorised scorer)
answer a batch of N requests in far less than N times the time of one. The batcher holds the
first request of a batch for at most ``max_delay`` seconds, or until ``max_batch_size``
requests are waiting, then makes one call and hands each caller its own result. A failing
batch call fails each caller of that batch (and nothing else); a batch function that returns
an exception in place of one item's result fails that caller only.

Whether it pays depends on the model: see docs/benchmarks.md for the bandit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class DynamicBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_batch_size: int,
        max_delay: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_delay < 0:
            raise ValueError("max_delay must be >= 0")
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self._on_batch = on_batch
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_delay, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._items:
            return
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        task = asyncio.get_running_loop().create_task(self._run(items, futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(items))
        try:
            results = await self._fn(items)
            if len(results) != len(items):
                raise RuntimeError(
                    f"batch function returned {len(results)} results for {len(items)} items"
                )
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Flush what is waiting and wait for running batches (graceful shutdown)."""
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
