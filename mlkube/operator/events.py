"""Kubernetes Events: the one type both controllers decide, and how they are recorded.

The pure code (status transitions, rollout decisions, the PyTorchJob planner) returns
:class:`Event` values; :func:`record` writes them through the operator's client as
``v1`` Events on the object, each also logged. An Event that cannot be written is logged
and dropped: Events are a courtesy to the person reading ``kubectl describe``, and a
reconcile must not fail or repeat its writes because of one.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlkube.operator import clock

if TYPE_CHECKING:
    from mlkube.operator.kube import KubeAPI

JsonDict = dict[str, Any]
COMPONENT = "mlkube-operator"
NAME_PREFIX = "mlkube-"
log = logging.getLogger("mlkube.operator.events")


@dataclass(frozen=True)
class Event:
    """One Kubernetes Event to record on an object."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def event_body(involved: JsonDict, event: Event, now: str, instance: str) -> JsonDict:
    """Pure: the ``v1`` Event that records ``event`` on the object ``involved``."""
    meta = involved.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": NAME_PREFIX, "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event.type,
        "reason": event.reason,
        # kube-apiserver refuses messages over 1 KiB
        "message": event.message if len(event.message) <= 1024 else event.message[:1021] + "...",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


async def record(
    api: KubeAPI,
    involved: JsonDict,
    events: Sequence[Event],
    logger: logging.Logger | logging.LoggerAdapter[Any] = log,
) -> None:
    """Log each Event and write it on ``involved`` (failures are logged, never raised)."""
    if not events:
        return
    meta = involved.get("metadata") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    for event in events:
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        logger.log(level, "%s: %s", where, event.message)
        body = event_body(involved, event, clock.now_iso(), socket.gethostname())
        try:
            await api.create("Event", meta.get("namespace"), body)
        except Exception as exc:
            log.warning("%s: Event %s not recorded: %s", where, event.reason, exc)
