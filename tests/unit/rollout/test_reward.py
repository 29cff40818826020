"""rewardRate: the Beta-Binomial rule, its Monte Carlo probability and its verdicts."""

from __future__ import annotations

import math

import pytest
from scipy import integrate, stats

from mlkube.api.rollout import Analysis, AnalysisMetric, MetricResult, Verdict
from mlkube.operator.analysis import (
    SAMPLES_KEY,
    QueryContext,
    QueryOutcome,
    QueryStatus,
    evaluate,
    plan_queries,
    reward_keys,
)
from mlkube.operator.reward import (
    DRAWS,
    RewardCounts,
    decide,
    draw_seed,
    judge_reward,
    probability_not_worse,
)

CTX = QueryContext("ns", "ranker", "ranker", "stable-rev", "canary-rev", 60)


def exact_probability(canary: RewardCounts, stable: RewardCounts, margin: float) -> float:
    """P(C >= S (1 - m)) = integral over s of f_S(s) * (1 - F_C((1 - m) s)), by quadrature."""
    c = stats.beta(canary.alpha, canary.beta)
    s = stats.beta(stable.alpha, stable.beta)
    # Integrate where the stable posterior has its mass (it is very narrow for large counts).
    low, high = s.ppf(1e-12), s.isf(1e-12)

    def integrand(x: float) -> float:
        return float(s.pdf(x) * c.sf((1.0 - margin) * x))

    value, _ = integrate.quad(integrand, low, high, limit=400, points=[s.mean()])
    return float(value)


@pytest.mark.parametrize(
    ("canary", "stable", "margin"),
    [
        (RewardCounts(0, 0), RewardCounts(0, 0), 0.0),
        (RewardCounts(0, 0), RewardCounts(0, 0), 0.3),
        (RewardCounts(10, 3), RewardCounts(12, 2), 0.02),
        (RewardCounts(2000, 110), RewardCounts(2000, 100), 0.02),
        (RewardCounts(20_000, 800), RewardCounts(20_000, 1000), 0.02),
        (RewardCounts(50_000, 2500), RewardCounts(200_000, 10_000), 0.02),
        (RewardCounts(300, 12.5), RewardCounts(900, 40.25), 0.1),  # fractional rewards
    ],
)
def test_monte_carlo_agrees_with_numerical_integration(
    canary: RewardCounts, stable: RewardCounts, margin: float
) -> None:
    exact = exact_probability(canary, stable, margin)
    estimate = probability_not_worse(canary, stable, margin, seed=12345)
    standard_error = math.sqrt(max(exact * (1 - exact), 1e-6) / DRAWS)
    assert abs(estimate - exact) <= 5 * standard_error + 1e-4, (estimate, exact)


def test_same_counts_same_probability_and_the_seed_is_used() -> None:
    canary, stable = RewardCounts(2000, 110), RewardCounts(2000, 100)
    seed = draw_seed(canary, stable)
    first = probability_not_worse(canary, stable, 0.02, seed)
    assert probability_not_worse(canary, stable, 0.02, seed) == first
    assert probability_not_worse(canary, stable, 0.02, seed + 1) != first
    assert judge_reward(canary, stable, 0.02, 0.95) == judge_reward(canary, stable, 0.02, 0.95)


@pytest.mark.parametrize(
    ("p", "verdict"),
    [
        (0.95, Verdict.PASS),
        (0.999, Verdict.PASS),
        (0.05, Verdict.FAIL),
        (0.0, Verdict.FAIL),
        (0.9499, Verdict.WAIT),
        (0.5, Verdict.WAIT),
        (0.0501, Verdict.WAIT),
    ],
)
def test_decide_passes_fails_or_waits(p: float, verdict: Verdict) -> None:
    assert decide(p, 0.95) is verdict


@pytest.mark.parametrize(
    ("canary_rate", "stable_rate", "items", "verdict"),
    [
        (0.055, 0.050, 40_000, Verdict.PASS),  # clearly better
        (0.040, 0.050, 10_000, Verdict.FAIL),  # clearly worse
        (0.050, 0.050, 5_000, Verdict.WAIT),  # equal: not enough evidence either way
        (0.050, 0.050, 0, Verdict.WAIT),  # nothing at all is not a pass
    ],
)
def test_judge_reward_on_population_sized_counts(
    canary_rate: float, stable_rate: float, items: int, verdict: Verdict
) -> None:
    canary = RewardCounts(items, canary_rate * items)
    stable = RewardCounts(items, stable_rate * items)
    judged = judge_reward(canary, stable, 0.02, 0.95)
    assert judged.verdict is verdict
    assert judged.canary_mean == pytest.approx((1 + canary_rate * items) / (2 + items))
    assert judged.stable_mean == pytest.approx((1 + stable_rate * items) / (2 + items))


def test_extrapolated_counts_are_clamped_to_a_valid_posterior() -> None:
    # increase() extrapolates each counter alone: rewards may exceed items by a hair
    judged = judge_reward(RewardCounts(100.2, 100.4), RewardCounts(100, -0.1), 0.02, 0.95)
    assert judged.verdict is Verdict.PASS
    assert judged.canary_mean == pytest.approx(101.2 / 102.2)
    assert judged.stable_mean == pytest.approx(1 / 102)


# ----------------------------------------------------------------- through the analysis


def reward_analysis(**fields: float) -> Analysis:
    return Analysis(metrics=[AnalysisMetric(name="rewardRate", **fields)], min_sample_count=10)


def outcomes(
    n_c: float | None, s_c: float | None, n_s: float | None, s_s: float | None
) -> dict[str, QueryOutcome]:
    """What Prometheus answers for these counts: each revision's items and mean reward
    (no series for a rate over no items)."""

    def rate(n: float | None, s: float | None) -> float | None:
        return None if not n or s is None else s / n

    metric = reward_analysis().metrics[0]
    values = (n_c, rate(n_c, s_c), n_s, rate(n_s, s_s))
    out = {SAMPLES_KEY: QueryOutcome.of(500)}
    out.update(zip(reward_keys(metric), (QueryOutcome.of(v) for v in values), strict=True))
    return out


def test_plan_sums_each_revisions_feedback_counters_over_the_window() -> None:
    """Per revision: the item count, and the mean reward as one query (both counters from
    the same scrapes)."""
    plan = plan_queries(reward_analysis(), CTX)
    for track in ("canary", "stable"):
        items = f'sum(increase(mlkube_reward_items_total{{revision="{track}-rev"}}[60s]))'
        rewards = f'sum(increase(mlkube_rewards_total{{revision="{track}-rev"}}[60s]))'
        assert plan[f"rewardRate/{track}/items"] == items
        assert plan[f"rewardRate/{track}/rate"] == f"{rewards} / {items}"


def test_status_shows_the_posterior_means_the_probability_and_the_decision() -> None:
    report = evaluate(reward_analysis(), outcomes(40_000, 2200, 40_000, 2000))
    assert report.verdict is Verdict.PASS
    (result,) = report.results
    assert result.value == pytest.approx(2201 / 40_002)
    assert result.stable_value == pytest.approx(2001 / 40_002)
    assert result.probability is not None
    assert result.probability > 0.99
    assert "canary 5.502% (40000 items) vs stable 5.002% (40000)" in result.message
    assert result.message.endswith(": pass")
    # What the rollout status stores and shows, camelCase as kubectl prints it.
    shown = MetricResult.model_validate(result.model_dump()).to_kube()
    assert shown["verdict"] == "pass"
    assert {"value", "stableValue", "probability", "threshold", "message"} <= shown.keys()


def test_a_worse_canary_fails_and_says_by_how_much() -> None:
    report = evaluate(reward_analysis(), outcomes(10_000, 400, 10_000, 500))
    assert report.verdict is Verdict.FAIL
    assert "fail (canary worse by more than 2%)" in report.message


def test_a_wider_margin_and_a_lower_confidence_are_honoured() -> None:
    counts = outcomes(100_000, 4600, 100_000, 5000)  # 8% worse
    assert evaluate(reward_analysis(), counts).verdict is Verdict.FAIL
    assert evaluate(reward_analysis(margin=0.2, confidence=0.9), counts).verdict is Verdict.PASS


@pytest.mark.parametrize(
    ("counts", "reason"),
    [
        ((None, None, 5000, 250), "no feedback credited to the canary revision"),
        ((5000, 250, 0, 0), "no feedback credited to the stable revision"),
    ],
)
def test_no_feedback_for_either_revision_waits(
    counts: tuple[float | None, ...], reason: str
) -> None:
    report = evaluate(reward_analysis(), outcomes(*counts))
    assert report.verdict is Verdict.WAIT
    assert reason in report.message


def test_too_few_requests_wait_and_prometheus_trouble_is_never_a_verdict() -> None:
    few = outcomes(40_000, 2200, 40_000, 2000)
    few[SAMPLES_KEY] = QueryOutcome.of(3)
    assert evaluate(reward_analysis(), few).verdict is Verdict.WAIT
    down = outcomes(40_000, 2200, 40_000, 2000)
    down["rewardRate/stable/rate"] = QueryOutcome(QueryStatus.UNAVAILABLE, error="timeout")
    assert evaluate(reward_analysis(), down).verdict is Verdict.WAIT
    bad = outcomes(40_000, 2200, 40_000, 2000)
    bad["rewardRate/canary/items"] = QueryOutcome(QueryStatus.REJECTED, error="2 series")
    report = evaluate(reward_analysis(), bad)
    assert report.verdict is Verdict.FAIL
    assert "canary/items query failed" in report.message


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min": 0.05}, "rewardRate is judged by margin and confidence"),
        ({"margin": 0.6}, "less than or equal to 0.5"),
        ({"confidence": 0.5}, "greater than 0.5"),
    ],
)
def test_bad_reward_fields_are_refused(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnalysisMetric(name="rewardRate", **fields)
    with pytest.raises(ValueError, match="apply to the built-in rewardRate only"):
        AnalysisMetric(name="successRate", min=0.9, margin=0.1)


def test_a_shadowed_canary_at_0_is_not_judged_on_reward() -> None:
    # At 0% nobody sees its answers: no feedback can be credited to it, and that is no
    # reason to wait (or to roll back at the deadline); the later steps judge it.
    report = evaluate(reward_analysis(), outcomes(None, None, 5000, 250), canary_weight=0)
    assert report.verdict is Verdict.PASS
    assert "not judged at 0%" in report.results[0].message
    assert evaluate(reward_analysis(), outcomes(None, None, 5000, 250), 10).verdict is (
        Verdict.WAIT
    )
