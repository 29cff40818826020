"""The canary rollout as a pure state machine: ``next_step(spec, status, analysis, now)``.

The operator's timer reads the ModelService and its Deployments, asks
:func:`analysis_due` whether a check is due, runs the Prometheus queries if so, and calls
:func:`next_step`.  The returned :class:`RolloutDecision` says which revision the stable
and canary Deployments must run, the canary weight, the new ``status.rollout`` and the
Events to emit.  Nothing here does I/O or reads the clock, so every transition is
table-tested, and because everything the machine needs lives in ``status.rollout`` an
operator restarted mid-rollout resumes exactly where it stopped.

Vocabulary and semantics follow Flagger (primary/canary Deployments, ``stepWeight``,
``maxWeight``, ``failureThreshold`` counted over the whole rollout) with our names:

* The first revision of a ModelService is deployed directly (nothing to compare with).
* A new revision starts as a canary at the first weight.  Every ``interval`` a check runs
  once the canary is ready: pass advances to the next weight (after the last one: promote),
  fail counts towards ``failureThreshold`` (reached: roll back), wait does nothing.
* No progress for ``progressDeadlineSeconds`` (canary never ready, data never enough)
  rolls back; a paused rollout neither checks nor runs into its deadline.
* Promotion moves the stable Deployment to the new revision while the canary keeps its
  share; once the stable Deployment is ready the canary is removed.
* A rolled-back revision is not retried until the spec changes to another revision; a spec
  change mid-rollout discards the running canary and starts a new one; a spec change back
  to the stable revision simply discards the canary (a manual rollback).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mlkube.api.actions import Action, ActionOutcome, ActionResult, Verb
from mlkube.api.rollout import (
    HISTORY_LIMIT,
    HistoryEntry,
    MetricResult,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    RolloutStrategy,
    Verdict,
    human_duration,
)
from mlkube.operator.analysis import AnalysisReport
from mlkube.operator.events import Event


@dataclass(frozen=True)
class RolloutTarget:
    """What the spec asks for now: the rollout settings and the revision they apply to."""

    rollout: RolloutSpec
    revision: str
    model_version: str = ""
    image: str = ""
    spec: dict[str, Any] | None = None
    """The spec (as stored) that built ``revision``: kept in history for ``undo``."""


@dataclass(frozen=True)
class Workload:
    """What the operator observed of the Deployments this tick.

    ``canary_ready``: the canary Deployment runs the canary revision and all its replicas are
    available.  ``stable_ready``: the stable Deployment runs ``status.stableRevision`` and
    is fully rolled out (used to finish a promotion).
    """

    canary_ready: bool = False
    stable_ready: bool = False


@dataclass(frozen=True)
class RolloutDecision:
    """Where the workloads must go and what status to write.

    ``stable_revision`` is the revision the stable Deployment ``N`` must run;
    ``canary_revision`` the one the canary Deployment ``N-canary`` runs (``None``: no
    canary, remove or scale it to zero); ``canary_weight`` the canary's traffic share.
    """

    status: RolloutStatus
    stable_revision: str
    canary_revision: str | None
    canary_weight: int
    events: tuple[Event, ...] = field(default_factory=tuple)

    @property
    def rolled_back(self) -> bool:
        return self.status.phase is RolloutPhase.ROLLED_BACK


def short(revision: str | None) -> str:
    """Revisions are hashes; Events and messages show the first 10 characters like git."""
    return (revision or "")[:10]


def _elapsed(now: datetime, since: datetime | None) -> float:
    return (now - since).total_seconds() if since is not None else 0.0


def _active_canary(status: RolloutStatus) -> bool:
    return status.canary_revision is not None and status.phase in (
        RolloutPhase.PROGRESSING,
        RolloutPhase.PROMOTING,
        RolloutPhase.FAILED,
    )


def analysis_due(
    target: RolloutTarget, status: RolloutStatus | None, now: datetime, workload: Workload
) -> bool:
    """Whether the shell should query Prometheus before calling :func:`next_step`.

    A check is due when the canary of the wanted revision is progressing, not paused, ready,
    and an ``interval`` has passed since the weight last changed and since the last check
    (so each check sees a full window at the current weight).
    """
    if status is None or status.phase is not RolloutPhase.PROGRESSING:
        return False
    if target.rollout.strategy is not RolloutStrategy.CANARY or target.rollout.paused:
        return False
    if status.manual_pause:
        return False
    if status.canary_revision != target.revision or status.stable_revision == target.revision:
        return False
    if not workload.canary_ready:
        return False
    interval = target.rollout.interval_seconds
    return _elapsed(now, status.last_progress_time) >= interval and (
        status.last_check_time is None or _elapsed(now, status.last_check_time) >= interval
    )


def _with_history(
    history: list[HistoryEntry],
    *,
    add: HistoryEntry | None = None,
    finish: tuple[str, str, datetime] | None = None,
) -> list[HistoryEntry]:
    """Close the open entry of a revision and/or append one; keep the newest entries."""
    out = [entry.model_copy() for entry in history]
    if finish is not None:
        revision, outcome, when = finish
        for index in range(len(out) - 1, -1, -1):
            entry = out[index]
            if entry.revision == revision and entry.finished is None:
                out[index] = entry.model_copy(update={"outcome": outcome, "finished": when})
                break
    if add is not None:
        out.append(add)
    return out[-HISTORY_LIMIT:]


class _Machine:
    """One transition, built up step by step; a class only to keep ``next_step`` readable."""

    def __init__(self, target: RolloutTarget, status: RolloutStatus, now: datetime) -> None:
        self.target = target
        self.spec = target.rollout
        self.now = now
        self.status = status.model_copy(deep=True)
        self.events: list[Event] = []

    def event(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, message))

    def decision(self) -> RolloutDecision:
        s = self.status
        canary = s.canary_revision if _active_canary(s) else None
        return RolloutDecision(
            status=s,
            stable_revision=s.stable_revision or self.target.revision,
            canary_revision=canary,
            canary_weight=s.canary_weight if canary is not None else 0,
            events=tuple(self.events),
        )

    # ---------------------------------------------------------------- transitions

    def deploy_directly(self, reason: str, message: str) -> None:
        """First revision, or strategy rolling: the stable Deployment takes it in place."""
        s = self.status
        if _active_canary(s):
            s.history = _with_history(
                s.history, finish=(s.canary_revision or "", "Superseded", self.now)
            )
        s.history = _with_history(
            s.history,
            finish=(s.stable_revision or "", "Superseded", self.now) if s.stable_revision else None,
            add=HistoryEntry(
                revision=self.target.revision,
                model_version=self.target.model_version,
                image=self.target.image,
                spec=self.target.spec,
                started=self.now,
                finished=self.now,
                outcome="Deployed",
            ),
        )
        s.stable_revision = self.target.revision
        s.stable_model_version = self.target.model_version
        self._clear_canary()
        s.phase = RolloutPhase.SUCCEEDED
        s.rolled_back_revision = None
        s.message = message
        self.event("Normal", reason, message)

    def _clear_canary(self) -> None:
        s = self.status
        s.canary_revision = None
        s.canary_model_version = ""
        s.canary_weight = 0
        s.failed_checks = 0
        s.paused = False
        s.manual_pause = False
        s.last_check_time = None
        s.metrics = []

    def start_canary(self) -> None:
        s = self.status
        if _active_canary(s) and s.canary_revision == s.stable_revision:
            # A promotion was under way: the stable Deployment already runs it.
            s.history = _with_history(
                s.history, finish=(s.canary_revision or "", "Promoted", self.now)
            )
        elif _active_canary(s) and s.canary_revision != self.target.revision:
            old = s.canary_revision
            s.history = _with_history(s.history, finish=(old or "", "Superseded", self.now))
            self.event(
                "Normal",
                "CanaryDiscarded",
                f"spec changed: canary {short(old)} discarded, stable {short(s.stable_revision)} keeps serving",
            )
        first = self.spec.weights()[0]
        self._clear_canary()
        s.phase = RolloutPhase.PROGRESSING
        s.canary_revision = self.target.revision
        s.canary_model_version = self.target.model_version
        s.canary_weight = first
        s.started_at = self.now
        s.last_progress_time = self.now
        s.rolled_back_revision = None
        s.history = _with_history(
            s.history,
            add=HistoryEntry(
                revision=self.target.revision,
                model_version=self.target.model_version,
                image=self.target.image,
                spec=self.target.spec,
                started=self.now,
                outcome="Progressing",
            ),
        )
        s.message = f"canary {short(self.target.revision)} started at {first}%"
        self.event(
            "Normal",
            "CanaryStarted",
            f"starting canary {short(self.target.revision)}"
            + (f" (model version {self.target.model_version})" if self.target.model_version else "")
            + f" at {first}%",
        )

    def discard_canary_for_stable(self) -> None:
        """The spec went back to the stable revision: drop the canary, stable keeps serving."""
        s = self.status
        old = s.canary_revision
        s.history = _with_history(s.history, finish=(old or "", "Superseded", self.now))
        self._clear_canary()
        s.phase = RolloutPhase.SUCCEEDED
        s.message = f"spec returned to stable revision {short(s.stable_revision)}"
        self.event(
            "Normal",
            "CanaryDiscarded",
            f"spec returned to stable revision {short(s.stable_revision)}: canary {short(old)} discarded",
        )

    def roll_back(self, why: str) -> None:
        s = self.status
        failed = s.canary_revision
        s.history = _with_history(s.history, finish=(failed or "", "RolledBack", self.now))
        metrics = s.metrics
        self._clear_canary()
        s.metrics = metrics  # keep the evidence
        s.phase = RolloutPhase.ROLLED_BACK
        s.rolled_back_revision = failed
        s.message = f"canary {short(failed)} rolled back: {why}"
        self.event(
            "Warning",
            "RolledBack",
            f"rolled back to {short(s.stable_revision)}: canary {short(failed)} {why}",
        )

    def promote(self) -> None:
        s = self.status
        s.phase = RolloutPhase.PROMOTING
        s.stable_revision = s.canary_revision
        s.stable_model_version = s.canary_model_version
        s.last_progress_time = self.now
        s.message = f"promoting {short(s.canary_revision)}: updating the stable Deployment"
        self.event(
            "Normal",
            "Promoting",
            f"promoting canary {short(s.canary_revision)}: all checks passed at {s.canary_weight}%",
        )

    def finish_promotion(self) -> None:
        s = self.status
        done = s.canary_revision
        s.history = _with_history(s.history, finish=(done or "", "Promoted", self.now))
        self._clear_canary()
        s.phase = RolloutPhase.SUCCEEDED
        s.message = f"revision {short(done)} promoted"
        self.event("Normal", "Promoted", f"promoted {short(done)}: stable now serves it")

    # ---------------------------------------------------------------- the canary steps

    def progress(self, analysis: AnalysisReport | None, workload: Workload) -> None:
        s = self.status
        if self.spec.paused or s.manual_pause:
            if not s.paused:
                s.paused = True
                s.message = f"paused at {s.canary_weight}%"
                self.event("Normal", "RolloutPaused", f"rollout paused at {s.canary_weight}%")
            return
        if s.paused:
            # The deadline measures progress while running; a pause must not use it up.
            s.paused = False
            s.last_progress_time = self.now
            s.message = f"resumed at {s.canary_weight}%"
            self.event("Normal", "RolloutResumed", f"rollout resumed at {s.canary_weight}%")
            return

        if analysis is not None:
            self.judge(analysis)
            if s.phase is not RolloutPhase.PROGRESSING:
                return

        stalled = _elapsed(self.now, s.last_progress_time)
        if stalled > self.spec.progress_deadline_seconds:
            cause = "canary not ready" if not workload.canary_ready else s.message
            self.event(
                "Warning",
                "ProgressDeadlineExceeded",
                f"no progress for {int(stalled)}s (deadline {self.spec.progress_deadline_seconds}s): {cause}",
            )
            self.roll_back(f"made no progress within {self.spec.progress_deadline_seconds}s")

    def judge(self, analysis: AnalysisReport) -> None:
        s = self.status
        s.last_check_time = self.now
        s.metrics = [MetricResult.model_validate(r.model_dump()) for r in analysis.results]
        if analysis.verdict is Verdict.PASS:
            weights = self.spec.weights()
            higher = [w for w in weights if w > s.canary_weight]
            if higher:
                s.canary_weight = higher[0]
                s.last_progress_time = self.now
                s.message = f"canary at {s.canary_weight}%"
                self.event("Normal", "CanaryAdvanced", f"advancing canary to {s.canary_weight}%")
            else:
                self.promote()
            return
        if analysis.verdict is Verdict.FAIL:
            s.failed_checks += 1
            threshold = self.spec.failure_threshold
            for result in analysis.failed:
                self.event(
                    "Warning",
                    "AnalysisFailed",
                    f"{result.message}, check {s.failed_checks}/{threshold}",
                )
            s.message = f"{analysis.message} (check {s.failed_checks}/{threshold})"
            if s.failed_checks >= threshold:
                self.roll_back(f"failed {s.failed_checks} checks: {analysis.message}")
            return
        s.message = f"waiting: {analysis.message}"
        if analysis.prometheus_unavailable:
            self.event("Warning", "PrometheusUnavailable", analysis.message)
        else:
            self.event("Normal", "AnalysisWaiting", analysis.message)

    # ---------------------------------------------------------------- actions

    def act(self, action: Action) -> None:
        """One action of ``kubectl mlkube``, recorded in ``status.rollout.lastAction``."""
        before = len(self.events)
        handler = {
            Verb.PROMOTE: self._promote_action,
            Verb.ABORT: self._abort_action,
            Verb.RETRY: self._retry_action,
            Verb.PAUSE: self._pause_action,
            Verb.RESUME: self._resume_action,
            Verb.UNDO: self._undo_action,
        }[action.verb]
        problem, done = handler(action)
        outcome = ActionOutcome.REJECTED if problem else ActionOutcome.DONE
        message = problem or done
        self.status.last_action = ActionResult(
            id=action.id, verb=action.verb.value, outcome=outcome, message=message, time=self.now
        )
        if problem:
            self.event("Warning", "ActionRejected", f"{action.verb.value}: {problem}")
        elif len(self.events) == before:
            self.event("Normal", "ActionDone", f"{action.verb.value}: {done}")

    def _in_progress(self) -> str:
        """Why there is no canary to act on ("" when there is one)."""
        s = self.status
        if s.phase is RolloutPhase.PROGRESSING and s.canary_revision == self.target.revision:
            return ""
        if s.phase is RolloutPhase.PROGRESSING and s.canary_revision is not None:
            return (
                f"the spec moved to revision {short(self.target.revision)} since canary "
                f"{short(s.canary_revision)} started; its own canary starts on the next pass"
            )
        if s.phase in (RolloutPhase.PROMOTING, RolloutPhase.FAILED):
            return f"canary {short(s.canary_revision)} is already being promoted ({s.message})"
        last = s.history[-1] if s.history else None
        told = ""
        if last is not None:
            when = last.finished or last.started
            told = (
                f"; last revision {short(last.revision)} {last.outcome.lower()} "
                f"{human_duration(_elapsed(self.now, when))} ago"
            )
        return f"no rollout in progress (phase {s.phase.value}{told})"

    def _promote_action(self, action: Action) -> tuple[str, str]:
        problem = self._in_progress()
        if problem:
            return problem, ""
        s = self.status
        higher = [w for w in self.spec.weights() if w > s.canary_weight]
        if action.full or not higher:
            s.last_check_time = self.now
            self.promote()
            return "", f"promoting {short(s.canary_revision)} (skipped the remaining steps)"
        s.canary_weight = higher[0]
        s.last_progress_time = self.now
        s.last_check_time = self.now
        s.message = f"canary at {s.canary_weight}% (promoted by hand)"
        self.event("Normal", "CanaryAdvanced", f"advancing canary to {s.canary_weight}% by hand")
        return "", f"canary advanced to {s.canary_weight}%"

    def _abort_action(self, action: Action) -> tuple[str, str]:
        problem = self._in_progress()
        if problem:
            return problem, ""
        failed = self.status.canary_revision
        self.roll_back("aborted by hand")
        return (
            "",
            f"canary {short(failed)} aborted; stable {short(self.status.stable_revision)} serves",
        )

    def _retry_action(self, action: Action) -> tuple[str, str]:
        s = self.status
        if (
            s.phase is not RolloutPhase.ROLLED_BACK
            or s.rolled_back_revision != self.target.revision
        ):
            return (
                f"nothing to retry: the spec's revision {short(self.target.revision)} was not rolled back (phase {s.phase.value})",
                "",
            )
        if self.spec.strategy is RolloutStrategy.ROLLING:
            self.deploy_directly(
                "RollingUpdate", f"rolling update to revision {short(self.target.revision)} (retry)"
            )
            return "", f"revision {short(self.target.revision)} deployed again"
        self.start_canary()
        return "", f"canary {short(self.target.revision)} started again at {s.canary_weight}%"

    def _pause_action(self, action: Action) -> tuple[str, str]:
        problem = self._in_progress()
        if problem:
            return problem, ""
        s = self.status
        if s.manual_pause:
            return "", f"already paused at {s.canary_weight}%"
        s.manual_pause = True
        if not s.paused:
            s.paused = True
            s.message = f"paused at {s.canary_weight}% by hand"
            self.event("Normal", "RolloutPaused", f"rollout paused at {s.canary_weight}% by hand")
        return "", f"paused at {s.canary_weight}%"

    def _resume_action(self, action: Action) -> tuple[str, str]:
        s = self.status
        if not s.manual_pause:
            if self.spec.paused and s.paused:
                return "paused by spec.rollout.paused: set it to false in Git", ""
            return f"not paused ({self._in_progress() or f'canary at {s.canary_weight}%'})", ""
        s.manual_pause = False
        if self.spec.paused:
            return "", "still held by spec.rollout.paused (set in Git)"
        s.paused = False
        s.last_progress_time = self.now
        s.message = f"resumed at {s.canary_weight}%"
        self.event("Normal", "RolloutResumed", f"rollout resumed at {s.canary_weight}% by hand")
        return "", f"resumed at {s.canary_weight}%"

    def _undo_action(self, action: Action) -> tuple[str, str]:
        s = self.status
        if not self._in_progress() and action.to_revision is None:
            return self._abort_action(action)
        if s.phase in (RolloutPhase.PROMOTING, RolloutPhase.FAILED) or _active_canary(s):
            return f"a rollout is in progress ({s.message}): abort it first", ""
        entry, problem = undo_target(s, action.to_revision)
        if entry is None:
            return problem, ""
        wanted = self.target.revision
        if entry.revision == wanted:
            return f"revision {short(wanted)} is what the spec asks for: use retry", ""
        previous = s.stable_revision
        s.history = _with_history(
            s.history,
            add=entry.model_copy(
                update={"started": self.now, "finished": self.now, "outcome": "Deployed"}
            ),
        )
        s.stable_revision = entry.revision
        s.stable_model_version = entry.model_version
        s.stable_spec = entry.spec
        s.phase = RolloutPhase.ROLLED_BACK
        s.rolled_back_revision = wanted
        s.metrics = []
        s.message = (
            f"undone by hand: stable back to {short(entry.revision)}; the spec's revision "
            f"{short(wanted)} waits for a spec change or retry"
        )
        self.event(
            "Warning",
            "RolledBack",
            f"rolled back to {short(entry.revision)} by hand (was {short(previous)})",
        )
        return "", f"stable back to {short(entry.revision)}"


def undo_target(status: RolloutStatus, to_revision: str | None) -> tuple[HistoryEntry | None, str]:
    """The history entry ``undo`` returns to, or why there is none.

    ``to_revision`` is a history number (1 = the oldest entry kept) or a revision prefix;
    without it, the newest revision before the current stable one that served as stable.
    Only revisions whose spec status kept (they served as stable) qualify.
    """
    served = [
        (i, e)
        for i, e in enumerate(status.history, start=1)
        if e.outcome in ("Promoted", "Deployed") and e.spec is not None
    ]
    if to_revision is None:
        older = [e for _, e in served if e.revision != status.stable_revision]
        if not older:
            return None, "no earlier revision to go back to in status.rollout.history"
        return older[-1], ""
    if to_revision.isdigit():
        number = int(to_revision)
        for i, e in served:
            if i == number:
                return e, ""
        return None, f"history entry {number} did not serve as stable (see kubectl mlkube history)"
    found = [e for _, e in served if e.revision.startswith(to_revision)]
    if not found:
        return None, f"no revision {to_revision} that served as stable in the history"
    return found[-1], ""


def next_step(
    spec: RolloutTarget,
    status: RolloutStatus | None,
    analysis: AnalysisReport | None,
    now: datetime,
    workload: Workload | None = None,
    action: Action | None = None,
) -> RolloutDecision:
    """One step of the rollout: the new status, the wanted workloads and the Events.

    ``analysis`` is the report of a check the shell ran because :func:`analysis_due` said
    so, or ``None``.  ``action`` is what the ``mlkube.dev/action`` annotation asks for: one
    not yet recorded in ``status.rollout.lastAction`` is handled instead of this step (the
    next pass steps as usual).  Calling this again with the status it returned and no new
    input changes nothing (the reconcile loop is level-based).
    """
    seen = workload or Workload()
    machine = _Machine(spec, status or RolloutStatus(), now)
    s = machine.status
    wanted = spec.revision

    if s.stable_revision is None:
        machine.deploy_directly("Deployed", f"deployed revision {short(wanted)}")
        return machine.decision()

    if action is not None and (s.last_action is None or s.last_action.id != action.id):
        machine.act(action)
        return machine.decision()

    if spec.rollout.strategy is RolloutStrategy.ROLLING:
        if s.phase is RolloutPhase.ROLLED_BACK and wanted == s.rolled_back_revision:
            return machine.decision()  # undone by hand: not redeployed until retry
        if wanted != s.stable_revision or _active_canary(s):
            machine.deploy_directly(
                "RollingUpdate", f"rolling update to revision {short(wanted)} (no analysis)"
            )
        return machine.decision()

    if wanted == s.stable_revision:
        if s.phase in (RolloutPhase.PROMOTING, RolloutPhase.FAILED) and s.canary_revision == wanted:
            if seen.stable_ready:
                machine.finish_promotion()
            elif s.phase is RolloutPhase.PROMOTING and (
                _elapsed(now, s.last_progress_time) > spec.rollout.progress_deadline_seconds
            ):
                s.phase = RolloutPhase.FAILED
                s.message = (
                    f"stable Deployment not ready with {short(wanted)} within "
                    f"{spec.rollout.progress_deadline_seconds}s; the canary keeps its share"
                )
                machine.event("Warning", "PromotionFailed", s.message)
        elif _active_canary(s):
            machine.discard_canary_for_stable()
        elif s.phase is RolloutPhase.ROLLED_BACK:
            # The user put the spec back to what runs: Git and cluster agree again.
            s.phase = RolloutPhase.SUCCEEDED
            s.rolled_back_revision = None
            s.message = f"spec matches stable revision {short(wanted)}"
            machine.event("Normal", "RolloutSettled", s.message)
        return machine.decision()

    if wanted == s.rolled_back_revision and not _active_canary(s):
        return machine.decision()  # not retried until the spec changes again

    if s.phase is RolloutPhase.PROGRESSING and s.canary_revision == wanted:
        machine.progress(analysis, seen)
        return machine.decision()

    machine.start_canary()
    return machine.decision()


# ----------------------------------------------------------------- traffic by replicas


def split_replicas(total: int, weight: int) -> tuple[int, int]:
    """Stable and canary replica counts that approximate ``weight`` percent for the canary.

    With ``replicas`` routing the one Service balances over all ready pods, so the canary's
    share is its pod share.  The canary gets at least one pod while its weight is positive
    and the stable track never drops below one pod before promotion, so small services
    run one extra pod during a rollout and the realised share is coarse (1 of 2 pods is
    50% whatever the step says); :func:`describe_split` states it in status.
    """
    if total <= 0:
        return 0, 0
    if weight <= 0:
        return total, 0
    canary = max(1, round(total * weight / 100))
    stable = max(1, total - canary)
    return stable, canary


def describe_split(stable: int, canary: int, weight: int) -> str:
    """The traffic split as status states it (approximate for replica routing)."""
    if canary == 0:
        return f"stable 100% ({stable} pods)"
    pods = stable + canary
    share = round(100 * canary / pods)
    return f"canary ~{share}% by pods ({canary}/{pods}; target {weight}%)"


def degraded_condition(status: RolloutStatus) -> tuple[bool, str, str]:
    """``Degraded`` as the rollout sees it: (is degraded, reason, message).

    After a rollback the service is healthy (``Ready=True``) but not at the wanted revision,
    which is what ``Degraded=True, reason RolledBack`` tells users and Argo CD.
    """
    if status.phase is RolloutPhase.ROLLED_BACK:
        return True, "RolledBack", status.message
    if status.phase is RolloutPhase.FAILED:
        return True, "PromotionFailed", status.message
    return False, "AsExpected", ""


def progressing_condition(status: RolloutStatus) -> tuple[bool, str, str]:
    """``Progressing`` as the rollout sees it: (is progressing, reason, message)."""
    if status.phase is RolloutPhase.PROGRESSING:
        return True, "CanaryProgressing", status.message
    if status.phase is RolloutPhase.PROMOTING:
        return True, "Promoting", status.message
    return False, status.phase.value, status.message
