"""Standing by: the same rule as kopf's peering, applied to the peering object's status."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mlkube.operator.peering import Standby, resource, standing_by

NOW = datetime.datetime(2025, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)


def peer(priority: Any = 0, ago: float = 5, lifetime: Any = 60) -> dict[str, Any]:
    seen = (NOW - datetime.timedelta(seconds=ago)).isoformat()
    return {"priority": priority, "lastseen": seen, "lifetime": lifetime}


def test_no_peers_means_active() -> None:
    assert not standing_by({}, "me", 0, NOW)


def test_a_live_peer_with_higher_or_equal_priority_pauses_us() -> None:
    assert standing_by({"other": peer(10)}, "me", 5, NOW)
    assert standing_by({"other": peer(5)}, "me", 5, NOW)


def test_a_live_peer_with_lower_priority_does_not() -> None:
    assert not standing_by({"other": peer(4)}, "me", 5, NOW)
    assert not standing_by({"a": peer(1), "b": peer(2)}, "me", 5, NOW)
    assert standing_by({"a": peer(1), "b": peer(7)}, "me", 5, NOW)


def test_a_missing_priority_counts_as_zero() -> None:
    info = peer()
    del info["priority"]
    assert standing_by({"other": info}, "me", 0, NOW)
    assert not standing_by({"other": info}, "me", 1, NOW)


def test_our_own_entry_is_ignored() -> None:
    assert not standing_by({"me": peer(100)}, "me", 0, NOW)


def test_an_expired_peer_is_ignored() -> None:
    assert not standing_by({"other": peer(10, ago=120, lifetime=60)}, "me", 0, NOW)
    # exactly at lastseen + lifetime it has expired
    assert not standing_by({"other": peer(10, ago=60, lifetime=60)}, "me", 0, NOW)
    assert standing_by({"other": peer(10, ago=59, lifetime=60)}, "me", 0, NOW)


def test_the_lifetime_defaults_to_sixty_seconds() -> None:
    fresh, old = peer(10, ago=59), peer(10, ago=61)
    del fresh["lifetime"], old["lifetime"]
    assert standing_by({"other": fresh}, "me", 0, NOW)
    assert not standing_by({"other": old}, "me", 0, NOW)


def test_a_naive_timestamp_is_utc() -> None:
    naive = (NOW - datetime.timedelta(seconds=30)).replace(tzinfo=None).isoformat()
    assert standing_by({"other": {"priority": 1, "lastseen": naive, "lifetime": 60}}, "me", 0, NOW)
    stale = (NOW - datetime.timedelta(seconds=90)).replace(tzinfo=None).isoformat()
    assert not standing_by(
        {"other": {"priority": 1, "lastseen": stale, "lifetime": 60}}, "me", 0, NOW
    )


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is ten hours off UTC."""
    monkeypatch.setenv("TZ", "Pacific/Honolulu")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_a_naive_timestamp_is_utc_whatever_the_local_time_zone() -> None:
    naive = (NOW - datetime.timedelta(seconds=30)).replace(tzinfo=None).isoformat()
    assert standing_by({"other": {"priority": 1, "lastseen": naive, "lifetime": 60}}, "me", 0, NOW)
    stale = (NOW - datetime.timedelta(seconds=90)).replace(tzinfo=None).isoformat()
    assert not standing_by(
        {"other": {"priority": 1, "lastseen": stale, "lifetime": 60}}, "me", 0, NOW
    )


def test_an_offset_timestamp_is_honoured() -> None:
    # 13:00:30+01:00 is 12:00:30 UTC: thirty seconds ahead of NOW, alive for 60 s
    info = {"priority": 1, "lastseen": "2025-03-01T12:59:30+01:00", "lifetime": 60}
    assert standing_by({"other": info}, "me", 0, NOW)


def test_malformed_entries_are_ignored() -> None:
    peers: dict[str, Any] = {
        "not-a-mapping": "garbage",
        "a-list": [1, 2],
        "none": None,
        "no-lastseen": {"priority": 100, "lifetime": 60},
        "bad-lastseen": {"priority": 100, "lastseen": "yesterday", "lifetime": 60},
        "bad-lifetime": {**peer(100), "lifetime": "forever"},
        "bad-priority": peer("high"),
        "null-priority": peer(None),
    }
    assert not standing_by(peers, "me", 0, NOW)
    assert standing_by({**peers, "good": peer(0)}, "me", 0, NOW)


def test_standby_follows_the_peering_object() -> None:
    s = Standby(own="me", priority=5, clock=lambda: NOW)
    assert not s.standing_by()
    s.update({"status": {"me": peer(5), "other": peer(9)}})
    assert s.standing_by()
    s.update({"status": {"other": peer(9, ago=600)}})  # the other replica died
    assert not s.standing_by()


def test_standby_update_with_nothing_or_garbage_is_active() -> None:
    s = Standby(own="me", priority=0, clock=lambda: NOW)
    s.update({"status": {"other": peer(9)}})
    assert s.standing_by()
    s.update(None)
    assert not s.standing_by()
    for body in ({}, {"status": None}, {"status": "garbage"}, {"status": [1, 2]}):
        s.update({"status": {"other": peer(9)}})
        s.update(body)
        assert not s.standing_by(), body


def test_standby_reads_its_clock_each_time() -> None:
    now = [NOW]
    s = Standby(own="me", priority=0, clock=lambda: now[0])
    s.update({"status": {"other": peer(1, ago=0, lifetime=30)}})
    assert s.standing_by()
    now[0] = NOW + datetime.timedelta(seconds=31)
    assert not s.standing_by()


def test_the_peering_resource_is_kopfs() -> None:
    assert resource(clusterwide=True) == ("kopf.dev", "v1", "clusterkopfpeerings")
    assert resource(clusterwide=False) == ("kopf.dev", "v1", "kopfpeerings")
