"""PrometheusQuerier over real HTTP: outcomes for every way Prometheus can answer (or not)."""

from __future__ import annotations

import asyncio
import socket
import time

from mlkube.api.rollout import Analysis, AnalysisMetric, Verdict
from mlkube.operator.analysis import (
    SAMPLES_KEY,
    PrometheusQuerier,
    QueryContext,
    QueryOutcome,
    QueryStatus,
    evaluate,
    plan_queries,
)

from .conftest import Error, MockPrometheus

CTX = QueryContext("prod", "ranker", "ranker", "stable-rev", "canary-rev", 60)


async def query(url: str, promql: str, limit: float = 2.0) -> QueryOutcome:
    return await asyncio.to_thread(PrometheusQuerier(url, limit).query, promql)


async def test_values_empty_and_nan(prometheus: MockPrometheus) -> None:
    prometheus.answer("a_metric", 0.25)
    prometheus.answer("nan_metric", "NaN")
    assert await query(prometheus.url, "a_metric") == QueryOutcome(QueryStatus.OK, 0.25)
    assert (await query(prometheus.url, "nan_metric")).status is QueryStatus.EMPTY
    assert (await query(prometheus.url, "missing_metric")).status is QueryStatus.EMPTY
    assert prometheus.queries == ["a_metric", "nan_metric", "missing_metric"]


async def test_rejected_query_and_server_errors(prometheus: MockPrometheus) -> None:
    prometheus.answer("typo(", Error(400, "parse error at char 5"))
    prometheus.answer("overloaded", Error(503, "too many queries"))
    rejected = await query(prometheus.url, "typo(")
    assert rejected.status is QueryStatus.REJECTED
    assert "400" in rejected.error
    unavailable = await query(prometheus.url, "overloaded")
    assert unavailable.status is QueryStatus.UNAVAILABLE


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_prometheus_is_unavailable_and_bounded() -> None:
    started = time.monotonic()
    out = await query(f"http://127.0.0.1:{_closed_port()}", "up")
    assert out.status is QueryStatus.UNAVAILABLE
    assert "Connection" in out.error
    assert time.monotonic() - started < 5


async def test_slow_prometheus_times_out(prometheus: MockPrometheus) -> None:
    prometheus.delay = 3.0
    started = time.monotonic()
    out = await query(prometheus.url, "up", limit=0.5)
    assert out.status is QueryStatus.UNAVAILABLE
    assert "Timeout" in out.error
    assert time.monotonic() - started < 2.5  # one retry at most


async def test_analysis_run_stops_at_the_first_unavailable_answer(
    prometheus: MockPrometheus,
) -> None:
    analysis = Analysis(
        metrics=[
            AnalysisMetric(name="successRate", min=0.99),
            AnalysisMetric(name="latencyP99", max=200),
        ]
    )
    plan = plan_queries(analysis, CTX)
    prometheus.answer("increase(", Error(503, "down for maintenance"))
    outcomes = await PrometheusQuerier(prometheus.url, 1.0).run(plan)
    assert list(outcomes) == [SAMPLES_KEY]
    report = evaluate(analysis, outcomes)
    assert report.verdict is Verdict.WAIT
    assert report.prometheus_unavailable


async def test_full_analysis_against_the_http_api(prometheus: MockPrometheus) -> None:
    analysis = Analysis(
        metrics=[
            AnalysisMetric(name="successRate", min=0.99),
            AnalysisMetric(name="latencyP99", max=200),
        ]
    )
    prometheus.answer("increase(mlkube_requests_total", 1234.4)
    prometheus.answer("1 - ((sum(rate(mlkube_requests_total", 0.997)
    prometheus.answer("histogram_quantile(0.99", 342.0)
    outcomes = await PrometheusQuerier(prometheus.url, 1.0).run(plan_queries(analysis, CTX))
    report = evaluate(analysis, outcomes)
    assert report.verdict is Verdict.FAIL
    assert report.samples == 1234
    assert report.message == "metric latencyP99 342ms > 200ms"
    assert all('revision="canary-rev"' in q for q in prometheus.queries)


async def test_one_check_evaluates_every_query_at_one_instant(prometheus: MockPrometheus) -> None:
    """rewardRate divides two counters and compares two revisions: all four queries are
    evaluated at the same time, so no scrape can land between them."""
    analysis = Analysis(metrics=[AnalysisMetric(name="rewardRate")])
    prometheus.answer("increase(", 100.0)
    querier = PrometheusQuerier(prometheus.url, 1.0)
    before = time.time()
    await querier.run(plan_queries(analysis, CTX))
    first = prometheus.times[:]
    await asyncio.sleep(0.01)
    await querier.run(plan_queries(analysis, CTX))
    after = time.time()
    assert len(first) >= 4, prometheus.queries  # samples + items and rewards of both
    assert len(set(first)) == 1, first
    assert first[0] is not None
    assert before - 0.001 <= float(first[0]) <= after  # sent in milliseconds
    assert prometheus.times[len(first) :] != first  # the next check, the next instant
