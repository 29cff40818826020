"""Argo CD: the Lua health checks under a real Lua 5.1, and the example Application.

The status objects the checks read are not written by hand: they are produced by the
operator's own pure status code (``compute_status`` for ModelService conditions,
``next_step`` for the canary state machine, ``job_status`` for PyTorchJob), driven through
each rollout phase and each job condition, so a change in what the operator writes shows
up here as a health check that no longer says the right thing.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlkube.api.modelservice import ModelService, ModelServiceStatus, ObjectMeta
from mlkube.api.pytorchjob import PyTorchJob
from mlkube.api.rollout import MetricResult, Verdict
from mlkube.operator.analysis import AnalysisReport
from mlkube.operator.builders import BuildSettings, desired_state
from mlkube.operator.progressive import rollout_spec, with_rollout
from mlkube.operator.pytorchjob.planner import plan
from mlkube.operator.pytorchjob.status import job_status
from mlkube.operator.rollout import (
    RolloutDecision,
    RolloutTarget,
    Workload,
    next_step,
)
from mlkube.operator.status import Observed, compute_status, status_patch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
ARGOCD = REPO / "deploy" / "argocd"
CHECKS = ARGOCD / "resource_customizations"
MODELSERVICE_LUA = CHECKS / "mlkube.dev" / "ModelService" / "health.lua"
PYTORCHJOB_LUA = CHECKS / "mlkube.dev" / "PyTorchJob" / "health.lua"
APPLICATION_LUA = CHECKS / "argoproj.io" / "Application" / "health.lua"

RunHealth = Callable[[Path, dict[str, Any]], tuple[str, str]]
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STAMP = "2026-01-01T12:00:00Z"


# ------------------------------------------------------------------- argocd-cm and files


def test_argocd_cm_carries_exactly_the_lua_files() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "render-argocd-cm"), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text(encoding="utf-8"))
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "argocd-cm"
    keys = {
        "resource.customizations.health.mlkube.dev_ModelService": MODELSERVICE_LUA,
        "resource.customizations.health.mlkube.dev_PyTorchJob": PYTORCHJOB_LUA,
        "resource.customizations.health.argoproj.io_Application": APPLICATION_LUA,
    }
    assert set(cm["data"]) == set(keys)
    for key, path in keys.items():
        assert cm["data"][key] == path.read_text(encoding="utf-8"), key


# -------------------------------------------------------------- ModelService fixtures


def modelservice(version: str = "1", generation: int = 1, **spec: Any) -> ModelService:
    body = {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {
            "name": "recommendations",
            "namespace": "models",
            "uid": "6b1f6c1e-0000-4000-8000-000000000001",
            "generation": generation,
        },
        "spec": {
            "model": {"name": "ranker", "version": version, "format": "bandit"},
            "replicas": 2,
            **spec,
        },
    }
    return ModelService.model_validate(body)


def running_deployment(
    ms: ModelService, *, ready: int, updated: int | None = None
) -> dict[str, Any]:
    """The stable Deployment the operator built, with the status a kube controller reports."""
    dep = desired_state(ms, BuildSettings(default_image="ghcr.io/mlkube/mlkube:0.1.0")).deployment
    replicas = dep["spec"]["replicas"]
    up = replicas if updated is None else updated
    dep["metadata"]["generation"] = 1
    dep["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": up,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    return dep


def crashlooping_pod(ms: ModelService, dep: dict[str, Any]) -> dict[str, Any]:
    labels = dep["spec"]["template"]["metadata"]["labels"]
    return {
        "metadata": {"name": "recommendations-7d9f-abcde", "labels": labels},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "model-server",
                    "restartCount": 7,
                    "ready": False,
                    "state": {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": "back-off 5m0s restarting failed container",
                        }
                    },
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ],
        },
    }


def revision_of(ms: ModelService) -> str:
    return desired_state(ms, BuildSettings(default_image="ghcr.io/mlkube/mlkube:0.1.0")).revision


@dataclass
class MsState:
    """A ModelService as it is in the cluster: spec (from Git) plus operator-written status."""

    ms: ModelService
    status: dict[str, Any] | None

    def obj(self) -> dict[str, Any]:
        body = self.ms.model_dump(mode="json", by_alias=True, exclude_none=True)
        body.pop("status", None)
        if self.status is not None:
            body["status"] = self.status
        return body


def ms_status(
    ms: ModelService, observed: Observed, decision: RolloutDecision | None, problems: list[str]
) -> dict[str, Any]:
    """Status exactly as the reconcile writes it: the children's view (``compute_status``)
    merged with the rollout's (``progressive.with_rollout``), as ``status_patch`` sends it."""
    meta = ObjectMeta.model_validate(ms.metadata.model_dump())
    base = compute_status(
        meta,
        None,
        observed,
        replicas=ms.spec.replicas if ms.spec.replicas is not None else 1,
        revision=revision_of(ms),
        problems=problems,
        now=STAMP,
    )
    if decision is not None:
        previous = ModelServiceStatus(rollout=decision.status)
        base = with_rollout(base, previous, None, now=STAMP, generation=meta.generation)
    return status_patch(base)


def _report(verdict: Verdict, message: str) -> AnalysisReport:
    result = MetricResult(name="latencyP99", verdict=verdict, threshold="<= 200ms", message=message)
    return AnalysisReport(verdict, (result,), 500, message)


def modelservice_states() -> dict[str, tuple[MsState, str, str]]:
    """name -> (state, expected health, expected words in the message)."""
    canary_rollout = {"strategy": "canary"}
    v1 = modelservice("1", rollout=canary_rollout)
    v2 = modelservice("2", generation=2, rollout=canary_rollout)
    v2_paused = modelservice("2", generation=3, rollout=canary_rollout | {"paused": True})
    rollout, rollout_paused = rollout_spec(v2.spec), rollout_spec(v2_paused.spec)
    rev1, rev2 = revision_of(v1), revision_of(v2)
    first = next_step(RolloutTarget(rollout, rev1, "1"), None, None, T0)
    settled = first.status
    canary = next_step(RolloutTarget(rollout, rev2, "2"), settled, None, T0)
    paused = next_step(RolloutTarget(rollout_paused, rev2, "2"), canary.status, None, T0)
    # pass every step until promotion
    step = canary
    now = T0
    while step.status.phase.value == "Progressing":
        now += timedelta(minutes=2)
        step = next_step(
            RolloutTarget(rollout, rev2, "2"),
            step.status,
            _report(Verdict.PASS, "metric latencyP99 120ms within <= 200ms"),
            now,
            Workload(canary_ready=True),
        )
    promoting = step
    promoted = next_step(
        RolloutTarget(rollout, rev2, "2"),
        promoting.status,
        None,
        now + timedelta(minutes=1),
        Workload(stable_ready=True),
    )
    waiting = next_step(
        RolloutTarget(rollout, rev2, "2"),
        canary.status,
        _report(Verdict.WAIT, "37 requests < minSampleCount 100"),
        T0 + timedelta(minutes=2),
        Workload(canary_ready=True),
    )
    rolled_back = next_step(
        RolloutTarget(rollout, rev2, "2"),
        canary.status,
        _report(Verdict.FAIL, "metric latencyP99 342ms > 200ms"),
        T0 + timedelta(minutes=2),
        Workload(canary_ready=True),
    )
    failed_promotion = next_step(
        RolloutTarget(rollout, rev2, "2"),
        promoting.status,
        None,
        now + timedelta(hours=2),
        Workload(stable_ready=False),
    )
    assert settled.phase.value == "Succeeded"
    assert canary.status.phase.value == "Progressing"
    assert promoting.status.phase.value == "Promoting"
    assert promoted.status.phase.value == "Succeeded"
    assert rolled_back.status.phase.value == "RolledBack"
    assert failed_promotion.status.phase.value == "Failed"

    v0 = modelservice("1", replicas=0)
    dep1_ready = running_deployment(v1, ready=2)
    dep1_starting = running_deployment(v1, ready=0, updated=2)
    dep2_ready = running_deployment(v2, ready=2)

    def state(ms: ModelService, status: dict[str, Any] | None) -> MsState:
        return MsState(ms, status)

    return {
        "not reconciled yet": (state(v1, None), "Progressing", "Waiting for the mlkube operator"),
        "deployment being created": (
            state(v1, ms_status(v1, Observed(None), first, [])),
            "Progressing",
            "creating Deployment recommendations",
        ),
        "pods starting": (
            state(v1, ms_status(v1, Observed(dep1_starting), first, [])),
            "Progressing",
            "rolling out revision",
        ),
        "ready": (
            state(v1, ms_status(v1, Observed(dep1_ready), first, [])),
            "Healthy",
            "2/2 pods ready",
        ),
        "spec changed, not yet observed": (
            MsState(v2, ms_status(v1, Observed(dep1_ready), first, [])),
            "Progressing",
            "observe generation 2",
        ),
        "canary progressing": (
            state(v2, ms_status(v2, Observed(dep1_ready), canary, [])),
            "Progressing",
            "at 10%",
        ),
        "canary waiting for data": (
            state(v2, ms_status(v2, Observed(dep1_ready), waiting, [])),
            "Progressing",
            "canary at 10%, waiting: 37 requests",
        ),
        "canary paused": (
            state(v2_paused, ms_status(v2_paused, Observed(dep1_ready), paused, [])),
            "Suspended",
            "paused at 10%",
        ),
        "promoting": (
            state(v2, ms_status(v2, Observed(dep1_ready), promoting, [])),
            "Progressing",
            "promoting",
        ),
        "promoted": (
            state(v2, ms_status(v2, Observed(dep2_ready), promoted, [])),
            "Healthy",
            "2/2 pods ready",
        ),
        "rolled back": (
            state(v2, ms_status(v2, Observed(dep1_ready), rolled_back, [])),
            "Degraded",
            "rolled back",
        ),
        "promotion failed": (
            state(v2, ms_status(v2, Observed(dep1_ready), failed_promotion, [])),
            "Degraded",
            "not ready",
        ),
        "crash-looping pods": (
            state(
                v1,
                ms_status(
                    v1,
                    Observed(dep1_starting, [crashlooping_pod(v1, dep1_starting)]),
                    first,
                    [],
                ),
            ),
            "Degraded",
            "CrashLoopBackOff",
        ),
        "scaled to zero": (
            state(v0, ms_status(v0, Observed(running_deployment(v0, ready=0)), first, [])),
            "Healthy",
            "replicas is 0",
        ),
        "invalid spec": (
            state(
                v1,
                ms_status(
                    v1, Observed(None), None, ["gpu.resourceName 'gpu' is not a resource name"]
                ),
            ),
            "Degraded",
            "invalid spec",
        ),
    }


MS_CASES = modelservice_states()


@pytest.mark.parametrize("case", sorted(MS_CASES))
def test_modelservice_health(run_health: RunHealth, case: str) -> None:
    state, expected, words = MS_CASES[case]
    status, message = run_health(MODELSERVICE_LUA, state.obj())
    assert status == expected, message
    assert words.lower() in message.lower()


def test_modelservice_rollback_message_is_the_operators_condition(run_health: RunHealth) -> None:
    state, _, _ = MS_CASES["rolled back"]
    assert state.status is not None
    degraded = next(c for c in state.status["conditions"] if c["type"] == "Degraded")
    _, message = run_health(MODELSERVICE_LUA, state.obj())
    assert message == degraded["message"]
    assert "342ms" in message


# ---------------------------------------------------------------- PyTorchJob fixtures


def pytorchjob(status: dict[str, Any] | None = None, **spec: Any) -> PyTorchJob:
    def replica(n: int) -> dict[str, Any]:
        return {
            "replicas": n,
            "template": {"spec": {"containers": [{"name": "pytorch", "image": "pytorch:2"}]}},
        }

    body: dict[str, Any] = {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "PyTorchJob",
        "metadata": {"name": "mnist", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": {"pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(2)}, **spec},
    }
    if status is not None:
        body["status"] = status
    return PyTorchJob.model_validate(body)


def job_pod(rtype: str, index: int, phase: str, exit_code: int | None = None) -> dict[str, Any]:
    state: dict[str, Any] = (
        {"running": {}} if exit_code is None else {"terminated": {"exitCode": exit_code}}
    )
    return {
        "metadata": {
            "name": f"mnist-{rtype.lower()}-{index}",
            "labels": {
                "training.kubeflow.org/job-name": "mnist",
                "training.kubeflow.org/replica-type": rtype.lower(),
                "training.kubeflow.org/replica-index": str(index),
            },
        },
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "pytorch", "restartCount": 0, "state": state}],
        },
    }


def job_obj(job: PyTorchJob, status: dict[str, Any]) -> dict[str, Any]:
    body = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["status"] = status
    return body


def pytorchjob_states() -> dict[str, tuple[dict[str, Any], str, str, str]]:
    """name -> (object, expected health, words in the message, the True condition)."""

    def advance(
        job: PyTorchJob, pods: list[dict[str, Any]], seconds: int
    ) -> tuple[PyTorchJob, dict[str, Any]]:
        status = job_status(job, pods, T0 + timedelta(seconds=seconds))
        dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        spec = job.model_dump(mode="json", by_alias=True, exclude_none=True)["spec"]
        return pytorchjob(
            dumped, **{k: v for k, v in spec.items() if k != "pytorchReplicaSpecs"}
        ), dumped

    fresh = pytorchjob()
    created_job, created = advance(fresh, [], 0)
    pending = [
        job_pod("Master", 0, "Pending"),
        job_pod("Worker", 0, "Pending"),
        job_pod("Worker", 1, "Pending"),
    ]
    created_job, created = advance(created_job, pending, 1)
    running_pods = [
        job_pod("Master", 0, "Running"),
        job_pod("Worker", 0, "Running"),
        job_pod("Worker", 1, "Running"),
    ]
    running_job, running = advance(created_job, running_pods, 10)
    restarting_pods = [
        job_pod("Master", 0, "Running"),
        job_pod("Worker", 0, "Failed", exit_code=137),
        job_pod("Worker", 1, "Running"),
    ]
    _, restarting = advance(running_job, restarting_pods, 20)
    done_pods = [
        job_pod("Master", 0, "Succeeded", 0),
        job_pod("Worker", 0, "Succeeded", 0),
        job_pod("Worker", 1, "Succeeded", 0),
    ]
    _, succeeded = advance(running_job, done_pods, 30)
    never = pytorchjob(running, runPolicy={"backoffLimit": 0})
    failed_pods = [
        job_pod("Master", 0, "Failed", exit_code=1),
        job_pod("Worker", 0, "Running"),
        job_pod("Worker", 1, "Running"),
    ]
    _, failed = advance(never, failed_pods, 30)
    suspended_job = pytorchjob(running, runPolicy={"suspend": True})
    _, suspended = advance(suspended_job, running_pods, 40)
    gang_job = pytorchjob(created, runPolicy={"schedulingPolicy": {"minAvailable": 3}})
    gang_blocked = plan(gang_job, [], [], T0, ()).status.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )

    return {
        "not reconciled yet": (
            fresh.model_dump(mode="json", by_alias=True, exclude_none=True) | {"status": None},
            "Progressing",
            "waiting",
            "",
        ),
        "created": (job_obj(fresh, created), "Progressing", "created", "Created"),
        "running": (job_obj(fresh, running), "Progressing", "running", "Running"),
        "restarting": (job_obj(fresh, restarting), "Progressing", "restart", "Restarting"),
        "succeeded": (job_obj(fresh, succeeded), "Healthy", "successfully completed", "Succeeded"),
        "failed": (job_obj(never, failed), "Degraded", "fail", "Failed"),
        "suspended": (job_obj(suspended_job, suspended), "Suspended", "suspend", "Suspended"),
        "gang scheduler missing": (
            job_obj(gang_job, gang_blocked),
            "Degraded",
            "podgroups.scheduling.x-k8s.io",
            "",
        ),
    }


PTJ_CASES = pytorchjob_states()


@pytest.mark.parametrize("case", sorted(PTJ_CASES))
def test_pytorchjob_health(run_health: RunHealth, case: str) -> None:
    obj, expected, words, condition = PTJ_CASES[case]
    if condition:
        true = {c["type"] for c in obj["status"]["conditions"] if c["status"] == "True"}
        assert condition in true, f"the operator's status for {case!r} has {sorted(true)}"
    if obj.get("status") is None:
        obj = {k: v for k, v in obj.items() if k != "status"}
    status, message = run_health(PYTORCHJOB_LUA, obj)
    assert status == expected, message
    assert words in message.lower()


# ------------------------------------------------------------------------ Application


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        (None, "Progressing"),
        ({"status": "Healthy"}, "Healthy"),
        ({"status": "Degraded", "message": "ModelService recommendations rolled back"}, "Degraded"),
        ({"status": "Progressing"}, "Progressing"),
    ],
)
def test_application_health_follows_the_child(
    run_health: RunHealth, health: dict[str, str] | None, expected: str
) -> None:
    obj: dict[str, Any] = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application"}
    if health is not None:
        obj["status"] = {"health": health}
    status, message = run_health(APPLICATION_LUA, obj)
    assert status == expected
    if health and "message" in health:
        assert message == health["message"]


def test_health_check_sandbox_refuses_os_access(run_health: RunHealth, tmp_path: Path) -> None:
    """Argo CD gives checks no os/io library; the harness must not either (it can fail)."""
    script = tmp_path / "bad.lua"
    script.write_text('return { status = os.getenv("HOME") }\n', encoding="utf-8")
    with pytest.raises(AssertionError, match="os"):
        run_health(script, {})


# ------------------------------------------------------------------ the Application file


def applications() -> list[dict[str, Any]]:
    docs = yaml.safe_load_all((ARGOCD / "application.yaml").read_text(encoding="utf-8"))
    return [d for d in docs if d]


def test_applications_sync_the_chart_first_with_server_side_apply() -> None:
    apps = applications()
    assert [a["kind"] for a in apps] == ["Application", "Application"]
    waves = {
        a["metadata"]["name"]: int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
        for a in apps
    }
    assert waves["mlkube"] < waves["mlkube-models"]
    for app in apps:
        assert app["apiVersion"] == "argoproj.io/v1alpha1"
        assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
        assert (REPO / app["spec"]["source"]["path"]).is_dir()
    models = next(a for a in apps if a["metadata"]["name"] == "mlkube-models")
    assert "SkipDryRunOnMissingResource=true" in models["spec"]["syncPolicy"]["syncOptions"]
    include = models["spec"]["source"]["directory"]["include"]
    example = yaml.safe_load(
        (REPO / models["spec"]["source"]["path"] / include).read_text(encoding="utf-8")
    )
    assert example["kind"] == "ModelService"


def test_application_values_are_valid_chart_values(helm_run: Callable[..., Any]) -> None:
    chart_app = next(a for a in applications() if a["metadata"]["name"] == "mlkube")
    helm = chart_app["spec"]["source"]["helm"]
    proc = helm_run(
        "template",
        helm["releaseName"],
        str(REPO / chart_app["spec"]["source"]["path"]),
        "--namespace",
        chart_app["spec"]["destination"]["namespace"],
        values=helm["valuesObject"],
    )
    assert proc.returncode == 0, proc.stderr
