"""What the operator knows of the cluster: the latest body of every object it watches.

kopf's watch streams feed it (``kopf.on.event`` handlers call :meth:`ObjectCache.seen`),
and the operator's own writes feed it too (:meth:`ObjectCache.wrote`, with the API
server's answer), so a reconcile reads its ModelService, Deployments, Services and pods
from memory instead of GETting them: the API server sees writes, not reads.

An answer and a watch event about the same object can arrive in either order; the one with
the higher ``resourceVersion`` wins (kube-apiserver's versions are etcd revisions, integers
that grow; a version that is not an integer is simply taken as newer). Children are
indexed by the label that names their owner, so "the pods of ModelService X" is a dict
lookup, not a scan.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JsonDict = dict[str, Any]
TOMBSTONES = 10_000
ObjectKey = tuple[str, str, str]
"""(kind, namespace, name)."""


def _version(obj: JsonDict) -> int | None:
    text = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return None


def slim(body: JsonDict, keep_managed_fields: bool) -> JsonDict:
    """Pure: ``body`` without what no decision reads and memory pays for: ``managedFields``
    (often the largest part of an object; only the HPA handover reads a Deployment's) and
    client-side apply's copy of the whole object in an annotation."""
    meta = body.get("metadata")
    if not isinstance(meta, dict):
        return body
    annotations = meta.get("annotations") or {}
    drop_fields = not keep_managed_fields and "managedFields" in meta
    drop_copy = LAST_APPLIED in annotations
    if not (drop_fields or drop_copy):
        return body
    meta = {k: v for k, v in meta.items() if not (drop_fields and k == "managedFields")}
    if drop_copy:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**body, "metadata": meta}


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def newer(candidate: JsonDict, current: JsonDict | None) -> bool:
    """Pure: whether ``candidate`` should replace ``current`` in the cache."""
    if current is None:
        return True
    new, old = _version(candidate), _version(current)
    return new is None or old is None or new > old


@dataclass
class ObjectCache:
    """Latest bodies by (kind, namespace, name), children indexed by an owner label."""

    owner_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """kind -> the labels whose values name an owning object (for :meth:`owned`)."""
    managed_fields: frozenset[str] = frozenset({"Deployment"})
    """Kinds whose ``managedFields`` are kept (see :func:`slim`)."""
    _objects: dict[ObjectKey, JsonDict] = field(default_factory=dict)
    _index: dict[tuple[str, str, str, str], set[str]] = field(default_factory=dict)
    _gone: OrderedDict[ObjectKey, str] = field(default_factory=OrderedDict)
    """uid of each object seen deleted (the latest :data:`TOMBSTONES`): kopf hands events
    of different objects to different tasks, so a stale event of a deleted object (from
    the watch's first listing) can arrive after its DELETED event and must not bring it
    back."""

    def get(self, kind: str, namespace: str, name: str) -> JsonDict | None:
        return self._objects.get((kind, namespace, name))

    def owned(self, kind: str, namespace: str, label: str, owner: str) -> list[JsonDict]:
        """Objects of ``kind`` labelled ``label=owner``, sorted by name."""
        names = self._index.get((kind, label, namespace, owner), set())
        return [self._objects[(kind, namespace, n)] for n in sorted(names)]

    def seen(self, kind: str, event_type: str | None, body: JsonDict) -> bool:
        """A watch event; True if the cache changed."""
        if event_type == "DELETED":
            return self.removed(kind, body)
        return self.wrote(kind, body)

    def wrote(self, kind: str, body: JsonDict) -> bool:
        """An object as the API server returned or streamed it; True if it replaced ours."""
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name")
        if not name:
            return False
        key = (kind, namespace, name)
        if meta.get("uid") and self._gone.get(key) == meta.get("uid"):
            return False  # an event of an object already deleted
        current = self._objects.get(key)
        if not newer(body, current):
            return False
        if current is not None:
            self._unindex(kind, key, current)
        self._objects[key] = slim(body, kind in self.managed_fields)
        labels = meta.get("labels") or {}
        for label in self.owner_labels.get(kind, ()):
            owner = labels.get(label)
            if owner:
                self._index.setdefault((kind, label, namespace, owner), set()).add(name)
        return True

    def deleting(self, kind: str, body: JsonDict, when: str) -> None:
        """This operator just deleted ``body``: until the watch reports what the API server
        made of it, the cache shows it terminating (``deletionTimestamp`` set), never as
        it was, so the next pass does not act on it again (count a failed pod twice)."""
        meta = body.get("metadata") or {}
        key = (kind, meta.get("namespace") or "", meta.get("name") or "")
        current = self._objects.get(key)
        if current is None or (current.get("metadata") or {}).get("uid") != meta.get("uid"):
            return
        if (current.get("metadata") or {}).get("deletionTimestamp"):
            return
        marked = {**current, "metadata": {**current["metadata"], "deletionTimestamp": when}}
        self._objects[key] = marked  # same resourceVersion: any real event replaces it

    def removed(self, kind: str, body: JsonDict) -> bool:
        meta = body.get("metadata") or {}
        key = (kind, meta.get("namespace") or "", meta.get("name") or "")
        current = self._objects.get(key)
        if current is None:
            if meta.get("uid"):
                self._gone[key] = meta["uid"]
            return False
        if meta.get("uid") and (current.get("metadata") or {}).get("uid") != meta.get("uid"):
            return False  # a same-named successor is already known: keep it
        uid = (current.get("metadata") or {}).get("uid")
        if uid:
            self._gone[key] = uid
            self._gone.move_to_end(key)
            while len(self._gone) > TOMBSTONES:
                self._gone.popitem(last=False)
        del self._objects[key]
        self._unindex(kind, key, current)
        return True

    def _unindex(self, kind: str, key: ObjectKey, body: JsonDict) -> None:
        labels = (body.get("metadata") or {}).get("labels") or {}
        for label in self.owner_labels.get(kind, ()):
            index = (kind, label, key[1], labels.get(label) or "")
            names = self._index.get(index)
            if names is not None:
                names.discard(key[2])
                if not names:
                    del self._index[index]

    def count(self, kind: str) -> int:
        return sum(1 for k in self._objects if k[0] == kind)

    def keys(self, kind: str) -> Iterable[ObjectKey]:
        return [k for k in self._objects if k[0] == kind]


def digest(obj: JsonDict) -> str:
    """Pure: a fingerprint of a manifest the operator applies (key order does not count)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def marker(live: JsonDict) -> str:
    """Pure: what changes when someone else changes an object's spec.

    ``metadata.generation`` where the API server keeps one (Deployments, PDBs: it moves on
    spec changes, not on the status updates their controllers make every few seconds);
    otherwise ``resourceVersion`` (Services: any write).
    """
    meta = live.get("metadata") or {}
    generation = meta.get("generation")
    if generation:
        return f"{meta.get('uid')}/g{generation}"
    return f"{meta.get('uid')}/v{meta.get('resourceVersion')}"


@dataclass
class AppliedMemory:
    """What this operator process last applied to each child, and the child it got back.

    A reconcile skips the server-side apply of a child when the manifest is the same as
    last time and the live child (from the cache) is still the object that apply returned,
    unchanged in spec: the apply would change nothing, and an idle resync of a thousand
    ModelServices then costs the API server nothing. Anything else (a new manifest, a
    child someone edited, deleted or recreated, a restarted operator that remembers
    nothing) applies as before.
    """

    _applied: dict[tuple[ObjectKey, str], tuple[str, str]] = field(default_factory=dict)
    _markers: dict[ObjectKey, str] = field(default_factory=dict)

    def unchanged(self, key: ObjectKey, manager: str, manifest: str, live: JsonDict) -> bool:
        return self._applied.get((key, manager)) == (manifest, marker(live))

    def remember(self, key: ObjectKey, manager: str, manifest: str, live: JsonDict) -> None:
        now = marker(live)
        self._applied[(key, manager)] = (manifest, now)
        self._markers[key] = now

    def matches(self, key: ObjectKey, live: JsonDict) -> bool:
        """Whether ``live`` is still the child as our last apply left it (False when this
        process never applied it)."""
        return self._markers.get(key) == marker(live)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what was remembered about one object's children (``name`` and its tracks)."""

        def child(key: ObjectKey) -> bool:
            return key[1] == namespace and (key[2] == name or key[2].startswith(name + "-"))

        for entry in [e for e in self._applied if child(e[0])]:
            del self._applied[entry]
        for key in [k for k in self._markers if child(k)]:
            del self._markers[key]

    def __len__(self) -> int:
        return len(self._applied)


@dataclass
class UnwatchedChildren:
    """What this process last applied or deleted of children it does not watch.

    A PyTorchJob's HorizontalPodAutoscaler and PodGroup are optional (most jobs have
    neither) and a PodGroup's API may not even be served, so no watch feeds them. Instead
    a pass re-applies such a child only when its manifest changed or ``interval`` has
    passed since the last apply (drift: a deleted child comes back then), and deletes one
    only when this process applied it, or, once after a restart, when it may exist. The
    idle pass of a job costs no request.
    """

    _state: dict[ObjectKey, tuple[str | None, datetime]] = field(default_factory=dict)

    def apply_due(self, key: ObjectKey, manifest: JsonDict, now: datetime, interval: float) -> bool:
        known = self._state.get(key)
        if known is None or known[0] != digest(manifest):
            return True
        return (now - known[1]).total_seconds() >= interval

    def delete_due(self, key: ObjectKey, probe_unknown: bool) -> bool:
        known = self._state.get(key)
        if known is None:
            return probe_unknown
        return known[0] is not None

    def applied(self, key: ObjectKey, manifest: JsonDict, now: datetime) -> None:
        self._state[key] = (digest(manifest), now)

    def absent(self, key: ObjectKey, now: datetime) -> None:
        self._state[key] = (None, now)

    def present(self, namespace: str, name: str) -> list[ObjectKey]:
        """The children named ``name`` this process applied and has not deleted."""
        return [
            k for k, (d, _) in self._state.items() if k[1:] == (namespace, name) and d is not None
        ]

    def forget(self, namespace: str, name: str) -> None:
        for key in [k for k in self._state if k[1:] == (namespace, name)]:
            del self._state[key]
