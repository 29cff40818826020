"""spec.rollout / spec.autoscaling: defaults users get, and mistakes refused at the door."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mlkube.api.crdgen import model_schema
from mlkube.api.rollout import (
    AutoscalingSpec,
    RolloutSpec,
    RolloutStatus,
    parse_duration,
)
from tests.support.cel import assert_rule_cases, rules_in


def test_rollout_defaults_follow_flagger() -> None:
    spec = RolloutSpec()
    assert spec.strategy.value == "canary"
    assert spec.traffic_routing.value == "replicas"
    assert spec.weights() == [10, 20, 30, 40, 50]
    assert spec.interval_seconds == 60
    assert (spec.progress_deadline_seconds, spec.failure_threshold) == (600, 1)
    assert spec.analysis.min_sample_count == 100
    assert spec.analysis.metrics == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10), ("1m", 60), ("1m30s", 90), ("2h", 7200), ("1h1m1s", 3661)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1.5m", "10ms", "m", "-1s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"interval": "5s"}, "interval must be at least 10s"),
        ({"steps": [10, 10]}, "strictly increasing"),
        ({"steps": [50, 20]}, "strictly increasing"),
        ({"steps": [10], "stepWeight": 10}, "either steps or stepWeight"),
        ({"trafficRouting": "gatewayAPI"}, "needs gatewayAPI.parentRefs"),
        ({"analysis": {"metrics": [{"name": "errors", "max": 1}]}}, "has no query"),
        ({"analysis": {"metrics": [{"name": "successRate"}]}}, "needs min, max or compare"),
        ({"analysis": {"metrics": [{"name": "successRate", "min": 99}]}}, "share between 0 and 1"),
        (
            {
                "analysis": {
                    "metrics": [{"name": "latencyP99", "max": 1}, {"name": "latencyP99", "max": 2}]
                }
            },
            "unique",
        ),
        ({"analysis": {"metrics": [{"name": "x", "query": "q", "compare": {}}]}}, "compare needs"),
        ({"stepWeight": 0}, "greater than or equal to 1"),
        ({"maxWeight": 101}, "less than or equal to 100"),
        ({"failureThreshold": 0}, "greater than or equal to 1"),
    ],
)
def test_rollout_spec_refuses(value: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RolloutSpec.model_validate(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"minReplicas": 5, "maxReplicas": 2}, "minReplicas must not exceed maxReplicas"),
        ({"mode": "hpa", "query": "sum(x)"}, "custom query needs mode builtin"),
        ({"maxDownscaleFactor": 1.0}, "less than 1"),
        ({"maxUpscaleFactor": 1.0}, "greater than 1"),
        ({"targetInFlight": 0}, "greater than 0"),
        ({"window": "1x"}, "pattern"),
        ({"minReplicas": 0}, "greater than or equal to 1"),
        ({"signal": "gpuUtilization"}, "a GPU signal needs target"),
        ({"signal": "gpuMemoryUsed", "target": 1, "query": "q"}, "either signal or query"),
        ({"signal": "gpuPowerUsage", "target": 1, "mode": "hpa"}, "GPU signal needs mode builtin"),
        ({"signal": "gpuUtilization", "target": 0}, "greater than 0"),
        ({"signal": "gpuTemperature", "target": 1}, "Input should be"),
    ],
)
def test_autoscaling_spec_refuses(value: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AutoscalingSpec.model_validate(value)


def test_status_round_trips_as_the_api_server_stores_it() -> None:
    status = RolloutStatus.model_validate(
        {
            "phase": "RolledBack",
            "stableRevision": "abc",
            "rolledBackRevision": "def",
            "metrics": [{"name": "latencyP99", "verdict": "fail", "value": "NaN"}],
            "history": [
                {"revision": "abc", "started": "2026-01-01T00:00:00Z", "outcome": "Deployed"}
            ],
            "someFutureField": 1,
        }
    )
    assert status.metrics[0].value is None  # NaN is not JSON: "no value"
    again = RolloutStatus.model_validate(status.to_kube())
    assert again == status
    assert "someFutureField" not in status.to_kube()


# ------------------------------------------------------------------- CEL, as kubectl sees it


RULES = rules_in(model_schema(RolloutSpec)) + rules_in(model_schema(AutoscalingSpec))

# message prefix -> (self values accepted, self values refused), after defaulting
CASES: dict[str, tuple[list[Any], list[Any]]] = {
    "use either steps or stepWeight": (
        [{"steps": [10, 50]}, {"stepWeight": 5}, {}],
        [{"steps": [10], "stepWeight": 10}],
    ),
    "a step of 0 needs shadow": (
        [{"steps": [0, 50], "shadow": {"fraction": 0.1}}, {"steps": [5, 50]}, {}],
        [{"steps": [0, 50]}],
    ),
    "the last step must be above 0": (
        [{"steps": [0, 10], "shadow": {"fraction": 0.1}}, {"steps": [10]}, {}],
        [{"steps": [0], "shadow": {"fraction": 0.1}}],
    ),
    "steps must be strictly increasing": (
        [{}, {"steps": [5]}, {"steps": [5, 10, 100]}],
        [{"steps": [10, 10]}, {"steps": [50, 20]}, {"steps": [1, 3, 2]}],
    ),
    "trafficRouting gatewayAPI needs": (
        [
            {"trafficRouting": "replicas"},
            {"trafficRouting": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        ],
        [{"trafficRouting": "gatewayAPI"}],
    ),
    "interval must be at least 10s": (
        [{"interval": "10s"}, {"interval": "1m"}, {"interval": "1h30m"}],
        [{"interval": "9s"}, {"interval": "0s"}],
    ),
    "compare needs min or max": ([{"mode": "ratio", "max": 1.2}, {"min": 0}], [{"mode": "ratio"}]),
    "a metric without a query": (
        [
            {"name": "successRate"},
            {"name": "latencyP99"},
            {"name": "rewardRate"},
            {"name": "gpuUtilization"},
            {"name": "gpuMemoryUsed"},
            {"name": "gpuPowerUsage"},
            {"name": "x", "query": "q"},
        ],
        [{"name": "errors"}, {"name": "gpuTemperature"}],
    ),
    "a metric needs min, max or compare": (
        [
            {"name": "a", "min": 1},
            {"name": "a", "max": 1},
            {"name": "a", "compare": {"max": 1}},
            {"name": "rewardRate"},
        ],
        [{"name": "a"}, {"name": "rewardRate", "query": "q"}],
    ),
    "rewardRate is judged by margin and confidence": (
        [
            {"name": "rewardRate", "margin": 0.01},
            {"name": "rewardRate", "query": "q", "min": 0.05},
            {"name": "successRate", "min": 0.9},
        ],
        [
            {"name": "rewardRate", "min": 0.05},
            {"name": "rewardRate", "max": 0.05},
            {"name": "rewardRate", "compare": {"min": 0.9}},
        ],
    ),
    "margin and confidence apply to the built-in rewardRate only": (
        [{"name": "rewardRate", "margin": 0.05, "confidence": 0.99}, {"name": "a", "min": 1}],
        [
            {"name": "successRate", "min": 0.9, "margin": 0.02},
            {"name": "rewardRate", "query": "q", "min": 1, "confidence": 0.9},
        ],
    ),
    "successRate is a share": (
        [
            {"name": "successRate", "min": 0.99},
            {"name": "x", "query": "q", "min": 99},
            {"name": "latencyP99", "max": 200},
        ],
        [{"name": "successRate", "min": 99}, {"name": "successRate", "max": 1.5}],
    ),
    "minReplicas must not exceed maxReplicas": (
        [{"minReplicas": 1, "maxReplicas": 1}, {"minReplicas": 1, "maxReplicas": 9}],
        [{"minReplicas": 3, "maxReplicas": 2}],
    ),
    "a custom query needs mode builtin": (
        [{"mode": "builtin", "query": "sum(x)"}, {"mode": "hpa"}],
        [{"mode": "hpa", "query": "sum(x)"}],
    ),
    "a GPU signal needs target": (
        [{}, {"signal": "inFlight"}, {"signal": "gpuUtilization", "target": 70}],
        [{"signal": "gpuUtilization"}, {"signal": "gpuMemoryUsed"}],
    ),
    "use either signal or query": (
        [{"query": "q"}, {"signal": "inFlight", "query": "q"}, {"signal": "gpuPowerUsage"}],
        [{"signal": "gpuUtilization", "target": 70, "query": "q"}],
    ),
    "a GPU signal needs mode builtin": (
        [{"mode": "hpa"}, {"mode": "builtin", "signal": "gpuUtilization", "target": 1}],
        [{"mode": "hpa", "signal": "gpuUtilization", "target": 1}],
    ),
}


def _case_for(message: str) -> tuple[list[Any], list[Any]]:
    matches = [key for key in CASES if message.startswith(key)]
    assert matches, f"no test cases for the rule {message!r}"
    return CASES[matches[0]]


def test_every_rule_is_tested() -> None:
    assert {m for m in CASES} == {
        next(k for k in CASES if r["message"].startswith(k)) for _, r in RULES
    }


@pytest.mark.parametrize(
    ("path", "rule"), RULES, ids=[f"{p}:{r['message'][:30]}" for p, r in RULES]
)
def test_rule_accepts_good_and_refuses_bad(cel_eval: Any, path: str, rule: dict[str, Any]) -> None:
    assert_rule_cases(cel_eval, path, rule, *_case_for(rule["message"]))


def test_schema_is_structural_with_defaults() -> None:
    schema = model_schema(RolloutSpec)
    props = schema["properties"]
    assert props["interval"]["default"] == "60s"
    assert props["strategy"]["enum"] == ["canary", "rolling"]
    assert props["trafficRouting"]["enum"] == ["replicas", "gatewayAPI"]
    assert "gatewayAPI" in props
    assert props["analysis"]["properties"]["metrics"]["items"]["properties"]["onNoData"][
        "enum"
    ] == [
        "wait",
        "fail",
        "pass",
    ]
    assert "description" in props["failureThreshold"]
