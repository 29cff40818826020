"""RedisStore against a real redis-server: key layout, bulk reads, atomic idempotent writes."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from mlkube.serving.store import RedisStore

pytestmark = pytest.mark.slow


@pytest.fixture
async def store(redis_server: Any) -> Any:
    s = RedisStore(redis_server.url, "mlkube", "recs", timeout=2.0)
    await s.connect()
    yield s
    await s.close()


async def test_documented_key_layout(store: RedisStore, redis_server: Any) -> None:
    applied = await store.add_feedback(
        "eu", ["a", "b", "a"], np.array([1.0, 0.25, 0.5]), np.array([0.0, 0.75, 0.5]), "k1"
    )
    assert applied
    r = redis_server.client()
    assert r.hgetall("mlkube:recs:seg:eu:s") == {b"a": b"1.5", b"b": b"0.25"}
    assert r.hgetall("mlkube:recs:seg:eu:f") == {b"a": b"0.5", b"b": b"0.75"}
    assert r.get("mlkube:recs:idem:k1") == b"1"
    assert r.get("mlkube:recs:seg:eu:v") == b"1"
    assert 0 < r.ttl("mlkube:recs:idem:k1") <= 86_400


async def test_bulk_reads(store: RedisStore) -> None:
    items = [f"item-{i}" for i in range(1000)]
    s = np.arange(1000, dtype=float)
    await store.add_feedback("default", items, s, 2 * s, None)
    counts = await store.read_segments(["default", "empty"])
    default, empty = counts["default"], counts["empty"]
    assert default is not None
    assert empty is not None
    got = dict(zip(default.items, default.successes.tolist(), strict=True))
    assert got == {f"item-{i}": float(i) for i in range(1000)}
    assert np.array_equal(default.failures, 2 * default.successes)
    assert empty.items == []
    assert (default.version, empty.version) == ("1", "0")
    # Unchanged since the versions the caller holds: no hash is sent back.
    again = await store.read_segments(["default", "empty"], {"default": "1", "empty": "0"})
    assert again == {"default": None, "empty": None}
    await store.add_feedback("default", ["item-1"], np.array([1.0]), np.array([0.0]), None)
    changed = (await store.read_segments(["default"], {"default": "1"}))["default"]
    assert changed is not None
    assert changed.version == "2"
    assert changed.successes[changed.items.index("item-1")] == 2.0
    some = await store.read_items("default", ["item-7", "nope"])
    assert some.successes.tolist() == [7.0, 0.0]
    assert some.failures.tolist() == [14.0, 0.0]


async def test_exact_counts_under_concurrent_writers_and_retries(
    store: RedisStore, redis_server: Any
) -> None:
    """200 writers on 4 connections pools; every request sent twice (a retry) counts once."""
    stores = [RedisStore(redis_server.url, "mlkube", "recs", timeout=5.0) for _ in range(4)]
    for s in stores:
        await s.connect()

    async def writer(n: int) -> list[bool]:
        s = stores[n % len(stores)]
        rewards = np.array([1.0, 0.5, 0.25])
        items = ["x", "y", "x"]
        key = f"req-{n}"
        first, retry = await asyncio.gather(
            s.add_feedback("default", items, rewards, 1 - rewards, key),
            s.add_feedback("default", items, rewards, 1 - rewards, key),
        )
        return [first, retry]

    results = await asyncio.gather(*(writer(n) for n in range(200)))
    for s in stores:
        await s.close()
    assert all(sorted(r) == [False, True] for r in results)  # exactly one of each pair applied
    counts = (await store.read_segments(["default"]))["default"]
    assert counts is not None
    got = {
        item: (s, f)
        for item, s, f in zip(
            counts.items, counts.successes.tolist(), counts.failures.tolist(), strict=True
        )
    }
    assert got == {"x": (200 * 1.25, 200 * 0.75), "y": (200 * 0.5, 200 * 0.5)}
