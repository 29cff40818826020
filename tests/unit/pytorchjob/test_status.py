"""``job_status`` / ``assess`` over pod phase combinations and every policy."""

from __future__ import annotations

from typing import Any

import pytest
from ptj_builders import T0, at, make_job, pod, stamp

from mlkube.api.pytorchjob import ConditionType, PyTorchJobStatus, RestartPolicy
from mlkube.operator.pytorchjob.status import (
    Assessment,
    assess,
    invalid_spec_status,
    is_retryable,
    job_status,
    set_condition,
)


def conds(status: PyTorchJobStatus) -> dict[str, str]:
    return {c.type.value: c.status for c in status.conditions}


def latest(status: PyTorchJobStatus) -> str:
    """What the State printer column shows."""
    return status.conditions[-1].type.value


def running_status(**extra: Any) -> dict[str, Any]:
    """A job that has been Running since T0."""
    return {
        "conditions": [
            {"type": "Created", "status": "True", "reason": "PyTorchJobCreated"},
            {"type": "Running", "status": "True", "reason": "PyTorchJobRunning"},
        ],
        "startTime": stamp(T0),
        **extra,
    }


ALL_PODS = ["mnist-master-0", "mnist-worker-0", "mnist-worker-1"]


def all_running(job: str = "mnist", workers: int = 2) -> list[dict[str, Any]]:
    return [pod(job, "Master", 0)] + [pod(job, "Worker", i) for i in range(workers)]


# ---------------------------------------------------------------------------- lifecycle


def test_a_new_job_is_created_and_started() -> None:
    status = job_status(make_job(), [], at(0))
    assert conds(status) == {"Created": "True"}
    assert status.conditions[0].reason == "PyTorchJobCreated"
    assert status.conditions[0].message == "PyTorchJob mnist is created."
    assert status.start_time == T0
    assert status.observed_generation == 1
    worker = status.replica_statuses["Worker"]
    assert (worker.active, worker.succeeded, worker.failed) == (0, 0, 0)
    assert (
        worker.selector
        == "training.kubeflow.org/job-name=mnist,training.kubeflow.org/replica-type=worker"
    )


def test_running_when_the_master_runs() -> None:
    status = job_status(make_job(), all_running(), at(5))
    assert latest(status) == "Running"
    assert status.conditions[-1].reason == "PyTorchJobRunning"
    assert status.replica_statuses["Master"].active == 1
    assert status.replica_statuses["Worker"].active == 2


def test_not_running_while_the_master_is_pending() -> None:
    pods = [
        pod("mnist", "Master", 0, "Pending"),
        pod("mnist", "Worker", 0),
        pod("mnist", "Worker", 1),
    ]
    assert "Running" not in conds(job_status(make_job(), pods, at(5)))


def test_without_master_running_when_any_worker_runs() -> None:
    pods = [pod("mnist", "Worker", 0, "Pending"), pod("mnist", "Worker", 1)]
    assert latest(job_status(make_job(master=None), pods, at(5))) == "Running"


def test_succeeded_when_master_and_workers_succeeded() -> None:
    job = make_job(status=running_status())
    pods = [
        pod("mnist", "Master", 0, "Succeeded", exit_code=0),
        pod("mnist", "Worker", 0, "Succeeded", exit_code=0),
        pod("mnist", "Worker", 1, "Succeeded", exit_code=0),
    ]
    out = assess(job, pods, at(100))
    assert latest(out.status) == "Succeeded"
    assert conds(out.status)["Running"] == "False"
    assert out.status.completion_time == at(100)
    assert out.status.conditions[-1].message == "PyTorchJob mnist is successfully completed."
    assert out.delete == []  # cleanPodPolicy None keeps finished pods
    assert [e.reason for e in out.events] == ["PyTorchJobSucceeded"]


@pytest.mark.parametrize(
    ("policy", "deleted"),
    [("None", []), ("Running", ["mnist-worker-1"]), ("All", ALL_PODS)],
)
def test_master_success_succeeds_the_job_at_once(policy: str, deleted: list[str]) -> None:
    """Kubeflow: the job is Succeeded as soon as the Master is; the Workers still running
    count as succeeded (``kubectl get`` shows Worker succeeded 2, active 0) and are kept
    or deleted as cleanPodPolicy says."""
    job = make_job(runPolicy={"cleanPodPolicy": policy}, status=running_status())
    pods = [
        pod("mnist", "Master", 0, "Succeeded", exit_code=0),
        pod("mnist", "Worker", 0, "Succeeded", exit_code=0),
        pod("mnist", "Worker", 1, "Running"),
    ]
    out = assess(job, pods, at(100))
    assert latest(out.status) == "Succeeded"
    assert out.status.completion_time == at(100)
    worker = out.status.replica_statuses["Worker"]
    assert (worker.active, worker.succeeded, worker.failed) == (0, 2, 0)
    assert out.status.replica_statuses["Master"].succeeded == 1
    assert sorted(out.delete) == deleted
    assert not out.create_pods
    # The next pass (the Worker still running under None) changes nothing in the status.
    again = assess(make_job(runPolicy={"cleanPodPolicy": policy}, status=out.status.to_kube()),
                   pods, at(130))  # fmt: skip
    assert again.status.replica_statuses == out.status.replica_statuses
    assert again.events == []


def test_worker_only_job_succeeds_when_all_workers_do() -> None:
    job = make_job(master=None, status=running_status())
    half = [pod("mnist", "Worker", 0, "Succeeded", exit_code=0), pod("mnist", "Worker", 1)]
    assert latest(job_status(job, half, at(50))) == "Running"
    done = [
        pod("mnist", "Worker", 0, "Succeeded", exit_code=0),
        pod("mnist", "Worker", 1, "Succeeded", exit_code=0),
    ]
    assert latest(job_status(job, done, at(60))) == "Succeeded"


def test_elastic_job_succeeds_when_any_worker_does() -> None:
    """Kubeflow: an elastic job is done when any Worker is; the others are cleanPodPolicy's."""
    job = make_job(
        master=None,
        workers=3,
        elasticPolicy={"minReplicas": 1},
        runPolicy={"cleanPodPolicy": "Running"},
        status=running_status(),
    )
    pods = [
        pod("mnist", "Worker", 0, "Succeeded", exit_code=0),
        pod("mnist", "Worker", 1),
        pod("mnist", "Worker", 2),
    ]
    out = assess(job, pods, at(60))
    assert latest(out.status) == "Succeeded"
    assert out.delete == ["mnist-worker-1", "mnist-worker-2"]


# ------------------------------------------------------------------------ restart policies


@pytest.mark.parametrize(
    ("policy", "exit_code", "retryable"),
    [
        (RestartPolicy.NEVER, 1, False),
        (RestartPolicy.NEVER, 137, False),
        (RestartPolicy.ON_FAILURE, 1, True),
        (RestartPolicy.ALWAYS, 1, True),
        (RestartPolicy.EXIT_CODE, 1, False),
        (RestartPolicy.EXIT_CODE, 127, False),
        (RestartPolicy.EXIT_CODE, 128, True),
        (RestartPolicy.EXIT_CODE, 137, True),
        (RestartPolicy.EXIT_CODE, None, True),
    ],
)
def test_retryable(policy: RestartPolicy, exit_code: int | None, retryable: bool) -> None:
    assert is_retryable(policy, exit_code) is retryable


def _one_worker_fails(restart: str, exit_code: int | None, **spec: Any) -> Assessment:
    job = make_job(restart=restart, status=running_status(), **spec)
    pods = [
        pod("mnist", "Master", 0),
        pod("mnist", "Worker", 0),
        pod("mnist", "Worker", 1, "Failed", exit_code=exit_code),
    ]
    return assess(job, pods, at(30))


@pytest.mark.parametrize(
    ("restart", "exit_code", "state"),
    [
        ("OnFailure", 1, "Restarting"),
        ("Always", 1, "Restarting"),
        ("ExitCode", 137, "Restarting"),
        ("ExitCode", None, "Restarting"),
        ("ExitCode", 2, "Failed"),
        ("Never", 137, "Failed"),
    ],
)
def test_a_failed_worker_is_restarted_or_fails_the_job(
    restart: str, exit_code: int | None, state: str
) -> None:
    out = _one_worker_fails(restart, exit_code)
    assert latest(out.status) == state
    if state == "Restarting":
        assert out.delete == ["mnist-worker-1"]
        assert out.status.restart_count == 1
        assert "Running" not in conds(out.status)  # Restarting replaces Running
        assert (
            out.status.conditions[-1].message
            == "PyTorchJob mnist is restarting because 1 Worker replica(s) failed."
        )
        assert not out.create_pods  # the replacement comes once the old pod is gone
    else:
        assert (
            out.status.conditions[-1].message
            == "PyTorchJob mnist is failed because 1 Worker replica(s) failed."
        )
        assert out.status.completion_time == at(30)
        # Kubeflow: cleanPodPolicy None (the default) keeps every pod, running ones too.
        assert out.delete == []


def test_exit_code_events_name_the_pod() -> None:
    out = _one_worker_fails("ExitCode", 137)
    assert any(
        e.reason == "ExitedWithCode" and "mnist-worker-1 exited with code 137" in e.message
        for e in out.events
    )


def test_restart_all_restarts_every_pod_together() -> None:
    out = _one_worker_fails("OnFailure", 1, runPolicy={"restartPolicy": "RestartAll"})
    assert latest(out.status) == "Restarting"
    assert sorted(out.delete) == ["mnist-master-0", "mnist-worker-0", "mnist-worker-1"]
    assert out.status.restart_count == 1
    assert "RestartAll" in (out.status.conditions[-1].message or "")


def test_restart_all_creates_nothing_while_old_pods_terminate() -> None:
    job = make_job(runPolicy={"restartPolicy": "RestartAll"}, status=running_status(restartCount=1))
    pods = [pod("mnist", "Master", 0, deleting=at(40))]
    out = assess(job, pods, at(30))
    assert not out.create_pods
    assert assess(job, [], at(45)).create_pods
    # Per-pod restarts do not wait for unrelated pods.
    per_pod = make_job(status=running_status(restartCount=1))
    assert assess(per_pod, pods, at(30)).create_pods


def test_running_again_after_a_restart() -> None:
    job = make_job(status=running_status(restartCount=1))
    restarting = assess(
        job,
        [
            pod("mnist", "Master", 0),
            pod("mnist", "Worker", 0),
            pod("mnist", "Worker", 1, "Failed", exit_code=1),
        ],
        at(30),
    )
    job.status = restarting.status
    status = job_status(job, all_running(), at(60))
    assert latest(status) == "Running"
    assert "Restarting" not in conds(status)


# --------------------------------------------------------------------------- backoffLimit


def _failures_until_failed(restart: str, backoff_limit: int, runs: int = 10) -> int:
    """Fail Worker 1 again and again, recreating it as the operator says; the number of
    the failure that fails the job."""
    status: dict[str, Any] = running_status()
    for failure in range(1, runs + 1):
        job = make_job(restart=restart, runPolicy={"backoffLimit": backoff_limit}, status=status)
        pods = [
            pod("mnist", "Master", 0),
            pod("mnist", "Worker", 0),
            pod("mnist", "Worker", 1, "Failed", exit_code=137),
        ]
        out = assess(job, pods, at(failure))
        if latest(out.status) == "Failed":
            return failure
        assert out.delete == ["mnist-worker-1"]  # recreated
        status = out.status.to_kube()
    raise AssertionError(f"still not failed after {runs} failures")


def _restarts_until_failed(backoff_limit: int, runs: int = 10) -> int:
    """The kubelet restarts Worker 1's container in place (OnFailure) again and again; the
    restartCount at which the job fails."""
    job = make_job(runPolicy={"backoffLimit": backoff_limit}, status=running_status())
    for restarts in range(runs + 1):
        pods = [
            pod("mnist", "Master", 0),
            pod("mnist", "Worker", 0),
            pod("mnist", "Worker", 1, restarts=restarts),
        ]
        if latest(job_status(job, pods, at(restarts))) == "Failed":
            return restarts
    raise AssertionError(f"still not failed after {runs} restarts")


@pytest.mark.parametrize(("limit", "fails_at"), [(0, 1), (1, 1), (2, 2), (3, 3)])
def test_backoff_limit_n_fails_the_job_at_the_nth_failure(limit: int, fails_at: int) -> None:
    """Kubeflow v1's rule (restarts >= backoffLimit; > 0 when it is 0), the same whether the
    kubelet restarts the container in place (OnFailure) or the operator recreates the pod
    (ExitCode retrying 137, which Kubeflow never counts unless the limit is 0)."""
    assert _restarts_until_failed(limit) == fails_at
    assert _failures_until_failed("ExitCode", limit) == fails_at
    assert _failures_until_failed("OnFailure", limit) == fails_at


def test_backoff_limit_message_and_the_restart_count() -> None:
    job = make_job(runPolicy={"backoffLimit": 3}, status=running_status(restartCount=2))
    pods = [
        pod("mnist", "Master", 0),
        pod("mnist", "Worker", 0),
        pod("mnist", "Worker", 1, "Failed", exit_code=1),
    ]
    out = assess(job, pods, at(30))
    assert latest(out.status) == "Failed"
    assert (
        out.status.conditions[-1].message
        == "Job mnist has failed because it has reached the specified backoff limit"
    )
    assert out.status.restart_count == 2  # the third restart never happened
    # #3419: the running pods are stopped, the failed one is kept (cleanPodPolicy None).
    assert out.delete == ["mnist-master-0", "mnist-worker-0"]
    # Below the limit, the same failure is retried.
    job = make_job(runPolicy={"backoffLimit": 4}, status=running_status(restartCount=2))
    out = assess(job, pods, at(30))
    assert latest(out.status) == "Restarting"
    assert out.status.restart_count == 3


def test_backoff_limit_adds_in_place_restarts_and_recreations() -> None:
    """One pod recreated before plus two in-place restarts now make three: limit 3 reached."""
    job = make_job(runPolicy={"backoffLimit": 3}, status=running_status(restartCount=1))
    pods = [pod("mnist", "Master", 0), pod("mnist", "Worker", 0, restarts=2)]
    assert latest(job_status(job, pods, at(30))) == "Failed"
    pods = [pod("mnist", "Master", 0), pod("mnist", "Worker", 0, restarts=1)]
    assert latest(job_status(job, pods, at(30))) == "Running"


def test_backoff_limit_ignores_restarts_of_pods_that_finished() -> None:
    """As in Kubeflow, a pod's in-place restarts leave the count when it stops running."""
    job = make_job(runPolicy={"backoffLimit": 2}, status=running_status())
    pods = [
        pod("mnist", "Master", 0),
        pod("mnist", "Worker", 0, "Succeeded", exit_code=0, restarts=5),
    ]
    assert latest(job_status(job, pods, at(30))) == "Running"


def test_backoff_limit_ignores_never_replicas() -> None:
    job = make_job(restart="Never", runPolicy={"backoffLimit": 1}, status=running_status())
    pods = [pod("mnist", "Master", 0), pod("mnist", "Worker", 0, restarts=4)]
    assert latest(job_status(job, pods, at(30))) == "Running"


@pytest.mark.parametrize(
    ("policy", "deleted"),
    [
        ("None", ["mnist-master-0"]),
        ("Running", ["mnist-master-0"]),
        ("All", ["mnist-master-0", "mnist-worker-0"]),
    ],
)
def test_clean_pod_policy_on_backoff_failure(policy: str, deleted: list[str]) -> None:
    job = make_job(
        workers=1, runPolicy={"backoffLimit": 0, "cleanPodPolicy": policy}, status=running_status()
    )
    pods = [pod("mnist", "Master", 0), pod("mnist", "Worker", 0, "Failed", exit_code=1)]
    out = assess(job, pods, at(30))
    assert latest(out.status) == "Failed"
    assert out.delete == deleted


# ------------------------------------------------------------------ activeDeadlineSeconds


def test_active_deadline() -> None:
    job = make_job(runPolicy={"activeDeadlineSeconds": 60}, status=running_status())
    before = assess(job, all_running(), at(10))
    assert latest(before.status) == "Running"
    assert before.requeue_after == 50
    after = assess(job, all_running(), at(60))
    assert latest(after.status) == "Failed"
    assert (
        after.status.conditions[-1].message
        == "Job mnist has failed because it was active longer than specified deadline"
    )
    assert sorted(after.delete) == ["mnist-master-0", "mnist-worker-0", "mnist-worker-1"]


# -------------------------------------------------------------------------- suspend/resume


def test_suspend_deletes_pods_and_holds_the_job() -> None:
    job = make_job(runPolicy={"suspend": True}, status=running_status())
    out = assess(job, all_running(), at(30))
    assert out.suspended
    assert sorted(out.delete) == ["mnist-master-0", "mnist-worker-0", "mnist-worker-1"]
    assert conds(out.status) == {"Created": "True", "Running": "False", "Suspended": "True"}
    assert latest(out.status) == "Suspended"
    assert out.status.replica_statuses["Worker"].active == 0
    assert not out.create_pods


def test_a_job_created_suspended_has_no_start_time() -> None:
    status = job_status(make_job(runPolicy={"suspend": True}), [], at(0))
    assert status.start_time is None
    assert conds(status) == {"Created": "True", "Suspended": "True"}


def test_resume_restarts_the_deadline_clock() -> None:
    suspended = job_status(
        make_job(runPolicy={"suspend": True}, status=running_status()), [], at(30)
    )
    job = make_job(
        runPolicy={"activeDeadlineSeconds": 60}, status=suspended.model_dump(by_alias=True)
    )
    out = assess(job, [], at(1000))
    assert conds(out.status)["Suspended"] == "False"
    assert (
        next(c for c in out.status.conditions if c.type is ConditionType.SUSPENDED).reason
        == "PyTorchJobResumed"
    )
    assert out.status.start_time == at(1000)
    assert out.create_pods
    assert latest(out.status) != "Failed"


# -------------------------------------------------------------- finished jobs: cleanup, TTL


def _finished(**run: Any) -> dict[str, Any]:
    status = running_status()
    status["conditions"] = [
        {"type": "Created", "status": "True"},
        {"type": "Running", "status": "False"},
        {"type": "Succeeded", "status": "True", "reason": "PyTorchJobSucceeded"},
    ]
    status["completionTime"] = stamp(T0)
    return status


FINISHED_PODS = [
    pod("mnist", "Master", 0, "Succeeded", exit_code=0),
    pod("mnist", "Worker", 0, "Failed", exit_code=1),
    pod("mnist", "Worker", 1, "Running"),
]


@pytest.mark.parametrize(
    ("policy", "deleted"),
    [
        ("None", []),
        ("Running", ["mnist-worker-1"]),
        ("All", ["mnist-master-0", "mnist-worker-0", "mnist-worker-1"]),
    ],
)
def test_finished_job_cleanup(policy: str, deleted: list[str]) -> None:
    job = make_job(runPolicy={"cleanPodPolicy": policy}, status=_finished())
    out = assess(job, FINISHED_PODS, at(10))
    assert out.finished
    assert sorted(out.delete) == deleted
    assert not out.create_pods
    assert out.status.conditions == job.status.conditions  # frozen once finished


def test_ttl_after_finished() -> None:
    job = make_job(runPolicy={"ttlSecondsAfterFinished": 100}, status=_finished())
    early = assess(job, [], at(40))
    assert not early.delete_job
    assert early.requeue_after == 60
    assert assess(job, [], at(100)).delete_job


def test_failed_is_final() -> None:
    status = _finished()
    status["conditions"][-1] = {"type": "Failed", "status": "True", "reason": "PyTorchJobFailed"}
    job = make_job(status=status)
    out = job_status(job, all_running(), at(10))
    assert latest(out) == "Failed"
    assert "Succeeded" not in conds(out)


# ------------------------------------------------------------------ stuck Terminating pods


def test_a_pod_stuck_terminating_is_force_deleted_after_the_timeout() -> None:
    """#2072: a node is lost; its pod stays Terminating (phase Running) forever."""
    job = make_job(status=running_status())
    pods = [
        pod("mnist", "Master", 0),
        pod("mnist", "Worker", 0),
        pod("mnist", "Worker", 1, deleting=at(0)),
    ]
    waiting = assess(job, pods, at(60))
    assert waiting.force_delete == []
    assert waiting.requeue_after == 60  # 120 s timeout past the deadline
    assert waiting.status.replica_statuses["Worker"].failed == 1  # Kubeflow's count
    stuck = assess(job, pods, at(120))
    assert stuck.force_delete == ["mnist-worker-1"]
    assert latest(stuck.status) == "Restarting"
    assert stuck.status.restart_count == 1
    assert any(e.reason == "PodStuckTerminating" for e in stuck.events)


def test_stuck_pod_of_a_never_replica_fails_the_job() -> None:
    job = make_job(
        restart="Never", runPolicy={"terminatingTimeoutSeconds": 10}, status=running_status()
    )
    pods = [pod("mnist", "Master", 0), pod("mnist", "Worker", 0, deleting=at(0))]
    out = assess(job, pods, at(10))
    assert latest(out.status) == "Failed"
    assert out.force_delete == ["mnist-worker-0"]
    assert "mnist-worker-0" not in out.delete


# ----------------------------------------------------------------------------- conditions


def test_condition_transition_time_is_kept_when_only_the_reason_changes() -> None:
    conditions, changed = set_condition([], ConditionType.RUNNING, "True", "A", "m", at(0))
    assert changed
    conditions, changed = set_condition(conditions, ConditionType.RUNNING, "True", "A", "m", at(5))
    assert not changed
    conditions, changed = set_condition(conditions, ConditionType.RUNNING, "True", "B", "m", at(9))
    assert changed
    assert conditions[0].last_transition_time == at(0)
    assert conditions[0].last_update_time == at(9)


def test_invalid_spec_becomes_a_failed_condition() -> None:
    status = invalid_spec_status(PyTorchJobStatus(), "mnist", "no pytorch container", at(3))
    assert latest(status) == "Failed"
    assert status.conditions[-1].reason == "PyTorchJobInvalidSpec"
    assert "no pytorch container" in (status.conditions[-1].message or "")
