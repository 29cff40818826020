"""Feature stores: where the bandit's per-item counts live.

Two implementations behind one interface:

* :class:`MemoryStore` keeps the counts in this process (the embedded default; one worker's
  counts are not seen by another, so use one worker or Redis when that matters);
* :class:`RedisStore` keeps them in Redis, the production store shared by every pod.

Redis key layout (``P`` = ``feature_store.key_prefix``, ``M`` = model name, ``S`` = segment):

* ``P:M:seg:S:s`` hash, field = item id, value = sum of rewards ("successes", a float);
* ``P:M:seg:S:f`` hash, field = item id, value = sum of ``1 - reward`` ("failures");
* ``P:M:seg:S:v`` integer, incremented by every feedback write to the segment (its version);
* ``P:M:idem:K`` string with a TTL: the idempotency key ``K`` of an applied feedback request.

An item's posterior is ``Beta(prior_alpha + s, prior_beta + f)``. A refresh is one round trip:
a read-only Lua script returns, per segment, the version and -- only when it differs from the
version the worker already holds -- both hashes (``HGETALL``), atomically, so ``s`` and ``f``
are consistent and an unchanged segment costs Redis one ``GET`` instead of a full read.
Feedback is one Lua script that checks-and-sets the idempotency key and applies every
``HINCRBYFLOAT`` plus the version ``INCR`` atomically, so concurrent writers from many pods
never lose an update and a retried request counts once.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from mlkube.serving.circuit import Breaker

F64 = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True, slots=True)
class SegmentCounts:
    """Counts of the items of one segment, aligned by position."""

    items: list[str]
    successes: F64
    failures: F64
    # Store-defined version of the segment: equal versions mean equal counts.
    version: str = ""

    @staticmethod
    def empty(version: str = "") -> SegmentCounts:
        return SegmentCounts([], np.zeros(0), np.zeros(0), version)


class StoreUnavailable(Exception):
    """The store cannot be reached now; the client should retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FeatureStore(ABC):
    """Counts per (segment, item), read in bulk and incremented atomically."""

    # True when a full read is cheap enough to do right after every write (in-process).
    cheap_reads: bool = False

    async def connect(self) -> None:
        """Open connections (called once per worker, after fork)."""
        return None

    @abstractmethod
    async def read_segments(
        self, segments: Sequence[str], known: Mapping[str, str] | None = None
    ) -> dict[str, SegmentCounts | None]:
        """Every item's counts for each segment, in one round trip.

        ``None`` for a segment whose version still equals ``known[segment]`` (unchanged).
        """

    @abstractmethod
    async def read_items(self, segment: str, items: Sequence[str]) -> SegmentCounts:
        """Counts of just these items (zeros for items without feedback)."""

    @abstractmethod
    async def add_feedback(
        self,
        segment: str,
        items: Sequence[str],
        successes: F64,
        failures: F64,
        idempotency_key: str | None,
    ) -> bool:
        """Add the counts atomically; False when the key was already applied (no change)."""

    async def close(self) -> None:
        """Close connections."""
        return None


class _MemorySegment:
    __slots__ = ("failures", "index", "n", "successes", "version")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.successes = np.zeros(64)
        self.failures = np.zeros(64)
        self.n = 0
        self.version = 0

    def rows(self, items: Sequence[str]) -> np.ndarray[Any, np.dtype[np.intp]]:
        """Row of each item, appending rows for new ones."""
        index = self.index
        for item in items:
            if item not in index:
                index[item] = len(index)
        self.n = len(index)
        if self.n > len(self.successes):
            size = max(self.n, 2 * len(self.successes))
            self.successes = np.resize(self.successes, size)
            self.failures = np.resize(self.failures, size)
            self.successes[self.n :] = 0.0
            self.failures[self.n :] = 0.0
        return np.fromiter(map(index.__getitem__, items), np.intp, len(items))


class MemoryStore(FeatureStore):
    """In-process counts; writes are synchronous, so they are durable once applied."""

    cheap_reads = True

    def __init__(self, idempotency_ttl: float = 86_400.0) -> None:
        self._segments: dict[str, _MemorySegment] = {}
        self._keys: dict[str, float] = {}
        self._ttl = idempotency_ttl

    async def read_segments(
        self, segments: Sequence[str], known: Mapping[str, str] | None = None
    ) -> dict[str, SegmentCounts | None]:
        out: dict[str, SegmentCounts | None] = {}
        for name in segments:
            seg = self._segments.get(name)
            version = str(seg.version) if seg is not None else "0"
            if known is not None and known.get(name) == version:
                out[name] = None
            elif seg is None:
                out[name] = SegmentCounts.empty(version)
            else:
                out[name] = SegmentCounts(
                    list(seg.index),
                    seg.successes[: seg.n].copy(),
                    seg.failures[: seg.n].copy(),
                    version,
                )
        return out

    async def read_items(self, segment: str, items: Sequence[str]) -> SegmentCounts:
        seg = self._segments.get(segment)
        if seg is None:
            return SegmentCounts(list(items), np.zeros(len(items)), np.zeros(len(items)))
        rows = np.fromiter(map(seg.index.get, items, repeat(-1)), np.intp, len(items))
        known = rows >= 0
        s = np.where(known, seg.successes[rows], 0.0)
        f = np.where(known, seg.failures[rows], 0.0)
        return SegmentCounts(list(items), s, f)

    async def add_feedback(
        self,
        segment: str,
        items: Sequence[str],
        successes: F64,
        failures: F64,
        idempotency_key: str | None,
    ) -> bool:
        now = time.monotonic()
        if idempotency_key is not None:
            expires = self._keys.get(idempotency_key)
            if expires is not None and expires > now:
                return False
            if len(self._keys) > 100_000:
                self._keys = {k: t for k, t in self._keys.items() if t > now}
            self._keys[idempotency_key] = now + self._ttl
        seg = self._segments.get(segment)
        if seg is None:
            seg = self._segments[segment] = _MemorySegment()
        rows = seg.rows(items)
        np.add.at(seg.successes, rows, successes)
        np.add.at(seg.failures, rows, failures)
        seg.version += 1
        return True


# KEYS[1] successes hash, KEYS[2] failures hash, KEYS[3] version, KEYS[4] (optional)
# idempotency key. ARGV[1] key TTL in seconds, then (item, successes, failures) triples.
FEEDBACK_SCRIPT = """
if #KEYS == 4 then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[1]) then
    return 0
  end
end
for i = 2, #ARGV, 3 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i], ARGV[i + 2])
end
redis.call('INCR', KEYS[3])
return 1
"""

# KEYS: (version, successes, failures) per segment; ARGV: the version the caller holds per
# segment ('' for none). Returns per segment {version} when unchanged, else
# {version, HGETALL successes, HGETALL failures} (flat field/value arrays).
READ_SCRIPT = """
local out = {}
for i = 1, #ARGV do
  local version = redis.call('GET', KEYS[3 * i - 2]) or '0'
  if version == ARGV[i] then
    out[i] = {version}
  else
    out[i] = {version, redis.call('HGETALL', KEYS[3 * i - 1]), redis.call('HGETALL', KEYS[3 * i])}
  end
end
return out
"""


def counts_from_hashes(
    successes: dict[bytes, bytes] | list[bytes],
    failures: dict[bytes, bytes] | list[bytes],
    version: str = "",
) -> SegmentCounts:
    """Align the two hashes of a segment into arrays (pure; C-level passes only).

    Accepts dicts or HGETALL's flat ``[field, value, ...]`` arrays. mlkube's script always
    writes both hashes, but a hash edited by hand may hold an item in only one of them: such
    items get 0 for the missing count.
    """
    if isinstance(successes, list):
        successes = dict(zip(successes[0::2], successes[1::2], strict=True))
    if isinstance(failures, list):
        failures = dict(zip(failures[0::2], failures[1::2], strict=True))
    keys = list(successes)
    extra = failures.keys() - successes.keys()
    if extra:
        keys.extend(sorted(extra))
    if not keys:
        return SegmentCounts.empty(version)
    s = np.array(list(map(successes.get, keys, repeat(b"0"))), dtype=np.float64)
    f = np.array(list(map(failures.get, keys, repeat(b"0"))), dtype=np.float64)
    return SegmentCounts(list(map(bytes.decode, keys)), s, f, version)


class RedisStore(FeatureStore):
    """Counts in Redis (redis-py asyncio, hiredis parser); see the module doc for keys."""

    def __init__(
        self,
        url: str,
        prefix: str,
        model: str,
        *,
        timeout: float = 0.5,
        idempotency_ttl: int = 86_400,
    ) -> None:
        self._url = url
        self._base = f"{prefix}:{model}"
        self._timeout = timeout
        self._ttl = idempotency_ttl
        self._client: Any = None
        self._script: Any = None
        self._read_script: Any = None

    def keys(self, segment: str) -> tuple[str, str]:
        return f"{self._base}:seg:{segment}:s", f"{self._base}:seg:{segment}:f"

    def version_key(self, segment: str) -> str:
        return f"{self._base}:seg:{segment}:v"

    def idempotency_key(self, key: str) -> str:
        return f"{self._base}:idem:{key}"

    async def connect(self) -> None:
        import redis.asyncio as aioredis

        # A blocking pool: under a burst of feedback, callers queue for one of the connections
        # instead of failing with "too many connections" (which would trip the breaker).
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            decode_responses=False,
            retry_on_timeout=False,
            max_connections=32,
            timeout=max(2.0, 4 * self._timeout),
        )
        self._client = aioredis.Redis(connection_pool=pool)
        self._script = self._client.register_script(FEEDBACK_SCRIPT)
        self._read_script = self._client.register_script(READ_SCRIPT)

    def _require(self) -> Any:
        if self._client is None:
            raise RuntimeError("RedisStore.connect() was not awaited")
        return self._client

    async def read_segments(
        self, segments: Sequence[str], known: Mapping[str, str] | None = None
    ) -> dict[str, SegmentCounts | None]:
        self._require()
        if not segments:
            return {}
        keys: list[str] = []
        for segment in segments:
            keys.append(self.version_key(segment))
            keys.extend(self.keys(segment))
        held = [(known or {}).get(segment, "") for segment in segments]
        replies = await self._read_script(keys=keys, args=held)
        out: dict[str, SegmentCounts | None] = {}
        for segment, reply in zip(segments, replies, strict=True):
            version = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if len(reply) == 1:
                out[segment] = None
            else:
                out[segment] = counts_from_hashes(reply[1], reply[2], version)
        return out

    async def read_items(self, segment: str, items: Sequence[str]) -> SegmentCounts:
        client = self._require()
        if not items:
            return SegmentCounts.empty()
        s_key, f_key = self.keys(segment)
        async with client.pipeline(transaction=True) as pipe:
            pipe.hmget(s_key, list(items))
            pipe.hmget(f_key, list(items))
            s_raw, f_raw = await pipe.execute()
        s = np.array([b"0" if v is None else v for v in s_raw], dtype=np.float64)
        f = np.array([b"0" if v is None else v for v in f_raw], dtype=np.float64)
        return SegmentCounts(list(items), s, f)

    async def add_feedback(
        self,
        segment: str,
        items: Sequence[str],
        successes: F64,
        failures: F64,
        idempotency_key: str | None,
    ) -> bool:
        self._require()
        keys = [*self.keys(segment), self.version_key(segment)]
        if idempotency_key is not None:
            keys.append(self.idempotency_key(idempotency_key))
        args: list[Any] = [self._ttl]
        # repr() of a float round-trips exactly; HINCRBYFLOAT parses it as a long double.
        for item, s, f in zip(items, successes.tolist(), failures.tolist(), strict=True):
            args += (item, repr(s), repr(f))
        applied = await self._script(keys=keys, args=args)
        return bool(applied)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose(close_connection_pool=True)
            self._client = None


class GuardedStore:
    """A store behind the circuit breaker, with latency and error metrics per operation.

    Every failure of the store (connection refused, timeout, Redis error) becomes
    :class:`StoreUnavailable`; while the circuit is open calls fail at once without touching
    the network.
    """

    def __init__(
        self,
        store: FeatureStore,
        breaker: Breaker,
        observe: Any = None,
        on_state: Any = None,
    ) -> None:
        self.store = store
        self.breaker = breaker
        self._observe = observe
        self._on_state = on_state

    @property
    def cheap_reads(self) -> bool:
        return self.store.cheap_reads

    def _record(self, operation: str, seconds: float | None) -> None:
        if self._observe is not None:
            self._observe(operation, seconds)
        if self._on_state is not None:
            self._on_state(self.breaker.state)

    async def _call(self, operation: str, coro_fn: Any, *args: Any) -> Any:
        now = time.monotonic()
        if not self.breaker.admit(now):
            self._record(operation, None)
            raise StoreUnavailable(
                "feature store unavailable (circuit open)", self.breaker.retry_after(now)
            )
        start = time.perf_counter()
        try:
            result = await coro_fn(*args)
        except asyncio.CancelledError:
            # An abandoned call proves nothing; count it as a failure so that a cancelled
            # half-open probe cannot leave the circuit waiting for a probe forever.
            self.breaker.failure(time.monotonic())
            raise
        except Exception as exc:
            if not _is_store_failure(exc):
                self.breaker.success()  # the store answered; the request itself was bad
                raise
            self.breaker.failure(time.monotonic())
            self._record(operation, None)
            raise StoreUnavailable(
                f"feature store unavailable ({type(exc).__name__}: {exc})",
                self.breaker.retry_after(time.monotonic()),
            ) from exc
        self.breaker.success()
        self._record(operation, time.perf_counter() - start)
        return result

    async def read_segments(
        self, segments: Sequence[str], known: Mapping[str, str] | None = None
    ) -> dict[str, SegmentCounts | None]:
        result: dict[str, SegmentCounts | None] = await self._call(
            "read_segments", self.store.read_segments, segments, known
        )
        return result

    async def read_items(self, segment: str, items: Sequence[str]) -> SegmentCounts:
        result: SegmentCounts = await self._call(
            "read_items", self.store.read_items, segment, items
        )
        return result

    async def add_feedback(
        self,
        segment: str,
        items: Sequence[str],
        successes: F64,
        failures: F64,
        idempotency_key: str | None,
    ) -> bool:
        result: bool = await self._call(
            "add_feedback",
            self.store.add_feedback,
            segment,
            items,
            successes,
            failures,
            idempotency_key,
        )
        return result


def _is_store_failure(exc: BaseException) -> bool:
    """Connection-level trouble (retry later) as opposed to a programming error."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    try:
        import redis.exceptions as rexc
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, rexc.RedisError)


def build_store(kind: str, **kwargs: Any) -> FeatureStore:
    if kind == "memory":
        return MemoryStore(float(kwargs.get("idempotency_ttl", 86_400)))
    if kind == "redis":
        return RedisStore(
            kwargs["url"],
            kwargs["prefix"],
            kwargs["model"],
            timeout=kwargs.get("timeout", 0.5),
            idempotency_ttl=int(kwargs.get("idempotency_ttl", 86_400)),
        )
    raise ValueError(f"feature_store.kind: unknown store {kind!r}")
