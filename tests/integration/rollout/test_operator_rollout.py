"""Canary rollouts end to end: the real operator (kopf + our handlers) on kmock, analysis
answered by a scripted Prometheus, time moved by the test.

kmock runs no controllers, so the test plays the kube-controller-manager: it writes a
Deployment's status (replicas up to date and available) when the pods would be ready.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlkube.operator.kube import KubeAPI, collection_path, object_path

from .conftest import Error, FakeClock, MockPrometheus, RunningOperator

pytestmark = pytest.mark.slow

NS = "ml"
MS_API = "mlkube.dev/v1alpha1"
NAME = "recs"

BASE: dict[str, Any] = {
    "apiVersion": MS_API,
    "kind": "ModelService",
    "metadata": {"name": NAME, "namespace": NS, "uid": "uid-recs", "generation": 1},
    "spec": {
        "model": {"name": "ranker", "version": "v1"},
        "replicas": 4,
        "rollout": {
            "steps": [25, 50],
            "interval": "30s",
            "failureThreshold": 2,
            "analysis": {
                "minSampleCount": 50,
                "metrics": [
                    {"name": "successRate", "min": 0.99},
                    {"name": "latencyP99", "max": 200},
                ],
            },
        },
    },
}


async def get_ms(api: KubeAPI) -> dict[str, Any]:
    ms = await api.get("ModelService", NS, NAME)
    assert ms is not None
    return ms


async def set_version(api: KubeAPI, version: str) -> None:
    await api.request(
        "PATCH",
        object_path(MS_API, "modelservices", NS, NAME),
        body={"spec": {"model": {"version": version}}},
        content_type="application/merge-patch+json",
    )


def revision_of(dep: dict[str, Any] | None) -> str | None:
    if dep is None:
        return None
    labels: dict[str, str] = dep["spec"]["template"]["metadata"]["labels"]
    return labels["mlkube.dev/revision"]


async def mark_ready(api: KubeAPI, name: str) -> dict[str, Any]:
    """Play the Deployment controller: every desired pod of the template is available."""
    dep = await api.get("Deployment", NS, name)
    assert dep is not None, name
    replicas = dep["spec"].get("replicas", 1)
    status = {
        "observedGeneration": dep["metadata"].get("generation", 0),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    await api.request(
        "PATCH",
        object_path("apps/v1", "deployments", NS, name),
        body={"status": status},
        content_type="application/merge-patch+json",
    )
    return dep


async def rollout_status(api: KubeAPI) -> dict[str, Any]:
    return (await get_ms(api)).get("status", {}).get("rollout") or {}


async def condition(api: KubeAPI, kind: str) -> dict[str, Any]:
    for cond in (await get_ms(api)).get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return {}


async def event_messages(api: KubeAPI) -> list[str]:
    listing = await api.request("GET", collection_path("v1", "events", NS))
    return [e.get("message", "") for e in listing.get("items", [])]


def healthy_canary(prometheus: MockPrometheus) -> None:
    prometheus.clear()
    prometheus.answer("increase(mlkube_requests_total", 500.0)
    prometheus.answer("1 - ((sum(rate(mlkube_requests_total", 0.999)
    prometheus.answer("histogram_quantile(0.99", 40.0)


async def deployed_v1(api: KubeAPI, eventually: Any) -> str:
    """Create the ModelService and let its first revision become stable and ready."""
    await api.request(
        "POST", collection_path(MS_API, "modelservices", NS), body=copy.deepcopy(BASE)
    )
    dep = await eventually(lambda: api.get("Deployment", NS, NAME), what="stable Deployment")
    await mark_ready(api, NAME)

    async def settled() -> str | None:
        status = await rollout_status(api)
        if status.get("phase") == "Succeeded" and status.get("stableRevision"):
            return str(status["stableRevision"])
        return None

    stable = await eventually(settled, what="first revision deployed")
    assert stable == revision_of(dep)
    return stable


async def canary_started(api: KubeAPI, eventually: Any, stable: str) -> dict[str, Any]:
    await set_version(api, "v2")
    canary = await eventually(
        lambda: api.get("Deployment", NS, f"{NAME}-canary"), what="canary Deployment"
    )
    assert revision_of(canary) != stable

    # The operator writes the Deployments first and the status after them: wait for both.
    async def recorded() -> bool:
        status = await rollout_status(api)
        return status.get("canaryRevision") == revision_of(canary)

    await eventually(recorded, what="canary revision in the status")
    return canary


async def test_version_bump_walks_the_steps_and_promotes(
    api: KubeAPI,
    operator: RunningOperator,
    prometheus: MockPrometheus,
    clock: FakeClock,
    eventually: Any,
) -> None:
    healthy_canary(prometheus)
    stable = await deployed_v1(api, eventually)
    canary = await canary_started(api, eventually, stable)
    new = revision_of(canary)
    assert canary["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "v2"
    assert canary["spec"]["template"]["metadata"]["labels"]["mlkube.dev/track"] == "canary"

    # 25% of 4 pods: 1 canary pod, 3 stable pods that keep the old revision.
    async def split(stable_n: int, canary_n: int) -> bool:
        s = await api.get("Deployment", NS, NAME)
        c = await api.get("Deployment", NS, f"{NAME}-canary")
        return bool(
            s
            and c
            and s["spec"]["replicas"] == stable_n
            and c["spec"]["replicas"] == canary_n
            and revision_of(s) == stable
        )

    await eventually(lambda: split(3, 1), what="3/1 split")
    stable_dep = await api.get("Deployment", NS, NAME)
    assert stable_dep is not None
    assert stable_dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "v1"
    status = await rollout_status(api)
    assert (status["phase"], status["canaryWeight"], status["canaryRevision"]) == (
        "Progressing",
        25,
        new,
    )
    assert status["trafficSplit"] == "canary ~25% by pods (1/4; target 25%)"

    # The canary is ready and an interval passes: the analysis runs and the weight moves.
    await mark_ready(api, NAME)
    await mark_ready(api, f"{NAME}-canary")
    assert not [q for q in prometheus.queries if new in q]  # nothing before the interval
    clock.advance(31)

    async def weight(value: int) -> bool:
        return (await rollout_status(api)).get("canaryWeight") == value

    await eventually(lambda: weight(50), what="canary at 50%")
    assert any(f'revision="{new}"' in q for q in prometheus.queries)
    await eventually(lambda: split(2, 2), what="2/2 split")
    status = await rollout_status(api)
    assert [m["verdict"] for m in status["metrics"]] == ["pass", "pass"]
    assert status["metrics"][1]["value"] == 40.0

    await mark_ready(api, f"{NAME}-canary")
    await mark_ready(api, NAME)
    clock.advance(31)

    # Promotion: the stable Deployment takes the new revision with every pod ...
    async def stable_on_new() -> bool:
        s = await api.get("Deployment", NS, NAME)
        return bool(s and revision_of(s) == new and s["spec"]["replicas"] == 4)

    async def phase(value: str) -> bool:
        return (await rollout_status(api)).get("phase") == value

    await eventually(lambda: phase("Promoting"), what="Promoting")
    await eventually(stable_on_new, what="stable Deployment on the new revision")
    assert await api.get("Deployment", NS, f"{NAME}-canary") is not None
    # ... and once it is rolled out, the canary goes away.
    await mark_ready(api, NAME)

    async def promoted() -> bool:
        gone = await api.get("Deployment", NS, f"{NAME}-canary") is None
        return gone and (await rollout_status(api)).get("phase") == "Succeeded"

    await eventually(promoted, what="promotion finished")
    status = await rollout_status(api)
    assert status["stableRevision"] == new
    assert [(h["revision"], h["outcome"]) for h in status["history"]] == [
        (stable, "Deployed"),
        (new, "Promoted"),
    ]
    messages = await eventually(lambda: _with(api, f"promoted {new[:10]}"), what="Promoted event")
    assert any(m.startswith(f"starting canary {new[:10]}") for m in messages)
    assert "advancing canary to 50%" in messages
    assert any(m.startswith(f"promoting canary {new[:10]}") for m in messages)
    ready = await condition(api, "Ready")
    assert ready["status"] == "True"


async def _with(api: KubeAPI, prefix: str) -> list[str] | None:
    messages = await event_messages(api)
    return messages if any(m.startswith(prefix) for m in messages) else None


async def test_failing_metric_rolls_back(
    api: KubeAPI,
    operator: RunningOperator,
    prometheus: MockPrometheus,
    clock: FakeClock,
    eventually: Any,
) -> None:
    healthy_canary(prometheus)
    stable = await deployed_v1(api, eventually)
    canary = await canary_started(api, eventually, stable)
    new = revision_of(canary)
    assert new is not None
    await mark_ready(api, f"{NAME}-canary")
    await mark_ready(api, NAME)

    # The new revision is slow: p99 342ms against a 200ms limit, twice (failureThreshold 2).
    prometheus.answer("histogram_quantile(0.99", 342.0)
    clock.advance(31)

    async def failed_checks(n: int) -> bool:
        return (await rollout_status(api)).get("failedChecks") == n

    await eventually(lambda: failed_checks(1), what="first failed check")
    assert (await rollout_status(api))["canaryWeight"] == 25  # a failed check does not advance
    await eventually(
        lambda: _with(api, "metric latencyP99 342ms > 200ms, check 1/2"), what="check 1/2 event"
    )
    clock.advance(31)

    async def rolled_back() -> bool:
        return (await rollout_status(api)).get("phase") == "RolledBack"

    await eventually(rolled_back, what="rollback")
    await eventually(
        lambda: _none(api.get("Deployment", NS, f"{NAME}-canary")), what="canary removed"
    )
    stable_dep = await api.get("Deployment", NS, NAME)
    assert stable_dep is not None
    assert revision_of(stable_dep) == stable
    assert stable_dep["spec"]["replicas"] == 4

    # Serving continues on the stable revision: Ready, but Degraded because of the rollback.
    await mark_ready(api, NAME)

    async def conditions_settled() -> bool:
        ready, degraded = await condition(api, "Ready"), await condition(api, "Degraded")
        return ready.get("status") == "True" and degraded.get("reason") == "RolledBack"

    await eventually(conditions_settled, what="Ready=True, Degraded=True RolledBack")
    degraded = await condition(api, "Degraded")
    assert degraded["status"] == "True"
    assert "latencyP99 342ms > 200ms" in degraded["message"]
    status = await rollout_status(api)
    assert status["rolledBackRevision"] == new
    assert status["metrics"][1]["verdict"] == "fail"
    assert status["history"][-1]["outcome"] == "RolledBack"
    await eventually(lambda: _with(api, f"rolled back to {stable[:10]}"), what="rollback event")

    # The same revision is not retried, however long we wait.
    clock.advance(3600)
    await mark_ready(api, NAME)
    assert await api.get("Deployment", NS, f"{NAME}-canary") is None
    assert (await rollout_status(api))["phase"] == "RolledBack"


async def _none(awaitable: Any) -> bool:
    return (await awaitable) is None


async def test_prometheus_down_waits_and_says_so(
    api: KubeAPI,
    operator: RunningOperator,
    prometheus: MockPrometheus,
    clock: FakeClock,
    eventually: Any,
) -> None:
    healthy_canary(prometheus)
    stable = await deployed_v1(api, eventually)
    await canary_started(api, eventually, stable)
    await mark_ready(api, f"{NAME}-canary")
    await mark_ready(api, NAME)
    prometheus.answer("increase(", Error(503, "service unavailable"))
    clock.advance(31)

    async def waiting() -> str | None:
        message = str((await rollout_status(api)).get("message", ""))
        return message if message.startswith("waiting: Prometheus unavailable") else None

    await eventually(waiting, what="waiting on Prometheus")
    status = await rollout_status(api)
    assert (status["phase"], status["canaryWeight"], status["failedChecks"]) == (
        "Progressing",
        25,
        0,
    )
    await eventually(lambda: _with(api, "Prometheus unavailable"), what="warning event")
    assert await api.get("Deployment", NS, f"{NAME}-canary") is not None


async def test_operator_restart_mid_rollout_resumes_from_status(
    api: KubeAPI,
    operator: RunningOperator,
    prometheus: MockPrometheus,
    clock: FakeClock,
    eventually: Any,
) -> None:
    healthy_canary(prometheus)
    prometheus.answer("histogram_quantile(0.99", 342.0)  # first check fails (1/2)
    stable = await deployed_v1(api, eventually)
    canary = await canary_started(api, eventually, stable)
    await mark_ready(api, f"{NAME}-canary")
    await mark_ready(api, NAME)
    clock.advance(31)

    async def failed_checks(n: int) -> bool:
        return (await rollout_status(api)).get("failedChecks") == n

    await eventually(lambda: failed_checks(1), what="first failed check")
    before = await rollout_status(api)

    await operator.stop()
    healthy_canary(prometheus)
    clock.advance(31)
    await operator.start()

    # The restarted operator continues the same canary: same revision, the failed check
    # still counted, and the next check moves it on.
    async def weight(value: int) -> bool:
        return (await rollout_status(api)).get("canaryWeight") == value

    await eventually(lambda: weight(50), what="canary at 50% after the restart")
    after = await rollout_status(api)
    assert after["canaryRevision"] == before["canaryRevision"] == revision_of(canary)
    assert after["startedAt"] == before["startedAt"]
    assert after["failedChecks"] == 1
    assert [h["outcome"] for h in after["history"]] == ["Deployed", "Progressing"]


async def test_spec_change_mid_rollout_replaces_the_canary(
    api: KubeAPI,
    operator: RunningOperator,
    prometheus: MockPrometheus,
    clock: FakeClock,
    eventually: Any,
) -> None:
    healthy_canary(prometheus)
    stable = await deployed_v1(api, eventually)
    first = revision_of(await canary_started(api, eventually, stable))
    await set_version(api, "v3")

    async def canary_on_v3() -> dict[str, Any] | None:
        dep = await api.get("Deployment", NS, f"{NAME}-canary")
        if dep and revision_of(dep) not in (first, stable):
            return dep
        return None

    v3 = await eventually(canary_on_v3, what="canary replaced by v3")
    assert v3["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "v3"

    async def status_on_v3() -> dict[str, Any] | None:
        status = await rollout_status(api)
        return status if status.get("canaryRevision") == revision_of(v3) else None

    status = await eventually(status_on_v3, what="status names the v3 canary")
    assert status["canaryWeight"] == 25
    assert [(h["revision"], h["outcome"]) for h in status["history"]] == [
        (stable, "Deployed"),
        (first, "Superseded"),
        (revision_of(v3), "Progressing"),
    ]
    stable_dep = await api.get("Deployment", NS, NAME)
    assert stable_dep is not None
    assert revision_of(stable_dep) == stable
    await eventually(
        lambda: _with(api, f"spec changed: canary {str(first)[:10]} discarded"),
        what="discard event",
    )
