"""The bandit model and its snapshots (pure parts), with the real native sampler."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlkube.native import BetaSampler
from mlkube.serving.bandit import BanditModel, BanditQuery, parse_query, rank
from mlkube.serving.config import load_config
from mlkube.serving.model import settings_from
from mlkube.serving.protocol import ClientError, InferenceRequest, Tensor
from mlkube.serving.snapshot import build_snapshot, extend_snapshot, lookup_rows
from mlkube.serving.store import MemoryStore, SegmentCounts, counts_from_hashes


def counts(items: list[str], s: list[float], f: list[float]) -> SegmentCounts:
    return SegmentCounts(items, np.array(s, dtype=float), np.array(f, dtype=float))


def test_rank_orders_by_score_and_cuts_at_top_k() -> None:
    scores = np.array([0.2, 0.9, 0.5, 0.7, 0.1])
    assert rank(scores, 5).tolist() == [1, 3, 2, 0, 4]
    assert rank(scores, 2).tolist() == [1, 3]
    assert rank(scores, 1).tolist() == [1]
    assert rank(np.array([]), 0).tolist() == []


def test_rank_top_k_is_the_head_of_the_full_ranking() -> None:
    """The partial sort returns exactly what a full descending sort would, for every k."""
    rng = np.random.default_rng(11)
    for n in (2, 3, 17, 400):
        scores = rng.random(n)
        full = np.argsort(-scores, kind="stable").tolist()
        for k in range(1, n + 1):
            assert rank(scores, k).tolist() == full[:k], (n, k)


def test_snapshot_maps_unknown_items_to_the_prior_row() -> None:
    snap = build_snapshot(counts(["a", "b"], [3, 0], [1, 5]), 1.0, 2.0, read_at=10.0)
    rows = lookup_rows(snap, ["b", "zzz", "a"])
    assert rows.tolist() == [1, -1, 0]
    assert snap.alpha[rows].tolist() == [1.0, 1.0, 4.0]
    assert snap.beta[rows].tolist() == [7.0, 2.0, 3.0]


def test_rebuild_keeps_seen_items_and_extend_adds_new_ones() -> None:
    snap = build_snapshot(counts(["a"], [1], [0]), 1.0, 1.0, 0.0)
    snap = extend_snapshot(snap, counts(["new", "a"], [4, 100], [0, 0]), 1.0, 1.0, max_items=10)
    assert set(snap.items) == {"a", "new"}
    assert snap.alpha[snap.row("a")] == 2.0  # extend never overwrites known items
    assert snap.alpha[snap.row("new")] == 5.0
    assert snap.alpha[-1] == 1.0
    rebuilt = build_snapshot(counts(["a"], [9], [1]), 1.0, 1.0, 5.0, previous=snap)
    assert set(rebuilt.items) == {"a", "new"}
    assert rebuilt.alpha[rebuilt.row("a")] == 10.0
    assert rebuilt.alpha[rebuilt.row("new")] == 1.0
    assert rebuilt.read_at == 5.0
    capped = extend_snapshot(snap, counts(["x", "y"], [0, 0], [0, 0]), 1.0, 1.0, max_items=3)
    assert len(capped) == 3


def test_counts_from_redis_hashes_align_by_item() -> None:
    c = counts_from_hashes({b"a": b"1.5", b"b": b"2"}, {b"b": b"4", b"a": b"0.5", b"c": b"1"})
    got = dict(
        zip(c.items, zip(c.successes.tolist(), c.failures.tolist(), strict=True), strict=True)
    )
    assert got == {"a": (1.5, 0.5), "b": (2.0, 4.0), "c": (0.0, 1.0)}
    assert counts_from_hashes({}, {}).items == []
    flat = counts_from_hashes([b"a", b"1", b"b", b"2"], [b"b", b"3", b"a", b"4"], "7")
    assert flat.items == ["a", "b"]
    assert flat.failures.tolist() == [4.0, 3.0]
    assert flat.version == "7"


async def test_unchanged_segments_are_not_read_again() -> None:
    store = MemoryStore()
    await store.add_feedback("default", ["a"], np.array([1.0]), np.array([0.0]), None)
    first = await store.read_segments(["default", "other"])
    assert first["default"] is not None
    assert first["default"].version == "1"
    assert first["other"] is not None
    assert first["other"].version == "0"
    assert await store.read_segments(["default", "other"], {"default": "1", "other": "0"}) == {
        "default": None,
        "other": None,
    }
    model = await _bandit(store)
    try:
        before = model.cache.get("default")
        assert before is not None
        await model.cache.refresh_all()
        after = model.cache.get("default")
        assert after is not None
        assert after.table is before.table  # kept, not rebuilt
        assert after.read_at > before.read_at  # but known to be current
        await store.add_feedback("default", ["a"], np.array([1.0]), np.array([0.0]), None)
        await model.cache.refresh_all()
        latest = model.cache.get("default")
        assert latest is not None
        assert latest.alpha[latest.row("a")] == 3.0
    finally:
        await model.close()


def _req(**inputs: Tensor) -> InferenceRequest:
    return InferenceRequest(inputs, {}, None, {k: f"inputs[{i}]" for i, k in enumerate(inputs)})


def test_parse_query_defaults_and_limits() -> None:
    q = parse_query(_req(items=Tensor("items", "BYTES", (2,), ["a", "b"])), "default", 10, 8)
    assert q == BanditQuery(["a", "b"], "default", 2)
    req = _req(
        items=Tensor("items", "BYTES", (1, 2), ["a", "b"]),
        segment=Tensor("segment", "BYTES", (1,), ["eu"]),
    )
    assert parse_query(req, "default", 10, 8).segment == "eu"
    with pytest.raises(ClientError) as info:
        parse_query(_req(items=Tensor("items", "BYTES", (3,), ["a", "b", "c"])), "d", 2, 8)
    assert info.value.status == 422
    with pytest.raises(ClientError, match="segment must be BYTES"):
        parse_query(
            _req(
                items=Tensor("items", "BYTES", (1,), ["a"]),
                segment=Tensor("segment", "INT64", (1,), [3]),
            ),
            "d",
            10,
            8,
        )


async def _bandit(store: MemoryStore, **bandit: Any) -> BanditModel:
    cfg = load_config({"bandit": {"seed": 1, **bandit}}, {})
    model = BanditModel(settings_from(cfg), cfg, store, BetaSampler(1))
    await model.load()
    return model


async def test_thompson_sampling_follows_the_posterior() -> None:
    """Scores are Beta draws: their mean matches the posterior mean of each item."""
    store = MemoryStore()
    await store.add_feedback(
        "default", ["hot", "cold"], np.array([80.0, 5.0]), np.array([20.0, 95.0]), None
    )
    model = await _bandit(store)
    try:
        items = ["hot", "cold", "unknown"] * 2000
        (resp,) = await model.predict(
            [model.prepare(_req(items=Tensor("items", "BYTES", (6000,), items)))]
        )
        scores = np.asarray(resp.outputs[0].data).reshape(-1, 3)
        means = scores.mean(axis=0)
        expected = [81 / 102, 6 / 102, 0.5]  # Beta(1 + s, 1 + f) means; unknown = prior
        assert np.allclose(means, expected, atol=0.02)
        assert resp.degraded is None
    finally:
        await model.close()


async def test_prior_is_configurable_and_batches_score_each_request() -> None:
    model = await _bandit(MemoryStore(), prior_alpha=9.0, prior_beta=1.0)
    try:
        q1 = model.prepare(_req(items=Tensor("items", "BYTES", (500,), ["x"] * 500)))
        q2 = model.prepare(_req(items=Tensor("items", "BYTES", (3,), ["p", "q", "r"])))
        r1, r2 = await model.predict([q1, q2])
        assert np.isclose(np.mean(r1.outputs[0].data), 0.9, atol=0.02)
        assert r2.outputs[0].shape == (3,)
        assert sorted(r2.outputs[1].data) == ["p", "q", "r"]
    finally:
        await model.close()


async def test_first_sight_of_new_items_reads_them_in_the_background() -> None:
    store = MemoryStore()
    model = await _bandit(store)
    try:
        await store.add_feedback("default", ["late"], np.array([30.0]), np.array([0.0]), None)
        q = model.prepare(_req(items=Tensor("items", "BYTES", (1,), ["late"])))
        await model.predict([q])  # unknown to the snapshot: prior now, lookup scheduled
        for _ in range(100):
            snap = model.cache.get("default")
            if snap is not None and "late" in snap:
                break
            import asyncio

            await asyncio.sleep(0.01)
        snap = model.cache.get("default")
        assert snap is not None
        assert snap.alpha[snap.row("late")] == 31.0
    finally:
        await model.close()


class _SwitchableStore(MemoryStore):
    """A MemoryStore whose reads fail while ``down`` is set (like Redis refusing)."""

    down = False

    async def read_segments(self, names: Any, known: Any = None) -> Any:
        if self.down:
            raise ConnectionError("connection refused")
        return await super().read_segments(names, known)

    async def read_items(self, segment: str, items: Any) -> Any:
        if self.down:
            raise ConnectionError("connection refused")
        return await super().read_items(segment, items)


async def _until(predicate: Any, seconds: float = 5.0) -> None:
    import asyncio

    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_recovery_is_logged_only_after_a_read_that_worked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refresh loop woken with nothing to read must not claim the store is back."""
    import logging

    caplog.set_level(logging.INFO, logger="mlkube.serving")
    store = _SwitchableStore()
    await store.add_feedback("default", ["a"], np.array([1.0]), np.array([0.0]), None)
    cfg = load_config(
        {
            "bandit": {"seed": 1},
            "feature_store": {"refresh_interval": 30, "max_staleness": 60},
        },
        {},
    )
    model = BanditModel(settings_from(cfg), cfg, store, BetaSampler(1))
    await model.load()
    messages = lambda: [r.getMessage() for r in caplog.records]  # noqa: E731
    try:
        store.down = True
        model.cache.request_refresh()
        await _until(lambda: any("feature store unavailable" in m for m in messages()))
        # Woken for an id the snapshot already knows: nothing to read, so nothing learned.
        model.cache.note_missing("default", ["a"])
        await _until(lambda: not model.cache._wake.is_set())
        import asyncio

        await asyncio.sleep(0.05)
        assert not any("reachable again" in m for m in messages())
        store.down = False
        await asyncio.sleep(cfg.feature_store.circuit_reset_timeout + 0.05)
        model.cache.request_refresh()
        await _until(lambda: any("reachable again" in m for m in messages()))
    finally:
        await model.close()
