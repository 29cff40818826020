"""Canary analysis: the PromQL we send and the verdicts we draw from what comes back."""

from __future__ import annotations

import math

import pytest

from mlkube.api.rollout import Analysis, AnalysisMetric, Verdict
from mlkube.operator.analysis import (
    SAMPLES_KEY,
    QueryContext,
    QueryOutcome,
    QueryStatus,
    canary_key,
    evaluate,
    judge_metric,
    latency_p99_query,
    parse_vector,
    plan_queries,
    render_custom_query,
    stable_key,
    success_rate_query,
)

CTX = QueryContext(
    namespace="prod",
    name="ranker",
    model="ranker",
    stable_revision="aaaa1111",
    canary_revision="bbbb2222",
    window_seconds=60,
)
OK = QueryOutcome.of
EMPTY = QueryOutcome(QueryStatus.EMPTY)
DOWN = QueryOutcome(QueryStatus.UNAVAILABLE, error="connection refused")
REJECTED = QueryOutcome(QueryStatus.REJECTED, error="HTTP Status Code 400 (parse error)")


def metric(**kwargs: object) -> AnalysisMetric:
    return AnalysisMetric.model_validate(kwargs)


SUCCESS = metric(name="successRate", min=0.99)
LATENCY = metric(name="latencyP99", max=200)


def test_builtin_queries_select_the_revision_and_window() -> None:
    sr = success_rate_query("bbbb2222", 60)
    assert 'revision="bbbb2222",endpoint=~"infer|predict|feedback|grpc_infer",code=~"5.."' in sr
    assert "[60s]" in sr
    assert "or vector(0)" in sr  # an all-5xx canary reads 0, not "no data"
    p99 = latency_p99_query("bbbb2222", 90)
    assert p99.startswith("histogram_quantile(0.99, sum by (le) (rate(")
    assert (
        'mlkube_request_duration_seconds_bucket{revision="bbbb2222",endpoint=~"infer|predict|feedback|grpc_infer"}[90s]'
        in p99
    )
    assert p99.endswith("* 1000")


def test_plan_queries_compare_adds_a_stable_query() -> None:
    analysis = Analysis(
        metrics=[SUCCESS, metric(name="latencyP99", compare={"mode": "ratio", "max": 1.2})]
    )
    plan = plan_queries(analysis, CTX)
    assert list(plan) == [
        SAMPLES_KEY,
        "successRate/canary",
        "latencyP99/canary",
        "latencyP99/stable",
    ]
    assert 'revision="aaaa1111"' in plan["latencyP99/stable"]
    assert 'revision="bbbb2222"' in plan["latencyP99/canary"]
    assert 'revision="bbbb2222"' in plan[SAMPLES_KEY]


def test_custom_query_placeholders_are_substituted_and_escaped() -> None:
    text = render_custom_query(
        'sum(rate(x{ns="{{ namespace }}",rev="{{revision}}"}[{{ window }}]))',
        QueryContext('a"b', "n", "m", "s", "c", 30),
        "c",
    )
    assert text == 'sum(rate(x{ns="a\\"b",rev="c"}[30s]))'


def test_unknown_placeholder_is_rejected_by_the_api_model() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        metric(name="errors", query="sum(x{rev='{{ revison }}'})", max=1)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ([], EMPTY),
        ([{"metric": {}, "value": [1, "0.5"]}], OK(0.5)),
        ([{"metric": {}, "value": [1, "NaN"]}], EMPTY),
        ([{"metric": {}, "value": [1, "+Inf"]}], EMPTY),
        ([1, "2"], OK(2.0)),  # scalar result
    ],
)
def test_parse_vector(result: object, expected: QueryOutcome) -> None:
    assert parse_vector(result) == expected


def test_parse_vector_with_several_series_is_an_error_not_a_guess() -> None:
    out = parse_vector(
        [{"metric": {"a": "1"}, "value": [1, "1"]}, {"metric": {}, "value": [1, "2"]}]
    )
    assert out.status is QueryStatus.REJECTED
    assert "2 series" in out.error


@pytest.mark.parametrize(
    ("m", "canary", "stable", "samples", "verdict", "message"),
    [
        (SUCCESS, OK(0.995), None, 500, Verdict.PASS, "successRate 99.50% within >= 99.00%"),
        (SUCCESS, OK(0.95), None, 500, Verdict.FAIL, "successRate 95.00% < 99.00%"),
        (SUCCESS, OK(0.0), None, 500, Verdict.FAIL, "successRate 0.00% < 99.00%"),
        (LATENCY, OK(342.0), None, 500, Verdict.FAIL, "latencyP99 342ms > 200ms"),
        (LATENCY, OK(120.0), None, 500, Verdict.PASS, "latencyP99 120ms"),
        # empty / NaN is never zero and never success: onNoData decides
        (LATENCY, EMPTY, None, 500, Verdict.WAIT, "no data (onNoData wait)"),
        (LATENCY, OK(math.nan), None, 500, Verdict.WAIT, "no data"),
        (
            metric(name="latencyP99", max=200, onNoData="fail"),
            EMPTY,
            None,
            500,
            Verdict.FAIL,
            "no data",
        ),
        (
            metric(name="latencyP99", max=200, onNoData="pass"),
            EMPTY,
            None,
            500,
            Verdict.PASS,
            "no data",
        ),
        # too little traffic: neither promoted nor failed, even on a bad value
        (
            SUCCESS,
            OK(0.5),
            None,
            99,
            Verdict.WAIT,
            "canary served 99 requests in the window, needs 100",
        ),
        (SUCCESS, OK(1.0), None, 0, Verdict.WAIT, "needs 100"),
        # Prometheus down: wait; Prometheus rejects the query: fail
        (SUCCESS, DOWN, None, 500, Verdict.WAIT, "Prometheus unavailable: connection refused"),
        (SUCCESS, REJECTED, None, 500, Verdict.FAIL, "canary query failed"),
    ],
)
def test_judge_metric(
    m: AnalysisMetric,
    canary: QueryOutcome,
    stable: QueryOutcome | None,
    samples: int,
    verdict: Verdict,
    message: str,
) -> None:
    result = judge_metric(m, canary, stable, samples, min_samples=100)
    assert result.verdict is verdict
    assert message in result.message
    assert result.samples == samples


LAT_RATIO = metric(name="latencyP99", compare={"mode": "ratio", "max": 1.2})
SR_DIFF = metric(name="successRate", compare={"mode": "difference", "min": -0.01})


@pytest.mark.parametrize(
    ("m", "canary", "stable", "verdict"),
    [
        (LAT_RATIO, OK(110.0), OK(100.0), Verdict.PASS),
        (LAT_RATIO, OK(130.0), OK(100.0), Verdict.FAIL),
        (LAT_RATIO, OK(130.0), EMPTY, Verdict.WAIT),  # stable without data: onNoData
        (LAT_RATIO, OK(130.0), DOWN, Verdict.WAIT),
        (LAT_RATIO, OK(5.0), OK(0.0), Verdict.FAIL),  # x / 0 is infinitely worse
        (LAT_RATIO, OK(0.0), OK(0.0), Verdict.PASS),
        (SR_DIFF, OK(0.995), OK(0.999), Verdict.PASS),
        (SR_DIFF, OK(0.97), OK(0.999), Verdict.FAIL),
    ],
)
def test_compare_with_stable(
    m: AnalysisMetric, canary: QueryOutcome, stable: QueryOutcome, verdict: Verdict
) -> None:
    result = judge_metric(m, canary, stable, 1000, min_samples=100)
    assert result.verdict is verdict, result.message
    if stable.value is not None and canary.value is not None:
        assert result.stable_value == stable.value


ANALYSIS = Analysis(metrics=[SUCCESS, LATENCY], min_sample_count=100)


def outcomes(samples: QueryOutcome, sr: QueryOutcome, lat: QueryOutcome) -> dict[str, QueryOutcome]:
    return {SAMPLES_KEY: samples, canary_key(SUCCESS): sr, canary_key(LATENCY): lat}


@pytest.mark.parametrize(
    ("given", "verdict", "unavailable"),
    [
        (outcomes(OK(500), OK(0.999), OK(50)), Verdict.PASS, False),
        (outcomes(OK(500), OK(0.999), OK(500)), Verdict.FAIL, False),
        (outcomes(OK(500), OK(0.9), EMPTY), Verdict.FAIL, False),  # a fail beats a wait
        (outcomes(OK(500), OK(0.999), EMPTY), Verdict.WAIT, False),
        (outcomes(OK(20), OK(0.1), OK(900)), Verdict.WAIT, False),  # too few samples
        (outcomes(EMPTY, EMPTY, EMPTY), Verdict.WAIT, False),  # no traffic at all
        ({SAMPLES_KEY: DOWN}, Verdict.WAIT, True),  # the shell stopped after the first failure
        ({}, Verdict.WAIT, True),
        (outcomes(OK(500), OK(0.999), DOWN), Verdict.WAIT, True),
    ],
)
def test_evaluate(given: dict[str, QueryOutcome], verdict: Verdict, unavailable: bool) -> None:
    report = evaluate(ANALYSIS, given)
    assert report.verdict is verdict, report.message
    assert report.prometheus_unavailable is unavailable
    assert [r.name for r in report.results] == ["successRate", "latencyP99"]


def test_evaluate_without_metrics_passes_on_time_alone() -> None:
    report = evaluate(Analysis(), {})
    assert report.verdict is Verdict.PASS
    assert report.results == ()


def test_evaluate_reports_stable_comparison() -> None:
    analysis = Analysis(metrics=[LAT_RATIO], min_sample_count=10)
    report = evaluate(
        analysis,
        {SAMPLES_KEY: OK(50), canary_key(LAT_RATIO): OK(300), stable_key(LAT_RATIO): OK(100)},
    )
    assert report.verdict is Verdict.FAIL
    assert "canary / stable = 3" in report.message
