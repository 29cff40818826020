"""Standing by with kopf: the work queue pauses exactly when kopf's peering pauses us.

With several operator replicas (``MLKUBE_PEERING``), kopf keeps a peering object whose
``status`` lists every instance (its ``POD_ID``) with a priority, a lifetime and when it
was last seen; an instance pauses while another live instance has a priority higher than
or equal to its own. kopf then stops delivering watch events, but the work queue also
holds periodic passes (drift checks, canary ticks) that must stop too. So the operator
watches the same peering object and applies the same rule (:func:`standing_by`) before
each pass. When kopf resumes, it lists every object again and the queue fills from that.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]


def resource(clusterwide: bool) -> tuple[str, str, str]:
    """(group, version, plural) of the peering object kopf uses."""
    return ("kopf.dev", "v1", "clusterkopfpeerings" if clusterwide else "kopfpeerings")


def _alive(info: Mapping[str, Any], now: datetime.datetime) -> bool:
    try:
        seen = datetime.datetime.fromisoformat(str(info["lastseen"]))
        lifetime = float(info.get("lifetime", 60))
    except (KeyError, TypeError, ValueError):
        return False
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=datetime.UTC)
    return seen + datetime.timedelta(seconds=lifetime) > now


def standing_by(peers: Mapping[str, Any], own: str, priority: int, now: datetime.datetime) -> bool:
    """Pure: whether another live peer has a priority >= ``priority`` (kopf's rule)."""
    for identity, info in peers.items():
        if identity == own or not isinstance(info, Mapping) or not _alive(info, now):
            continue
        try:
            if int(info.get("priority", 0)) >= priority:
                return True
        except (TypeError, ValueError):
            continue
    return False


@dataclass
class Standby:
    """This instance's view of the peering object."""

    own: str
    priority: int
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)
    _peers: JsonDict = field(default_factory=dict)

    def update(self, body: JsonDict | None) -> None:
        status = (body or {}).get("status")
        self._peers = dict(status) if isinstance(status, Mapping) else {}

    def standing_by(self) -> bool:
        return standing_by(self._peers, self.own, self.priority, self.clock())
