"""The autoscaler, the HPA option and Gateway API routing, through the real operator on kmock."""

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


def modelservice(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": MS_API,
        "kind": "ModelService",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"model": {"name": "ranker", "version": "v1"}, "replicas": 2, **spec},
    }


async def create(api: KubeAPI, body: dict[str, Any]) -> None:
    await api.request(
        "POST", collection_path(MS_API, "modelservices", NS), body=copy.deepcopy(body)
    )


async def patch_spec(api: KubeAPI, spec: dict[str, Any]) -> None:
    await api.request(
        "PATCH",
        object_path(MS_API, "modelservices", NS, NAME),
        body={"spec": spec},
        content_type="application/merge-patch+json",
    )


async def replicas(api: KubeAPI, name: str = NAME) -> int | None:
    dep = await api.get("Deployment", NS, name)
    return None if dep is None else dep["spec"].get("replicas")


async def scaling_status(api: KubeAPI) -> dict[str, Any]:
    ms = await api.get("ModelService", NS, NAME)
    assert ms is not None
    return ms.get("status", {}).get("autoscaling") or {}


AUTOSCALING = {"minReplicas": 1, "maxReplicas": 8, "targetInFlight": 2}


async def test_autoscaler_scales_up_stepwise_and_holds_on_missing_data(
    api: KubeAPI,
    operator: RunningOperator,
    prometheus: MockPrometheus,
    clock: FakeClock,
    eventually: Any,
) -> None:
    prometheus.answer("mlkube_inflight_requests", 12.0)  # 12 in flight / 2 per pod = 6 pods
    await create(api, modelservice(autoscaling=AUTOSCALING))

    async def status_reason(text: str) -> bool:
        return text in (await scaling_status(api)).get("reason", "")

    # A freshly started autoscaler knows no history: it holds for the upscale window.
    await eventually(lambda: status_reason("no upscale before 1m of history"), what="hold")
    assert await replicas(api) == 2
    assert any("mlkube_inflight_requests" in q for q in prometheus.queries)

    # After a minute of consistent recommendations: at most x1.5 per step, up to 6.
    clock.advance(61)

    async def at(n: int) -> bool:
        return await replicas(api) == n

    await eventually(lambda: at(6), what="6 replicas")

    async def desired(n: int) -> bool:
        return (await scaling_status(api)).get("desiredReplicas") == n

    await eventually(lambda: desired(6), what="status desiredReplicas 6")
    status = await scaling_status(api)
    assert status["currentSignal"] == 12.0
    listing = await api.request("GET", collection_path("v1", "events", NS))
    scaled = [e["message"].split(":")[0] for e in listing["items"] if e.get("reason") == "Scaled"]
    assert scaled == ["scaling 2 -> 3", "scaling 3 -> 5", "scaling 5 -> 6"]
    pdb = await api.get("PodDisruptionBudget", NS, NAME)
    assert pdb is not None

    # Prometheus loses the series: never read as zero load, the service keeps 6 pods.
    prometheus.clear()
    clock.advance(5)
    await eventually(
        lambda: status_reason("metrics unavailable: holding 6 replicas"), what="hold on no data"
    )
    prometheus.answer("mlkube_inflight_requests", Error(503, "overloaded"))
    for _ in range(4):
        clock.advance(600)
        await eventually(lambda: status_reason("holding 6 replicas"), what="still holding")
    assert await replicas(api) == 6


async def test_a_gpu_signal_is_queried_for_the_pods_the_operator_sees(
    api: KubeAPI, operator: RunningOperator, prometheus: MockPrometheus, eventually: Any
) -> None:
    prometheus.answer("DCGM_FI_DEV_GPU_UTIL", 150.0)  # 150% over the pods / 50 = 3 pods
    scaling = {"signal": "gpuUtilization", "target": 50, "maxReplicas": 8}
    await create(api, modelservice(autoscaling=scaling))
    dep = await eventually(lambda: api.get("Deployment", NS, NAME), what="Deployment")

    async def no_pods_yet() -> bool:
        return "no pods to measure" in (await scaling_status(api)).get("reason", "")

    # Before any pod exists there is nothing to ask Prometheus: no data, not zero.
    await eventually(no_pods_yet, what="holding without pods")
    assert not prometheus.queries
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for pod in ("recs-6f9c8-abcde", "recs-6f9c8-fghij"):
        meta = {"name": pod, "namespace": NS, "labels": labels}
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta}
        await api.request("POST", collection_path("v1", "pods", NS), body=body)

    async def asked_for_both() -> list[str]:
        return [q for q in prometheus.queries if "recs-6f9c8-abcde|recs-6f9c8-fghij" in q]

    (query, *_) = await eventually(asked_for_both, what="a query naming both pods")
    assert 'DCGM_FI_DEV_GPU_UTIL{namespace="ml",pod=~"recs-6f9c8-abcde|recs-6f9c8-fghij"}' in query
    assert 'exported_namespace="ml",exported_pod=~' in query

    async def judged() -> bool:
        return "gpuUtilization 150 / target 50" in (await scaling_status(api)).get("reason", "")

    await eventually(judged, what="status reason")
    assert (await scaling_status(api))["currentSignal"] == 150.0


async def test_hpa_mode_creates_an_hpa_and_leaves_replicas_to_it(
    api: KubeAPI, operator: RunningOperator, eventually: Any
) -> None:
    await create(
        api,
        modelservice(
            autoscaling={
                "mode": "hpa",
                "minReplicas": 2,
                "maxReplicas": 5,
                "hpa": {"resource": "cpu", "targetUtilization": 70},
            }
        ),
    )
    hpa = await eventually(lambda: api.get("HorizontalPodAutoscaler", NS, NAME), what="HPA")
    assert hpa["spec"]["scaleTargetRef"]["name"] == NAME
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    dep = await eventually(lambda: api.get("Deployment", NS, NAME), what="Deployment")
    assert "replicas" not in dep["spec"]

    # Back to the built-in autoscaler: the HPA the operator created goes away.
    await patch_spec(api, {"autoscaling": {"mode": "builtin", "hpa": None}})

    async def hpa_gone() -> bool:
        return await api.get("HorizontalPodAutoscaler", NS, NAME) is None

    await eventually(hpa_gone, what="HPA removed")


async def test_gateway_api_weights_follow_the_canary(
    api: KubeAPI,
    operator: RunningOperator,
    prometheus: MockPrometheus,
    clock: FakeClock,
    eventually: Any,
) -> None:
    rollout = {
        "steps": [10, 40],
        "interval": "20s",
        "trafficRouting": "gatewayAPI",
        "gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "gateways"}]},
    }
    await create(api, modelservice(rollout=rollout))
    route = await eventually(lambda: api.get("HTTPRoute", NS, NAME), what="HTTPRoute")
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]
    assert route["spec"]["parentRefs"][0]["name"] == "public"
    stable_svc = await api.get("Service", NS, f"{NAME}-stable")
    assert stable_svc is not None
    assert stable_svc["spec"]["selector"]["mlkube.dev/track"] == "stable"

    await patch_spec(api, {"model": {"version": "v2"}})

    async def weights(expected: list[int]) -> bool:
        route = await api.get("HTTPRoute", NS, NAME)
        return (
            bool(route)
            and [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == expected
        )

    await eventually(lambda: weights([90, 10]), what="90/10")
    canary = await eventually(
        lambda: api.get("Deployment", NS, f"{NAME}-canary"), what="canary Deployment"
    )
    # No metrics: each step passes on time once the canary is ready.
    status = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    status["observedGeneration"] = canary["metadata"].get("generation", 0)
    await api.request(
        "PATCH",
        object_path("apps/v1", "deployments", NS, f"{NAME}-canary"),
        body={"status": status},
        content_type="application/merge-patch+json",
    )
    clock.advance(21)
    await eventually(lambda: weights([60, 40]), what="60/40")
