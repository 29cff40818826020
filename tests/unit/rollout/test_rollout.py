"""The rollout state machine, table by table: what users see at every step of a release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlkube.api.rollout import MetricResult, RolloutPhase, RolloutSpec, RolloutStatus, Verdict
from mlkube.operator.analysis import AnalysisReport
from mlkube.operator.rollout import (
    RolloutDecision,
    RolloutTarget,
    Workload,
    analysis_due,
    degraded_condition,
    describe_split,
    next_step,
    split_replicas,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OLD, NEW, NEWER = "old0000000aaaa", "new0000000bbbb", "newer00000cccc"
READY = Workload(canary_ready=True, stable_ready=True)
PASS = AnalysisReport(
    Verdict.PASS,
    (MetricResult(name="successRate", verdict=Verdict.PASS, value=1.0),),
    500,
    "all metrics within thresholds",
)
WAIT = AnalysisReport(Verdict.WAIT, (), 3, "canary served 3 requests in the window, needs 100")
DOWN = AnalysisReport(Verdict.WAIT, (), None, "Prometheus unavailable: connection refused", True)


def fail(message: str = "metric latencyP99 342ms > 200ms") -> AnalysisReport:
    result = MetricResult(name="latencyP99", verdict=Verdict.FAIL, value=342, message=message)
    return AnalysisReport(Verdict.FAIL, (result,), 500, message)


def spec(**kwargs: object) -> RolloutSpec:
    base: dict[str, object] = {"stepWeight": 20, "maxWeight": 60, "interval": "60s"}
    base.update(kwargs)
    return RolloutSpec.model_validate(base)


def target(revision: str = NEW, **kwargs: object) -> RolloutTarget:
    return RolloutTarget(spec(**kwargs), revision, model_version="v2" if revision == NEW else "v")


def stable_status() -> RolloutStatus:
    """A ModelService that runs OLD and has finished every rollout."""
    return next_step(target(OLD), None, None, T0 - timedelta(hours=1)).status


def started(tgt: RolloutTarget | None = None) -> RolloutDecision:
    return next_step(tgt or target(), stable_status(), None, T0, READY)


def reasons(decision: RolloutDecision) -> list[str]:
    return [e.reason for e in decision.events]


def test_first_revision_is_deployed_without_canary() -> None:
    d = next_step(target(OLD), None, None, T0)
    assert (d.stable_revision, d.canary_revision, d.canary_weight) == (OLD, None, 0)
    assert d.status.phase is RolloutPhase.SUCCEEDED
    assert reasons(d) == ["Deployed"]
    assert [(h.revision, h.outcome) for h in d.status.history] == [(OLD, "Deployed")]


def test_steady_state_is_idempotent() -> None:
    s = stable_status()
    d = next_step(target(OLD), s, None, T0, READY)
    assert d.status == s
    assert d.events == ()


def test_version_bump_starts_a_canary_at_the_first_weight() -> None:
    d = started()
    assert (d.stable_revision, d.canary_revision, d.canary_weight) == (OLD, NEW, 20)
    assert d.status.phase is RolloutPhase.PROGRESSING
    assert d.events[0].message == "starting canary new0000000 (model version v2) at 20%"
    assert d.status.history[-1].outcome == "Progressing"


@pytest.mark.parametrize(
    ("kwargs", "weights"),
    [
        ({"stepWeight": 20, "maxWeight": 60}, [20, 40, 60]),
        ({"stepWeight": 25, "maxWeight": 60}, [25, 50, 60]),
        ({"stepWeight": None, "maxWeight": 50}, [10, 20, 30, 40, 50]),
        ({"stepWeight": None, "steps": [5, 10, 50, 80]}, [5, 10, 50, 80]),
        ({"stepWeight": None, "steps": [100]}, [100]),
    ],
)
def test_promotion_walks_every_weight(kwargs: dict[str, object], weights: list[int]) -> None:
    tgt = target(**kwargs)
    d = next_step(tgt, stable_status(), None, T0, READY)
    seen = [d.canary_weight]
    now = T0
    for _ in range(len(weights) + 3):
        now += timedelta(seconds=60)
        assert analysis_due(tgt, d.status, now, READY)
        d = next_step(
            tgt,
            d.status,
            PASS,
            now,
            READY if d.status.phase is RolloutPhase.PROMOTING else Workload(canary_ready=True),
        )
        if d.status.phase is RolloutPhase.PROMOTING:
            break
        seen.append(d.canary_weight)
    assert seen == weights
    assert d.status.phase is RolloutPhase.PROMOTING
    assert d.stable_revision == NEW  # the stable Deployment moves to the new revision
    assert d.canary_revision == NEW  # and the canary keeps its share meanwhile
    # the stable Deployment is not rolled out yet: nothing changes
    waiting = next_step(
        tgt, d.status, None, now + timedelta(seconds=5), Workload(canary_ready=True)
    )
    assert waiting.status.phase is RolloutPhase.PROMOTING
    done = next_step(tgt, d.status, None, now + timedelta(seconds=10), READY)
    assert (done.stable_revision, done.canary_revision, done.canary_weight) == (NEW, None, 0)
    assert done.status.phase is RolloutPhase.SUCCEEDED
    assert reasons(done) == ["Promoted"]
    assert [(h.revision, h.outcome) for h in done.status.history] == [
        (OLD, "Deployed"),
        (NEW, "Promoted"),
    ]


def test_events_name_each_step() -> None:
    tgt = target()
    d = started(tgt)
    d = next_step(tgt, d.status, PASS, T0 + timedelta(seconds=60), READY)
    assert [e.message for e in d.events] == ["advancing canary to 40%"]


def test_analysis_is_due_only_when_ready_and_an_interval_passed() -> None:
    tgt = target()
    d = started(tgt)
    assert not analysis_due(tgt, d.status, T0 + timedelta(seconds=59), READY)
    assert not analysis_due(tgt, d.status, T0 + timedelta(seconds=60), Workload())
    assert analysis_due(tgt, d.status, T0 + timedelta(seconds=60), READY)
    waited = next_step(tgt, d.status, WAIT, T0 + timedelta(seconds=60), READY)
    assert not analysis_due(tgt, waited.status, T0 + timedelta(seconds=100), READY)
    assert analysis_due(tgt, waited.status, T0 + timedelta(seconds=120), READY)
    assert not analysis_due(target(paused=True), d.status, T0 + timedelta(seconds=600), READY)


@pytest.mark.parametrize("failing_step", [0, 1, 2])
def test_rollback_at_each_step(failing_step: int) -> None:
    tgt = target()
    d = started(tgt)
    now = T0
    for _ in range(failing_step):
        now += timedelta(seconds=60)
        d = next_step(tgt, d.status, PASS, now, READY)
    weight = d.canary_weight
    now += timedelta(seconds=60)
    d = next_step(tgt, d.status, fail(), now, READY)
    assert d.status.phase is RolloutPhase.ROLLED_BACK
    assert (d.stable_revision, d.canary_revision, d.canary_weight) == (OLD, None, 0)
    assert d.status.rolled_back_revision == NEW
    assert [(e.type, e.reason) for e in d.events] == [
        ("Warning", "AnalysisFailed"),
        ("Warning", "RolledBack"),
    ]
    assert d.events[0].message == "metric latencyP99 342ms > 200ms, check 1/1"
    assert d.events[1].message.startswith(
        "rolled back to old0000000: canary new0000000 failed 1 checks"
    )
    assert d.status.metrics[0].verdict is Verdict.FAIL  # the evidence stays in status
    assert d.status.history[-1].outcome == "RolledBack"
    assert weight == [20, 40, 60][failing_step]
    assert degraded_condition(d.status)[:2] == (True, "RolledBack")


def test_failure_threshold_counts_failed_checks_over_the_rollout() -> None:
    tgt = target(failureThreshold=3)
    d = started(tgt)
    d = next_step(tgt, d.status, fail(), T0 + timedelta(seconds=60), READY)
    assert d.status.phase is RolloutPhase.PROGRESSING
    assert d.events[0].message.endswith("check 1/3")
    assert d.canary_weight == 20  # a failed check does not advance
    d = next_step(tgt, d.status, PASS, T0 + timedelta(seconds=120), READY)
    assert (d.canary_weight, d.status.failed_checks) == (40, 1)  # passes do not reset the count
    d = next_step(tgt, d.status, fail(), T0 + timedelta(seconds=180), READY)
    assert d.events[0].message.endswith("check 2/3")
    d = next_step(tgt, d.status, fail(), T0 + timedelta(seconds=240), READY)
    assert d.status.phase is RolloutPhase.ROLLED_BACK


def test_rolled_back_revision_is_not_retried_until_the_spec_changes() -> None:
    tgt = target()
    d = started(tgt)
    d = next_step(tgt, d.status, fail(), T0 + timedelta(seconds=60), READY)
    later = next_step(tgt, d.status, None, T0 + timedelta(hours=2), READY)
    assert later.status == d.status
    assert later.events == ()
    assert later.canary_revision is None
    assert not analysis_due(tgt, d.status, T0 + timedelta(hours=2), READY)
    # a new revision is tried
    newer = next_step(target(NEWER), d.status, None, T0 + timedelta(hours=3), READY)
    assert (newer.canary_revision, newer.status.phase) == (NEWER, RolloutPhase.PROGRESSING)
    assert newer.status.rolled_back_revision is None
    # a manual rollback to the stable revision settles the status
    back = next_step(target(OLD), d.status, None, T0 + timedelta(hours=3), READY)
    assert back.status.phase is RolloutPhase.SUCCEEDED
    assert degraded_condition(back.status)[0] is False
    assert back.canary_revision is None


@pytest.mark.parametrize("analysis", [WAIT, DOWN])
def test_no_data_and_prometheus_down_wait(analysis: AnalysisReport) -> None:
    tgt = target()
    d = started(tgt)
    d = next_step(tgt, d.status, analysis, T0 + timedelta(seconds=60), READY)
    assert d.status.phase is RolloutPhase.PROGRESSING
    assert d.canary_weight == 20
    assert d.status.failed_checks == 0
    assert d.status.message == f"waiting: {analysis.message}"
    expected = (
        ("Warning", "PrometheusUnavailable")
        if analysis.prometheus_unavailable
        else ("Normal", "AnalysisWaiting")
    )
    assert [(e.type, e.reason) for e in d.events] == [expected]


def test_deadline_exceeded_while_waiting_rolls_back() -> None:
    tgt = target(progressDeadlineSeconds=300)
    d = started(tgt)
    now = T0
    for _ in range(5):
        now += timedelta(seconds=60)
        d = next_step(tgt, d.status, DOWN, now, READY)
        assert d.status.phase is RolloutPhase.PROGRESSING
    d = next_step(tgt, d.status, DOWN, now + timedelta(seconds=60), READY)
    assert d.status.phase is RolloutPhase.ROLLED_BACK
    assert "ProgressDeadlineExceeded" in reasons(d)
    assert d.status.message.endswith("made no progress within 300s")


def test_deadline_when_canary_never_becomes_ready() -> None:
    tgt = target(progressDeadlineSeconds=120)
    d = started(tgt)
    d = next_step(tgt, d.status, None, T0 + timedelta(seconds=100), Workload())
    assert d.status.phase is RolloutPhase.PROGRESSING
    d = next_step(tgt, d.status, None, T0 + timedelta(seconds=121), Workload())
    assert d.status.phase is RolloutPhase.ROLLED_BACK
    deadline = next(e for e in d.events if e.reason == "ProgressDeadlineExceeded")
    assert "canary not ready" in deadline.message


def test_progress_resets_the_deadline() -> None:
    tgt = target(progressDeadlineSeconds=100, interval="60s")
    d = started(tgt)
    d = next_step(tgt, d.status, PASS, T0 + timedelta(seconds=60), READY)
    d = next_step(tgt, d.status, None, T0 + timedelta(seconds=150), READY)
    assert d.status.phase is RolloutPhase.PROGRESSING


def test_pause_holds_the_weight_and_stops_the_deadline_clock() -> None:
    d = started(target())
    paused = target(paused=True, progressDeadlineSeconds=60)
    p = next_step(paused, d.status, None, T0 + timedelta(seconds=30), READY)
    assert reasons(p) == ["RolloutPaused"]
    assert p.status.paused
    assert p.canary_weight == 20
    assert p.canary_revision == NEW
    p = next_step(paused, p.status, None, T0 + timedelta(hours=5), READY)
    assert p.events == ()
    assert p.status.phase is RolloutPhase.PROGRESSING
    resumed_spec = target(progressDeadlineSeconds=60)
    r = next_step(resumed_spec, p.status, None, T0 + timedelta(hours=5, seconds=10), READY)
    assert reasons(r) == ["RolloutResumed"]
    assert r.status.phase is RolloutPhase.PROGRESSING  # not rolled back for the paused hours
    assert not analysis_due(resumed_spec, r.status, T0 + timedelta(hours=5, seconds=30), READY)
    assert analysis_due(resumed_spec, r.status, T0 + timedelta(hours=5, seconds=70), READY)


def test_spec_change_mid_rollout_discards_the_canary_and_starts_a_new_one() -> None:
    tgt = target()
    d = started(tgt)
    d = next_step(tgt, d.status, PASS, T0 + timedelta(seconds=60), READY)
    assert d.canary_weight == 40
    n = next_step(target(NEWER), d.status, None, T0 + timedelta(seconds=70), READY)
    assert (n.stable_revision, n.canary_revision, n.canary_weight) == (OLD, NEWER, 20)
    assert reasons(n) == ["CanaryDiscarded", "CanaryStarted"]
    assert n.status.failed_checks == 0
    assert n.status.last_check_time is None
    assert [(h.revision, h.outcome) for h in n.status.history] == [
        (OLD, "Deployed"),
        (NEW, "Superseded"),
        (NEWER, "Progressing"),
    ]


def test_spec_back_to_stable_mid_rollout_discards_the_canary() -> None:
    d = started()
    back = next_step(target(OLD), d.status, None, T0 + timedelta(seconds=10), READY)
    assert (back.stable_revision, back.canary_revision) == (OLD, None)
    assert back.status.phase is RolloutPhase.SUCCEEDED
    assert reasons(back) == ["CanaryDiscarded"]


def test_operator_restart_resumes_from_status() -> None:
    """Status round-trips through the API server as JSON; the machine resumes from it."""
    tgt = target()
    uninterrupted = started(tgt)
    restarted = started(tgt)
    now = T0
    for report in (PASS, fail_once := fail(), PASS):
        now += timedelta(seconds=60)
        tgt3 = target(failureThreshold=2)
        uninterrupted = next_step(tgt3, uninterrupted.status, report, now, READY)
        stored = restarted.status.to_kube()
        restarted = next_step(tgt3, RolloutStatus.model_validate(stored), report, now, READY)
        assert restarted.status == uninterrupted.status
        assert restarted.events == uninterrupted.events
    assert fail_once.verdict is Verdict.FAIL
    assert restarted.canary_weight == 60
    assert restarted.status.failed_checks == 1


def test_promotion_deadline_marks_failed_and_recovers_when_stable_is_ready() -> None:
    tgt = target(stepWeight=None, steps=[50], progressDeadlineSeconds=60)
    d = started(tgt)
    d = next_step(tgt, d.status, PASS, T0 + timedelta(seconds=60), READY)
    assert d.status.phase is RolloutPhase.PROMOTING
    f = next_step(tgt, d.status, None, T0 + timedelta(seconds=200), Workload(canary_ready=True))
    assert f.status.phase is RolloutPhase.FAILED
    assert reasons(f) == ["PromotionFailed"]
    assert f.canary_revision == NEW  # the canary keeps serving while stable is broken
    assert degraded_condition(f.status)[:2] == (True, "PromotionFailed")
    ok = next_step(tgt, f.status, None, T0 + timedelta(seconds=260), READY)
    assert ok.status.phase is RolloutPhase.SUCCEEDED
    assert ok.canary_revision is None


def test_rolling_strategy_updates_stable_in_place() -> None:
    d = next_step(target(strategy="rolling"), stable_status(), None, T0, READY)
    assert (d.stable_revision, d.canary_revision) == (NEW, None)
    assert d.status.phase is RolloutPhase.SUCCEEDED
    assert reasons(d) == ["RollingUpdate"]


def test_history_is_short() -> None:
    status = stable_status()
    for i in range(15):
        status = next_step(
            target(f"rev{i:02d}"), status, None, T0 + timedelta(minutes=i), READY
        ).status
    assert len(status.history) == 10
    assert status.history[-1].revision == "rev14"


@pytest.mark.parametrize(
    ("total", "weight", "split"),
    [
        (10, 20, (8, 2)),
        (10, 0, (10, 0)),
        (1, 10, (1, 1)),  # a single-pod service runs one extra pod during the canary
        (3, 90, (1, 3)),  # stable never drops to zero before promotion
        (4, 50, (2, 2)),
        (0, 50, (0, 0)),
    ],
)
def test_split_replicas(total: int, weight: int, split: tuple[int, int]) -> None:
    assert split_replicas(total, weight) == split


def test_describe_split_states_the_approximation() -> None:
    assert describe_split(1, 1, 10) == "canary ~50% by pods (1/2; target 10%)"
    assert describe_split(5, 0, 0) == "stable 100% (5 pods)"
