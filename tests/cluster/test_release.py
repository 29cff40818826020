"""Releases on real pods while clients keep sending traffic, judged by a Prometheus that
finds the pods itself (the tier's, with the shipped scrape job).

The model is a custom one (tests/cluster/models/flaky_model.py) in an image derived from
the project's, as users ship theirs: ``FLAKY_FAIL_SHARE`` makes a share of its answers
500s. A load generator on the host sends OIP v2 requests to the Service's ClusterIP for
the whole release and records every answer; the tests assert on those answers and on the
ModelService's status, Events and pods."""

from __future__ import annotations

import json
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from tests.cluster.kit import (
    MS,
    Answer,
    LoadGenerator,
    apply_docs,
    condition,
    endpoint_pods,
    get_json,
    is_ready,
    msvc,
    pods,
    service_ip,
    serving,
    tier,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

INTERVAL = 10  # seconds: spec.rollout.interval of these tests
FAILURE_THRESHOLD = 2
BODY = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}]}


def flaky(
    cluster: Any,
    name: str,
    version: str,
    fail_share: float = 0.0,
    delay_ms: int = 0,
    **rollout: Any,
) -> dict[str, Any]:
    """A ModelService of the flaky model: 4 replicas, a canary in steps of 25% and 50%
    judged every 10 s on its success rate, rolled back after two failed checks (keyword
    arguments replace fields of spec.rollout)."""
    doc = {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": "flaky",
                "version": version,
                "format": "custom",
                "className": "flaky_model:FlakyModel",
            },
            "replicas": 4,
            "runtime": {
                "image": cluster.refs["flaky-ref"],
                "imagePullPolicy": "IfNotPresent",
                "workers": 1,
                "env": [
                    {"name": "FLAKY_FAIL_SHARE", "value": str(fail_share)},
                    {"name": "FLAKY_DELAY_MS", "value": str(delay_ms)},
                ],
                "resources": {
                    "requests": {"cpu": "50m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "512Mi"},
                },
            },
            "rollout": {
                "steps": [25, 50],
                "interval": f"{INTERVAL}s",
                "failureThreshold": FAILURE_THRESHOLD,
                "progressDeadlineSeconds": 300,
                "analysis": {
                    "minSampleCount": 20,
                    "metrics": [{"name": "successRate", "min": 0.95}],
                },
            },
        },
    }
    doc["spec"]["rollout"].update(rollout)  # type: ignore[index]
    return doc


def rollout(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = msvc(cluster, namespace, name).get("status", {}).get("rollout", {})
    return status


def report(title: str, answers: list[Answer]) -> str:
    failed = [a for a in answers if a.status != 200]
    line = f"[release] {title}: {len(answers)} requests, {len(failed)} failed"
    sys.stderr.write("\n" + line + "\n")
    return line


def prometheus(path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{tier.PROMETHEUS_URL}{path}{query}", timeout=10) as resp:
        return json.loads(resp.read())["data"]


def test_prometheus_finds_the_model_pods_by_itself(cluster: Any, namespace: str) -> None:
    """The tier's Prometheus runs the shipped scrape job (deploy/prometheus): a
    ModelService's pods become healthy targets through discovery alone, labelled for
    people, and their series carry the revision the analysis selects on."""
    name = "found"
    apply_docs(cluster, namespace, [flaky(cluster, name, "v1")])
    serving(cluster, namespace, name, 4)

    def up_targets() -> list[dict[str, Any]] | None:
        active = prometheus("/api/v1/targets", state="active")["activeTargets"]
        # Only model pods are targets (not the operator, not Redis, not client pods).
        assert all(t["labels"].get("modelservice") for t in active), active
        mine = [
            t for t in active if t["labels"].get("namespace") == namespace and t["health"] == "up"
        ]
        return mine if len(mine) == 4 else None

    targets = wait_until(up_targets, timeout=60, what="4 healthy targets of the ModelService")
    names = {p["metadata"]["name"] for p in pods(cluster, namespace, f"{MS}={name}")}
    assert {t["labels"]["pod"] for t in targets} == names
    assert {t["labels"]["track"] for t in targets} == {"stable"}
    assert {t["labels"]["modelservice"] for t in targets} == {name}

    revision = rollout(cluster, namespace, name)["stableRevision"]
    url = f"http://{service_ip(cluster, namespace, name)}/v2/models/flaky/infer"
    with LoadGenerator(url, BODY, threads=2, rate=10, limit=60) as load:
        wait_until(lambda: len(load.snapshot()) >= 20, timeout=30, what="20 requests")
    query = f'sum(mlkube_requests_total{{revision="{revision}",endpoint="infer"}})'

    def counted() -> float | None:
        result = prometheus("/api/v1/query", query=query)["result"]
        value = float(result[0]["value"][1]) if result else 0.0
        return value if value >= 20 else None

    # Every scrape of all four pods catches up within a few scrape intervals.
    wait_until(counted, timeout=30, what="the 20 requests counted under the stable revision")


def test_a_good_version_goes_through_every_step_with_no_failed_request(
    cluster: Any, namespace: str
) -> None:
    name = "promote"
    apply_docs(cluster, namespace, [flaky(cluster, name, "v1")])
    serving(cluster, namespace, name, 4)
    url = f"http://{service_ip(cluster, namespace, name)}/v2/models/flaky/infer"
    weights: list[int] = []
    with LoadGenerator(url, BODY, threads=4, rate=10, limit=400) as load:
        wait_until(lambda: len(load.snapshot()) >= 20, timeout=30, what="traffic flowing")
        apply_docs(cluster, namespace, [flaky(cluster, name, "v2")])

        def promoted() -> bool:
            r = rollout(cluster, namespace, name)
            if r.get("canaryWeight") and r["canaryWeight"] not in weights:
                weights.append(r["canaryWeight"])
            return bool(
                r.get("phase") == "Succeeded"
                and r.get("stableModelVersion") == "v2"
                and not r.get("canaryRevision")
            )

        wait_until(promoted, timeout=300, interval=0.5, what="v2 promoted")
        # The old pods go away: four pods remain, all of the promoted revision.
        revision = rollout(cluster, namespace, name)["stableRevision"]

        def only_new_pods() -> bool:
            ps = pods(cluster, namespace, f"{MS}={name}")
            revs = {p["metadata"]["labels"].get("mlkube.dev/revision") for p in ps}
            return len(ps) == 4 and revs == {revision}

        wait_until(only_new_pods, timeout=180, interval=0.5, what="only v2 pods left")
        settled = len(load.snapshot())
        wait_until(lambda: len(load.snapshot()) >= settled + 40, timeout=30, what="more traffic")
    answers = load.snapshot()
    report("promotion v1 -> v2", answers)
    assert weights == [25, 50], weights
    history = rollout(cluster, namespace, name)["history"]
    assert history[-1]["outcome"] == "Promoted", history
    # Zero failed requests over the whole release: no 5xx, no connection error.
    assert [a for a in answers if a.status != 200] == []
    versions = [a.version for a in answers]
    assert set(versions) == {"v1", "v2"}
    assert set(versions[-20:]) == {"v2"}


def test_a_failing_version_is_rolled_back_in_time_and_only_its_requests_fail(
    cluster: Any, namespace: str
) -> None:
    name = "rollback"
    good = flaky(cluster, name, "v1")
    apply_docs(cluster, namespace, [good])
    serving(cluster, namespace, name, 4)
    url = f"http://{service_ip(cluster, namespace, name)}/v2/models/flaky/infer"
    bad = flaky(cluster, name, "v2", fail_share=0.2)
    canary_pods: set[str] = set()
    shares: list[float] = []
    marks: dict[str, float] = {}
    with LoadGenerator(url, BODY, threads=4, rate=10, limit=400) as load:
        wait_until(lambda: len(load.snapshot()) >= 20, timeout=30, what="traffic flowing")
        apply_docs(cluster, namespace, [bad])
        generation = msvc(cluster, namespace, name)["metadata"]["generation"]

        def watch() -> bool:
            now = time.time()
            behind = endpoint_pods(cluster, namespace, name)
            canary = {p for p in behind if p.startswith(f"{name}-canary-")}
            canary_pods.update(canary)
            if canary:
                marks.setdefault("canary_serving", now)
                shares.append(len(canary) / len(behind))
            r = rollout(cluster, namespace, name)
            if r.get("failedChecks", 0) >= 1:
                marks.setdefault("first_failed_check", now)
            if "first_failed_check" in marks and not canary and r.get("phase") == "RolledBack":
                marks["stable_100"] = now
                return True
            return False

        wait_until(watch, timeout=300, interval=0.5, what="the canary rolled back")
        settled = len(load.snapshot())
        wait_until(lambda: len(load.snapshot()) >= settled + 40, timeout=30, what="more traffic")
    answers = load.snapshot()
    line = report("rollback of v2 failing 20%", answers)
    failed = [a for a in answers if a.status != 200]

    # In time: from the first failed check to all traffic on stable.
    took = marks["stable_100"] - marks["first_failed_check"]
    bound = FAILURE_THRESHOLD * INTERVAL + 10
    sys.stderr.write(
        f"[release] first failed check -> 100% stable: {took:.1f} s (bound {bound} s)\n"
    )
    assert took <= bound, (took, marks)

    # The only failures are the bad canary's 500s, while it served, and bounded by its
    # share of the traffic and the time it lived (twice the expectation, plus slack).
    assert failed, f"the canary never failed a request: {line}"
    assert {a.status for a in failed} == {500}, failed[:5]
    lived = [a for a in answers if marks["canary_serving"] - 1 <= a.sent <= marks["stable_100"] + 1]
    assert all(marks["canary_serving"] - 1 <= a.sent <= marks["stable_100"] + 1 for a in failed)
    expected = len(lived) * max(shares) * 0.2
    assert len(failed) <= 2 * expected + 5, (len(failed), expected, len(lived), max(shares))
    assert {a.version for a in answers if a.status == 200} <= {"v1", "v2"}
    assert all(a.version == "v1" for a in answers if a.sent > marks["stable_100"] + 1)

    # GitOps-safe: the spec is the one applied (the operator never edits it), and the
    # ModelService says what happened, once.
    after = msvc(cluster, namespace, name)
    assert after["metadata"]["generation"] == generation
    assert after["spec"]["model"]["version"] == "v2"
    assert after["spec"]["runtime"]["env"] == bad["spec"]["runtime"]["env"]
    degraded = condition(after, "Degraded")
    assert degraded.get("status") == "True", degraded
    assert degraded.get("reason") == "RolledBack", degraded
    assert "successRate" in degraded.get("message", ""), degraded
    events = get_json(
        cluster,
        "-n",
        namespace,
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={name},reason=RolledBack",
    )["items"]
    assert len(events) == 1, events
    assert events[0].get("count", 1) == 1, events
    # The canary's pods go away (after their preStop pause); the stable ones stay.
    wait_until(
        lambda: (
            not {p["metadata"]["name"] for p in pods(cluster, namespace, f"{MS}={name}")}
            & canary_pods
        ),
        timeout=90,
        what="the canary's pods deleted",
    )
    assert len(pods(cluster, namespace, f"{MS}={name}")) == 4


def test_no_data_holds_the_canary_until_prometheus_answers_again(
    cluster: Any, namespace: str
) -> None:
    """Prometheus stops answering mid-canary (SIGSTOP): the rollout neither advances nor
    fails while it is gone, says why, and goes on to promotion once it is back."""
    name = "nodata"
    apply_docs(cluster, namespace, [flaky(cluster, name, "v1")])
    serving(cluster, namespace, name, 4)
    url = f"http://{service_ip(cluster, namespace, name)}/v2/models/flaky/infer"
    with LoadGenerator(url, BODY, threads=4, rate=10, limit=400) as load:
        wait_until(lambda: len(load.snapshot()) >= 20, timeout=30, what="traffic flowing")
        apply_docs(cluster, namespace, [flaky(cluster, name, "v2")])
        wait_until(
            lambda: rollout(cluster, namespace, name).get("canaryWeight") == 25,
            timeout=120,
            what="the canary at 25%",
        )
        cluster.signal_process("prometheus", signal.SIGSTOP)
        try:
            held = rollout(cluster, namespace, name)
            # A check runs and waits: the status says Prometheus is unavailable ...
            waiting = wait_until(
                lambda: (
                    (r := rollout(cluster, namespace, name))
                    and "prometheus" in r.get("message", "").lower()
                    and r
                ),
                timeout=6 * INTERVAL,
                what="the rollout reporting Prometheus unavailable",
            )
            # ... and for three more intervals nothing moves.
            deadline = time.monotonic() + 3 * INTERVAL
            while time.monotonic() < deadline:
                r = rollout(cluster, namespace, name)
                assert r.get("canaryWeight") == held["canaryWeight"], r
                assert r.get("failedChecks", 0) == 0, r
                assert r.get("phase") == "Progressing", r
                time.sleep(1)
        finally:
            cluster.signal_process("prometheus", signal.SIGCONT)
        wait_until(
            lambda: (
                rollout(cluster, namespace, name).get("stableModelVersion") == "v2"
                and rollout(cluster, namespace, name).get("phase") == "Succeeded"
            ),
            timeout=180,
            interval=0.5,
            what="the release promoted once Prometheus is back",
        )
    assert waiting["canaryWeight"] == 25
    assert [a for a in load.snapshot() if a.status != 200] == []


def test_a_canary_with_too_few_requests_waits_and_rolls_back_at_the_deadline(
    cluster: Any, namespace: str
) -> None:
    """No traffic: every check waits on minSampleCount (not enough evidence is not a
    pass), and the progress deadline rolls the canary back."""
    name = "quiet"
    apply_docs(cluster, namespace, [flaky(cluster, name, "v1", progressDeadlineSeconds=40)])
    serving(cluster, namespace, name, 4)
    apply_docs(cluster, namespace, [flaky(cluster, name, "v2", progressDeadlineSeconds=40)])
    waited = wait_until(
        lambda: (
            (r := rollout(cluster, namespace, name))
            and "requests in the window, needs 20" in r.get("message", "")
            and r
        ),
        timeout=120,
        what="a check waiting on minSampleCount",
    )
    assert waited["canaryWeight"] == 25, waited
    done = wait_until(
        lambda: (r := rollout(cluster, namespace, name)) and r.get("phase") == "RolledBack" and r,
        timeout=180,
        interval=0.5,
        what="the canary rolled back at the deadline",
    )
    assert "made no progress within 40s" in done.get("message", ""), done
    assert done["failedChecks"] == 0, done
    assert done["stableModelVersion"] == "v1", done


def test_a_slower_version_is_rolled_back_on_the_latency_ratio(cluster: Any, namespace: str) -> None:
    """The canary adds 100 ms to every answer; its p99 against stable's exceeds the
    compare ratio and it is rolled back, though no request fails."""
    name = "slow"
    analysis = {
        "minSampleCount": 20,
        "metrics": [{"name": "latencyP99", "max": 5000, "compare": {"mode": "ratio", "max": 1.5}}],
    }
    apply_docs(cluster, namespace, [flaky(cluster, name, "v1", analysis=analysis)])
    serving(cluster, namespace, name, 4)
    url = f"http://{service_ip(cluster, namespace, name)}/v2/models/flaky/infer"
    with LoadGenerator(url, BODY, threads=4, rate=10, limit=400) as load:
        wait_until(lambda: len(load.snapshot()) >= 20, timeout=30, what="traffic flowing")
        apply_docs(
            cluster, namespace, [flaky(cluster, name, "v2", delay_ms=100, analysis=analysis)]
        )
        done = wait_until(
            lambda: (
                (r := rollout(cluster, namespace, name)) and r.get("phase") == "RolledBack" and r
            ),
            timeout=240,
            interval=0.5,
            what="the slow canary rolled back",
        )
    assert "latencyP99" in done["message"], done
    assert done["history"][-1]["outcome"] == "RolledBack", done
    # Slow, not failing: every request was answered 200.
    assert [a for a in load.snapshot() if a.status != 200] == []


def test_the_autoscaler_follows_load_and_holds_without_metrics(
    cluster: Any, namespace: str
) -> None:
    """Load up: more pods; Prometheus gone: the count holds though the load has stopped;
    Prometheus back and no load: down to the minimum after the stabilisation window."""
    name = "scaled"
    doc = flaky(cluster, name, "v1", delay_ms=200)
    del doc["spec"]["rollout"]
    doc["spec"]["replicas"] = 1
    # Enough CPU share that a loaded node does not starve the pods' readiness probes.
    doc["spec"]["runtime"]["resources"]["requests"]["cpu"] = "200m"
    doc["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetInFlight": 2,
        "window": "10s",
        "upscaleStabilization": "0s",
        "downscaleStabilization": "20s",
    }
    apply_docs(cluster, namespace, [doc])
    serving(cluster, namespace, name, 1)
    url = f"http://{service_ip(cluster, namespace, name)}/v2/models/flaky/infer"
    timeline: list[tuple[float, int, int]] = []
    behind: list[tuple[float, int]] = []  # (s, ready endpoints of the Service) on change
    began = time.monotonic()

    def count(want: int) -> bool:
        desired = msvc(cluster, namespace, name).get("status", {}).get("autoscaling", {})
        ready = sum(1 for p in pods(cluster, namespace, f"{MS}={name}") if is_ready(p))
        now = time.monotonic() - began
        point = (now, int(desired.get("desiredReplicas", 0)), ready)
        if not timeline or timeline[-1][1:] != point[1:]:
            timeline.append(point)
        endpoints = len(endpoint_pods(cluster, namespace, name))
        if not behind or behind[-1][1] != endpoints:
            behind.append((now, endpoints))
        return point[1] == want and ready == want

    # About 8 requests in flight at 200 ms each: 8 / 2 per replica -> capped at 3.
    load_began = time.time() - (time.monotonic() - began)  # wall clock of `began`
    with LoadGenerator(url, BODY, threads=8, rate=100, limit=300) as load:
        wait_until(lambda: count(3), timeout=120, interval=1, what="3 Ready replicas under load")
        up = time.monotonic() - began
        cluster.signal_process("prometheus", signal.SIGSTOP)
    try:
        # No load now, but no metrics either: the count holds for longer than the
        # downscale window.
        hold_until = time.monotonic() + 40
        while time.monotonic() < hold_until:
            count(3)
            assert timeline[-1][1] == 3, timeline
            time.sleep(1)
    finally:
        cluster.signal_process("prometheus", signal.SIGCONT)
    wait_until(lambda: count(1), timeout=150, interval=1, what="back to 1 replica")
    sys.stderr.write(
        "[release] autoscaler timeline (s, desired, ready): "
        + " ".join(f"{t:.0f}:{d}/{r}" for t, d, r in timeline)
        + "\n"
    )
    assert up <= 90, timeline
    failed = [a for a in load.snapshot() if a.status != 200]
    assert not failed, (
        f"{len(failed)} failed, from {failed[0].sent - load_began:.1f} s to "
        f"{failed[-1].sent - load_began:.1f} s, first {failed[:2]}; "
        f"timeline {timeline}; endpoints {behind}"
    )


class RewardingUsers:
    """A simulated population behind the Service: each asks for a ranking of 20 items, is
    shown the top 5, and rewards each shown item at the rate of the model version that
    ranked it (``rates``), sending the answer's ticket back with the feedback. Bounded:
    ``threads`` users, ``rate`` rankings a second each, ``limit`` seconds at most."""

    def __init__(
        self, ip: str, rates: dict[str, float], threads: int = 4, rate: float = 8.0
    ) -> None:
        self.infer = f"http://{ip}/v2/models/ranker/infer"
        self.feedback = f"http://{ip}/v1/models/ranker:feedback"
        self.rates, self.threads, self.period = rates, threads, 1.0 / rate
        self.body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "items",
                        "datatype": "BYTES",
                        "shape": [20],
                        "data": [f"item-{i}" for i in range(20)],
                    }
                ],
                "parameters": {"top_k": 5},
            }
        ).encode()
        self.seen: list[tuple[float, int, str | None]] = []  # (time, status, model_version)
        self.credited: list[str] = []  # revisions the feedback answers named
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> RewardingUsers:
        deadline = time.monotonic() + 400
        for index in range(self.threads):
            rng = random.Random(index)
            t = threading.Thread(target=self._run, args=(deadline, rng), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=15)

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, Any]:
        req = urllib.request.Request(url, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        req.add_header("Connection", "close")
        for key, value in headers.items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.headers, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, None
        except (OSError, ValueError):
            return 0, None, None

    def _run(self, deadline: float, rng: random.Random) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            status, headers, answer = self._post(self.infer, self.body, {})
            version = answer.get("model_version") if answer else None
            with self._lock:
                self.seen.append((time.time(), status, version))
            if status == 200 and version in self.rates:
                shown = next(o for o in answer["outputs"] if o["name"] == "ranking")["data"]
                pairs = [
                    {"item": item, "reward": int(rng.random() < self.rates[version])}
                    for item in shown
                ]
                ticket = {"Mlkube-Ticket": headers["Mlkube-Ticket"]}
                code, _, credit = self._post(
                    self.feedback, json.dumps({"feedback": pairs}).encode(), ticket
                )
                if code == 200 and credit is not None:
                    with self._lock:
                        self.credited.append(str(credit.get("revision")))
            self._stop.wait(max(0.0, self.period - (time.monotonic() - began)))

    def snapshot(self) -> list[tuple[float, int, str | None]]:
        with self._lock:
            return list(self.seen)


def bandit_service(cluster: Any, name: str, version: str) -> dict[str, Any]:
    """The bandit as ``ranker``: 2 replicas; a canary shadowed at 0%, then at 50%, judged
    every 10 s on its reward rate against stable's (and on its success rate)."""
    return {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "ranker", "version": version, "format": "bandit"},
            "replicas": 2,
            "runtime": {
                "image": cluster.refs["mlkube-ref"],
                "imagePullPolicy": "IfNotPresent",
                "workers": 1,
                "resources": {
                    "requests": {"cpu": "50m", "memory": "128Mi"},
                    "limits": {"cpu": "1", "memory": "512Mi"},
                },
            },
            "rollout": {
                "steps": [0, 50],
                "shadow": {"fraction": 0.5},
                "interval": f"{INTERVAL}s",
                "progressDeadlineSeconds": 300,
                "analysis": {
                    "minSampleCount": 20,
                    "metrics": [
                        {"name": "rewardRate"},
                        {"name": "successRate", "min": 0.95},
                    ],
                },
            },
        },
    }


def test_a_shadowed_canary_is_promoted_on_reward(cluster: Any, namespace: str) -> None:
    """v2 first answers shadow copies only (no user sees it), then half the users; it earns
    20% where v1 earns 5%, and is promoted on that, with the feedback of every user
    credited to the revision that ranked for them."""
    name = "rewarded"
    apply_docs(cluster, namespace, [bandit_service(cluster, name, "v1")])
    serving(cluster, namespace, name, 2)
    ip = service_ip(cluster, namespace, name)
    weights: list[int] = []
    at_zero: list[float] = []  # times the status said: canary running at 0%
    judged: list[dict[str, Any]] = []  # rewardRate results of checks at 50%
    with RewardingUsers(ip, {"v1": 0.05, "v2": 0.20}) as users:
        wait_until(lambda: len(users.snapshot()) >= 20, timeout=30, what="users being served")
        apply_docs(cluster, namespace, [bandit_service(cluster, name, "v2")])

        def promoted() -> bool:
            r = rollout(cluster, namespace, name)
            if r.get("canaryRevision"):
                if r.get("canaryWeight", 0) not in weights:
                    weights.append(r.get("canaryWeight", 0))
                if not r.get("canaryWeight"):
                    at_zero.append(time.time())
                else:
                    judged.extend(m for m in r.get("metrics", []) if m["name"] == "rewardRate")
            return bool(
                r.get("phase") == "Succeeded"
                and r.get("stableModelVersion") == "v2"
                and not r.get("canaryRevision")
            )

        wait_until(promoted, timeout=300, interval=0.5, what="v2 promoted on reward")
    status = rollout(cluster, namespace, name)
    seen = users.snapshot()
    report("shadowed canary promoted on reward", [Answer(t, 0, s, v, None) for t, s, v in seen])
    assert weights == [0, 50], weights
    assert status["history"][-1]["outcome"] == "Promoted", status["history"]
    # While the canary ran at 0% (a few seconds inside what the status said, for the
    # status polls and kube-proxy), no user was answered by it.
    if at_zero:
        window = [v for t, _, v in seen if at_zero[0] + 3 <= t <= at_zero[-1] - 3]
        assert window, "no request while the canary was at 0%"
        assert set(window) == {"v1"}, set(window)
    # ... but it answered the stable pods' copies, and they were compared.
    canary_revision = status["history"][-1]["revision"]
    query = f'sum(mlkube_shadow_requests_total{{target="{canary_revision}",outcome="ok"}})'
    result = prometheus("/api/v1/query", query=query)["result"]
    assert result, "no shadow copy reached the canary"
    assert float(result[0]["value"][1]) > 0
    # The check that promoted it: rewardRate passed, canary's posterior mean above stable's.
    assert judged, "no rewardRate result seen at 50%"
    reward = judged[-1]
    assert reward["verdict"] == "pass", reward
    assert reward["value"] > reward["stableValue"], reward
    assert reward["probability"] >= 0.95, reward
    # Every user's feedback was credited to a revision (no ticket lost on the way).
    assert users.credited
    assert "None" not in users.credited
    assert [s for _, s, _ in seen if s != 200] == []
