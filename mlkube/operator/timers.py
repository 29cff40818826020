"""kopf timers that put no finalizer on the objects they tick.

Why: kopf gives every ``@kopf.timer`` ``requires_finalizer=True`` (kopf/on.py, with no
argument to change it; kopf issues #833, #1074), so each ModelService and PyTorchJob
would carry a finalizer. mlkube needs none: every child has a controller owner reference
and the garbage collector removes it. A finalizer would only make ``kubectl delete msvc``
hang for ever once the operator is uninstalled or stopped (DESIGN.md: a finalizer only
where owner references cannot clean up).

Why kopf wants one: without it an object can vanish in one step (no ``deletionTimestamp``
first), and kopf, which stops an object's timers when it sees the deletion *start*, would
leave the timer task running. :func:`without_finalizers` closes that gap with public
kopf API: a watching handler notes the uid of every object whose ``DELETED`` event
arrives, and each timer's ``when`` filter answers False for such uids. kopf handles
watching handlers before it re-matches the spawned timers of the same event, so the
timer is stopped on that very event (as a filter mismatch).

What relies on kopf internals, checked for kopf 1.45 (pinned ``>=1.45,<1.46`` in
pyproject.toml): the registry's handler list ``registry._spawning._handlers`` and the
frozen handler dataclasses (``TimerHandler.requires_finalizer``, ``.when``,
``WatchingHandler.selector``), which are replaced with :func:`dataclasses.replace`, and
the selector's fields.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import kopf
from kopf._cogs.structs import references
from kopf._core.intents import handlers as kopf_handlers

TOMBSTONE_SECONDS = 600.0
"""How long a deleted uid is remembered: the DELETED event and the timer re-match happen
in one processing cycle, so minutes are ample; the bound keeps memory flat."""


@dataclasses.dataclass
class Tombstones:
    """uids of objects seen deleted, forgotten after ``ttl`` seconds."""

    ttl: float = TOMBSTONE_SECONDS
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, float] = dataclasses.field(default_factory=dict)

    def bury(self, uid: str) -> None:
        now = self.clock()
        for old in [u for u, at in self._seen.items() if now - at > self.ttl]:
            del self._seen[old]
        self._seen[uid] = now

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, str) and uid in self._seen

    def __len__(self) -> int:
        return len(self._seen)


def _unless_deleted(
    tombstones: Tombstones, when: Callable[..., bool] | None
) -> Callable[..., bool]:
    def alive(**kwargs: Any) -> bool:
        body = kwargs.get("body") or {}
        if (body.get("metadata") or {}).get("uid") in tombstones:
            return False
        return when is None or bool(when(**kwargs))

    return alive


def _selector_key(selector: references.Selector | None) -> tuple[str | None, ...]:
    if selector is None:
        raise ValueError("a timer without a resource selector")
    names = (
        selector.group,
        selector.version,
        selector.kind,
        selector.plural,
        selector.singular,
        selector.shortcut,
        selector.any_name,
    )
    return tuple(None if n is None else str(n) for n in names)


def without_finalizers(registry: kopf.OperatorRegistry) -> dict[tuple[str | None, ...], Tombstones]:
    """Make every timer in ``registry`` finalizer-free and stop it when its object is deleted.

    Call once, after all handlers are registered. Refuses handlers that would still make
    kopf add a finalizer (daemons, non-optional ``on.delete``), so a future one cannot
    bring it back unnoticed. Returns the tombstones per resource (for tests).
    """
    spawning = registry._spawning
    tombstones: dict[tuple[str | None, ...], Tombstones] = {}
    selectors: dict[tuple[str | None, ...], references.Selector] = {}
    replaced: list[kopf_handlers.SpawningHandler] = []
    for handler in spawning._handlers:
        if not isinstance(handler, kopf_handlers.TimerHandler):
            raise TypeError(f"{handler} needs a finalizer to be stopped; mlkube uses timers only")
        key = _selector_key(handler.selector)
        graves = tombstones.setdefault(key, Tombstones())
        assert handler.selector is not None  # checked by _selector_key
        selectors[key] = handler.selector
        replaced.append(
            dataclasses.replace(
                handler, requires_finalizer=False, when=_unless_deleted(graves, handler.when)
            )
        )
    spawning._handlers[:] = replaced

    for changing in registry._changing._handlers:
        if changing.requires_finalizer:
            raise TypeError(f"{changing} needs a finalizer; make it optional=True")

    for key, graves in tombstones.items():
        selector = selectors[key]
        _watch_deletions(registry, selector, graves)
    return tombstones


def _watch_deletions(
    registry: kopf.OperatorRegistry, selector: references.Selector, graves: Tombstones
) -> None:
    def forget_deleted(type: str, body: kopf.Body, **_: Any) -> None:
        uid = body.get("metadata", {}).get("uid")
        if type == "DELETED" and isinstance(uid, str):
            graves.bury(uid)

    # Registered for every resource, then narrowed to exactly the timers' own selector
    # (copied, so it matches whatever form the timer was declared in).
    kopf.on.event(
        kopf.EVERYTHING,
        id="stop-timers-on-delete/" + "/".join(n for n in _selector_key(selector) if n),
        registry=registry,
    )(forget_deleted)
    watching = registry._watching._handlers
    watching[-1] = dataclasses.replace(watching[-1], selector=selector)
