"""Canary rollouts against a real API server: admission of spec.rollout/spec.autoscaling,
and a release that is promoted and one that is rolled back by the real operator.

As in test_operator.py no controller-manager runs: the test writes Deployment status
through the status subresource when the pods would be ready.  Prometheus is a small
scripted HTTP server on loopback (the real one is exercised in
tests/integration/rollout/test_real_prometheus.py); the operator's clock is real, so the
rollout uses the shortest interval the schema allows (10s).
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.support.kubectl import modelservice, watched_objects, watching

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

controlplane = importlib.import_module("mlkube_e2e_controlplane")  # loaded by conftest.py
wait_until = controlplane.wait_until

MODEL = {"name": "ranker", "version": "v1"}


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("steps-order", {"steps": [50, 20]}, "steps must be strictly increasing"),
    ("steps-and-weight", {"steps": [10], "stepWeight": 10}, "use either steps or stepWeight"),
    ("short-interval", {"interval": "5s"}, "interval must be at least 10s"),
    ("gateway", {"trafficRouting": "gatewayAPI"}, "trafficRouting gatewayAPI needs"),
    (
        "percent",
        {"analysis": {"metrics": [{"name": "successRate", "min": 99}]}},
        "successRate is a share between 0 and 1",
    ),
    (
        "unknown-metric",
        {"analysis": {"metrics": [{"name": "errors", "max": 1}]}},
        "a metric without a query must be successRate, latencyP99, rewardRate, gpuUtilization",
    ),
    ("step-zero", {"steps": [0, 50]}, "a step of 0 needs shadow"),
    (
        "reward-bounds",
        {"analysis": {"metrics": [{"name": "rewardRate", "min": 0.05}]}},
        "rewardRate is judged by margin and confidence",
    ),
]


@pytest.mark.parametrize(("name", "rollout", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_rollout_is_refused(
    cluster: Any, crds_installed: list[str], namespace: str, name: str, rollout: Any, message: str
) -> None:
    proc = cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-",
        stdin=modelservice(name, {"model": MODEL, "rollout": rollout}), check=False,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stderr


def test_bad_autoscaling_is_refused(
    cluster: Any, crds_installed: list[str], namespace: str
) -> None:
    spec = {"model": MODEL, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}
    proc = cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-",
        stdin=modelservice("scaling", spec), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "minReplicas must not exceed maxReplicas" in proc.stderr


def test_defaults_appear_on_created_objects(
    cluster: Any, crds_installed: list[str], namespace: str
) -> None:
    spec = {
        "model": MODEL,
        "rollout": {"analysis": {"metrics": [{"name": "latencyP99", "max": 200}]}},
    }
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", stdin=modelservice("defaults", spec)
    )  # fmt: skip
    ms = cluster.kubectl_json("-n", namespace, "get", "msvc", "defaults")
    rollout = ms["spec"]["rollout"]  # type: ignore[index]
    assert rollout["strategy"] == "canary"
    assert rollout["interval"] == "60s"
    assert rollout["maxWeight"] == 50
    assert rollout["analysis"]["minSampleCount"] == 100
    assert rollout["analysis"]["metrics"][0]["onNoData"] == "wait"


# --------------------------------------------------------------------- the real operator


class ScriptedPrometheus:
    """``/api/v1/query`` answering by substring of the PromQL; thread-safe."""

    def __init__(self) -> None:
        self.answers: dict[str, float] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                with owner.lock:
                    value = next((v for k, v in owner.answers.items() if k in query), None)
                result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
                body = json.dumps(
                    {"status": "success", "data": {"resultType": "vector", "result": result}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def set(self, answers: dict[str, float]) -> None:
        with self.lock:
            self.answers = dict(answers)


@pytest.fixture
def prometheus() -> Iterator[ScriptedPrometheus]:
    prom = ScriptedPrometheus()
    prom.thread.start()
    yield prom
    prom.server.shutdown()
    prom.server.server_close()


HEALTHY = {"increase(mlkube_requests_total": 500.0, "1 - ((sum(rate(": 0.999}
FAILING = {"increase(mlkube_requests_total": 500.0, "1 - ((sum(rate(": 0.5}


def get(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def mark_rolled_out(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    dep = get(cluster, namespace, "deployment", name)
    assert dep is not None, name
    n = dep["spec"]["replicas"]
    status = {
        "observedGeneration": dep["metadata"]["generation"],
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n,
        "availableReplicas": n,
    }
    cluster.kubectl(
        "-n", namespace, "patch", "deployment", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    return dep


def rollout_of(cluster: Any, namespace: str) -> dict[str, Any]:
    ms = get(cluster, namespace, "msvc", "recs") or {}
    out: dict[str, Any] = ms.get("status", {}).get("rollout") or {}
    return out


def revision(dep: dict[str, Any]) -> str:
    return str(dep["spec"]["template"]["metadata"]["labels"]["mlkube.dev/revision"])


def apply_version(cluster: Any, namespace: str, version: str) -> None:
    spec = {
        "model": {"name": "ranker", "version": version},
        "replicas": 2,
        "rollout": {
            "steps": [50],
            "interval": "10s",
            "analysis": {"minSampleCount": 10, "metrics": [{"name": "successRate", "min": 0.99}]},
        },
    }
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "--field-manager=alice", "-f", "-",
        stdin=modelservice("recs", spec),
    )  # fmt: skip


def test_canary_is_promoted_then_a_bad_one_rolled_back(
    cluster: Any,
    crds_installed: list[str],
    namespace: str,
    start_operator: Any,
    prometheus: ScriptedPrometheus,
) -> None:
    # The drift timer stays at its default (60s): the rollout timer alone drives the canary.
    start_operator(namespaces=[namespace], env={"MLKUBE_PROMETHEUS_URL": prometheus.url})
    prometheus.set(HEALTHY)
    apply_version(cluster, namespace, "v1")
    first = wait_until(lambda: get(cluster, namespace, "deployment", "recs"), what="Deployment")
    mark_rolled_out(cluster, namespace, "recs")
    wait_until(
        lambda: rollout_of(cluster, namespace).get("stableRevision") == revision(first),
        what="first revision stable",
    )

    # v2: a canary with half the pods; the stable Deployment keeps v1.
    apply_version(cluster, namespace, "v2")
    canary = wait_until(lambda: get(cluster, namespace, "deployment", "recs-canary"), what="canary")
    assert canary["spec"]["replicas"] == 1
    stable = wait_until(
        lambda: (
            (d := get(cluster, namespace, "deployment", "recs"))
            and d["spec"]["replicas"] == 1
            and d
        ),
        what="stable scaled to 1",
    )
    assert revision(stable) == revision(first)
    mark_rolled_out(cluster, namespace, "recs-canary")
    mark_rolled_out(cluster, namespace, "recs")

    # One passed check at the only step promotes: stable moves to v2 with both pods.
    promoted = wait_until(
        lambda: (
            (d := get(cluster, namespace, "deployment", "recs"))
            and revision(d) == revision(canary)
            and d["spec"]["replicas"] == 2
            and d
        ),
        timeout=60,
        what="stable on v2",
    )
    assert promoted["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "v2"
    mark_rolled_out(cluster, namespace, "recs")
    wait_until(
        lambda: (
            get(cluster, namespace, "deployment", "recs-canary") is None
            and rollout_of(cluster, namespace).get("phase") == "Succeeded"
        ),
        what="promotion finished",
    )

    # v3 fails its check: rolled back, v2 keeps serving, Ready but Degraded.
    prometheus.set(FAILING)
    apply_version(cluster, namespace, "v3")
    wait_until(lambda: get(cluster, namespace, "deployment", "recs-canary"), what="canary v3")
    mark_rolled_out(cluster, namespace, "recs-canary")
    mark_rolled_out(cluster, namespace, "recs")
    wait_until(
        lambda: rollout_of(cluster, namespace).get("phase") == "RolledBack",
        timeout=60,
        what="rollback",
    )
    wait_until(
        lambda: get(cluster, namespace, "deployment", "recs-canary") is None, what="canary gone"
    )
    stable_dep = get(cluster, namespace, "deployment", "recs")
    assert stable_dep is not None
    assert revision(stable_dep) == revision(promoted)
    mark_rolled_out(cluster, namespace, "recs")

    def conditions() -> dict[str, Any] | None:
        ms = get(cluster, namespace, "msvc", "recs") or {}
        conds = {c["type"]: c for c in ms.get("status", {}).get("conditions", [])}
        ok = (
            conds.get("Ready", {}).get("status") == "True"
            and conds.get("Degraded", {}).get("reason") == "RolledBack"
        )
        return conds if ok else None

    conds = wait_until(conditions, what="Ready=True, Degraded=True RolledBack")
    assert "successRate 50.00% < 99.00%" in conds["Degraded"]["message"]
    status = rollout_of(cluster, namespace)
    assert [h["outcome"] for h in status["history"]] == ["Deployed", "Promoted", "RolledBack"]
    events = cluster.kubectl(
        "-n", namespace, "get", "events", "-o", "jsonpath={range .items[*]}{.message}{'\\n'}{end}"
    ).stdout
    assert f"rolled back to {revision(promoted)}" in events
    assert "promoting canary" in events


def test_builtin_autoscaler_and_hpa_mode(
    cluster: Any,
    crds_installed: list[str],
    namespace: str,
    start_operator: Any,
    prometheus: ScriptedPrometheus,
) -> None:
    start_operator(namespaces=[namespace], env={"MLKUBE_PROMETHEUS_URL": prometheus.url})
    prometheus.set({"mlkube_inflight_requests": 9.0})  # 9 in flight / 2 per pod -> 5 pods
    spec: dict[str, Any] = {
        "model": MODEL,
        "replicas": 2,
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 4,
            "targetInFlight": 2,
            "upscaleStabilization": "0s",
        },
    }
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", stdin=modelservice("scaled", spec)
    )  # fmt: skip

    def replicas(name: str = "scaled") -> int | None:
        dep = get(cluster, namespace, "deployment", name)
        return None if dep is None else dep["spec"].get("replicas")

    # 2 -> 3 (x1.5) -> 4 (maxReplicas), by the operator's own timer.
    wait_until(lambda: replicas() == 4, timeout=60, what="scaled to maxReplicas")

    # The status is written after the Deployment: wait for it to catch up.
    def scaling_status() -> dict[str, Any] | None:
        ms = get(cluster, namespace, "msvc", "scaled")
        block = (ms or {}).get("status", {}).get("autoscaling") or {}
        return block if block.get("desiredReplicas") == 4 else None

    scaling = wait_until(scaling_status, timeout=30, what="status.autoscaling at 4 replicas")
    assert "bounded to [1, 4]" in scaling["reason"] or "maxUpscaleFactor" in scaling["reason"]
    pdb = get(cluster, namespace, "pdb", "scaled")
    assert pdb is not None

    # Mode hpa: a real autoscaling/v2 HPA owned by the ModelService.
    spec["autoscaling"] = {
        "mode": "hpa",
        "minReplicas": 2,
        "maxReplicas": 6,
        "hpa": {"resource": "memory", "targetUtilization": 75},
    }
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", stdin=modelservice("scaled", spec)
    )  # fmt: skip
    hpa = wait_until(
        lambda: get(cluster, namespace, "hpa", "scaled"), timeout=90, what="HorizontalPodAutoscaler"
    )
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "scaled",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "memory"
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ModelService"

    # The replica count was handed over, not reset: the Deployment keeps its 4 pods (no
    # controller-manager runs here, so nothing else could have put them back) and the
    # operator's own apply no longer claims the field.
    def handed_over() -> dict[str, Any] | None:
        proc = cluster.kubectl(
            "-n", namespace, "get", "deployment", "scaled", "-o", "json", "--show-managed-fields"
        )  # fmt: skip
        dep: dict[str, Any] = json.loads(proc.stdout)
        owners = {
            m["manager"]
            for m in dep["metadata"].get("managedFields", [])
            if "f:replicas" in m.get("fieldsV1", {}).get("f:spec", {})
        }
        return dep if owners == {"mlkube-handover"} else None

    dep = wait_until(handed_over, what="spec.replicas handed over")
    assert dep["spec"]["replicas"] == 4


def test_gateway_api_without_its_crds_stays_degraded_with_one_event(
    cluster: Any, crds_installed: list[str], namespace: str, start_operator: Any, tmp_path: Path
) -> None:
    """No Gateway API CRDs here: the API server answers 404 to the HTTPRoute at every
    reconcile. Degraded=True/ApplyFailed is set once and stays across drift ticks and the
    status-only refreshes between them (every status version is recorded with a watch,
    not sampled), with one Warning Event; what was applied before the route runs."""
    assert get(cluster, namespace, "crd", "httproutes.gateway.networking.k8s.io") is None
    start_operator(namespaces=[namespace], reconcile_interval=2.0)
    spec = {
        "model": MODEL,
        "replicas": 2,
        "rollout": {
            "trafficRouting": "gatewayAPI",
            "gatewayAPI": {"parentRefs": [{"name": "public"}]},
        },
    }
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", stdin=modelservice("routed", spec)
    )  # fmt: skip
    log = tmp_path / "watch.json"

    def degraded_of(ms: dict[str, Any] | None) -> dict[str, Any]:
        conds = {c["type"]: c for c in ((ms or {}).get("status") or {}).get("conditions", [])}
        return dict(conds.get("Degraded") or {})

    def condition(kind: str) -> dict[str, Any]:
        ms = get(cluster, namespace, "msvc", "routed") or {}
        conds = {c["type"]: c for c in (ms.get("status") or {}).get("conditions", [])}
        return dict(conds.get(kind) or {})

    with watching(cluster, namespace, "msvc", "routed", log):
        degraded = wait_until(
            lambda: (d := condition("Degraded")).get("status") == "True" and d, what="Degraded"
        )
        assert degraded["reason"] == "ApplyFailed"
        assert "the API server refused HTTPRoute routed: HTTP 404" in degraded["message"]
        assert "404 page not found" in degraded["message"]
        for kind, name in (
            ("deployment", "routed"),
            ("service", "routed"),
            ("service", "routed-stable"),
            ("service", "routed-canary"),
        ):
            assert get(cluster, namespace, kind, name) is not None, (kind, name)
        mark_rolled_out(cluster, namespace, "routed")  # a Deployment event: a refresh
        ready = wait_until(
            lambda: (r := condition("Ready")).get("status") == "True" and r, what="Ready"
        )
        assert ready["reason"] == "ApplyFailed"  # the applied pods serve; the route is missing
        time.sleep(7)  # three more drift ticks (2 s), each refused again

    versions = [degraded_of(ms) for ms in watched_objects(log)]
    first = next(i for i, d in enumerate(versions) if d.get("status") == "True")
    assert len(versions) > first + 1  # the watch saw the refreshed status too
    for seen in versions[first:]:
        assert (seen["status"], seen["reason"]) == ("True", "ApplyFailed"), versions
        assert seen["lastTransitionTime"] == degraded["lastTransitionTime"]
    events = cluster.kubectl_json(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=routed"
    )
    reasons = [e["reason"] for e in events["items"]]
    assert reasons.count("ApplyFailed") == 1, reasons
    assert "Recovered" not in reasons, reasons
