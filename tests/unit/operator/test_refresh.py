"""When a status-only refresh (a Deployment event) may write a ModelService's status."""

from __future__ import annotations

from typing import Any

from mlkube.operator.handlers import parse, refresh_allowed


def body(generation: int, observed: int | None) -> dict[str, Any]:
    status = {} if observed is None else {"observedGeneration": observed}
    return {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "recs", "namespace": "ml", "generation": generation},
        "spec": {"model": {"name": "ranker", "version": "v1"}},
        "status": status,
    }


def test_a_status_of_the_current_generation_may_be_refreshed() -> None:
    assert refresh_allowed(parse(body(3, 3)))


def test_a_spec_change_not_applied_yet_is_left_to_the_apply() -> None:
    assert not refresh_allowed(parse(body(3, 2)))


def test_an_object_never_reconciled_is_left_to_the_apply() -> None:
    assert not refresh_allowed(parse(body(1, None)))
