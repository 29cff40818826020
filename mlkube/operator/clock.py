"""The operator's one clock.

Every decision that depends on time (canary steps, analysis intervals, autoscaler
windows, a PyTorchJob's deadline and TTL) and every timestamp the operator writes
(conditions, Events) reads :func:`now`. Tests replace ``clock.now`` to move time instead
of waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


now: Callable[[], datetime] = utcnow
"""The current time (timezone-aware UTC); tests assign a fake."""


def iso(moment: datetime) -> str:
    """Pure: ``moment`` as Kubernetes writes timestamps (seconds, ``Z``)."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now_iso() -> str:
    return iso(now())
