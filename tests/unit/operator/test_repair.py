"""Which live Service ports block the operator's apply, and the patch that fixes them."""

from __future__ import annotations

import copy
from typing import Any

from mlkube.api.modelservice import ModelService
from mlkube.operator.builders import build_service
from mlkube.operator.repair import conflicting_ports, conflicting_ports_patch


def desired() -> dict[str, Any]:
    ms = ModelService.model_validate(
        {
            "apiVersion": "mlkube.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "recs", "namespace": "ml", "uid": "u1"},
            "spec": {"model": {"name": "ranker", "version": "v1"}},
        }
    )
    return build_service(ms)


def live(*ports: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "recs", "resourceVersion": "41"}, "spec": {"ports": list(ports)}}


OURS = {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The subset of RFC 6902 the repair uses (test, remove, add to the end)."""
    out = copy.deepcopy(doc)
    for op in ops:
        *parents, last = op["path"].strip("/").split("/")
        target: Any = out
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] == "test":
            assert target[last] == op["value"]
        elif op["op"] == "remove":
            del target[int(last)]
        elif op["op"] == "add":
            assert last == "-"
            target.append(op["value"])
    return out


def test_the_operators_own_ports_never_conflict() -> None:
    assert conflicting_ports(live(OURS), desired()) == []
    assert conflicting_ports_patch(live(OURS), desired()) == []


def test_a_hand_edited_port_is_swapped_for_ours() -> None:
    edited = live({**OURS, "port": 81})
    assert conflicting_ports(edited, desired()) == [0]
    ops = conflicting_ports_patch(edited, desired())
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
    fixed = json_patch(edited, ops)
    assert [(p["name"], p["port"], p["protocol"]) for p in fixed["spec"]["ports"]] == [
        ("http", 80, "TCP"),
        ("grpc", 8081, "TCP"),
    ]


def test_the_protocol_is_part_of_the_key() -> None:
    assert conflicting_ports(live({**OURS, "protocol": "UDP"}), desired()) == [0]
    # a port without protocol is TCP on the server
    assert (
        conflicting_ports(live({k: v for k, v in OURS.items() if k != "protocol"}), desired()) == []
    )


def test_other_managers_extra_ports_are_kept() -> None:
    metrics = {"name": "metrics", "port": 9090, "protocol": "TCP"}
    unnamed = {"port": 7000, "protocol": "TCP"}
    edited = live(metrics, {**OURS, "port": 81}, unnamed)
    # the edited http entry and the unnamed one (several ports need names) conflict
    assert conflicting_ports(edited, desired()) == [1, 2]
    fixed = json_patch(edited, conflicting_ports_patch(edited, desired()))
    assert [(p.get("name"), p["port"]) for p in fixed["spec"]["ports"]] == [
        ("metrics", 9090),
        ("http", 80),
        ("grpc", 8081),
    ]


def test_a_live_object_without_version_or_ports() -> None:
    assert conflicting_ports_patch({"spec": {}}, desired()) == []
    ops = conflicting_ports_patch({"spec": {"ports": [{**OURS, "port": 81}]}}, desired())
    assert [op["op"] for op in ops] == ["remove", "add", "add"]
