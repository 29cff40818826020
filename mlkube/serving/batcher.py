"""Dynamic batching: gather concurrent calls into one batch call, bounded in size and delay.

Models whose cost per call is high and per item low (a GPU forward pass, a vectorised scorer)
answer a batch of N requests in far less than N times the time of one. The batcher adapts
the batch to the load instead of holding every request for a fixed delay:

- while fewer than ``max_concurrent`` batches are in flight (the model is idle), what is
  waiting goes at the end of the event loop's current pass: the requests that arrived
  together go together, and a lone request pays no delay;
- otherwise new requests accumulate, and they go as one batch as soon as a batch in flight
  finishes, when ``max_batch_size`` of them are waiting, or when the first of them has
  waited ``max_delay`` seconds (the upper bound of waiting), whichever comes first.

So a batch holds about the requests that arrive during one model call: one at low load, up
to ``max_batch_size`` under load. A failing batch call fails each caller of that batch (and
nothing else); a batch function that returns an exception in place of one item's result
fails that caller only.

:class:`ThreadedBatcher` runs a synchronous batch function in an executor (a model that
releases the GIL while it computes): the answers of a batch come back to the event loop in
one callback, and with two batches in flight the executor's thread goes from one batch to
the next without waiting for the loop.

Whether it pays depends on the model: see docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from concurrent.futures import Future as ThreadFuture
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Results = Sequence[R | Exception]


class Batcher(ABC, Generic[T, R]):
    """The queue and its flush rules; subclasses say how a batch runs (:meth:`_start`)."""

    def __init__(
        self,
        *,
        max_batch_size: int,
        max_delay: float,
        on_batch: Callable[[int], None] | None = None,
        max_concurrent: int = 1,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_delay < 0:
            raise ValueError("max_delay must be >= 0")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self.max_concurrent = max_concurrent
        self._on_batch = on_batch
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R]] = []
        # The flush that bounds the first waiting request's wait (max_delay), and the one
        # at the end of the loop's pass while the model is idle.
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._futures.append(future)
        if len(self._items) >= self.max_batch_size:
            self._flush()
        elif self._running < self.max_concurrent:
            if self._soon is None:
                self._soon = loop.call_soon(self._flush)
        elif self._timer is None:
            self._timer = loop.call_later(self.max_delay, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if not self._items:
            return
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        self._running += 1
        self._idle.clear()
        if self._on_batch is not None:
            self._on_batch(len(items))
        self._start(items, futures)

    @abstractmethod
    def _start(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        """Run one batch; it must end in :meth:`_finish`."""

    def _finish(
        self,
        count: int,
        futures: list[asyncio.Future[R]],
        outcome: Results[R] | Exception | None,
    ) -> None:
        """Hand each caller its result (None: the call was cancelled), then send what
        accumulated meanwhile."""
        self._running -= 1
        if outcome is not None and not isinstance(outcome, Exception) and len(outcome) != count:
            outcome = RuntimeError(
                f"batch function returned {len(outcome)} results for {count} items"
            )
        for i, future in enumerate(futures):
            if future.done():
                continue
            if outcome is None:
                future.cancel()
                continue
            result = outcome if isinstance(outcome, Exception) else outcome[i]
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._items and self._running < self.max_concurrent:
            self._flush()
        if not self._running:
            self._idle.set()

    async def close(self) -> None:
        """Flush what is waiting and wait for the batches in flight (graceful shutdown)."""
        self._flush()
        while self._running or self._items:
            self._flush()
            await self._idle.wait()


class DynamicBatcher(Batcher[T, R]):
    """A batcher whose batch function is a coroutine function, run as a task."""

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_batch_size: int,
        max_delay: float,
        on_batch: Callable[[int], None] | None = None,
        max_concurrent: int = 1,
    ) -> None:
        super().__init__(
            max_batch_size=max_batch_size,
            max_delay=max_delay,
            on_batch=on_batch,
            max_concurrent=max_concurrent,
        )
        self._fn = fn
        self._tasks: set[asyncio.Task[None]] = set()

    def _start(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(items, futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        try:
            results = await self._fn(items)
        except Exception as exc:
            self._finish(len(items), futures, exc)
            return
        except BaseException:
            self._finish(len(items), futures, None)
            raise
        self._finish(len(items), futures, results)


class ThreadedBatcher(Batcher[T, R]):
    """A batcher whose batch function is synchronous and runs in ``executor``."""

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R | Exception]],
        executor: Executor,
        *,
        max_batch_size: int,
        max_delay: float,
        on_batch: Callable[[int], None] | None = None,
        max_concurrent: int = 2,
    ) -> None:
        super().__init__(
            max_batch_size=max_batch_size,
            max_delay=max_delay,
            on_batch=on_batch,
            max_concurrent=max_concurrent,
        )
        self._sync_fn = fn
        self._executor = executor

    def _start(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            job = self._executor.submit(self._sync_fn, items)
        except RuntimeError as exc:  # the executor is shut down
            self._finish(len(items), futures, exc)
            return

        def done(job: ThreadFuture[Results[R]]) -> None:
            # In the executor's thread: one callback into the loop for the whole batch.
            loop.call_soon_threadsafe(self._done, job, len(items), futures)

        job.add_done_callback(done)

    def _done(
        self, job: ThreadFuture[Results[R]], count: int, futures: list[asyncio.Future[R]]
    ) -> None:
        if job.cancelled():
            self._finish(count, futures, None)
            return
        exc = job.exception()
        if exc is not None and not isinstance(exc, Exception):
            self._finish(count, futures, None)
            return
        self._finish(count, futures, exc if exc is not None else job.result())
