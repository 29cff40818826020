"""Canary analysis: PromQL built from the runtime's metrics, and verdicts that never guess.

Everything here except :class:`PrometheusQuerier` is pure.  The shell asks
:func:`plan_queries` which PromQL to run, runs it (``run_queries``), and hands the raw
outcomes to :func:`evaluate`, which decides pass / fail / wait for each metric and for the
step as a whole.

The rules that keep a rollout honest:

* an empty result, ``NaN`` or a failed query is never read as zero or as success: it is
  "no data", and the metric's ``onNoData`` (default ``wait``) decides;
* a canary that served fewer than ``minSampleCount`` requests in the window is neither
  promoted nor failed - every metric waits;
* an unreachable Prometheus (connection error, timeout, 5xx) is ``wait`` and is reported,
  while a query Prometheus rejects (HTTP 4xx, e.g. a typo in a custom query) is ``fail``:
  waiting would only run into the progress deadline with a less useful message.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from mlkube.api.rollout import (
    Analysis,
    AnalysisMetric,
    CompareMode,
    MetricResult,
    OnNoData,
    Verdict,
    format_duration,
)
from mlkube.operator import gpu
from mlkube.operator.reward import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MARGIN,
    RewardCounts,
    judge_reward,
)

REQUESTS_TOTAL = "mlkube_requests_total"
REQUEST_DURATION = "mlkube_request_duration_seconds"
INFLIGHT = "mlkube_inflight_requests"
REWARD_ITEMS = "mlkube_reward_items_total"
REWARDS = "mlkube_rewards_total"

SAMPLES_KEY = "samples"
#: Endpoints that carry user traffic (REST, and OIP v2 inference over gRPC); health probes,
#: metadata and /metrics scrapes are answered by every pod all the time and would drown the
#: signal (and flatter latency).
TRAFFIC_ENDPOINTS = ("infer", "predict", "feedback", "grpc_infer")
TRAFFIC_MATCHER = f'endpoint=~"{"|".join(TRAFFIC_ENDPOINTS)}"'


class QueryStatus(StrEnum):
    OK = "ok"
    EMPTY = "empty"  # no series, or NaN/Inf: "no data"
    UNAVAILABLE = "unavailable"  # Prometheus unreachable, timed out or 5xx
    REJECTED = "rejected"  # Prometheus answered 4xx, or the result has the wrong shape


@dataclass(frozen=True)
class QueryOutcome:
    """What one instant query produced, before any interpretation."""

    status: QueryStatus
    value: float | None = None
    error: str = ""

    @staticmethod
    def of(value: float | None) -> QueryOutcome:
        if value is None or not math.isfinite(value):
            return QueryOutcome(QueryStatus.EMPTY)
        return QueryOutcome(QueryStatus.OK, value)


@dataclass(frozen=True)
class QueryContext:
    """The values a query may refer to; ``{{ revision }}`` is the revision being measured."""

    namespace: str
    name: str
    model: str
    stable_revision: str
    canary_revision: str
    window_seconds: int
    pods: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Pod names per revision, from the operator's cache (what GPU signals select by)."""
    gpu_labels: tuple[gpu.LabelMapping, ...] = gpu.DEFAULT_LABEL_MAPPINGS
    """How dcgm-exporter's series name their pod in this Prometheus."""

    def all_pods(self) -> tuple[str, ...]:
        return tuple(sorted({p for names in self.pods.values() for p in names}))


@dataclass(frozen=True)
class AnalysisReport:
    """The judgement of one analysis run: the step's verdict and each metric's result."""

    verdict: Verdict
    results: tuple[MetricResult, ...]
    samples: int | None
    message: str
    prometheus_unavailable: bool = False

    @property
    def failed(self) -> tuple[MetricResult, ...]:
        return tuple(r for r in self.results if r.verdict is Verdict.FAIL)


# ------------------------------------------------------------------------------ queries


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal; user-controlled names cannot break out of it."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def revision_selector(revision: str, extra: str = "") -> str:
    selector = f"revision={promql_string(revision)}"
    return f"{{{selector},{extra}}}" if extra else f"{{{selector}}}"


def samples_query(revision: str, window_seconds: int) -> str:
    """Inference requests the revision answered in the window (any code)."""
    window = format_duration(window_seconds)
    selector = revision_selector(revision, TRAFFIC_MATCHER)
    return f"sum(increase({REQUESTS_TOTAL}{selector}[{window}]))"


def success_rate_query(revision: str, window_seconds: int) -> str:
    """Share of non-5xx answers.

    Written as ``1 - errors/total`` with ``or vector(0)`` on the errors so that a revision
    with no 5xx series reads 1.0 and, more importantly, a revision that answers *only* 5xx
    reads 0.0 instead of an empty result (a ``non-5xx / total`` form would yield no data
    exactly when the canary is at its worst).  No requests at all is still empty (0/0).
    """
    window = format_duration(window_seconds)
    five_xx = revision_selector(revision, f'{TRAFFIC_MATCHER},code=~"5.."')
    errors = f"sum(rate({REQUESTS_TOTAL}{five_xx}[{window}]))"
    total = f"sum(rate({REQUESTS_TOTAL}{revision_selector(revision, TRAFFIC_MATCHER)}[{window}]))"
    return f"1 - (({errors}) or vector(0)) / {total}"


def latency_p99_query(revision: str, window_seconds: int) -> str:
    """99th percentile request latency in milliseconds (NaN, i.e. no data, without traffic)."""
    window = format_duration(window_seconds)
    buckets = f"{REQUEST_DURATION}_bucket{revision_selector(revision, TRAFFIC_MATCHER)}"
    return f"histogram_quantile(0.99, sum by (le) (rate({buckets}[{window}]))) * 1000"


NO_PODS = ""
"""The "query" of a GPU metric when the revision has no pods: no data, without asking."""


def gpu_query(name: str, ctx: QueryContext, pods: tuple[str, ...], *, total: bool) -> str:
    """The GPU signal ``name`` over ``pods``: summed (``total``) or per typical pod."""
    if not pods:
        return NO_PODS
    build = gpu.service_query if total else gpu.revision_query
    return build(gpu.SIGNALS[name], ctx.namespace, pods, ctx.window_seconds, ctx.gpu_labels)


def reward_queries(revision: str, window_seconds: int) -> tuple[str, str]:
    """PromQL for a revision's (items with feedback, their mean reward) in the window.

    Summed over every pod: a feedback request may reach any pod, which counts it under the
    revision that scored the items (the runtime's ticket), so one revision's counts are
    spread over the pods of both tracks.

    The rate is one query, the rewards' sum over the items' sum, so both come from the
    same scrapes: a scrape committed between two separate queries moves one counter's
    ``increase()`` and not the other's (by its share of the window, over 10% for the
    young series of a new canary). The item count only sets the posterior's width.
    """
    window = format_duration(window_seconds)
    selector = revision_selector(revision)
    items = f"sum(increase({REWARD_ITEMS}{selector}[{window}]))"
    return items, f"sum(increase({REWARDS}{selector}[{window}])) / {items}"


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z]+)\s*\}\}")


def render_custom_query(template: str, ctx: QueryContext, revision: str) -> str:
    """Substitute ``{{ placeholders }}``; string values are inserted bare (users quote them).

    ``{{ window }}`` becomes a range such as ``60s``.  Unknown placeholders are rejected by
    the API model before a query is ever built; here they raise to make misuse loud.
    """
    values = {
        "revision": revision,
        "stableRevision": ctx.stable_revision,
        "canaryRevision": ctx.canary_revision,
        "namespace": ctx.namespace,
        "name": ctx.name,
        "model": ctx.model,
        "window": format_duration(ctx.window_seconds),
    }

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ValueError(f"unknown placeholder {{{{ {key} }}}}")
        return values[key].replace("\\", "\\\\").replace('"', '\\"')

    return _PLACEHOLDER.sub(substitute, template)


def metric_query(metric: AnalysisMetric, ctx: QueryContext, revision: str) -> str:
    if metric.query is not None:
        return render_custom_query(metric.query, ctx, revision)
    if metric.name == "successRate":
        return success_rate_query(revision, ctx.window_seconds)
    if metric.name == "latencyP99":
        return latency_p99_query(revision, ctx.window_seconds)
    if metric.reward:
        raise ValueError("rewardRate is four queries: see plan_queries")
    if metric.name in gpu.SIGNALS:
        return gpu_query(metric.name, ctx, tuple(ctx.pods.get(revision, ())), total=False)
    raise ValueError(f"metric {metric.name!r} is not built in and has no query")


def canary_key(metric: AnalysisMetric) -> str:
    return f"{metric.name}/canary"


def stable_key(metric: AnalysisMetric) -> str:
    return f"{metric.name}/stable"


REWARD_PARTS = ("canary/items", "canary/rate", "stable/items", "stable/rate")


def reward_keys(metric: AnalysisMetric) -> tuple[str, ...]:
    """The four values rewardRate needs, in :data:`REWARD_PARTS` order."""
    return tuple(f"{metric.name}/{part}" for part in REWARD_PARTS)


def plan_queries(analysis: Analysis, ctx: QueryContext) -> dict[str, str]:
    """Every PromQL query one analysis run needs, keyed for :func:`evaluate`.

    The sample count comes first: if Prometheus cannot answer it, the shell skips the rest.
    """
    plan = {SAMPLES_KEY: samples_query(ctx.canary_revision, ctx.window_seconds)}
    for metric in analysis.metrics:
        if metric.reward:
            queries = (
                *reward_queries(ctx.canary_revision, ctx.window_seconds),
                *reward_queries(ctx.stable_revision, ctx.window_seconds),
            )
            plan.update(zip(reward_keys(metric), queries, strict=True))
            continue
        plan[canary_key(metric)] = metric_query(metric, ctx, ctx.canary_revision)
        if metric.compare is not None:
            plan[stable_key(metric)] = metric_query(metric, ctx, ctx.stable_revision)
    return plan


# ------------------------------------------------------------------------ interpretation


def parse_vector(result: object) -> QueryOutcome:
    """Read an instant-query result (the ``data.result`` list, or a scalar pair).

    One series is a value, none is no data, several are an error: silently summing or
    picking one would judge the canary on numbers the user did not ask for.
    """
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        # resultType scalar: [time, "value"]
        return _parse_sample(result[1])
    if not isinstance(result, list):
        return QueryOutcome(QueryStatus.REJECTED, error="unexpected result type")
    if not result:
        return QueryOutcome(QueryStatus.EMPTY)
    if len(result) > 1:
        return QueryOutcome(
            QueryStatus.REJECTED,
            error=f"query returned {len(result)} series; aggregate it to one (e.g. sum(...))",
        )
    series = result[0]
    if not isinstance(series, dict) or "value" not in series:
        return QueryOutcome(QueryStatus.REJECTED, error="result is not an instant vector")
    pair = series["value"]
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return QueryOutcome(QueryStatus.REJECTED, error="malformed sample")
    return _parse_sample(pair[1])


def _parse_sample(raw: object) -> QueryOutcome:
    try:
        value = float(str(raw))
    except ValueError:
        return QueryOutcome(QueryStatus.REJECTED, error=f"not a number: {raw!r}")
    return QueryOutcome.of(value)


def format_value(metric: AnalysisMetric, value: float) -> str:
    if metric.builtin and metric.name == "latencyP99":
        return f"{value:.0f}ms"
    if metric.builtin and metric.name == "successRate":
        return f"{value * 100:.2f}%"
    if metric.builtin and metric.name in gpu.SIGNALS:
        unit = gpu.SIGNALS[metric.name].unit
        return f"{value:.1f}{unit}" if unit == "%" else f"{value:.4g}{unit}"
    if metric.reward:
        return f"{value * 100:.3f}%"
    return f"{value:.4g}"


def _bounds_text(metric: AnalysisMetric, low: float | None, high: float | None) -> str:
    parts = []
    if low is not None:
        parts.append(f">= {format_value(metric, low)}")
    if high is not None:
        parts.append(f"<= {format_value(metric, high)}")
    return " and ".join(parts)


def reward_rule(metric: AnalysisMetric) -> tuple[float, float]:
    """rewardRate's (margin, confidence), defaults filled in."""
    margin = DEFAULT_MARGIN if metric.margin is None else metric.margin
    confidence = DEFAULT_CONFIDENCE if metric.confidence is None else metric.confidence
    return margin, confidence


def threshold_text(metric: AnalysisMetric) -> str:
    if metric.reward:
        margin, confidence = reward_rule(metric)
        return f"P(canary >= stable x {1 - margin:g}) >= {confidence:g} to pass, <= {1 - confidence:.4g} to fail"
    parts = []
    absolute = _bounds_text(metric, metric.min, metric.max)
    if absolute:
        parts.append(absolute)
    if metric.compare is not None:
        op = "/" if metric.compare.mode is CompareMode.RATIO else "-"
        bounds = []
        if metric.compare.min is not None:
            bounds.append(f">= {metric.compare.min:g}")
        if metric.compare.max is not None:
            bounds.append(f"<= {metric.compare.max:g}")
        parts.append(f"canary {op} stable {' and '.join(bounds)}")
    return "; ".join(parts)


_NO_DATA_VERDICT = {
    OnNoData.WAIT: Verdict.WAIT,
    OnNoData.FAIL: Verdict.FAIL,
    OnNoData.PASS: Verdict.PASS,
}


def judge_metric(
    metric: AnalysisMetric,
    canary: QueryOutcome,
    stable: QueryOutcome | None,
    samples: int | None,
    min_samples: int,
) -> MetricResult:
    """The verdict on one metric, with a message fit for an Event."""
    threshold = threshold_text(metric)

    def result(
        verdict: Verdict, message: str, value: float | None = None, stable: float | None = None
    ) -> MetricResult:
        return MetricResult(
            name=metric.name,
            verdict=verdict,
            value=value,
            stable_value=stable,
            threshold=threshold,
            samples=samples,
            message=message,
        )

    def no_data(what: str, value: float | None = None) -> MetricResult:
        return result(
            _NO_DATA_VERDICT[metric.on_no_data],
            f"metric {metric.name}{what}: no data (onNoData {metric.on_no_data.value})",
            value,
        )

    for label, outcome in (("canary", canary), ("stable", stable)):
        if outcome is None:
            continue
        if outcome.status is QueryStatus.UNAVAILABLE:
            return result(Verdict.WAIT, f"Prometheus unavailable: {outcome.error}")
        if outcome.status is QueryStatus.REJECTED:
            return result(
                Verdict.FAIL, f"metric {metric.name}: {label} query failed: {outcome.error}"
            )

    if samples is not None and samples < min_samples:
        return result(
            Verdict.WAIT,
            f"canary served {samples} requests in the window, needs {min_samples}",
            canary.value,
        )
    if canary.value is None:
        return no_data("")

    value = canary.value
    failures = []
    if metric.min is not None and value < metric.min:
        failures.append(
            f"metric {metric.name} {format_value(metric, value)} < {format_value(metric, metric.min)}"
        )
    if metric.max is not None and value > metric.max:
        failures.append(
            f"metric {metric.name} {format_value(metric, value)} > {format_value(metric, metric.max)}"
        )

    stable_value: float | None = None
    if metric.compare is not None:
        assert stable is not None, "compare needs the stable outcome"
        if stable.value is None:
            return no_data(" (stable)", value)
        stable_value = stable.value
        if metric.compare.mode is CompareMode.RATIO:
            if stable_value == 0.0:
                relative = 1.0 if value == 0.0 else math.inf
            else:
                relative = value / stable_value
            op = "/"
        else:
            relative = value - stable_value
            op = "-"
        shown = f"canary {op} stable = {relative:.4g}"
        if metric.compare.min is not None and relative < metric.compare.min:
            failures.append(f"metric {metric.name} {shown} < {metric.compare.min:g}")
        if metric.compare.max is not None and relative > metric.compare.max:
            failures.append(f"metric {metric.name} {shown} > {metric.compare.max:g}")

    if failures:
        return result(Verdict.FAIL, "; ".join(failures), value, stable_value)
    return result(
        Verdict.PASS,
        f"metric {metric.name} {format_value(metric, value)} within {threshold}",
        value,
        stable_value,
    )


def judge_reward_metric(
    metric: AnalysisMetric,
    outcomes: tuple[QueryOutcome, ...],
    samples: int | None,
    min_samples: int,
    canary_weight: int | None = None,
) -> MetricResult:
    """rewardRate: the Beta-Binomial rule of :mod:`mlkube.operator.reward` on the window's
    feedback (``outcomes`` in :data:`REWARD_PARTS` order: each revision's item count and
    mean reward, whose product is the rewards' sum).

    At weight 0 (a shadowed canary) nobody sees the canary's answers, so nothing can be
    rewarded: the metric is not judged there (the last step is above 0, so it is judged
    before any promotion)."""
    threshold = threshold_text(metric)
    margin, confidence = reward_rule(metric)
    if canary_weight == 0:
        return MetricResult(
            name=metric.name,
            verdict=Verdict.PASS,
            threshold=threshold,
            samples=samples,
            message=f"metric {metric.name}: not judged at 0% (shadow copies earn no rewards)",
        )

    def result(verdict: Verdict, message: str, **values: float | None) -> MetricResult:
        return MetricResult(
            name=metric.name,
            verdict=verdict,
            threshold=threshold,
            samples=samples,
            message=message,
            **values,
        )

    for part, outcome in zip(REWARD_PARTS, outcomes, strict=True):
        if outcome.status is QueryStatus.UNAVAILABLE:
            return result(Verdict.WAIT, f"Prometheus unavailable: {outcome.error}")
        if outcome.status is QueryStatus.REJECTED:
            return result(
                Verdict.FAIL, f"metric {metric.name}: {part} query failed: {outcome.error}"
            )
    if samples is not None and samples < min_samples:
        return result(
            Verdict.WAIT, f"canary served {samples} requests in the window, needs {min_samples}"
        )
    # A counter with no series in the window had no feedback: zero is what it counted (and
    # a rate over zero items is no series either).
    n_c, r_c, n_s, r_s = (o.value or 0.0 for o in outcomes)
    canary = RewardCounts(n_c, r_c * n_c).clamped()
    stable = RewardCounts(n_s, r_s * n_s).clamped()
    if canary.items < 1 or stable.items < 1:
        which = "canary" if canary.items < 1 else "stable"
        return result(
            _NO_DATA_VERDICT[metric.on_no_data],
            f"metric {metric.name}: no feedback credited to the {which} revision in the "
            f"window: no data (onNoData {metric.on_no_data.value})",
        )
    judged = judge_reward(canary, stable, margin, confidence)
    verdict = judged.verdict
    p = judged.probability
    if verdict is Verdict.PASS:
        outcome_text = f">= {confidence:g}: pass"
    elif verdict is Verdict.FAIL:
        outcome_text = f"<= {1 - confidence:.4g}: fail (canary worse by more than {margin:.0%})"
    else:
        outcome_text = f"between {1 - confidence:.4g} and {confidence:g}: wait for more feedback"
    return result(
        verdict,
        f"metric {metric.name}: canary {judged.canary_mean:.3%} ({canary.items:.0f} items) vs "
        f"stable {judged.stable_mean:.3%} ({stable.items:.0f}), posterior means; "
        f"P(canary >= stable x {1 - margin:g}) = {p:.3f} {outcome_text}",
        value=judged.canary_mean,
        stable_value=judged.stable_mean,
        probability=p,
    )


def evaluate(
    analysis: Analysis,
    outcomes: Mapping[str, QueryOutcome],
    canary_weight: int | None = None,
) -> AnalysisReport:
    """Judge one analysis run from the outcomes of :func:`plan_queries`' queries.

    Missing keys mean the shell did not run that query (it stops after Prometheus is found
    unreachable): they count as unavailable, never as data.
    """
    if not analysis.metrics:
        return AnalysisReport(Verdict.PASS, (), None, "no analysis metrics: step passes on time")

    unavailable = QueryOutcome(QueryStatus.UNAVAILABLE, error="query not run")
    samples_outcome = outcomes.get(SAMPLES_KEY, unavailable)
    if samples_outcome.status is QueryStatus.UNAVAILABLE:
        reason = samples_outcome.error or "unreachable"
        results = tuple(
            MetricResult(
                name=m.name,
                verdict=Verdict.WAIT,
                threshold=threshold_text(m),
                message=f"Prometheus unavailable: {reason}",
            )
            for m in analysis.metrics
        )
        return AnalysisReport(
            Verdict.WAIT, results, None, f"Prometheus unavailable: {reason}", True
        )
    samples: int | None
    if samples_outcome.status is QueryStatus.REJECTED:
        samples = None
    else:
        samples = round(samples_outcome.value) if samples_outcome.value is not None else 0

    results = tuple(
        judge_reward_metric(
            metric,
            tuple(outcomes.get(key, unavailable) for key in reward_keys(metric)),
            samples,
            analysis.min_sample_count,
            canary_weight,
        )
        if metric.reward
        else judge_metric(
            metric,
            outcomes.get(canary_key(metric), unavailable),
            outcomes.get(stable_key(metric), unavailable) if metric.compare else None,
            samples,
            analysis.min_sample_count,
        )
        for metric in analysis.metrics
    )
    prometheus_down = any(r.message.startswith("Prometheus unavailable") for r in results)
    failed = [r for r in results if r.verdict is Verdict.FAIL]
    waiting = [r for r in results if r.verdict is Verdict.WAIT]
    if failed:
        return AnalysisReport(
            Verdict.FAIL, results, samples, "; ".join(r.message for r in failed), prometheus_down
        )
    if waiting:
        return AnalysisReport(
            Verdict.WAIT, results, samples, "; ".join(r.message for r in waiting), prometheus_down
        )
    return AnalysisReport(Verdict.PASS, results, samples, "all metrics within thresholds")


# ---------------------------------------------------------------------------- the shell


class PrometheusQuerier:
    """A thin wrapper over prometheus-api-client: bounded time, outcomes instead of raises.

    prometheus-api-client is synchronous (requests); queries run in a worker thread so the
    operator's event loop keeps serving other resources.  Retries are limited to one so a
    down Prometheus costs at most about two timeouts per analysis run.
    """

    def __init__(self, url: str, timeout_seconds: float = 10.0) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._client = PrometheusConnect(
            url=self.url,
            disable_ssl=False,
            retry=Retry(total=1, backoff_factor=0.1, status_forcelist=(502, 503, 504)),
            timeout=timeout_seconds,
        )

    def query(self, promql: str, at: float | None = None) -> QueryOutcome:
        """One instant query, evaluated at ``at`` (a Unix time; Prometheus' now if None)."""
        from prometheus_api_client.exceptions import PrometheusApiClientException
        from requests import RequestException

        params = {"timeout": f"{max(1, int(self.timeout_seconds))}s"}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            result = self._client.custom_query(promql, params=params, timeout=self.timeout_seconds)
        except PrometheusApiClientException as exc:
            text = str(exc)
            match = re.search(r"HTTP Status Code (\d+)", text)
            code = int(match.group(1)) if match else 500
            if 400 <= code < 500 and code not in (408, 429):
                return QueryOutcome(QueryStatus.REJECTED, error=_short(text))
            return QueryOutcome(QueryStatus.UNAVAILABLE, error=_short(text))
        except (RequestException, OSError, ValueError, KeyError, TypeError) as exc:
            # Connection trouble, timeouts, or a 200 that is not a Prometheus answer.
            return QueryOutcome(
                QueryStatus.UNAVAILABLE, error=_short(f"{type(exc).__name__}: {exc}")
            )
        return parse_vector(result)

    async def run(self, plan: Mapping[str, str]) -> dict[str, QueryOutcome]:
        """Run a plan; stop at the first unreachable answer (the rest would time out too).

        Every query of the plan is evaluated at one instant, so the canary and the stable
        are measured over the same window however long the queries take. (A scrape that
        began before that instant may still be committed between two queries: values
        that are divided come from one query, as in :func:`reward_queries`.) The instant is
        the operator's clock: a skew of seconds only shifts the window.
        """
        at = time.time()
        outcomes: dict[str, QueryOutcome] = {}
        for key, promql in plan.items():
            if promql == NO_PODS:
                outcomes[key] = QueryOutcome(QueryStatus.EMPTY, error="no pods to measure")
                continue
            outcome = await asyncio.to_thread(self.query, promql, at)
            outcomes[key] = outcome
            if outcome.status is QueryStatus.UNAVAILABLE:
                break
        return outcomes


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
