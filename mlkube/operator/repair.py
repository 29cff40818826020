"""Pure repairs for hand edits that server-side apply cannot take back on its own.

A Service's ``spec.ports`` is a map list keyed by ``port`` and ``protocol``. When someone
changes the port of the entry the operator applied (``kubectl patch svc N ... /spec/ports/0
/port = 81``), that entry no longer matches the operator's key: the next apply adds port 80
again and keeps the edited entry, which is owned by the editor. The result has two ports
named ``http``, and the API server refuses it (422, ``spec.ports[1].name: Duplicate
value``), so the Service would stay broken for ever.

:func:`conflicting_ports_patch` computes one JSON patch that removes exactly the live
entries that make the desired ports invalid and adds the desired entries that are missing
(removing alone could leave a Service with no port, which is invalid too); other
managers' extra ports (another name, another key) are left alone, as server-side apply
would. The apply that follows then owns the result as usual.
"""

from __future__ import annotations

from typing import Any

JsonDict = dict[str, Any]


def _key(port: JsonDict) -> tuple[Any, str]:
    # The map-list key of ServicePort; protocol defaults to TCP on the server.
    return (port.get("port"), port.get("protocol") or "TCP")


def conflicting_ports(live: JsonDict, desired: JsonDict) -> list[int]:
    """Indices (ascending) of the live ports that cannot coexist with the desired ports.

    A live entry conflicts when its key is not among the desired keys and it either
    reuses a desired port's name or has no name (a Service with several ports needs a
    name on each).
    """
    wanted = (desired.get("spec") or {}).get("ports") or []
    keys = {_key(p) for p in wanted}
    names = {p.get("name") for p in wanted if p.get("name")}
    current = (live.get("spec") or {}).get("ports") or []
    return [
        i
        for i, port in enumerate(current)
        if _key(port) not in keys and (not port.get("name") or port.get("name") in names)
    ]


def conflicting_ports_patch(live: JsonDict, desired: JsonDict) -> list[JsonDict]:
    """JSON patch (RFC 6902) swapping the conflicting ports for the desired ones, or []
    if nothing conflicts.

    Guarded by a ``test`` of ``metadata.resourceVersion``: if the Service changed since it
    was read, the server refuses the patch instead of removing the wrong entries.
    """
    stale = conflicting_ports(live, desired)
    if not stale:
        return []
    version = (live.get("metadata") or {}).get("resourceVersion")
    ops: list[JsonDict] = []
    if version:
        ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": version})
    # From the end, so each index still points at the entry it was computed for.
    ops += [{"op": "remove", "path": f"/spec/ports/{i}"} for i in reversed(stale)]
    present = {_key(p) for p in (live.get("spec") or {}).get("ports") or []}
    ops += [
        {"op": "add", "path": "/spec/ports/-", "value": port}
        for port in (desired.get("spec") or {}).get("ports") or []
        if _key(port) not in present
    ]
    return ops
