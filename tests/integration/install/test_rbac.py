"""The chart's RBAC covers exactly the API calls the operator makes.

The list of calls is not written by hand: the real operator (kopf plus mlkube's handlers
and API client, the very code `mlkube operator` runs) is driven through its work against
kmock's Kubernetes API emulator, and every HTTP request it sends is recorded and turned
into (API group, resource[/subresource], verb, name) the way the API server's authorizer
sees it. The test then renders the chart with the real helm for the same mode
(cluster-wide or namespaced, with or without peering) and checks:

* every recorded call is allowed by the rendered Role/ClusterRole rules (nothing the
  operator does would be forbidden), and
* every verb the chart grants was used by some recorded call (least privilege: a grant
  nobody uses is a finding, not a safety margin).

The scenarios walk every code path that talks to the API: create (children appear: a
server-side apply that creates its object is authorized as patch and create), status refresh on a Deployment
change, Events, scaling down to one replica (the PodDisruptionBudget is deleted), an
invalid spec, and kopf's own machinery (CRD and namespace observation, peering).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from operator_harness import (
    MS,
    NS,
    OPERATOR_TOKEN,
    config,
    eventually,
    operator_running,
)

from mlkube.operator.kube import ApiError, KubeAPI, collection_path, object_path

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "mlkube"
PEERING = "mlkube"


# ------------------------------------------------------------------ calls and rules


@dataclass(frozen=True)
class Call:
    """One API request as RBAC sees it."""

    group: str
    resource: str  # plural, or plural/subresource
    verb: str
    namespace: str | None
    name: str | None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource} {self.name or ''}{where}"


def parse_call(method: str, path: str, params: dict[str, str]) -> Call | None:
    """A Kubernetes API URL and method -> the RBAC request attributes; None for discovery."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None  # discovery of a group version
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), rest[2:3]
    if sub:
        resource = f"{resource}/{sub[0]}"
    watch = params.get("watch") in ("true", "1")
    verb = {
        "GET": "watch" if watch else ("get" if name else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[method.upper()]
    return Call(group, resource, verb, namespace, name)


def allows(rules: Iterable[dict[str, Any]], call: Call) -> bool:
    for rule in rules:
        if not (set(rule.get("apiGroups", [])) & {call.group, "*"}):
            continue
        if not (set(rule.get("resources", [])) & {call.resource, "*"}):
            continue
        if not (set(rule.get("verbs", [])) & {call.verb, "*"}):
            continue
        names = rule.get("resourceNames") or []
        if names and call.name not in names:
            continue
        return True
    return False


def grants(rules: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def render_rbac(helm: str, tmp: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    path = tmp / "rbac-values.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    proc = __import__("subprocess").run(
        [helm, "template", "mlkube", str(CHART), "-n", "mlkube-system", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def rules_for(manifests: list[dict[str, Any]], namespace: str | None) -> list[dict[str, Any]]:
    """The rules that apply to a request in ``namespace`` (None: cluster-scoped)."""
    out: list[dict[str, Any]] = []
    bound_roles = {
        (b["metadata"].get("namespace"), b["roleRef"]["kind"], b["roleRef"]["name"])
        for b in manifests
        if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(s["name"] == "mlkube" for s in b["subjects"])
    }
    for m in manifests:
        if m["kind"] == "ClusterRole" and any(
            kind == "ClusterRole" and name == m["metadata"]["name"] for _, kind, name in bound_roles
        ):
            out += m["rules"]
        if (
            m["kind"] == "Role"
            and namespace is not None
            and m["metadata"]["namespace"] == namespace
            and (namespace, "Role", m["metadata"]["name"]) in bound_roles
        ):
            out += m["rules"]
    return out


def operator_calls(emulator: Any) -> list[Call]:
    calls = []
    for request in list(emulator):
        if request.headers.get("Authorization") != f"Bearer {OPERATOR_TOKEN}":
            continue
        call = parse_call(str(request.method.value), request.url.path, dict(request.params))
        if call is not None:
            calls.append(call)
            if call.verb == "patch" and request.action == kmock.action.CREATE:
                # an apply that creates its object: kube-apiserver also authorizes create
                calls.append(dataclasses.replace(call, verb="create"))
    return calls


async def drive_modelservice(api: KubeAPI) -> None:
    """Every API path of the ModelService controller, as a user and the cluster would."""
    ms_api, ms_plural = "mlkube.dev/v1alpha1", "modelservices"
    await api.request("POST", collection_path(ms_api, ms_plural, NS), body=copy.deepcopy(MS))
    dep = await eventually(lambda: api.get("Deployment", NS, "recs"), what="Deployment")
    await eventually(lambda: api.get("PodDisruptionBudget", NS, "recs"), what="PDB")
    # the Deployment controller reports progress: the operator refreshes the status
    dep["status"] = {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
    }
    await api.request(
        "PATCH",
        object_path("apps/v1", "deployments", NS, "recs", "status"),
        body={"status": dep["status"]},
        content_type="application/merge-patch+json",
    )

    async def ms_status() -> dict[str, Any] | None:
        obj = await api.get("ModelService", NS, "recs")
        return (obj or {}).get("status") or None

    await eventually(ms_status, what="ModelService status")
    # scale down to one replica: the PodDisruptionBudget must go
    await api.request(
        "PATCH",
        object_path(ms_api, ms_plural, NS, "recs"),
        body={"spec": {"replicas": 1}, "metadata": {"generation": 2}},
        content_type="application/merge-patch+json",
    )

    async def pdb_gone() -> bool:
        return await api.get("PodDisruptionBudget", NS, "recs") is None

    await eventually(pdb_gone, what="PDB deleted")
    # a spec the schema could not catch: Degraded, an Event, the operator lives on
    bad = copy.deepcopy(MS)
    bad["metadata"].update(name="broken", uid="uid-broken")
    bad["spec"]["replicas"] = "many"
    await api.request("POST", collection_path(ms_api, ms_plural, NS), body=bad)

    async def degraded() -> bool:
        obj = await api.get("ModelService", NS, "broken")
        conds = ((obj or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Degraded" and c["status"] == "True" for c in conds)

    await eventually(degraded, what="Degraded condition")
    # a model from S3 whose Secret is missing: the operator reads the Secret by name
    s3 = copy.deepcopy(MS)
    s3["metadata"].update(name="from-s3", uid="uid-from-s3")
    s3["spec"]["model"].update(
        format="custom",
        className="pkg.m:Model",
        storageUri="s3://models/m.onnx",
        storage={"secretName": "s3-creds"},
    )
    await api.request("POST", collection_path(ms_api, ms_plural, NS), body=s3)

    async def secret_missing() -> bool:
        obj = await api.get("ModelService", NS, "from-s3")
        conds = ((obj or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Degraded" and c["reason"] == "StorageSecretMissing" for c in conds)

    await eventually(secret_missing, what="StorageSecretMissing condition")


async def _patch_ms(api: KubeAPI, name: str, patch: dict[str, Any]) -> None:
    await api.request(
        "PATCH",
        object_path("mlkube.dev/v1alpha1", "modelservices", NS, name),
        body=patch,
        content_type="application/merge-patch+json",
    )


async def _generation(api: KubeAPI, name: str) -> int:
    obj = await api.get("ModelService", NS, name)
    assert obj is not None
    return int(obj["metadata"].get("generation", 1))


async def drive_rollout(api: KubeAPI) -> None:
    """The rollout controller's API paths: a canary with Gateway API routing that is
    started and then discarded, and an HPA that is created and then handed back."""
    body = copy.deepcopy(MS)
    body["metadata"].update(name="canaried", uid="uid-canaried")
    body["spec"]["rollout"] = {
        "strategy": "canary",
        "stepWeight": 50,
        "maxWeight": 50,
        "trafficRouting": "gatewayAPI",
        "gatewayAPI": {"parentRefs": [{"name": "public"}]},
    }
    await api.request(
        "POST", collection_path("mlkube.dev/v1alpha1", "modelservices", NS), body=body
    )

    async def route() -> dict[str, Any] | None:
        return await api.get("HTTPRoute", NS, "canaried")

    await eventually(route, what="HTTPRoute")

    async def stable_revision() -> str | None:
        obj = await api.get("ModelService", NS, "canaried")
        rollout = ((obj or {}).get("status") or {}).get("rollout") or {}
        return rollout.get("stableRevision")

    await eventually(stable_revision, what="first revision deployed")
    # a new model version starts a canary ...
    generation = await _generation(api, "canaried")
    await _patch_ms(
        api,
        "canaried",
        {"spec": {"model": {"version": "v2"}}, "metadata": {"generation": generation + 1}},
    )

    async def canary() -> dict[str, Any] | None:
        return await api.get("Deployment", NS, "canaried-canary")

    await eventually(canary, what="canary Deployment")
    # ... and going back to the stable version discards it
    await _patch_ms(
        api,
        "canaried",
        {"spec": {"model": {"version": "v1"}}, "metadata": {"generation": generation + 2}},
    )

    async def canary_gone() -> bool:
        return await api.get("Deployment", NS, "canaried-canary") is None

    await eventually(canary_gone, what="canary Deployment removed")

    body = copy.deepcopy(MS)
    body["metadata"].update(name="scaled", uid="uid-scaled")
    body["spec"]["autoscaling"] = {"mode": "hpa", "minReplicas": 2, "maxReplicas": 5}
    await api.request(
        "POST", collection_path("mlkube.dev/v1alpha1", "modelservices", NS), body=body
    )

    async def hpa() -> dict[str, Any] | None:
        return await api.get("HorizontalPodAutoscaler", NS, "scaled")

    await eventually(hpa, what="HorizontalPodAutoscaler")
    await _patch_ms(
        api,
        "scaled",
        {"spec": {"autoscaling": {"mode": "builtin"}}, "metadata": {"generation": 2}},
    )

    async def hpa_gone() -> bool:
        return await api.get("HorizontalPodAutoscaler", NS, "scaled") is None

    await eventually(hpa_gone, what="HorizontalPodAutoscaler removed")


async def drive_legacy_finalizers(api: KubeAPI) -> None:
    """Objects an older mlkube marked with its finalizer: the operator releases them (kopf
    patches the finalizer away), the only write the operator makes to their main object."""
    for kind, plural, name in (
        ("ModelService", "modelservices", "legacy-ms"),
        ("PyTorchJob", "pytorchjobs", "legacy-job"),
    ):
        path = collection_path("mlkube.dev/v1alpha1", plural, NS)
        body = {
            "apiVersion": "mlkube.dev/v1alpha1",
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": NS,
                "uid": f"uid-{name}",
                "resourceVersion": "1",
                "finalizers": ["mlkube.dev/finalizer"],
            },
            "spec": {},
        }
        await api.request("POST", path, body=body)

        async def released(plural: str = plural, name: str = name) -> bool:
            obj = await api.request("GET", object_path("mlkube.dev/v1alpha1", plural, NS, name))
            return not (obj.get("metadata") or {}).get("finalizers")

        await eventually(released, what=f"{kind} {name} released")


async def drive_pytorchjob(api: KubeAPI) -> None:
    """The PyTorchJob controller's API paths: pods and services appear, run and finish; a
    gang through each PodGroup API, created while the job runs and deleted when it ends."""
    await _run_job(api, "mnist", {"Master": 1, "Worker": 1}, {"minAvailable": 2})
    await _run_job(api, "gang", {"Worker": 1}, {"queue": "training"}, scheduler="volcano")


async def _run_job(
    api: KubeAPI,
    name: str,
    replicas: dict[str, int],
    scheduling: dict[str, Any],
    scheduler: str | None = None,
) -> None:
    pod_spec: dict[str, Any] = {"containers": [{"name": "pytorch", "image": "pytorch:2"}]}
    if scheduler:
        pod_spec["schedulerName"] = scheduler
    job = {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "PyTorchJob",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {
            "pytorchReplicaSpecs": {
                rtype: {"replicas": n, "template": {"spec": pod_spec}}
                for rtype, n in replicas.items()
            },
            "runPolicy": {
                "cleanPodPolicy": "All",
                "ttlSecondsAfterFinished": 2,
                "schedulingPolicy": scheduling,
            },
        },
    }
    group = "scheduling.volcano.sh/v1beta1" if scheduler else "scheduling.x-k8s.io/v1alpha1"

    async def pod_group() -> dict[str, Any] | None:
        try:
            return await api.request("GET", object_path(group, "podgroups", NS, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    await api.request("POST", collection_path("mlkube.dev/v1alpha1", "pytorchjobs", NS), body=job)
    await eventually(pod_group, what=f"PodGroup {name}")
    pods = [f"{name}-{rtype.lower()}-0" for rtype in replicas]
    for pod in pods:

        async def exists(pod: str = pod) -> dict[str, Any] | None:
            return await api.get("Pod", NS, pod)

        await eventually(exists, what=f"pod {pod}")
        await api.request(
            "PATCH",
            object_path("v1", "pods", NS, pod, "status"),
            body={"status": {"phase": "Succeeded"}},
            content_type="application/merge-patch+json",
        )

    async def finished() -> bool:
        obj = await api.request("GET", object_path("mlkube.dev/v1alpha1", "pytorchjobs", NS, name))
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Succeeded" and c["status"] == "True" for c in conds)

    await eventually(finished, what=f"PyTorchJob {name} Succeeded")

    async def cleaned_up() -> bool:
        for kind in ("Pod", "Service"):
            for pod in pods:
                if await api.get(kind, NS, pod) is not None:
                    return False
        return await pod_group() is None

    await eventually(cleaned_up, what="cleanPodPolicy All: pods, services, PodGroup deleted")

    async def deleted_by_ttl() -> bool:
        try:
            obj = await api.request(
                "GET", object_path("mlkube.dev/v1alpha1", "pytorchjobs", NS, name)
            )
        except ApiError as exc:
            if exc.status == 404:
                return True
            raise
        return bool(obj["metadata"].get("deletionTimestamp"))

    await eventually(deleted_by_ttl, what="ttlSecondsAfterFinished: the job is deleted")


async def prepare(api: KubeAPI, namespaces: tuple[str, ...], peering: str) -> None:
    for plural, kind in (("modelservices", "ModelService"), ("pytorchjobs", "PyTorchJob")):
        await api.request(
            "POST",
            collection_path("apiextensions.k8s.io/v1", "customresourcedefinitions", None),
            body={
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.mlkube.dev"},
                "spec": {"group": "mlkube.dev", "names": {"plural": plural, "kind": kind}},
            },
        )
    if peering:
        if namespaces:
            for ns in namespaces:
                await api.request(
                    "POST",
                    collection_path("kopf.dev/v1", "kopfpeerings", ns),
                    body={"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                          "metadata": {"name": peering, "namespace": ns}},
                )  # fmt: skip
        else:
            await api.request(
                "POST",
                collection_path("kopf.dev/v1", "clusterkopfpeerings", None),
                body={"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                      "metadata": {"name": peering}},
            )  # fmt: skip


# ------------------------------------------------------------------------------ tests


async def record(
    emulator: Any, harness: KubeAPI, namespaces: tuple[str, ...], peering: str, *, full: bool
) -> list[Call]:
    """Run the operator through the scenarios and return its API calls.

    ``full``: every controller path; otherwise one ModelService only, which is enough to
    see what the mode itself adds (namespace discovery, peering keep-alives).
    """
    await prepare(harness, namespaces, peering)
    async with operator_running(config(namespaces, peering)):
        if full:
            await drive_modelservice(harness)
            await drive_rollout(harness)
            await drive_pytorchjob(harness)
            await drive_legacy_finalizers(harness)
        else:
            await harness.request(
                "POST",
                collection_path("mlkube.dev/v1alpha1", "modelservices", NS),
                body=copy.deepcopy(MS),
            )
            await eventually(lambda: harness.get("Deployment", NS, "recs"), what="Deployment")
        if peering:
            await asyncio.sleep(0.5)  # let a keep-alive land
    return operator_calls(emulator)


def forbidden_calls(calls: Iterable[Call], manifests: list[dict[str, Any]]) -> list[str]:
    return sorted({str(c) for c in calls if not allows(rules_for(manifests, c.namespace), c)})


def granted_by(manifests: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """What the roles bound to the operator's ServiceAccount grant (the chart's
    release-manager ClusterRole is for people, bound by the user: tests/e2e/test_cli.py)."""
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"])
        for b in manifests
        if b["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(s["name"] == "mlkube" for s in b["subjects"])
    }
    out: set[tuple[str, str, str]] = set()
    for m in manifests:
        if m["kind"] in ("ClusterRole", "Role") and (m["kind"], m["metadata"]["name"]) in bound:
            out |= grants(m["rules"])
    return out


def _is_subset(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths where ``live`` differs from ``desired``; extra fields in ``live`` are fine.

    This is how Argo CD's default diff treats fields that are not in Git (and not in the
    last-applied configuration): the API server's defaults, other managers' fields and
    status do not make an application OutOfSync; a changed value of a Git field does.
    """
    if isinstance(desired, dict) and isinstance(live, dict):
        out: list[str] = []
        for key, value in desired.items():
            if key not in live:
                out.append(f"{path}.{key} missing")
            else:
                out += _is_subset(value, live[key], f"{path}.{key}")
        return out
    return [] if desired == live else [f"{path}: {desired!r} -> {live!r}"]


async def test_cluster_wide_rbac_is_exactly_what_the_operator_calls(
    emulator: Any, harness: KubeAPI, kubeconfig: Path, helm: str, tmp_path: Path
) -> None:
    """All controllers, every path; then the chart's default (cluster-wide) RBAC."""
    calls = await record(emulator, harness, (), "", full=True)
    assert calls, "the operator made no API calls: the recording is broken"
    manifests = render_rbac(helm, tmp_path, {})
    forbidden = forbidden_calls(calls, manifests)
    assert forbidden == [], "the chart's RBAC would refuse:\n" + "\n".join(forbidden)
    used = {(c.group, c.resource, c.verb) for c in calls}
    unused = sorted(granted_by(manifests) - used)
    assert unused == [], f"granted but never used by the operator: {unused}"

    # The same run, seen from Argo CD: no ignoreDifferences is needed for a ModelService,
    # because the operator writes only status (through the subresource), never the spec
    # Git holds nor any metadata (beyond releasing an older mlkube's finalizer).
    desired = copy.deepcopy(MS)
    desired["spec"]["replicas"] = 1  # the last thing the "user" applied in the scenario
    del desired["metadata"]["generation"]
    del desired["metadata"]["resourceVersion"]
    live = await harness.get("ModelService", NS, "recs")
    assert live is not None
    assert _is_subset(desired, live) == []
    assert live["status"]["conditions"]
    writes = [
        r
        for r in list(emulator)
        if r.headers.get("Authorization") == f"Bearer {OPERATOR_TOKEN}"
        and str(r.method.value) in ("PATCH", "PUT", "POST")
        and "/modelservices" in r.url.path
    ]
    assert writes, "the operator wrote nothing to a ModelService: recording broken"
    annotations: set[str] = set()
    for request in writes:
        call = parse_call(str(request.method.value), request.url.path, dict(request.params))
        assert call is not None
        if call.resource.endswith("/status"):
            assert set(request.data) <= {"status", "metadata"}, request.data
            continue
        assert call.verb == "patch", f"the operator must not {call.verb} a ModelService"
        if isinstance(request.data, list):  # JSON patch: kopf's guarded finalizer write
            paths = {op["path"] for op in request.data if op["op"] != "test"}
            assert all(p.startswith("/metadata/") for p in paths), paths
            continue
        assert set(request.data) <= {"metadata", "status"}, request.data
        meta = request.data.get("metadata") or {}
        annotations |= set(meta.get("annotations") or {})
        for finalizer in meta.get("finalizers") or []:
            assert finalizer.startswith("mlkube.dev/"), finalizer
    # Only watching handlers are registered: kopf keeps no progress or diff-base
    # annotations on our objects, and its only write is releasing a legacy finalizer.
    assert annotations == set(), annotations


PEERING_MODES = {
    # name: (operator namespaces, chart values)
    "cluster-wide-peering": ((), {"operator": {"replicas": 2}}),
    "namespaced-peering": (
        (NS,),
        {"operator": {"watchNamespaces": [NS], "peering": {"enabled": True}}},
    ),
}


@pytest.mark.parametrize("mode", sorted(PEERING_MODES))
async def test_mode_specific_rbac_is_exactly_what_kopf_calls(
    emulator: Any, harness: KubeAPI, kubeconfig: Path, helm: str, tmp_path: Path, mode: str
) -> None:
    """Peering and namespaced mode: allowed, and what they add to the default is used."""
    namespaces, values = PEERING_MODES[mode]
    calls = await record(emulator, harness, namespaces, PEERING, full=False)
    manifests = render_rbac(helm, tmp_path, values)
    forbidden = forbidden_calls(calls, manifests)
    assert forbidden == [], "the chart's RBAC would refuse:\n" + "\n".join(forbidden)
    extra = granted_by(manifests) - granted_by(render_rbac(helm, tmp_path, {}))
    assert extra, "this mode adds no rules: the test would prove nothing"
    used = {(c.group, c.resource, c.verb) for c in calls}
    unused = sorted(extra - used)
    assert unused == [], f"granted in {mode} but never used: {unused}"


def test_recorded_calls_are_parsed_like_the_authorizer_does() -> None:
    """The URL -> RBAC attribute mapping itself, on the shapes the operator sends."""
    cases = {
        ("GET", "/apis/apps/v1/namespaces/ml/deployments/recs", ""): ("apps", "deployments", "get"),
        ("GET", "/api/v1/namespaces/ml/pods", ""): ("", "pods", "list"),
        ("GET", "/apis/mlkube.dev/v1alpha1/modelservices", "true"): (
            "mlkube.dev",
            "modelservices",
            "watch",
        ),
        ("PATCH", "/apis/mlkube.dev/v1alpha1/namespaces/ml/modelservices/recs/status", ""): (
            "mlkube.dev",
            "modelservices/status",
            "patch",
        ),
        ("POST", "/api/v1/namespaces/ml/events", ""): ("", "events", "create"),
        ("DELETE", "/apis/policy/v1/namespaces/ml/poddisruptionbudgets/recs", ""): (
            "policy",
            "poddisruptionbudgets",
            "delete",
        ),
        ("GET", "/api/v1/namespaces", "true"): ("", "namespaces", "watch"),
    }
    for (method, path, watch), (group, resource, verb) in cases.items():
        call = parse_call(method, path, {"watch": watch} if watch else {})
        assert call is not None
        assert (call.group, call.resource, call.verb) == (group, resource, verb), path
    assert parse_call("GET", "/apis/apps/v1", {}) is None
    assert parse_call("GET", "/api", {}) is None


def test_rule_matching_can_refuse() -> None:
    rules = [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["patch"],
         "resourceNames": ["mlkube"]},
    ]  # fmt: skip
    assert allows(rules, Call("kopf.dev", "clusterkopfpeerings", "patch", None, "mlkube"))
    assert not allows(rules, Call("kopf.dev", "clusterkopfpeerings", "patch", None, "other"))
    assert not allows(rules, Call("kopf.dev", "clusterkopfpeerings", "delete", None, "mlkube"))
    assert not allows(rules, Call("", "clusterkopfpeerings", "patch", None, "mlkube"))
