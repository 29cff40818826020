"""When a ModelService is looked at again, and which child events call for a re-apply."""

from __future__ import annotations

from typing import Any

import pytest

from mlkube.operator.cache import AppliedMemory
from mlkube.operator.handlers import child_event_needs_apply
from mlkube.operator.progressive import TICK_SECONDS, needs_ticks, next_pass

DRIFT = 300.0
ROLLOUT = {"strategy": "canary"}


def status(phase: str | None) -> dict[str, Any]:
    return {} if phase is None else {"rollout": {"phase": phase}}


def test_a_settled_modelservice_waits_for_the_drift_check() -> None:
    spec = {"model": {"name": "m"}}
    assert not needs_ticks(spec, {})
    assert next_pass(spec, {}, DRIFT) == DRIFT
    assert next_pass(None, None, DRIFT) == DRIFT


@pytest.mark.parametrize("phase", ["Progressing", "Promoting", "Failed"])
def test_a_rollout_in_flight_ticks(phase: str) -> None:
    spec = {"rollout": ROLLOUT}
    assert needs_ticks(spec, status(phase))
    assert next_pass(spec, status(phase), DRIFT) == TICK_SECONDS == 5.0


@pytest.mark.parametrize("phase", ["Succeeded", "RolledBack", None])
def test_a_finished_or_absent_rollout_does_not_tick(phase: str | None) -> None:
    spec = {"rollout": ROLLOUT}
    assert not needs_ticks(spec, status(phase))
    assert next_pass(spec, status(phase), DRIFT) == DRIFT


def test_a_rollout_phase_without_a_rollout_spec_does_not_tick() -> None:
    assert not needs_ticks({}, status("Progressing"))
    assert next_pass({}, status("Progressing"), DRIFT) == DRIFT


def test_a_null_status_does_not_tick() -> None:
    assert next_pass({"rollout": ROLLOUT}, None, DRIFT) == DRIFT


@pytest.mark.parametrize("scaling", [{}, {"mode": "builtin", "targetInFlight": 4}])
def test_the_builtin_autoscaler_ticks(scaling: dict[str, Any]) -> None:
    spec = {"autoscaling": scaling}
    assert needs_ticks(spec, {})
    assert next_pass(spec, {}, DRIFT) == TICK_SECONDS


def test_an_hpa_does_not_tick() -> None:
    spec = {"autoscaling": {"mode": "hpa"}}
    assert not needs_ticks(spec, {})
    assert next_pass(spec, {}, DRIFT) == DRIFT


def test_a_drift_interval_shorter_than_a_tick_wins() -> None:
    assert next_pass({"autoscaling": {}}, {}, 2.0) == 2.0
    assert next_pass({}, {}, 2.0) == 2.0


# ---------------------------------------------------------------- child events


def child(kind: str, generation: int | None = 1, version: str = "10", uid: str = "u-1") -> Any:
    meta: dict[str, Any] = {"name": "recs", "namespace": "ml", "uid": uid}
    meta["resourceVersion"] = version
    if generation is not None:
        meta["generation"] = generation
    return {"kind": kind, "metadata": meta}


def remembered(kind: str, live: dict[str, Any]) -> AppliedMemory:
    applied = AppliedMemory()
    applied.remember((kind, "ml", "recs"), "mlkube", "sha", live)
    return applied


@pytest.mark.parametrize("event", [None, "ADDED", "MODIFIED", "DELETED"])
def test_pod_events_never_call_for_an_apply(event: str | None) -> None:
    assert not child_event_needs_apply(event, "Pod", child("Pod"), AppliedMemory())


@pytest.mark.parametrize("kind", ["Deployment", "Service", "PodDisruptionBudget"])
def test_a_deleted_child_calls_for_an_apply(kind: str) -> None:
    live = child(kind)
    assert child_event_needs_apply("DELETED", kind, live, remembered(kind, live))


def test_a_child_as_last_applied_only_refreshes() -> None:
    live = child("Deployment", generation=3, version="10")
    applied = remembered("Deployment", live)
    assert not child_event_needs_apply("MODIFIED", "Deployment", live, applied)
    # its controller's status updates move the resourceVersion, not the generation
    moved = child("Deployment", generation=3, version="57")
    assert not child_event_needs_apply("MODIFIED", "Deployment", moved, applied)


def test_a_child_someone_edited_calls_for_an_apply() -> None:
    applied = remembered("Deployment", child("Deployment", generation=3))
    edited = child("Deployment", generation=4, version="11")
    assert child_event_needs_apply("MODIFIED", "Deployment", edited, applied)


def test_a_recreated_child_calls_for_an_apply() -> None:
    applied = remembered("Deployment", child("Deployment", generation=1))
    recreated = child("Deployment", generation=1, uid="u-2")
    assert child_event_needs_apply("ADDED", "Deployment", recreated, applied)


def test_a_service_written_by_someone_else_calls_for_an_apply() -> None:
    applied = remembered("Service", child("Service", generation=None, version="10"))
    assert not child_event_needs_apply(
        "MODIFIED", "Service", child("Service", generation=None, version="10"), applied
    )
    assert child_event_needs_apply(
        "MODIFIED", "Service", child("Service", generation=None, version="11"), applied
    )


def test_a_child_never_applied_by_this_process_calls_for_an_apply() -> None:
    assert child_event_needs_apply(None, "Deployment", child("Deployment"), AppliedMemory())


def test_a_kind_the_cache_does_not_hold_only_refreshes() -> None:
    assert not child_event_needs_apply(
        "DELETED", "HorizontalPodAutoscaler", child("X"), AppliedMemory()
    )
