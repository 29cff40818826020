"""The ModelService controller end to end: kopf + our handlers + our API client, on kmock.

Each test starts the real operator in-process (``run_operator``, the same coroutine
``mlkube operator`` runs) with a 0.5 s drift timer, acts on the emulated API the way a user
or a Kubernetes controller would, and waits for the observable outcome.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import aiohttp
import kmock
import pytest

from mlkube.operator.kube import KubeAPI, collection_path, object_path

pytestmark = [pytest.mark.slow]

NS = "ml"
MS_API = "mlkube.dev/v1alpha1"

BASE: dict[str, Any] = {
    "apiVersion": MS_API,
    "kind": "ModelService",
    "metadata": {
        "name": "recs",
        "namespace": NS,
        "uid": "uid-recs",
    },
    "spec": {
        "model": {"name": "ranker", "version": "v1"},
        "replicas": 2,
        "gpu": {"count": 1},
    },
}


def manifest(name: str = "recs", **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    body["metadata"]["name"] = name
    body["metadata"]["uid"] = f"uid-{name}"
    body["spec"].update(spec)
    return body


async def create_ms(api: KubeAPI, body: dict[str, Any]) -> None:
    await api.request("POST", collection_path(MS_API, "modelservices", NS), body=body)


async def patch(
    api: KubeAPI, kind_path: str, name: str, body: dict[str, Any], sub: str = ""
) -> None:
    api_version, plural = kind_path.rsplit("/", 1)
    await api.request(
        "PATCH",
        object_path(api_version, plural, NS, name, sub),
        body=body,
        content_type="application/merge-patch+json",
    )


def condition(ms: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((ms or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def requests_for(cluster: Any, method: str, plural: str, name: str | None = None) -> list[Any]:
    return [
        r
        for r in list(cluster)
        if str(r.method.value if hasattr(r.method, "value") else r.method).upper() == method
        and r.resource is not None
        and r.resource.plural == plural
        and (
            name is None or r.name == name or (r.data or {}).get("metadata", {}).get("name") == name
        )
        and not r.subresource
    ]


def creations(cluster: Any, plural: str) -> list[Any]:
    """Requests that created a ``plural`` object: a POST, or a server-side apply of a
    missing object (the emulator records those with the CREATE action)."""
    return [
        r
        for r in list(cluster)
        if r.action == kmock.action.CREATE
        and r.resource is not None
        and r.resource.plural == plural
        and not r.subresource
    ]


async def events(api: KubeAPI) -> list[dict[str, Any]]:
    result = await api.request("GET", collection_path("v1", "events", NS))
    items: list[dict[str, Any]] = result.get("items") or []
    return items


async def make_deployment_ready(api: KubeAPI, name: str, replicas: int) -> None:
    """What the Deployment controller would write once every pod is up."""
    dep = await api.get("Deployment", NS, name)
    assert dep is not None
    status = {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    await patch(api, "apps/v1/deployments", name, {"status": status}, sub="status")


async def test_create_builds_every_child(
    api: KubeAPI, cluster: Any, operator: Any, eventually: Any
) -> None:
    await create_ms(api, manifest())

    dep = await eventually(lambda: api.get("Deployment", NS, "recs"), what="Deployment")
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": MS_API,
            "kind": "ModelService",
            "name": "recs",
            "uid": "uid-recs",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = dep["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/mlkube/mlkube:test"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert pod["metadata"]["labels"]["mlkube.dev/track"] == "stable"

    svc = await eventually(lambda: api.get("Service", NS, "recs"), what="Service")
    assert svc["spec"]["selector"] == {"mlkube.dev/modelservice": "recs"}
    pdb = await eventually(lambda: api.get("PodDisruptionBudget", NS, "recs"), what="PDB")
    assert pdb["spec"]["maxUnavailable"] == 1

    # Applied with server-side apply as field manager mlkube.
    applies = requests_for(cluster, "PATCH", "deployments", "recs")
    assert applies
    assert applies[0].params == {"fieldManager": "mlkube", "force": "true"}
    assert applies[0].headers["Content-Type"] == "application/apply-patch+yaml"

    ms = await eventually(
        lambda: _with_condition(api, "recs", "Progressing", "True"), what="Progressing"
    )
    assert ms["status"]["url"] == "http://recs.ml.svc.cluster.local"
    assert ms["status"]["observedGeneration"] == 1
    assert ms["status"]["selector"] == "mlkube.dev/modelservice=recs"
    assert condition(ms, "Ready")["status"] == "False"


async def _with_condition(api: KubeAPI, name: str, kind: str, status: str) -> dict[str, Any] | None:
    ms = await api.get("ModelService", NS, name)
    return ms if condition(ms, kind).get("status") == status else None


async def test_spec_change_updates_the_deployment_in_place(
    api: KubeAPI, cluster: Any, operator: Any, eventually: Any
) -> None:
    await create_ms(api, manifest())
    first = await eventually(lambda: api.get("Deployment", NS, "recs"), what="Deployment")
    old_revision = first["metadata"]["labels"]["mlkube.dev/revision"]

    await patch(
        api,
        f"{MS_API}/modelservices",
        "recs",
        {"spec": {"model": {"name": "ranker", "version": "v2"}}},
    )

    async def updated() -> dict[str, Any] | None:
        dep = await api.get("Deployment", NS, "recs")
        labels = (dep or {}).get("spec", {}).get("template", {}).get("metadata", {}).get("labels")
        return dep if labels and labels["app.kubernetes.io/version"] == "v2" else None

    dep = await eventually(updated, what="Deployment on v2")
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MLKUBE_MODEL_VERSION"] == "v2"
    assert env["MLKUBE_REVISION"] != old_revision
    # Patched, never deleted and re-created.
    assert requests_for(cluster, "DELETE", "deployments") == []
    assert len(creations(cluster, "deployments")) == 1


async def test_deleted_children_come_back(
    api: KubeAPI, cluster: Any, operator: Any, eventually: Any
) -> None:
    """A deleted child is drift: it comes back (a new object, same name and shape)."""
    await create_ms(api, manifest())
    old_svc = await eventually(lambda: api.get("Service", NS, "recs"), what="Service")
    old_dep = await eventually(lambda: api.get("Deployment", NS, "recs"), what="Deployment")

    await api.request("DELETE", object_path("v1", "services", NS, "recs"))
    await api.request("DELETE", object_path("apps/v1", "deployments", NS, "recs"))

    async def recreated(kind: str, old: dict[str, Any]) -> dict[str, Any] | None:
        obj = await api.get(kind, NS, "recs")
        return obj if obj and obj["metadata"]["uid"] != old["metadata"]["uid"] else None

    svc = await eventually(lambda: recreated("Service", old_svc), what="Service back")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    await eventually(lambda: recreated("Deployment", old_dep), what="Deployment back")


async def test_children_status_becomes_modelservice_status(
    api: KubeAPI, operator: Any, eventually: Any
) -> None:
    await create_ms(api, manifest())
    dep = await eventually(lambda: api.get("Deployment", NS, "recs"), what="Deployment")
    revision = dep["metadata"]["labels"]["mlkube.dev/revision"]

    await make_deployment_ready(api, "recs", 2)
    ms = await eventually(lambda: _with_condition(api, "recs", "Ready", "True"), what="Ready")
    assert ms["status"]["readyReplicas"] == 2
    assert ms["status"]["revision"] == revision
    assert ms["status"]["modelVersion"] == "v1"
    assert condition(ms, "Progressing")["reason"] == "Complete"
    assert condition(ms, "Degraded")["status"] == "False"

    # A pod starts crash-looping: not Ready, and the message says which pod and why.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "recs-7d9f-abcde",
            "namespace": NS,
            # as the ReplicaSet makes them from the pod template
            "labels": {
                "app.kubernetes.io/managed-by": "mlkube",
                "mlkube.dev/modelservice": "recs",
                "mlkube.dev/track": "stable",
            },
        },
        "status": {
            "containerStatuses": [
                {
                    "name": "model-server",
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ]
        },
    }
    await api.request("POST", collection_path("v1", "pods", NS), body=pod)
    ms = await eventually(lambda: _with_condition(api, "recs", "Ready", "False"), what="not Ready")
    ready = condition(ms, "Ready")
    assert ready["reason"] == "CrashLoopBackOff"
    assert "recs-7d9f-abcde" in ready["message"]
    assert "restarted 4 times" in ready["message"]
    assert condition(ms, "Degraded")["status"] == "True"

    async def warning_event() -> list[dict[str, Any]]:
        return [e for e in await events(api) if e.get("reason") == "CrashLoopBackOff"]

    found = await eventually(warning_event, what="CrashLoopBackOff event")
    assert found[0]["type"] == "Warning"


async def test_invalid_spec_degrades_and_the_operator_keeps_running(
    api: KubeAPI, operator: Any, eventually: Any
) -> None:
    await create_ms(api, manifest("broken", featureStore={"type": "redis"}))
    ms = await eventually(
        lambda: _with_condition(api, "broken", "Degraded", "True"), what="Degraded"
    )
    degraded = condition(ms, "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "redis.urlSecretRef" in degraded["message"]
    assert await api.get("Deployment", NS, "broken") is None

    async def invalid_event() -> list[dict[str, Any]]:
        return [e for e in await events(api) if e.get("reason") == "InvalidSpec"]

    found = await eventually(invalid_event, what="InvalidSpec event")
    assert found[0]["type"] == "Warning"
    assert "redis.urlSecretRef" in found[0]["message"]

    # Unparseable specs too (a type the schema would have refused).
    await create_ms(api, manifest("garbled", replicas="many"))
    ms = await eventually(
        lambda: _with_condition(api, "garbled", "Degraded", "True"), what="Degraded"
    )
    assert "spec.replicas" in condition(ms, "Degraded")["message"]

    # The operator is alive and still serves valid objects.
    assert operator.alive
    await create_ms(api, manifest("fine"))
    await eventually(lambda: api.get("Deployment", NS, "fine"), what="Deployment of a valid one")

    # Fixing the spec clears Degraded.
    await patch(
        api,
        f"{MS_API}/modelservices",
        "broken",
        {"spec": {"featureStore": {"type": "memory"}}},
    )
    await eventually(lambda: api.get("Deployment", NS, "broken"), what="Deployment once fixed")
    await eventually(lambda: _with_condition(api, "broken", "Degraded", "False"), what="healthy")


async def test_restart_converges_without_duplicates(
    api: KubeAPI, cluster: Any, operator: Any, eventually: Any
) -> None:
    await create_ms(api, manifest(replicas=1))
    await eventually(lambda: api.get("Deployment", NS, "recs"), what="Deployment")
    assert await api.get("PodDisruptionBudget", NS, "recs") is None  # one replica: no PDB

    await operator.stop()
    await patch(
        api,
        f"{MS_API}/modelservices",
        "recs",
        {"spec": {"replicas": 3}},
    )
    await operator.start()

    async def scaled() -> dict[str, Any] | None:
        dep = await api.get("Deployment", NS, "recs")
        return dep if dep and dep["spec"]["replicas"] == 3 else None

    await eventually(scaled, what="Deployment scaled to 3")
    await eventually(lambda: api.get("PodDisruptionBudget", NS, "recs"), what="PDB")
    deployments = await api.list("Deployment", NS, "mlkube.dev/modelservice=recs")
    assert [d["metadata"]["name"] for d in deployments] == ["recs"]
    assert len(creations(cluster, "deployments")) == 1
    assert len(creations(cluster, "services")) == 1


async def test_liveness_endpoint_answers(operator: Any, eventually: Any) -> None:
    async def healthz() -> int | None:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(operator.config.liveness_endpoint) as response,
            ):
                return response.status
        except aiohttp.ClientConnectionError:
            return None

    assert await eventually(healthz, what="/healthz") == 200


async def test_a_settled_object_is_left_alone(
    api: KubeAPI, cluster: Any, operator: Any, eventually: Any
) -> None:
    """Level-based and idempotent: timer ticks on a settled object write no status, no Events."""
    await create_ms(api, manifest())
    created = await eventually(lambda: api.get("Deployment", NS, "recs"), what="Deployment")
    await make_deployment_ready(api, "recs", 2)
    await eventually(lambda: _with_condition(api, "recs", "Ready", "True"), what="Ready")
    await asyncio.sleep(0.6)  # let the last Events be posted

    def status_writes() -> int:
        return sum(
            1
            for r in list(cluster)
            if r.resource is not None
            and r.resource.plural == "modelservices"
            and r.subresource == "status"
        )

    writes, posted = status_writes(), len(await events(api))
    await asyncio.sleep(2.0)  # four drift-timer ticks
    assert status_writes() == writes
    assert len(await events(api)) == posted
    dep = await api.get("Deployment", NS, "recs")
    assert dep is not None
    assert dep["metadata"]["uid"] == created["metadata"]["uid"]  # never re-created


async def test_a_status_refresh_never_claims_a_generation_it_did_not_apply(
    api: KubeAPI, cluster: Any, kubeconfig: Any
) -> None:
    """A Deployment event handled before the spec change (as after an operator restart,
    when both watches list at once) must not stamp the new generation on a status that
    still describes the old Deployment."""
    from mlkube.operator.app import OperatorContext
    from mlkube.operator.config import OperatorConfig
    from mlkube.operator.handlers import converge

    ctx = OperatorContext(OperatorConfig(default_image="ghcr.io/mlkube/mlkube:test"))
    ctx.connection = api.info

    async def watched() -> None:
        """What the watch would have delivered by now (the reconcile reads the cache)."""
        body = await api.get("ModelService", NS, "recs")
        assert body is not None
        ctx.cache.wrote("ModelService", body)

    try:
        await create_ms(api, manifest(replicas=1))
        await watched()
        await converge(ctx, NS, "recs", apply=True)
        first = await api.get("ModelService", NS, "recs")
        assert first is not None
        assert first["status"]["observedGeneration"] == 1
        assert first["status"]["modelVersion"] == "v1"

        # the user changes the spec while no reconcile has applied it yet
        await patch(api, f"{MS_API}/modelservices", "recs", {"spec": {"model": {"version": "v2"}}})
        await watched()
        await converge(ctx, NS, "recs", apply=False)  # a Deployment event comes first
        refreshed = await api.get("ModelService", NS, "recs")
        assert refreshed is not None
        assert refreshed["metadata"]["generation"] == 2
        assert refreshed["status"]["observedGeneration"] == 1
        assert refreshed["status"]["modelVersion"] == "v1"

        await converge(ctx, NS, "recs", apply=True)  # then the spec change is applied
        applied = await api.get("ModelService", NS, "recs")
        assert applied is not None
        assert applied["status"]["observedGeneration"] == 2
        assert applied["status"]["modelVersion"] == "v2"
    finally:
        await ctx.close()


def finalizer_writes(cluster: Any) -> list[Any]:
    """Every write to a ModelService that sets metadata.finalizers to a non-empty list."""
    return [
        r
        for r in list(cluster)
        if r.resource is not None
        and r.resource.plural == "modelservices"
        and isinstance(r.data, dict)
        and (r.data.get("metadata") or {}).get("finalizers")
    ]


async def test_no_finalizer_is_added_and_the_timer_stops_on_delete(
    api: KubeAPI, cluster: Any, operator: Any, eventually: Any
) -> None:
    """Children go with their owner through owner references, so nothing must hold a
    deleted ModelService back: with the operator gone, `kubectl delete` would hang."""
    await create_ms(api, manifest(replicas=1))
    await eventually(lambda: _with_condition(api, "recs", "Progressing", "True"), what="status")
    await asyncio.sleep(1.2)  # a couple of drift-timer ticks (0.5 s)
    ms = await api.get("ModelService", NS, "recs")
    assert ms is not None
    assert ms["metadata"].get("finalizers") in (None, [])
    assert finalizer_writes(cluster) == []

    def passes() -> float:
        """Full reconciles of ModelServices so far (the operator's own counter)."""
        value = operator.ctx.metrics.registry.get_sample_value(
            "mlkube_operator_reconciles_total", {"kind": "ModelService", "result": "success"}
        )
        return float(value or 0.0)

    before = passes()
    await asyncio.sleep(1.2)
    assert passes() > before  # the drift check is ticking
    await api.request("DELETE", object_path(MS_API, "modelservices", NS, "recs"))
    await asyncio.sleep(0.8)  # the DELETED event, and a pass already under way
    after_delete = passes()
    await asyncio.sleep(1.5)  # three more ticks, were the drift check still queued
    assert passes() == after_delete
    key = ("ModelService", NS, "recs")
    assert operator.ctx.queue.due_in(key, True) is None  # nothing left queued for it
    assert operator.ctx.queue.due_in(key, False) is None
    assert operator.alive


async def test_a_finalizer_left_by_an_older_operator_is_removed(
    api: KubeAPI, cluster: Any, operator: Any, eventually: Any
) -> None:
    body = manifest(replicas=1)
    body["metadata"]["finalizers"] = ["mlkube.dev/finalizer"]
    await create_ms(api, body)

    async def released() -> dict[str, Any] | None:
        ms = await api.get("ModelService", NS, "recs")
        return ms if ms and not ms["metadata"].get("finalizers") else None

    await eventually(released, what="the old finalizer removed")
    await eventually(lambda: api.get("Deployment", NS, "recs"), what="Deployment")


def status_writes(cluster: Any, name: str) -> list[dict[str, Any]]:
    """Every status the operator wrote on ModelService ``name``, oldest first (request log)."""
    return [
        r.data.get("status") or {}
        for r in list(cluster)
        if r.resource is not None
        and r.resource.plural == "modelservices"
        and r.name == name
        and r.subresource == "status"
        and isinstance(r.data, dict)
    ]


async def test_a_refused_child_keeps_the_object_degraded_until_an_apply_succeeds(
    api: KubeAPI, cluster: Any, operator: Any, eventually: Any
) -> None:
    """Gateway API routing on a cluster without the Gateway API CRDs: the API server
    answers 404 for the HTTPRoute on every reconcile.
    That is one lasting state, not a flip-flop: the status-only refreshes in between
    (Deployment events) cannot know the apply succeeded, so they keep Degraded=True /
    ApplyFailed; one Warning Event says so; only an apply that succeeds clears it."""
    rollout = {
        "trafficRouting": "gatewayAPI",
        "gatewayAPI": {"parentRefs": [{"name": "public"}]},
    }
    cluster.unserved = {"gateway.networking.k8s.io/httproutes"}
    await create_ms(api, manifest("routed", rollout=rollout))
    ms = await eventually(
        lambda: _with_condition(api, "routed", "Degraded", "True"), what="Degraded"
    )
    degraded = condition(ms, "Degraded")
    assert degraded["reason"] == "ApplyFailed"
    assert "the API server refused HTTPRoute routed: HTTP 404" in degraded["message"]
    assert "404 page not found" in degraded["message"]
    # Everything applied before the route is there and runs.
    assert await api.get("Deployment", NS, "routed") is not None
    assert await api.get("Service", NS, "routed-stable") is not None

    # The Deployment controller reports the pods up (a Deployment event: a status-only
    # refresh), and the drift timer re-applies, failing again, every 0.5 s.
    await make_deployment_ready(api, "routed", 2)
    ms = await eventually(
        lambda: _with_condition(api, "routed", "Ready", "True"), what="previous pods serve"
    )
    assert condition(ms, "Ready")["reason"] == "ApplyFailed"
    await asyncio.sleep(1.0)
    await make_deployment_ready(api, "routed", 2)  # one more refresh between ticks
    await asyncio.sleep(1.5)

    writes = status_writes(cluster, "routed")
    first = next(
        i
        for i, w in enumerate(writes)
        if any(c["type"] == "Degraded" and c["status"] == "True" for c in w["conditions"])
    )
    for written in writes[first:]:
        (cond,) = [c for c in written["conditions"] if c["type"] == "Degraded"]
        assert (cond["status"], cond["reason"]) == ("True", "ApplyFailed"), writes
    ms = await api.get("ModelService", NS, "routed")
    assert condition(ms, "Degraded")["lastTransitionTime"] == degraded["lastTransitionTime"]
    # One Event per real change: deployed, refused, ready (the pods that were applied
    # serve); nothing repeated, no Recovered in between.
    reasons = sorted(e.get("reason", "") for e in await events(api))
    assert reasons == ["ApplyFailed", "Deployed", "Ready"]

    # The CRDs get installed: the next apply succeeds, and that clears the condition.
    cluster.unserved = set()
    await eventually(lambda: _with_condition(api, "routed", "Degraded", "False"), what="recovered")
    assert await api.get("HTTPRoute", NS, "routed") is not None

    async def recovered_event() -> list[str]:
        return [e["reason"] for e in await events(api) if e.get("reason") == "Recovered"]

    assert await eventually(recovered_event, what="Recovered event") == ["Recovered"]


async def test_a_model_that_cannot_be_fetched_is_a_condition_and_an_event(
    api: KubeAPI, operator: Any, eventually: Any
) -> None:
    """The S3 Secret is checked before anything is applied; a fetch that fails in the pod
    comes back from the init container's termination message."""
    model = {
        "name": "ranker",
        "version": "v1",
        "format": "custom",
        "className": "pkg.m:Model",
        "storageUri": "s3://models/mlp/model.onnx",
        "storage": {"secretName": "s3-creds"},
    }
    await create_ms(api, manifest("fetched", model=model))
    ms = await eventually(
        lambda: _with_condition(api, "fetched", "Degraded", "True"), what="Degraded"
    )
    degraded = condition(ms, "Degraded")
    assert degraded["reason"] == "StorageSecretMissing"
    assert "Secret s3-creds does not exist in namespace ml" in degraded["message"]
    assert await api.get("Deployment", NS, "fetched") is None  # no pod to crash-loop

    async def event(reason: str) -> list[dict[str, Any]]:
        return [e for e in await events(api) if e.get("reason") == reason]

    (found,) = await eventually(lambda: event("StorageSecretMissing"), what="Secret event")
    assert found["type"] == "Warning"
    assert "s3-creds" in found["message"]

    # The Secret appears: the next pass (the drift timer) applies the Deployment.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-creds", "namespace": NS},
        "data": {"AWS_ACCESS_KEY_ID": "aWQ=", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"},
    }
    await api.request("POST", collection_path("v1", "secrets", NS), body=secret)
    dep = await eventually(lambda: api.get("Deployment", NS, "fetched"), what="Deployment")
    init = dep["spec"]["template"]["spec"]["initContainers"][0]
    assert init["name"] == "fetch-model"

    # The pod's fetch fails: its reason and message become the condition and an Event.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "fetched-5c7d-xk2p9",
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/managed-by": "mlkube",
                "mlkube.dev/modelservice": "fetched",
                "mlkube.dev/track": "stable",
            },
        },
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "fetch-model",
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "message": "ModelNotFound: s3://models/mlp/model.onnx does not "
                            "exist: the server answered 404 Not Found (NoSuchKey: The "
                            "specified key does not exist.)\n",
                        }
                    },
                }
            ],
        },
    }
    await api.request("POST", collection_path("v1", "pods", NS), body=pod)

    async def fetch_failed() -> dict[str, Any] | None:
        ms = await api.get("ModelService", NS, "fetched")
        return ms if condition(ms, "Degraded").get("reason") == "ModelNotFound" else None

    ms = await eventually(fetch_failed, what="Degraded: ModelNotFound")
    assert condition(ms, "Degraded")["message"] == (
        "pod fetched-5c7d-xk2p9 could not fetch the model (init container fetch-model, "
        "restarted 2 times): s3://models/mlp/model.onnx does not exist: the server answered "
        "404 Not Found (NoSuchKey: The specified key does not exist.)"
    )
    (found,) = await eventually(lambda: event("ModelNotFound"), what="ModelNotFound event")
    assert found["type"] == "Warning"
