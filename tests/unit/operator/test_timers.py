"""The operator's kopf registry asks for no finalizer, and its timers stop on deletion."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from kopf._core.intents import handlers as kopf_handlers

from mlkube.operator.app import OperatorContext, build_registry
from mlkube.operator.config import OperatorConfig
from mlkube.operator.timers import Tombstones, without_finalizers


def registry() -> kopf.OperatorRegistry:
    return build_registry(OperatorContext(OperatorConfig(default_image="img:test")))


def timer_ids(reg: kopf.OperatorRegistry) -> set[str]:
    return {h.id.rsplit(".", 1)[-1] for h in reg._spawning.get_all_handlers()}


def timer(reg: kopf.OperatorRegistry, name: str) -> Any:
    return next(h for h in reg._spawning.get_all_handlers() if h.id.endswith(f".{name}"))


def test_no_handler_of_the_operator_requires_a_finalizer() -> None:
    reg = registry()
    timers = reg._spawning.get_all_handlers()
    # the ModelService drift and rollout timers and the PyTorchJob drift timer
    assert {"drift_check", "rollout_tick", "pytorchjob_drift_check"} <= timer_ids(reg)
    assert all(isinstance(h, kopf_handlers.TimerHandler) for h in timers)
    assert [h.id for h in timers if h.requires_finalizer] == []
    assert [h.id for h in reg._changing.get_all_handlers() if h.requires_finalizer] == []


def body(uid: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "x", "uid": uid}, "spec": spec, "status": {}}


def filter_kwargs(obj: dict[str, Any]) -> dict[str, Any]:
    return {"body": obj, "spec": obj["spec"], "status": obj["status"], "meta": obj["metadata"]}


def test_a_deleted_event_stops_the_timers_of_that_object_only() -> None:
    reg = registry()
    drift = timer(reg, "drift_check")
    assert drift.when is not None
    assert drift.when(**filter_kwargs(body("uid-1")))
    watchers = [h for h in reg._watching.get_all_handlers() if h.id.startswith("stop-timers")]
    assert {h.selector.any_name for h in watchers} == {"modelservices", "pytorchjobs"}
    ms_watcher = next(h for h in watchers if h.selector.any_name == "modelservices")

    ms_watcher.fn(type="MODIFIED", body=body("uid-1"))
    assert drift.when(**filter_kwargs(body("uid-1")))
    ms_watcher.fn(type="DELETED", body=body("uid-1"))
    assert not drift.when(**filter_kwargs(body("uid-1")))
    assert drift.when(**filter_kwargs(body("uid-2")))  # a re-created object: a new uid


def test_the_rollout_timer_keeps_its_own_filter() -> None:
    reg = registry()
    tick = timer(reg, "rollout_tick")
    assert tick.when is not None
    assert not tick.when(**filter_kwargs(body("uid-1")))  # nothing to tick
    assert tick.when(**filter_kwargs(body("uid-1", autoscaling={"mode": "builtin"})))


def test_handlers_that_need_a_finalizer_are_refused() -> None:
    reg = kopf.OperatorRegistry()

    @kopf.daemon("mlkube.dev", "v1alpha1", "modelservices", registry=reg)
    async def forever(**_: Any) -> None:
        return None

    with pytest.raises(TypeError, match="finalizer"):
        without_finalizers(reg)

    reg = kopf.OperatorRegistry()

    @kopf.on.delete("mlkube.dev", "v1alpha1", "modelservices", registry=reg)
    async def goodbye(**_: Any) -> None:
        return None

    with pytest.raises(TypeError, match="optional=True"):
        without_finalizers(reg)

    reg = kopf.OperatorRegistry()
    kopf.on.delete("mlkube.dev", "v1alpha1", "modelservices", registry=reg, optional=True)(goodbye)
    assert without_finalizers(reg) == {}


def test_tombstones_are_forgotten_after_their_ttl() -> None:
    now = [0.0]
    graves = Tombstones(ttl=10.0, clock=lambda: now[0])
    graves.bury("a")
    now[0] = 5.0
    graves.bury("b")
    assert "a" in graves
    assert "b" in graves
    now[0] = 12.0
    graves.bury("c")  # pruning happens on writes
    assert "a" not in graves
    assert "b" in graves
    assert len(graves) == 2
    assert 42 not in graves
