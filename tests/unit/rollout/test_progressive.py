"""The pure half of the operator shell: children for each rollout decision, readiness."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from mlkube.api.modelservice import Condition, ModelService, ModelServiceStatus
from mlkube.api.rollout import RolloutPhase, RolloutStatus
from mlkube.operator.builders import BuildSettings, desired_state
from mlkube.operator.progressive import (
    Plan,
    build_children,
    current_targets,
    deployment_ready,
    needs_ticks,
    replicas_handover,
    rollout_spec,
    with_rollout,
)
from mlkube.operator.rollout import RolloutTarget, Workload, next_step

SETTINGS = BuildSettings(default_image="ghcr.io/mlkube/mlkube:test")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def modelservice(version: str = "v1", **spec: Any) -> ModelService:
    body: dict[str, Any] = {
        "metadata": {"name": "recs", "namespace": "ml", "uid": "u1"},
        "spec": {"model": {"name": "ranker", "version": version}, "replicas": 4, **spec},
    }
    return ModelService.model_validate(body)


ROLLOUT = {"steps": [25, 50]}


def kinds(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def labels(dep: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = dep["spec"]["template"]["metadata"]["labels"]
    return out


def test_without_spec_rollout_changes_roll_in_place() -> None:
    assert rollout_spec(modelservice().spec).strategy.value == "rolling"
    assert rollout_spec(modelservice(rollout={}).spec).strategy.value == "canary"


def test_canary_children_keep_the_stable_template() -> None:
    v1 = modelservice("v1", rollout=ROLLOUT)
    first = next_step(
        RolloutTarget(rollout_spec(v1.spec), desired_state(v1, SETTINGS).revision, "v1"),
        None,
        None,
        T0,
    )
    v2 = modelservice("v2", rollout=ROLLOUT)
    desired = desired_state(v2, SETTINGS)
    decision = next_step(
        RolloutTarget(rollout_spec(v2.spec), desired.revision, "v2"),
        first.status,
        None,
        T0,
        Workload(),
    )
    children = build_children(
        v2, SETTINGS, desired, decision, total=4, stable_spec=v1.spec.to_kube(), hpa=False
    )
    assert kinds(children.objects) == [
        ("Service", "recs"),
        ("Deployment", "recs"),
        ("Deployment", "recs-canary"),
        ("PodDisruptionBudget", "recs"),
    ]
    stable, canary = children.objects[1], children.objects[2]
    # the stable Deployment is byte-for-byte what v1 produced, but with 3 pods
    v1_dep = desired_state(v1, SETTINGS).deployment
    assert stable["spec"]["template"] == v1_dep["spec"]["template"]
    assert stable["spec"]["replicas"] == 3
    assert labels(canary)["app.kubernetes.io/version"] == "v2"
    assert labels(canary)["mlkube.dev/track"] == "canary"
    assert canary["spec"]["selector"]["matchLabels"]["mlkube.dev/track"] == "canary"
    assert canary["spec"]["replicas"] == 1
    assert children.deletions == []
    assert children.traffic_split == "canary ~25% by pods (1/4; target 25%)"


def test_without_canary_the_canary_deployment_is_removed_and_hpa_owns_replicas() -> None:
    ms = modelservice(autoscaling={"mode": "hpa", "minReplicas": 2, "maxReplicas": 6})
    desired = desired_state(ms, SETTINGS)
    decision = next_step(RolloutTarget(rollout_spec(ms.spec), desired.revision), None, None, T0)
    children = build_children(ms, SETTINGS, desired, decision, total=3, stable_spec=None, hpa=True)
    assert ("Deployment", "recs-canary") in children.deletions
    stable = children.objects[1]
    assert "replicas" not in stable["spec"]  # left to the HPA
    hpa = children.objects[-1]
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "u1"


def test_gateway_api_routing_builds_track_services_and_weights() -> None:
    rollout = {
        **ROLLOUT,
        "trafficRouting": "gatewayAPI",
        "gatewayAPI": {
            "parentRefs": [{"name": "public", "namespace": "gw"}],
            "hostnames": ["recs.example.com"],
        },
    }
    v1 = modelservice("v1", rollout=rollout)
    first = next_step(
        RolloutTarget(rollout_spec(v1.spec), desired_state(v1, SETTINGS).revision), None, None, T0
    )
    v2 = modelservice("v2", rollout=rollout)
    desired = desired_state(v2, SETTINGS)
    decision = next_step(
        RolloutTarget(rollout_spec(v2.spec), desired.revision), first.status, None, T0
    )
    children = build_children(
        v2, SETTINGS, desired, decision, total=4, stable_spec=v1.spec.to_kube(), hpa=False
    )
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in children.objects}
    route = by_kind[("HTTPRoute", "recs")]
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "gw",
        }
    ]
    assert route["spec"]["hostnames"] == ["recs.example.com"]
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"name": "recs-stable", "port": 80, "weight": 75},
        {"name": "recs-canary", "port": 80, "weight": 25},
    ]
    assert by_kind[("Service", "recs-canary")]["spec"]["selector"] == {
        "mlkube.dev/modelservice": "recs",
        "mlkube.dev/track": "canary",
    }
    assert children.traffic_split == "canary 25% (HTTPRoute weights, exact)"


def deployment(
    revision: str, replicas: int, available: int, generation: int = 2, observed: int = 2
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"labels": {"mlkube.dev/revision": revision}}},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": available,
        },
    }


def test_deployment_ready() -> None:
    assert deployment_ready(deployment("a", 2, 2), "a", 2)
    assert not deployment_ready(deployment("a", 2, 1), "a", 2)
    assert not deployment_ready(deployment("b", 2, 2), "a", 2)
    assert not deployment_ready(deployment("a", 2, 2, generation=3), "a", 2)
    assert not deployment_ready(None, "a", 1)


def test_current_targets_follow_the_stored_rollout() -> None:
    ms = modelservice("v2", rollout=ROLLOUT)
    status = ModelServiceStatus(
        rollout=RolloutStatus(
            phase="Progressing", stable_revision="old", canary_revision="new", canary_weight=50
        )
    )
    assert current_targets(ms, status, "new") == ("old", 2)
    assert current_targets(ms, None, "new") == ("new", 4)


def test_with_rollout_sets_degraded_after_rollback_and_keeps_ready() -> None:
    computed = ModelServiceStatus(
        conditions=[
            Condition(type="Ready", status="True", reason="Available", last_transition_time="t0"),
            Condition(
                type="Progressing", status="False", reason="Complete", last_transition_time="t0"
            ),
            Condition(
                type="Degraded", status="False", reason="AsExpected", last_transition_time="t0"
            ),
        ]
    )
    rolled_back = RolloutStatus(
        phase="RolledBack", stable_revision="old", message="canary new rolled back: x"
    )
    plan = Plan([], [], "old", 4, rolled_back, None)
    out = with_rollout(computed, computed, plan, now="t1", generation=3)
    got = {c.type: (c.status, c.reason, c.last_transition_time) for c in out.conditions}
    assert got == {
        "Ready": ("True", "Available", "t0"),
        "Progressing": ("False", "Complete", "t0"),
        "Degraded": ("True", "RolledBack", "t1"),
    }
    assert out.rollout == rolled_back
    # a status-only refresh (no plan) reaches the same conditions from the stored rollout
    again = with_rollout(computed, out, None, now="t2", generation=3)
    assert {c.type: (c.status, c.reason, c.last_transition_time) for c in again.conditions} == got


def test_pod_trouble_outranks_the_rollout_message() -> None:
    computed = ModelServiceStatus(
        conditions=[
            Condition(type="Degraded", status="True", reason="CrashLoopBackOff", message="pod x")
        ]
    )
    plan = Plan([], [], "old", 4, RolloutStatus(phase="RolledBack"), None)
    out = with_rollout(computed, None, plan, now="t1", generation=1)
    assert out.conditions[0].reason == "CrashLoopBackOff"


def test_missing_stable_spec_keeps_the_live_template() -> None:
    v1 = modelservice("v1", rollout=ROLLOUT)
    first = next_step(
        RolloutTarget(rollout_spec(v1.spec), desired_state(v1, SETTINGS).revision), None, None, T0
    )
    v2 = modelservice("v2", rollout=ROLLOUT)
    desired = desired_state(v2, SETTINGS)
    decision = next_step(
        RolloutTarget(rollout_spec(v2.spec), desired.revision), first.status, None, T0
    )
    live = desired_state(v1, SETTINGS).deployment["spec"]["template"]
    children = build_children(
        v2, SETTINGS, desired, decision, total=4, stable_spec=None, hpa=False, stable_template=live
    )
    assert children.objects[1]["spec"]["template"] == live


def test_only_moving_services_are_ticked() -> None:
    assert needs_ticks({"autoscaling": {}}, {})
    assert not needs_ticks({"autoscaling": {"mode": "hpa"}}, {})
    assert needs_ticks({"rollout": {}}, {"rollout": {"phase": "Progressing"}})
    assert needs_ticks({"rollout": {}}, {"rollout": {"phase": "Promoting"}})
    assert not needs_ticks({"rollout": {}}, {"rollout": {"phase": "Succeeded"}})
    assert not needs_ticks({"rollout": {}}, {"rollout": {"phase": "RolledBack"}})
    assert not needs_ticks({}, {"rollout": {"phase": "Progressing"}})


def test_replicas_handover_only_while_mlkube_holds_the_field() -> None:
    owned = {
        "metadata": {
            "name": "recs",
            "namespace": "ml",
            "managedFields": [
                {
                    "manager": "mlkube",
                    "operation": "Apply",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}},
                }
            ],
        },
        "spec": {"replicas": 4},
    }
    assert replicas_handover(owned) == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "recs", "namespace": "ml"},
            "spec": {"replicas": 4},
        }
    ]
    handed = {**owned, "metadata": {**owned["metadata"], "managedFields": []}}
    assert replicas_handover(handed) == []
    assert replicas_handover(None) == []


def _env(dep: dict[str, Any]) -> dict[str, str]:
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_a_shadowed_canary_at_0_gets_copies_and_no_user_traffic() -> None:
    shadowed = {"steps": [0, 25], "shadow": {"fraction": 0.1}}
    v1 = modelservice("v1", rollout=shadowed)
    first = next_step(
        RolloutTarget(rollout_spec(v1.spec), desired_state(v1, SETTINGS).revision, "v1"),
        None,
        None,
        T0,
    )
    v2 = modelservice("v2", rollout=shadowed)
    desired = desired_state(v2, SETTINGS)
    decision = next_step(
        RolloutTarget(rollout_spec(v2.spec), desired.revision, "v2"),
        first.status,
        None,
        T0,
        Workload(),
    )
    assert decision.canary_weight == 0
    children = build_children(
        v2, SETTINGS, desired, decision, total=4, stable_spec=v1.spec.to_kube(), hpa=False
    )
    assert kinds(children.objects) == [
        ("Service", "recs"),
        ("Deployment", "recs"),
        ("Deployment", "recs-canary"),
        ("PodDisruptionBudget", "recs"),
        ("Service", "recs-canary"),
    ]
    service, stable, canary, _, canary_service = children.objects
    # Users reach the stable pods only; the canary's one pod answers the copies.
    assert service["spec"]["selector"] == {
        "mlkube.dev/modelservice": "recs",
        "mlkube.dev/track": "stable",
    }
    assert stable["spec"]["replicas"] == 4
    assert canary["spec"]["replicas"] == 1
    assert canary_service["spec"]["selector"]["mlkube.dev/track"] == "canary"
    env = _env(stable)
    assert env["MLKUBE_SHADOW_URL"] == "http://recs-canary.ml.svc.cluster.local"
    assert env["MLKUBE_SHADOW_FRACTION"] == "0.1"
    assert "MLKUBE_SHADOW_URL" not in _env(canary)
    assert children.traffic_split == (
        "stable 100% (4 pods); shadow: 10% of stable's requests copied to the canary"
    )

    # At 25% the Service selects both tracks again; the copies go on.
    at_25 = dataclasses.replace(
        decision, canary_weight=25, status=decision.status.model_copy(update={"canary_weight": 25})
    )
    children = build_children(
        v2, SETTINGS, desired, at_25, total=4, stable_spec=v1.spec.to_kube(), hpa=False
    )
    assert children.objects[0]["spec"]["selector"] == {"mlkube.dev/modelservice": "recs"}
    assert _env(children.objects[1])["MLKUBE_SHADOW_FRACTION"] == "0.1"
    assert children.traffic_split.startswith("canary ~25% by pods (1/4; target 25%); shadow")

    # Promoting: the stable Deployment takes the new revision, without copies.
    promoting = dataclasses.replace(
        at_25, status=at_25.status.model_copy(update={"phase": RolloutPhase.PROMOTING})
    )
    children = build_children(
        v2, SETTINGS, desired, promoting, total=4, stable_spec=v1.spec.to_kube(), hpa=False
    )
    assert "MLKUBE_SHADOW_URL" not in _env(children.objects[1])

    # Without a canary the copies stop and the canary's Service goes.
    done = build_children(
        v2,
        SETTINGS,
        desired,
        next_step(RolloutTarget(rollout_spec(v2.spec), desired.revision), None, None, T0),
        total=4,
        stable_spec=None,
        hpa=False,
    )
    assert "MLKUBE_SHADOW_URL" not in _env(done.objects[1])
    assert ("Service", "recs-canary") in done.deletions
