"""What a PyTorchJob's pods say about the job: ``job_status(job, pods, now)``.

One pure function, :func:`assess`, reads the job (spec and the status written last time)
and its pods, and returns the new status together with the decisions the planner turns
into API calls (pods to restart, stop or force-delete). :func:`job_status` is its status.

Kubeflow training-operator v1 semantics, in the order they are applied:

1. A finished job (``Succeeded`` or ``Failed`` true) only gets cleaned up and, after
   ``ttlSecondsAfterFinished`` past ``completionTime``, deleted. ``cleanPodPolicy`` is
   Kubeflow's: ``None`` keeps every pod (running ones too), ``Running`` deletes the Running
   and Pending pods, ``All`` deletes all; a job failed by ``backoffLimit`` or
   ``activeDeadlineSeconds`` also stops its running pods.
2. ``runPolicy.suspend`` deletes every pod, sets ``Suspended`` and ``Running=False``;
   resuming sets ``Suspended=False`` and restarts the ``activeDeadlineSeconds`` clock.
3. ``activeDeadlineSeconds`` past ``startTime`` fails the job.
4. A failed pod is retried according to its replica's ``restartPolicy`` (Never: the job
   fails; ExitCode: exit codes >= 128 are retried, 1-127 fail the job; OnFailure/Always:
   retried); ``backoffLimit`` bounds the restarts (see :func:`restarts_exhausted`).
5. With a Master, the job succeeds as soon as the Master succeeds (Workers still running
   count as succeeded, as in Kubeflow's replica statuses); without one, when every Worker
   has (or, for an elastic job, any Worker has).

Where Kubeflow leaves users stuck (kubeflow/trainer issue numbers), mlkube differs:

* #3419 — a job failed by ``backoffLimit`` or the deadline keeps its finished pods (their
  logs) under ``cleanPodPolicy`` None/Running; Kubeflow deletes every pod there;
* #2269 / #2000 — ``runPolicy.restartPolicy: RestartAll`` restarts all pods together;
* #2072 — a pod Terminating longer than ``terminatingTimeoutSeconds`` past its deletion
  deadline (its node is lost) is force-deleted and counted as a failure of that replica.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Literal

from mlkube.api.pytorchjob import (
    DEFAULT_CONTAINER_NAME,
    KIND,
    MASTER,
    REPLICA_TYPES,
    WORKER,
    CleanPodPolicy,
    ConditionType,
    JobCondition,
    JobRestartPolicy,
    LabelSelector,
    PyTorchJob,
    PyTorchJobStatus,
    ReplicaStatus,
    RestartPolicy,
)
from mlkube.operator.events import Event
from mlkube.operator.pytorchjob.pods import (
    LABEL_REPLICA_INDEX,
    LABEL_REPLICA_TYPE,
    format_selector,
    replica_selector,
)

#: Kubeflow's stand-in for "no exit code seen": >= 128, so ExitCode treats it as retryable.
UNKNOWN_EXIT_CODE = 0xBEEF


def _reason(suffix: str) -> str:
    return f"{KIND}{suffix}"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as the API server writes it, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _second(now: datetime) -> datetime:
    """metav1.Time has second precision; so does everything we write."""
    return now.astimezone(UTC).replace(microsecond=0)


# ------------------------------------------------------------------------------ pod views


class PodState(Enum):
    ACTIVE = "active"  # Pending, Running or Unknown, not being deleted
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TERMINATING = "terminating"  # being deleted, within its grace period
    STUCK = "stuck"  # being deleted, long past its deadline: its node is gone


@dataclass(frozen=True)
class PodView:
    """The facts about one pod the decisions need."""

    name: str
    replica_type: str | None
    index: int | None
    phase: str
    state: PodState
    exit_code: int | None
    container_restarts: int
    deletion_deadline: datetime | None


def _replica_type(label: str | None) -> str | None:
    if label is None:
        return None
    return next((t for t in REPLICA_TYPES if t.lower() == label.lower()), None)


def _index(label: str | None) -> int | None:
    if label is None or not label.isdigit():
        return None
    return int(label)


def view_pod(pod: Mapping[str, Any], now: datetime, terminating_timeout: int) -> PodView:
    """Classify one pod (raw API object)."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    labels = metadata.get("labels") or {}
    phase = str(status.get("phase") or "Pending")
    exit_code: int | None = None
    restarts = 0
    for cstatus in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        restarts += int(cstatus.get("restartCount") or 0)
    for cstatus in status.get("containerStatuses") or []:
        terminated = (cstatus.get("state") or {}).get("terminated")
        if cstatus.get("name") == DEFAULT_CONTAINER_NAME and terminated is not None:
            exit_code = int(terminated.get("exitCode", UNKNOWN_EXIT_CODE))
    deadline = parse_time(metadata.get("deletionTimestamp"))
    if deadline is not None:
        stuck = now >= deadline + timedelta(seconds=terminating_timeout)
        state = PodState.STUCK if stuck else PodState.TERMINATING
    elif phase == "Succeeded":
        state = PodState.SUCCEEDED
    elif phase == "Failed":
        state = PodState.FAILED
    else:
        state = PodState.ACTIVE
    return PodView(
        name=str(metadata.get("name", "")),
        replica_type=_replica_type(labels.get(LABEL_REPLICA_TYPE)),
        index=_index(labels.get(LABEL_REPLICA_INDEX)),
        phase=phase,
        state=state,
        exit_code=exit_code,
        container_restarts=restarts,
        deletion_deadline=deadline,
    )


def is_retryable(policy: RestartPolicy, exit_code: int | None) -> bool:
    """Whether a failed pod of a replica with ``policy`` is restarted (Kubeflow's rule)."""
    if policy is RestartPolicy.NEVER:
        return False
    if policy is RestartPolicy.EXIT_CODE:
        code = UNKNOWN_EXIT_CODE if exit_code is None else exit_code
        return code >= 128
    return True


# ----------------------------------------------------------------------------- conditions


def condition(conditions: Sequence[JobCondition], ctype: ConditionType) -> JobCondition | None:
    return next((c for c in conditions if c.type is ctype), None)


def is_true(conditions: Sequence[JobCondition], ctype: ConditionType) -> bool:
    found = condition(conditions, ctype)
    return found is not None and found.status == "True"


def is_finished(status: PyTorchJobStatus) -> bool:
    return is_true(status.conditions, ConditionType.SUCCEEDED) or is_true(
        status.conditions, ConditionType.FAILED
    )


def set_condition(
    conditions: list[JobCondition],
    ctype: ConditionType,
    status: str,
    reason: str,
    message: str,
    now: datetime,
) -> tuple[list[JobCondition], bool]:
    """Kubeflow's condition bookkeeping; returns the new list and whether anything changed.

    Nothing changes once the job has Failed; Running and Restarting replace each other;
    Succeeded/Failed turn Running false; the updated condition goes last, so the newest state
    is what ``kubectl get`` shows (``.status.conditions[-1:].type``).
    """
    if is_true(conditions, ConditionType.FAILED):
        return conditions, False
    current = condition(conditions, ctype)
    if current is not None and current.status == status and current.reason == reason:
        return conditions, False
    transition = now
    if current is not None and current.status == status and current.last_transition_time:
        transition = current.last_transition_time
    kept: list[JobCondition] = []
    for cond in conditions:
        if cond.type is ctype:
            continue
        if {cond.type, ctype} == {ConditionType.RUNNING, ConditionType.RESTARTING}:
            continue
        if (
            ctype in (ConditionType.SUCCEEDED, ConditionType.FAILED)
            and cond.type is ConditionType.RUNNING
            and cond.status != "False"
        ):
            cond = cond.model_copy(update={"status": "False"})
        kept.append(cond)
    kept.append(
        JobCondition(
            type=ctype,
            status=status,
            reason=reason,
            message=message,
            last_update_time=now,
            last_transition_time=transition,
        )
    )
    return kept, True


# ----------------------------------------------------------------------------- assessment


@dataclass
class Assessment:
    """The new status and what has to happen to the pods to get there."""

    status: PyTorchJobStatus
    events: list[Event] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    """Pods to delete (restart, stop, scale down, cleanup), gracefully."""
    force_delete: list[str] = field(default_factory=list)
    """Pods stuck Terminating: delete with grace period 0."""
    create_pods: bool = False
    """Whether missing pods may be created in this pass."""
    finished: bool = False
    suspended: bool = False
    delete_job: bool = False
    requeue_after: float | None = None
    """Seconds until something time-based is due (deadline, TTL, stuck pod)."""
    views: list[PodView] = field(default_factory=list)

    def wake_in(self, seconds: float) -> None:
        seconds = max(seconds, 1.0)
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds


def _replica_statuses(job: PyTorchJob, views: Iterable[PodView]) -> dict[str, ReplicaStatus]:
    """Kubeflow's counts: Running pods are active, Succeeded/Failed pods count as such, and a
    Running pod being deleted counts as failed (an orphan that may never reach Failed)."""
    out: dict[str, ReplicaStatus] = {}
    for rtype, spec in job.spec.pytorch_replica_specs.items():
        selector = replica_selector(job.name, rtype)
        counts = {"active": 0, "succeeded": 0, "failed": 0}
        for view in views:
            if view.replica_type != rtype or view.index is None or view.index >= spec.replicas:
                continue
            if view.state is PodState.ACTIVE and view.phase == "Running":
                counts["active"] += 1
            elif view.state is PodState.SUCCEEDED:
                counts["succeeded"] += 1
            elif view.state is PodState.FAILED or (
                view.state in (PodState.TERMINATING, PodState.STUCK) and view.phase == "Running"
            ):
                counts["failed"] += 1
        out[rtype] = ReplicaStatus(
            **counts,
            label_selector=LabelSelector(match_labels=selector),
            selector=format_selector(selector),
        )
    return out


class _Pass:
    """The mutable scratch state of one assessment (kept out of the public result)."""

    def __init__(self, job: PyTorchJob, now: datetime) -> None:
        self.job = job
        self.now = _second(now)
        self.status = job.status.model_copy(deep=True)
        self.out = Assessment(status=self.status)

    def set(self, ctype: ConditionType, status: str, reason: str, message: str) -> bool:
        self.status.conditions, changed = set_condition(
            self.status.conditions, ctype, status, _reason(reason), message, self.now
        )
        return changed


def _event(p: _Pass, etype: Literal["Normal", "Warning"], reason: str, message: str) -> None:
    p.out.events.append(Event(etype, reason, message))


def _finish(p: _Pass, ctype: ConditionType, message: str) -> None:
    """Move the job to Succeeded or Failed (once), with its completion time and event."""
    if p.status.completion_time is None:
        p.status.completion_time = p.now
    suffix = "Succeeded" if ctype is ConditionType.SUCCEEDED else "Failed"
    if p.set(ctype, "True", suffix, message):
        succeeded = ctype is ConditionType.SUCCEEDED
        _event(p, "Normal" if succeeded else "Warning", _reason(suffix), message)
    if ctype is ConditionType.SUCCEEDED:
        for rstatus in p.status.replica_statuses.values():
            rstatus.succeeded += rstatus.active
            rstatus.active = 0


def _stops_running_pods(status: PyTorchJobStatus, job: PyTorchJob) -> bool:
    """Whether the job ended on a limit (backoffLimit, activeDeadlineSeconds): its running
    pods are then stopped whatever ``cleanPodPolicy`` says, as in Kubeflow (a deadline that
    left the training running would mean nothing)."""
    failed = condition(status.conditions, ConditionType.FAILED)
    return (
        failed is not None
        and failed.status == "True"
        and failed.message in (_backoff_limit_message(job), _deadline_message(job))
    )


def _cleaned_up(policy: CleanPodPolicy, view: PodView, limit_reached: bool) -> bool:
    """Whether a finished job's pod is deleted (Kubeflow's ``cleanPodPolicy``): All deletes
    every pod, Running the Running and Pending ones (a Pending pod would run later), None
    none; a limit that failed the job stops the pods that still run."""
    if policy is CleanPodPolicy.ALL:
        return True
    if view.state is not PodState.ACTIVE:
        return False
    return limit_reached or (
        policy is CleanPodPolicy.RUNNING and view.phase in ("Running", "Pending")
    )


def _cleanup_finished(p: _Pass, views: Sequence[PodView]) -> None:
    """Mark the pass finished, delete the pods ``cleanPodPolicy`` names (None: keep them
    all, running ones included, as Kubeflow does), honour ``ttlSecondsAfterFinished``."""
    p.out.finished = True
    policy = p.job.spec.run_policy
    limit_reached = _stops_running_pods(p.status, p.job)
    for view in views:
        if view.state is PodState.STUCK:
            p.out.force_delete.append(view.name)  # finish a deletion already under way
        elif view.state is PodState.TERMINATING:
            assert view.deletion_deadline is not None
            p.out.wake_in(
                (view.deletion_deadline - p.now).total_seconds()
                + policy.terminating_timeout_seconds
            )
        elif _cleaned_up(policy.clean_pod_policy, view, limit_reached):
            p.out.delete.append(view.name)
    ttl = policy.ttl_seconds_after_finished
    if ttl is not None and p.status.completion_time is not None:
        expires = p.status.completion_time + timedelta(seconds=ttl)
        if p.now >= expires:
            p.out.delete_job = True
        else:
            p.out.wake_in((expires - p.now).total_seconds())


def _end(p: _Pass, ctype: ConditionType, message: str, views: Sequence[PodView]) -> None:
    """Finish the job as ``ctype`` and clean up after it: every terminal decision ends so."""
    _finish(p, ctype, message)
    _cleanup_finished(p, views)


def restarts_exhausted(backoff_limit: int | None, restarts: int) -> bool:
    """Whether ``restarts`` reach ``backoffLimit``, so that the job fails.

    ``restarts`` counts the pods the operator recreated (``status.restartCount``: one per
    retried pod, one per RestartAll cycle), including the recreation a failure now asks
    for, plus the in-place container restarts of the job's Pending and Running pods of
    replicas that are not ``Never``. Kubeflow v1 (``PastBackoffLimit``) fails the job when
    the container restarts reach the limit (``>=``; more than 0 when it is 0), so
    ``backoffLimit: N`` fails the job at its N-th failure, and 0 and 1 both at the first.
    The same holds here for recreations, which Kubeflow counts only when the limit is 0
    (an ``ExitCode`` job retrying exit code 137 never reached its limit there).
    """
    if backoff_limit is None:
        return False
    return restarts > 0 and restarts >= backoff_limit


def _backoff_limit_message(job: PyTorchJob) -> str:
    return f"Job {job.name} has failed because it has reached the specified backoff limit"


def _deadline_message(job: PyTorchJob) -> str:
    return f"Job {job.name} has failed because it was active longer than specified deadline"


def assess(job: PyTorchJob, pods: Sequence[Mapping[str, Any]], now: datetime) -> Assessment:
    """The whole decision for one reconcile of ``job`` given its ``pods`` at ``now``."""
    out = _assess(job, pods, now)
    out.force_delete = list(dict.fromkeys(out.force_delete))
    forced = set(out.force_delete)
    out.delete = [name for name in dict.fromkeys(out.delete) if name not in forced]
    return out


def _assess(job: PyTorchJob, pods: Sequence[Mapping[str, Any]], now: datetime) -> Assessment:
    p = _Pass(job, now)
    run = job.spec.run_policy
    status = p.status
    views = [view_pod(pod, p.now, run.terminating_timeout_seconds) for pod in pods]
    p.out.views = views
    generation = job.metadata.get("generation")
    if isinstance(generation, int):
        status.observed_generation = generation

    if condition(status.conditions, ConditionType.CREATED) is None:
        p.set(ConditionType.CREATED, "True", "Created", f"{KIND} {job.name} is created.")

    if is_finished(status):
        _cleanup_finished(p, views)
        return p.out

    status.replica_statuses = _replica_statuses(job, views)

    if run.suspend:
        p.out.suspended = True
        for view in views:
            if view.state is PodState.STUCK:
                p.out.force_delete.append(view.name)
            elif view.state is not PodState.TERMINATING:
                p.out.delete.append(view.name)
        for rstatus in status.replica_statuses.values():
            rstatus.active = 0
        message = f"{KIND} {job.name} is suspended."
        if is_true(status.conditions, ConditionType.RUNNING) or is_true(
            status.conditions, ConditionType.RESTARTING
        ):
            p.set(ConditionType.RUNNING, "False", "Suspended", message)
        if not is_true(status.conditions, ConditionType.SUSPENDED) and p.set(
            ConditionType.SUSPENDED, "True", "Suspended", message
        ):
            _event(p, "Normal", _reason("Suspended"), message)
        return p.out

    if is_true(status.conditions, ConditionType.SUSPENDED):
        message = f"{KIND} {job.name} is resumed."
        p.set(ConditionType.SUSPENDED, "False", "Resumed", message)
        _event(p, "Normal", _reason("Resumed"), message)
        status.start_time = p.now
    if status.start_time is None:
        status.start_time = p.now

    deadline = run.active_deadline_seconds
    if deadline is not None:
        expires = status.start_time + timedelta(seconds=deadline)
        if p.now >= expires:
            _end(p, ConditionType.FAILED, _deadline_message(job), views)
            return p.out
        p.out.wake_in((expires - p.now).total_seconds())

    _running(p, views)
    return p.out


def _running(p: _Pass, views: Sequence[PodView]) -> None:
    """Steps 4 and 5 for a job that is neither finished nor suspended."""
    job, spec, run = p.job, p.job.spec, p.job.spec.run_policy
    status = p.status
    specs = spec.pytorch_replica_specs
    in_range: list[PodView] = []
    for view in views:
        rspec = specs.get(view.replica_type) if view.replica_type else None
        if rspec is None or view.index is None:
            continue  # not ours to judge (no replica labels)
        if view.index >= rspec.replicas:
            if view.state is PodState.STUCK:
                p.out.force_delete.append(view.name)
            elif view.state is not PodState.TERMINATING:
                p.out.delete.append(view.name)  # scaled down
            continue
        in_range.append(view)

    for view in in_range:
        if view.state is PodState.TERMINATING:
            assert view.deletion_deadline is not None
            p.out.wake_in(
                (view.deletion_deadline - p.now).total_seconds() + run.terminating_timeout_seconds
            )

    # 5. success (checked first: a Master that succeeded decides the job).
    if MASTER in specs:
        master_done = any(
            v.replica_type == MASTER and v.state is PodState.SUCCEEDED for v in in_range
        )
        if master_done:
            # Kubeflow: the Master decides. Workers still running are left to cleanPodPolicy.
            _end(p, ConditionType.SUCCEEDED, f"{KIND} {job.name} is successfully completed.", views)
            return
    else:
        workers = specs[WORKER].replicas
        succeeded = sum(
            1 for v in in_range if v.replica_type == WORKER and v.state is PodState.SUCCEEDED
        )
        if succeeded >= workers or (spec.elastic_policy is not None and succeeded > 0):
            _end(p, ConditionType.SUCCEEDED, f"{KIND} {job.name} is successfully completed.", views)
            return

    # 4. failures.
    failed_by_type: dict[str, int] = {}
    retry: list[PodView] = []
    permanent: list[PodView] = []
    for view in in_range:
        if view.state not in (PodState.FAILED, PodState.STUCK):
            continue
        assert view.replica_type is not None
        failed_by_type[view.replica_type] = failed_by_type.get(view.replica_type, 0) + 1
        policy = specs[view.replica_type].restart_policy
        if view.state is PodState.FAILED and view.exit_code is not None:
            _event(
                p,
                "Normal",
                "ExitedWithCode",
                f"Pod: {job.namespace}.{view.name} exited with code {view.exit_code}",
            )
        if view.state is PodState.STUCK:
            _event(
                p,
                "Warning",
                "PodStuckTerminating",
                f"Pod {view.name} has been terminating for more than "
                f"{run.terminating_timeout_seconds}s past its deadline (node lost?); "
                "force-deleting it and counting it as failed",
            )
        (retry if is_retryable(policy, view.exit_code) else permanent).append(view)

    for view in [*retry, *permanent]:
        if view.state is PodState.STUCK:
            p.out.force_delete.append(view.name)

    # Kubeflow counts the container restarts of pods still running; so do we (Pending pods
    # too: an init container in a restart loop keeps its pod Pending).
    counted = [
        v
        for v in in_range
        if v.state is PodState.ACTIVE
        and specs[v.replica_type or WORKER].restart_policy is not RestartPolicy.NEVER
    ]
    container_restarts = sum(v.container_restarts for v in counted)

    if permanent:
        rtype = permanent[0].replica_type
        assert rtype is not None
        _end(
            p,
            ConditionType.FAILED,
            f"{KIND} {job.name} is failed because {failed_by_type[rtype]} {rtype} "
            "replica(s) failed.",
            views,
        )
        return

    restart_all = run.restart_policy is JobRestartPolicy.RESTART_ALL
    if retry:
        needed = 1 if restart_all else len(retry)
        if restarts_exhausted(
            run.backoff_limit, status.restart_count + needed + container_restarts
        ):
            _end(
                p,
                ConditionType.FAILED,
                _backoff_limit_message(job),
                views,
            )
            return
        status.restart_count += needed
        targets = in_range if restart_all else retry
        for view in targets:
            if view.state in (PodState.TERMINATING, PodState.STUCK):
                continue
            p.out.delete.append(view.name)
        rtype = retry[0].replica_type
        assert rtype is not None
        message = (
            f"{KIND} {job.name} is restarting because {failed_by_type[rtype]} {rtype} "
            "replica(s) failed."
        )
        if restart_all:
            message += " Restarting all pods together (RestartAll)."
        p.set(ConditionType.RESTARTING, "True", "Restarting", message)
        _event(p, "Warning", _reason("Restarting"), message)
        # Replacement pods are created once the old ones are gone (next pass).
        return

    if restarts_exhausted(run.backoff_limit, status.restart_count + container_restarts):
        _end(
            p,
            ConditionType.FAILED,
            _backoff_limit_message(job),
            views,
        )
        return

    # Missing pods may be created, except that RestartAll waits until every old pod is gone
    # so that the new group rendezvouses together.
    terminating = any(v.state in (PodState.TERMINATING, PodState.STUCK) for v in views)
    p.out.create_pods = not (restart_all and terminating)

    running_type = MASTER if MASTER in specs else WORKER
    if any(
        v.replica_type == running_type and v.state is PodState.ACTIVE and v.phase == "Running"
        for v in in_range
    ):
        p.set(ConditionType.RUNNING, "True", "Running", f"{KIND} {job.name} is running.")


def job_status(
    job: PyTorchJob, pods: Sequence[Mapping[str, Any]], now: datetime
) -> PyTorchJobStatus:
    """The job's new status given its pods at ``now`` (see the module docstring)."""
    return assess(job, pods, now).status


def invalid_spec_status(
    previous: PyTorchJobStatus, name: str, problem: str, now: datetime
) -> PyTorchJobStatus:
    """A spec the schema could not catch: the job fails with the reason, the operator lives."""
    status = previous.model_copy(deep=True)
    if is_finished(status):
        return status
    at = _second(now)
    if status.completion_time is None:
        status.completion_time = at
    status.conditions, _ = set_condition(
        status.conditions,
        ConditionType.FAILED,
        "True",
        _reason("InvalidSpec"),
        f"{KIND} {name} has an invalid spec: {problem}",
        at,
    )
    return status
