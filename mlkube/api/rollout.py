"""Pydantic models of ``spec.rollout``, ``spec.autoscaling`` and their status blocks.

These models are the single source of truth for how a ModelService changes version and how
many replicas it runs: the CRD schema (defaults, enums, bounds, CEL rules) is generated from
them, the operator parses the custom resource with them, and the pure state machines in
:mod:`mlkube.operator.rollout` and :mod:`mlkube.operator.autoscaler` take them as input.
Field names are the camelCase names users write in YAML; Python code uses snake_case.

Defaults follow the tools users already know: Flagger/Argo Rollouts for the canary vocabulary
(``stepWeight``, ``maxWeight``, ``interval``, ``failureThreshold``) and Cortex for the
autoscaler (window 60s, stabilization 1m up / 5m down, factors 1.5 / 0.75, tolerance 0.05).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from mlkube.api.actions import ActionResult
from mlkube.api.schema import KubeModel, kube, rule

_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
Duration = Annotated[str, Field(min_length=2, max_length=16, pattern=DURATION_PATTERN)]
"""A Kubernetes-style duration in whole seconds or more: ``30s``, ``5m``, ``1h30m``."""

GPU_METRICS = ("gpuUtilization", "gpuMemoryUsed", "gpuPowerUsage")
"""Built-in metrics read from NVIDIA's dcgm-exporter (see :mod:`mlkube.operator.gpu`)."""
BUILTIN_METRICS = ("successRate", "latencyP99", "rewardRate", *GPU_METRICS)
#: Built-in metrics judged by a rule of their own, not by min/max/compare.
RULE_METRICS = ("rewardRate",)
#: Placeholders a custom PromQL query may use, written ``{{ name }}``.
QUERY_PLACEHOLDERS = (
    "revision",
    "stableRevision",
    "canaryRevision",
    "namespace",
    "name",
    "model",
    "window",
)
HISTORY_LIMIT = 10


def parse_duration(text: str) -> int:
    """Seconds in a Kubernetes-style duration such as ``90s``, ``1m30s`` or ``2h``.

    Only whole seconds: the rollout and autoscaler clocks tick in seconds, and accepting
    ``ms`` would invite intervals shorter than Prometheus' scrape interval.
    """
    match = _DURATION_RE.match(text)
    if not text or match is None:
        raise ValueError(f"invalid duration {text!r}: use forms like 30s, 5m, 1h30m")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def human_duration(seconds: float) -> str:
    """``42s``, ``3m10s``, ``2h5m``, ``4d3h``: an age or a wait the way kubectl says it."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs and minutes < 10 else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def format_duration(seconds: int) -> str:
    """The duration string Prometheus range selectors accept (``[90s]``)."""
    return f"{int(seconds)}s"


class _Status(KubeModel):
    """Status blocks are written by the operator and read back after a restart."""


# --------------------------------------------------------------------------- spec.rollout


class RolloutStrategy(StrEnum):
    CANARY = "canary"
    ROLLING = "rolling"


class TrafficRouting(StrEnum):
    REPLICAS = "replicas"
    GATEWAY_API = "gatewayAPI"


class OnNoData(StrEnum):
    WAIT = "wait"
    FAIL = "fail"
    PASS = "pass"


class CompareMode(StrEnum):
    RATIO = "ratio"
    DIFFERENCE = "difference"


class ParentRef(KubeModel):
    """A Gateway (or other parent) the HTTPRoute attaches to; the user owns the Gateway."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the Gateway."""
    namespace: Annotated[str | None, Field(max_length=63)] = None
    """Namespace of the Gateway; defaults to the ModelService's namespace."""
    section_name: Annotated[str | None, Field(max_length=253)] = None
    """Listener of the Gateway to attach to."""
    group: str = "gateway.networking.k8s.io"
    """API group of the parent."""
    kind: str = "Gateway"
    """Kind of the parent."""


class GatewayAPIRouting(KubeModel):
    """Exact weights through an HTTPRoute the operator creates and owns."""

    parent_refs: Annotated[list[ParentRef], Field(min_length=1, max_length=16)]
    """Gateways the HTTPRoute attaches to."""
    hostnames: Annotated[list[str], Field(max_length=16)] = Field(default_factory=list)
    """Hostnames the HTTPRoute matches; empty matches all hostnames of the parents."""


class StableComparison(KubeModel):
    """Judge the canary against the stable revision over the same window.

    ``ratio`` is canary/stable, ``difference`` is canary - stable; e.g. latency with
    ``mode: ratio, max: 1.2`` allows the canary to be at most 20% slower than stable.
    """

    mode: CompareMode = CompareMode.RATIO
    """ratio (canary / stable) or difference (canary - stable)."""
    min: float | None = None
    """Lowest acceptable ratio or difference."""
    max: float | None = None
    """Highest acceptable ratio or difference."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "has(self.min) || has(self.max)",
                    "compare needs min or max",
                ),
            ]
        )
    )

    @model_validator(mode="after")
    def _needs_bound(self) -> StableComparison:
        if self.min is None and self.max is None:
            raise ValueError("compare needs min or max")
        return self


class AnalysisMetric(KubeModel):
    """One check: a built-in metric of the serving runtime or a custom PromQL query."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")]
    """successRate, latencyP99, rewardRate, gpuUtilization, gpuMemoryUsed or gpuPowerUsage for a
    built-in metric, any name for a custom query."""
    query: Annotated[str | None, Field(min_length=1, max_length=4096)] = None
    """PromQL returning one value; may use {{ revision }}, {{ namespace }}, {{ name }}, {{ window }}..."""
    min: float | None = None
    """Lowest acceptable value (successRate: a share, 0.99 = 99%)."""
    max: float | None = None
    """Highest acceptable value (latencyP99: milliseconds; gpuUtilization: percent; gpuMemoryUsed: MiB per pod; gpuPowerUsage: watts per pod)."""
    on_no_data: OnNoData = OnNoData.WAIT
    """What an empty or NaN result means: wait (default), fail or pass. Never read as zero."""
    compare: StableComparison | None = None
    """Judge the canary relative to the stable revision over the same window."""
    margin: Annotated[float | None, Field(ge=0, le=0.5)] = None
    """rewardRate only: relative shortfall tolerated, 0.02 = the canary may earn 2% less than stable (default 0.02)."""
    confidence: Annotated[float | None, Field(gt=0.5, le=0.9999)] = None
    """rewardRate only: posterior probability needed to pass (or to fail), default 0.95."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "has(self.query) || self.name in ['successRate', 'latencyP99', 'rewardRate', "
                    "'gpuUtilization', 'gpuMemoryUsed', 'gpuPowerUsage']",
                    "a metric without a query must be successRate, latencyP99, rewardRate, "
                    "gpuUtilization, gpuMemoryUsed or gpuPowerUsage",
                ),
                rule(
                    "has(self.min) || has(self.max) || has(self.compare) || (!has(self.query) && self.name == 'rewardRate')",
                    "a metric needs min, max or compare",
                ),
                rule(
                    "has(self.query) || self.name != 'rewardRate' || (!has(self.min) && !has(self.max) && !has(self.compare))",
                    "rewardRate is judged by margin and confidence, not min, max or compare",
                ),
                rule(
                    "(!has(self.margin) && !has(self.confidence)) || (!has(self.query) && self.name == 'rewardRate')",
                    "margin and confidence apply to the built-in rewardRate only",
                ),
                rule(
                    "has(self.query) || self.name != 'successRate' || ((!has(self.min) || double(self.min) <= 1.0) && (!has(self.max) || double(self.max) <= 1.0))",
                    "successRate is a share between 0 and 1 (0.99 means 99%)",
                ),
            ]
        )
    )

    @property
    def builtin(self) -> bool:
        return self.query is None

    @property
    def reward(self) -> bool:
        """The built-in rewardRate, judged by its own rule."""
        return self.query is None and self.name == "rewardRate"

    @model_validator(mode="after")
    def _check(self) -> AnalysisMetric:
        if self.query is None and self.name not in BUILTIN_METRICS:
            raise ValueError(
                f"metric {self.name!r} has no query; built-in metrics are {', '.join(BUILTIN_METRICS)}"
            )
        if self.reward:
            if self.min is not None or self.max is not None or self.compare is not None:
                raise ValueError(
                    "rewardRate is judged by margin and confidence, not min, max or compare"
                )
            return self
        if self.margin is not None or self.confidence is not None:
            raise ValueError("margin and confidence apply to the built-in rewardRate only")
        if self.min is None and self.max is None and self.compare is None:
            raise ValueError(f"metric {self.name!r} needs min, max or compare")
        if self.query is None and self.name == "successRate":
            for bound in (self.min, self.max):
                if bound is not None and not 0.0 <= bound <= 1.0:
                    raise ValueError("successRate is a share between 0 and 1 (0.99 means 99%)")
        if self.query is not None:
            for placeholder in re.findall(r"\{\{\s*([^}\s]*)\s*\}\}", self.query):
                if placeholder not in QUERY_PLACEHOLDERS:
                    raise ValueError(
                        f"metric {self.name!r}: unknown placeholder {{{{ {placeholder} }}}}; "
                        f"known: {', '.join(QUERY_PLACEHOLDERS)}"
                    )
        return self


class Analysis(KubeModel):
    """How a canary step is judged. With no metrics every step passes after ``interval``."""

    metrics: Annotated[list[AnalysisMetric], Field(max_length=16)] = Field(default_factory=list)
    """Checks run every interval; all must pass for the canary to advance."""
    min_sample_count: Annotated[int, Field(ge=0)] = 100
    """Requests the canary must have served in the window before any verdict but wait."""
    prometheus_url: Annotated[str | None, Field(pattern=r"^https?://")] = None
    """Prometheus for this ModelService; defaults to the operator's MLKUBE_PROMETHEUS_URL."""
    timeout_seconds: Annotated[int, Field(ge=1, le=60)] = 10
    """Timeout of each Prometheus query."""

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, metrics: list[AnalysisMetric]) -> list[AnalysisMetric]:
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise ValueError("analysis metric names must be unique")
        return metrics


class ShadowSpec(KubeModel):
    """Copies of real requests to the canary, answered and compared but never returned."""

    fraction: Annotated[float, Field(gt=0, le=1)]
    """Share of the stable pods' OIP v2 JSON inference requests copied to the canary (0.1 = 10%)."""


class RolloutSpec(KubeModel):
    """``spec.rollout``: how a changed ModelService reaches users."""

    strategy: RolloutStrategy = RolloutStrategy.CANARY
    """canary (analysed, automatic rollback) or rolling (plain rolling update)."""
    traffic_routing: TrafficRouting = TrafficRouting.REPLICAS
    """replicas (approximate weights by the stable/canary pod split) or gatewayAPI (exact weights through an HTTPRoute)."""
    gateway_api: GatewayAPIRouting | None = Field(default=None, alias="gatewayAPI")
    """Where the HTTPRoute attaches when trafficRouting is gatewayAPI."""
    step_weight: Annotated[int | None, Field(ge=1, le=100)] = None
    """Canary weight added after each passed check (default 10); exclusive with steps."""
    steps: Annotated[list[Annotated[int, Field(ge=0, le=100)]] | None, Field(max_length=20)] = None
    """Explicit, strictly increasing canary weights; the last one is judged before promotion. A first step of 0 needs shadow."""
    max_weight: Annotated[int, Field(ge=1, le=100)] = 50
    """Last canary weight with stepWeight; promotion follows a passed check at it."""
    interval: Duration = "60s"
    """Time between checks, and the window the metrics are computed over (minimum 10s)."""
    progress_deadline_seconds: Annotated[int, Field(ge=30)] = 600
    """Roll back when the canary makes no progress (not ready, or no data) for this long."""
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 1
    """Failed checks in one rollout before it is rolled back."""
    paused: bool = False
    """Hold the canary at its current weight; no checks, no deadline."""
    analysis: Analysis = Field(default_factory=Analysis)
    """How each step is judged."""
    shadow: ShadowSpec | None = None
    """While a canary runs, stable pods copy this share of real requests to it (its answers are compared, then discarded)."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "!(has(self.steps) && has(self.stepWeight))",
                    "use either steps or stepWeight, not both",
                ),
                rule(
                    "!has(self.steps) || (self.steps.isSorted() && self.steps.all(x, self.steps.exists_one(y, y == x)))",
                    "steps must be strictly increasing",
                ),
                rule(
                    "!has(self.trafficRouting) || self.trafficRouting != 'gatewayAPI' || has(self.gatewayAPI)",
                    "trafficRouting gatewayAPI needs gatewayAPI.parentRefs",
                ),
                rule(
                    "!has(self.interval) || duration(self.interval) >= duration('10s')",
                    "interval must be at least 10s",
                ),
                rule(
                    "!has(self.steps) || self.steps.all(x, x > 0) || has(self.shadow)",
                    "a step of 0 needs shadow (the canary gets no user traffic there)",
                ),
                rule(
                    "!has(self.steps) || size(self.steps) == 0 || self.steps[size(self.steps) - 1] > 0",
                    "the last step must be above 0: promotion needs a check on user traffic",
                ),
            ]
        )
    )

    @field_validator("interval")
    @classmethod
    def _interval_min(cls, value: str) -> str:
        if parse_duration(value) < 10:
            raise ValueError("interval must be at least 10s")
        return value

    @model_validator(mode="after")
    def _check(self) -> RolloutSpec:
        if self.steps is not None and self.step_weight is not None:
            raise ValueError("use either steps or stepWeight, not both")
        if self.steps is not None:
            if not self.steps:
                raise ValueError("steps must not be empty")
            if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
                raise ValueError("steps must be strictly increasing")
            if 0 in self.steps and self.shadow is None:
                raise ValueError("a step of 0 needs shadow (the canary gets no user traffic there)")
            if self.steps[-1] == 0:
                raise ValueError(
                    "the last step must be above 0: promotion needs a check on user traffic"
                )
        if self.traffic_routing is TrafficRouting.GATEWAY_API and self.gateway_api is None:
            raise ValueError("trafficRouting gatewayAPI needs gatewayAPI.parentRefs")
        return self

    @property
    def interval_seconds(self) -> int:
        return parse_duration(self.interval)

    def weights(self) -> list[int]:
        """The canary weights, in order; the last one is judged before promotion.

        An explicit ``steps`` list wins; otherwise ``stepWeight`` (default 10) is added until
        ``maxWeight`` is reached, the final step being exactly ``maxWeight`` as in Flagger.
        """
        if self.steps:
            return list(self.steps)
        step = self.step_weight or 10
        out = list(range(step, self.max_weight, step))
        out.append(self.max_weight)
        return out


# ------------------------------------------------------------------------ spec.autoscaling


class AutoscalingMode(StrEnum):
    BUILTIN = "builtin"
    HPA = "hpa"


class OnMetricsUnavailable(StrEnum):
    HOLD = "hold"
    MIN_REPLICAS = "minReplicas"


class AutoscalingSignal(StrEnum):
    IN_FLIGHT = "inFlight"
    GPU_UTILIZATION = "gpuUtilization"
    GPU_MEMORY_USED = "gpuMemoryUsed"
    GPU_POWER_USAGE = "gpuPowerUsage"


class HPAResource(StrEnum):
    CPU = "cpu"
    MEMORY = "memory"


class HPASpec(KubeModel):
    """A standard autoscaling/v2 HorizontalPodAutoscaler on CPU or memory utilisation."""

    resource: HPAResource = HPAResource.CPU
    """Resource whose utilisation the HPA targets."""
    target_utilization: Annotated[int, Field(ge=1, le=1000)] = 80
    """Target average utilisation, percent of the requests."""


class AutoscalingSpec(KubeModel):
    """``spec.autoscaling``: a Cortex-style in-flight autoscaler built into the operator.

    ``targetInFlight`` is the number of concurrent requests one replica should carry; the
    signal is the runtime's ``mlkube_inflight_requests`` gauge averaged over ``window``.
    A custom PromQL ``query`` (total signal for the service) may replace it, with the same
    per-replica target semantics. ``signal`` picks a named signal instead: the GPU ones come
    from NVIDIA's dcgm-exporter (GPU utilisation percent, framebuffer MiB or watts of each
    pod, summed over the service's pods) and are judged against ``target`` per replica.
    """

    mode: AutoscalingMode = AutoscalingMode.BUILTIN
    """builtin (in-flight requests, Cortex-style) or hpa (a HorizontalPodAutoscaler on CPU or memory)."""
    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    """Fewest replicas."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 100
    """Most replicas."""
    target_in_flight: Annotated[float, Field(gt=0)] = 1.0
    """In-flight requests one replica should carry (or the custom signal per replica)."""
    query: Annotated[str | None, Field(min_length=1, max_length=4096)] = None
    """PromQL for the whole service's load (one value); replaces the in-flight gauge."""
    signal: AutoscalingSignal = AutoscalingSignal.IN_FLIGHT
    """inFlight (requests, targetInFlight per replica), or a GPU signal from dcgm-exporter: gpuUtilization (percent), gpuMemoryUsed (framebuffer MiB) or gpuPowerUsage (watts) per replica, judged against target."""
    target: Annotated[float | None, Field(gt=0)] = None
    """What one replica should carry of a GPU signal (gpuUtilization 70 = 70% of its GPUs); required with a GPU signal."""
    window: Duration = "60s"
    """The signal is averaged over this window."""
    upscale_stabilization: Duration = "1m"
    """Scale up only to the lowest recommendation seen in this window."""
    downscale_stabilization: Duration = "5m"
    """Scale down only to the highest recommendation seen in this window."""
    max_upscale_factor: Annotated[float, Field(gt=1, le=100)] = 1.5
    """At most this many times the current replicas in one step (always at least +1)."""
    max_downscale_factor: Annotated[float, Field(gt=0, lt=1)] = 0.75
    """At least this share of the current replicas after one step (always at most -1)."""
    tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """Recommendations within this relative distance of the current count change nothing."""
    on_metrics_unavailable: OnMetricsUnavailable = OnMetricsUnavailable.HOLD
    """hold (keep the current count) or minReplicas (drift to minReplicas through the usual stabilization and factors)."""
    hpa: HPASpec | None = None
    """Settings of the HorizontalPodAutoscaler for mode hpa."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                    "minReplicas must not exceed maxReplicas",
                ),
                rule(
                    "!has(self.mode) || self.mode != 'hpa' || !has(self.query)",
                    "a custom query needs mode builtin",
                ),
                rule(
                    "!has(self.signal) || self.signal == 'inFlight' || has(self.target)",
                    "a GPU signal needs target (its value per replica)",
                ),
                rule(
                    "!has(self.signal) || self.signal == 'inFlight' || !has(self.query)",
                    "use either signal or query, not both",
                ),
                rule(
                    "!has(self.signal) || self.signal == 'inFlight' || !has(self.mode) || self.mode != 'hpa'",
                    "a GPU signal needs mode builtin",
                ),
            ]
        )
    )

    @model_validator(mode="after")
    def _check(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        if self.mode is AutoscalingMode.HPA and self.query is not None:
            raise ValueError("a custom query needs mode builtin")
        if self.signal is not AutoscalingSignal.IN_FLIGHT:
            if self.target is None:
                raise ValueError("a GPU signal needs target (its value per replica)")
            if self.query is not None:
                raise ValueError("use either signal or query, not both")
            if self.mode is AutoscalingMode.HPA:
                raise ValueError("a GPU signal needs mode builtin")
        for name in ("window", "upscale_stabilization", "downscale_stabilization"):
            parse_duration(getattr(self, name))
        return self

    @property
    def window_seconds(self) -> int:
        return parse_duration(self.window)

    @property
    def per_replica_target(self) -> float:
        """What one replica should carry of the signal in use."""
        if self.signal is AutoscalingSignal.IN_FLIGHT or self.target is None:
            return self.target_in_flight
        return self.target

    @property
    def upscale_stabilization_seconds(self) -> int:
        return parse_duration(self.upscale_stabilization)

    @property
    def downscale_stabilization_seconds(self) -> int:
        return parse_duration(self.downscale_stabilization)


# ------------------------------------------------------------------------------- status


class RolloutPhase(StrEnum):
    PROGRESSING = "Progressing"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"


class MetricResult(_Status):
    """The last result of one analysis metric, as shown in status and Events."""

    name: str
    verdict: Verdict
    value: float | None = None
    """Last value of the canary (successRate: share, latencyP99: ms); absent when there was no data."""
    stable_value: float | None = None
    """Value of the stable revision, for metrics compared with it."""
    threshold: str = ""
    """The bounds the value was judged against."""
    samples: int | None = None
    """Requests the canary served in the window."""
    probability: float | None = None
    """rewardRate: posterior P(canary rate >= stable rate x (1 - margin)); value and stableValue are the posterior means."""
    message: str = ""
    """Why this verdict, as the Event said it."""

    @field_validator("value", "stable_value", "probability")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        # NaN and infinities are not JSON; status keeps them as "no value".
        if value is not None and not math.isfinite(value):
            return None
        return value


class HistoryEntry(_Status):
    """One revision this ModelService tried, newest last; tells a manual rollback where to go."""

    revision: str
    model_version: str = ""
    started: datetime
    finished: datetime | None = None
    outcome: Literal["Progressing", "Promoted", "RolledBack", "Superseded", "Failed", "Deployed"]
    image: str = ""
    """Image of the model pods (empty: the operator's default runtime image)."""
    spec: dict[str, Any] | None = Field(
        default=None, json_schema_extra=kube(preserve_unknown_fields=True)
    )
    """The spec this revision was built from, once it served as stable: what
    ``kubectl mlkube undo`` returns to."""


class RolloutStatus(_Status):
    """``status.rollout``: everything the state machine needs to resume after a restart."""

    phase: RolloutPhase = RolloutPhase.SUCCEEDED
    """Progressing, Promoting, Succeeded, RolledBack or Failed."""
    stable_revision: str | None = None
    """Revision the stable Deployment runs."""
    stable_model_version: str = ""
    """Model version of the stable revision."""
    canary_revision: str | None = None
    """Revision under test, while a canary runs."""
    canary_model_version: str = ""
    """Model version of the canary."""
    canary_weight: int = 0
    """Target share of traffic for the canary, percent."""
    traffic_split: str = ""
    """The split as realised (approximate when routed by replicas)."""
    failed_checks: int = 0
    """Failed checks in this rollout (rolled back at failureThreshold)."""
    paused: bool = False
    """Whether the rollout is held (spec.rollout.paused, or kubectl mlkube pause)."""
    manual_pause: bool = False
    """Held by kubectl mlkube pause (until kubectl mlkube resume), not by the spec."""
    started_at: datetime | None = None
    """When the current canary started."""
    last_progress_time: datetime | None = None
    """When the canary last advanced (the progress deadline counts from here)."""
    last_check_time: datetime | None = None
    """When the analysis last ran."""
    rolled_back_revision: str | None = None
    """Revision that was rolled back; not retried until the spec changes."""
    message: str = ""
    """What the rollout is doing or waiting for."""
    metrics: list[MetricResult] = Field(default_factory=list)
    """Last result of each analysis metric."""
    history: list[HistoryEntry] = Field(default_factory=list)
    """Recent revisions and their outcomes, newest last."""
    last_action: ActionResult | None = None
    """The last action asked through the mlkube.dev/action annotation, and its outcome."""
    stable_spec: dict[str, Any] | None = Field(
        default=None, json_schema_extra=kube(preserve_unknown_fields=True)
    )
    """The spec the stable revision was built from: during a canary the stable Deployment
    keeps running it (and is rebuilt from it if deleted) while spec already says the new."""


class ScaleRecord(_Status):
    """One autoscaler recommendation; the stabilization windows look back over these."""

    time: datetime
    replicas: int


class AutoscalingStatus(_Status):
    """``status.autoscaling``: desired replicas, the reason for the last change, history."""

    mode: str = ""
    """builtin or hpa: what manages the replica count now."""
    desired_replicas: int | None = None
    """Replicas the autoscaler wants (both tracks together)."""
    current_signal: float | None = None
    """Load signal of the last tick (in-flight requests, the GPU signal or the custom query)."""
    last_scale_time: datetime | None = None
    """When the replica count last changed."""
    reason: str = ""
    """Why the autoscaler chose the current count."""
    recommendations: list[ScaleRecord] = Field(default_factory=list)
    """Recent recommendations: the stabilization windows look back over them."""

    @field_validator("current_signal")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            return None
        return value
