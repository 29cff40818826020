"""Release actions (``kubectl mlkube promote|abort|retry|pause|resume|undo``) in the pure
rollout state machine: what each does to a canary, what it refuses, and that it is handled
exactly once whatever the annotation keeps saying."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlkube.api.actions import (
    ACTION_ANNOTATION,
    Action,
    ActionOutcome,
    Verb,
    action_value,
    parse_action,
)
from mlkube.api.rollout import RolloutPhase, RolloutSpec, RolloutStatus
from mlkube.operator.handlers import action_pending
from mlkube.operator.rollout import (
    RolloutDecision,
    RolloutTarget,
    Workload,
    analysis_due,
    next_step,
    undo_target,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OLD, NEW, NEWER = "old0000000aaaa", "new0000000bbbb", "newer00000cccc"
READY = Workload(canary_ready=True, stable_ready=True)
SPECS = {
    OLD: {"model": {"name": "m", "version": "v1"}},
    NEW: {"model": {"name": "m", "version": "v2"}},
}
_ids = iter(range(1000))


def target(revision: str = NEW, **kwargs: object) -> RolloutTarget:
    rollout = RolloutSpec.model_validate({"stepWeight": 20, "maxWeight": 60, **kwargs})
    return RolloutTarget(rollout, revision, revision[:3], "img", SPECS.get(revision))


def act(verb: Verb, **kwargs: object) -> Action:
    return Action(verb=verb, id=f"a{next(_ids)}", **kwargs)  # type: ignore[arg-type]


def stable() -> RolloutStatus:
    return next_step(target(OLD), None, None, T0 - timedelta(hours=1)).status


def canary() -> RolloutStatus:
    return next_step(target(), stable(), None, T0, READY).status


def promoted() -> RolloutStatus:
    """OLD deployed, NEW promoted: NEW is stable, OLD served before."""
    s = canary()
    s = next_step(target(), s, None, T0, READY, act(Verb.PROMOTE, full=True)).status
    return next_step(target(), s, None, T0 + timedelta(seconds=5), READY).status


def run(
    status: RolloutStatus, verb: Verb, tgt: RolloutTarget | None = None, **kw: object
) -> RolloutDecision:
    return next_step(
        tgt or target(), status, None, T0 + timedelta(seconds=1), READY, act(verb, **kw)
    )


def outcome(d: RolloutDecision) -> tuple[str, str]:
    last = d.status.last_action
    assert last is not None
    return last.outcome.value, last.message


def test_promote_advances_one_step_then_full_promotes() -> None:
    d = run(canary(), Verb.PROMOTE)
    assert d.canary_weight == 40
    assert d.status.phase is RolloutPhase.PROGRESSING
    assert outcome(d) == ("Done", "canary advanced to 40%")
    # the next check is a full interval after the manual step
    assert not analysis_due(target(), d.status, T0 + timedelta(seconds=30), READY)
    full = run(d.status, Verb.PROMOTE, full=True)
    assert full.status.phase is RolloutPhase.PROMOTING
    assert full.stable_revision == NEW
    assert [e.reason for e in full.events] == ["Promoting"]


def test_an_action_is_handled_once_even_if_the_annotation_stays() -> None:
    action = act(Verb.PROMOTE)
    first = next_step(target(), canary(), None, T0, READY, action)
    again = next_step(target(), first.status, None, T0 + timedelta(seconds=5), READY, action)
    assert again.canary_weight == first.canary_weight == 40
    assert again.events == ()


def test_abort_rolls_back_and_is_not_retried_until_retry() -> None:
    d = run(canary(), Verb.ABORT)
    assert d.status.phase is RolloutPhase.ROLLED_BACK
    assert d.canary_revision is None
    assert d.status.rolled_back_revision == NEW
    assert "aborted by hand" in d.status.message
    assert d.status.history[-1].outcome == "RolledBack"
    # the spec still names NEW: nothing happens by itself
    assert next_step(target(), d.status, None, T0 + timedelta(minutes=1), READY).status == d.status
    r = run(d.status, Verb.RETRY)
    assert r.status.phase is RolloutPhase.PROGRESSING
    assert (r.canary_revision, r.canary_weight) == (NEW, 20)
    assert outcome(r)[0] == "Done"


def test_pause_holds_checks_and_deadline_until_resume() -> None:
    d = run(canary(), Verb.PAUSE)
    assert d.status.paused
    assert d.status.manual_pause
    later = T0 + timedelta(hours=2)  # far past the progress deadline
    assert not analysis_due(target(), d.status, later, READY)
    held = next_step(target(), d.status, None, later, READY)
    assert held.status.phase is RolloutPhase.PROGRESSING
    r = next_step(target(), held.status, None, later, READY, act(Verb.RESUME))
    assert not r.status.paused
    assert r.status.last_progress_time == later
    assert [e.reason for e in r.events] == ["RolloutResumed"]


def test_resume_cannot_lift_a_pause_written_in_git() -> None:
    tgt = target(paused=True)
    s = next_step(tgt, canary(), None, T0 + timedelta(seconds=1), READY).status
    assert s.paused
    d = run(s, Verb.RESUME, tgt)
    assert outcome(d) == ("Rejected", "paused by spec.rollout.paused: set it to false in Git")
    assert [e.reason for e in d.events] == ["ActionRejected"]


@pytest.mark.parametrize("verb", [Verb.PROMOTE, Verb.ABORT, Verb.PAUSE])
def test_actions_without_a_rollout_are_rejected_with_the_last_outcome(verb: Verb) -> None:
    later = T0 + timedelta(minutes=3, seconds=5)  # the promotion finished at T0 + 5s
    d = next_step(target(), promoted(), None, later, READY, act(verb))
    kind, message = outcome(d)
    assert kind == "Rejected"
    assert message == (
        "no rollout in progress (phase Succeeded; last revision new0000000 promoted 3m ago)"
    )
    assert d.status.phase is RolloutPhase.SUCCEEDED


def test_retry_without_a_rollback_is_rejected() -> None:
    assert outcome(run(canary(), Verb.RETRY))[0] == "Rejected"


def test_undo_returns_stable_to_the_previous_revision_without_the_spec() -> None:
    s = promoted()
    assert s.stable_revision == NEW
    d = run(s, Verb.UNDO)
    assert d.stable_revision == OLD
    assert d.status.stable_spec == SPECS[OLD]  # the Deployment is rebuilt from OLD's spec
    assert d.status.phase is RolloutPhase.ROLLED_BACK
    assert d.status.rolled_back_revision == NEW
    assert d.status.history[-1].revision == OLD
    assert d.status.history[-1].image == "img"
    # the spec still says NEW: it stays on OLD until retry (a canary of NEW again)
    assert (
        next_step(target(), d.status, None, T0 + timedelta(minutes=5), READY).stable_revision == OLD
    )
    r = run(d.status, Verb.RETRY)
    assert (r.stable_revision, r.canary_revision) == (OLD, NEW)


def test_undo_during_a_canary_aborts_it() -> None:
    d = run(canary(), Verb.UNDO)
    assert d.status.phase is RolloutPhase.ROLLED_BACK
    assert d.stable_revision == OLD


def test_undo_to_revision_by_number_or_prefix() -> None:
    s = promoted()
    assert undo_target(s, "1")[0] is not None
    assert undo_target(s, "1")[0].revision == OLD  # type: ignore[union-attr]
    assert undo_target(s, "old")[0].revision == OLD  # type: ignore[union-attr]
    assert undo_target(s, "zzz") == (None, "no revision zzz that served as stable in the history")
    d = run(s, Verb.UNDO, to_revision="9")
    assert outcome(d) == (
        "Rejected",
        "history entry 9 did not serve as stable (see kubectl mlkube history)",
    )
    first = next_step(target(OLD), None, None, T0).status
    assert undo_target(first, None) == (
        None,
        "no earlier revision to go back to in status.rollout.history",
    )


def test_annotation_round_trip_and_pending() -> None:
    action = act(Verb.UNDO, to_revision="3")
    annotations = {ACTION_ANNOTATION: action_value(action)}
    assert parse_action(annotations) == (action, "")
    assert parse_action({})[0] is None
    bad, problem = parse_action({ACTION_ANNOTATION: "promote"})
    assert bad is None
    assert problem.startswith(f"annotation {ACTION_ANNOTATION} is not an action")
    body = {"metadata": {"annotations": annotations}, "status": {}}
    assert action_pending(body)
    body["status"] = {"rollout": {"lastAction": {"id": action.id}}}
    assert not action_pending(body)
    assert ActionOutcome.DONE.value == "Done"


def test_undo_and_retry_with_the_rolling_strategy() -> None:
    rolling = target(strategy="rolling")
    s = next_step(target(OLD, strategy="rolling"), None, None, T0 - timedelta(hours=1)).status
    s = next_step(rolling, s, None, T0, READY).status
    assert (s.stable_revision, s.phase) == (NEW, RolloutPhase.SUCCEEDED)
    d = run(s, Verb.UNDO, rolling)
    assert d.stable_revision == OLD
    # the next pass keeps OLD: an undo is not redeployed by the rolling update
    kept = next_step(rolling, d.status, None, T0 + timedelta(minutes=1), READY)
    assert kept.stable_revision == OLD
    assert kept.events == ()
    r = run(kept.status, Verb.RETRY, rolling)
    assert (r.stable_revision, r.canary_revision) == (NEW, None)
    assert r.status.phase is RolloutPhase.SUCCEEDED
    assert outcome(r) == ("Done", "revision new0000000 deployed again")
