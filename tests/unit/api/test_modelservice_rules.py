"""Every CEL rule of the ModelService CRD, evaluated on objects it must accept and refuse.

The rules are read from the generated CRD (not from the Python source), so what is tested
is exactly what `kubectl apply` will enforce. `test_every_rule_is_tested` fails when a
new rule appears without cases here.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlkube.api.modelservice import MODELSERVICE
from tests.support.cel import assert_rule_cases, crd_schema, rules_in

SCHEMA = crd_schema(MODELSERVICE)


RULES = rules_in(SCHEMA)

# message prefix -> (values the rule accepts, values it refuses). Values are `self` at the
# node that carries the rule, after the API server has applied defaults.
CASES: dict[str, tuple[list[Any], list[Any]]] = {
    # on metadata.name: `self` is the name
    "name must be a DNS-1035 label": (["recs", "a-1-b"], ["1recs", "Recs", "recs-", "re.cs"]),
    "name must be at most 56": (["a" * 56], ["a" * 57]),
    "version must be a valid label value": (
        ["v1", "2024-06-01", "v1.2_rc3", "A"],
        ["-v1", "v1.", "v 1", "v1/2", "v1:latest"],
    ),
    "format custom needs className": (
        [
            {"format": "bandit"},
            {"format": "custom", "className": "pkg.mod:Model"},
        ],
        [{"format": "custom"}],
    ),
    "bandit settings apply only to format bandit": (
        [{"format": "bandit", "bandit": {"priorAlpha": 2.0}}, {"format": "custom"}],
        [{"format": "custom", "bandit": {"priorAlpha": 2.0}}],
    ),
    "format onnx needs path": (
        [
            {"format": "onnx", "path": "/models/m.onnx"},
            {"format": "onnx", "storageUri": "s3://bkt/m.onnx"},
            {"format": "bandit"},
        ],
        [{"format": "onnx"}],
    ),
    "onnx settings apply only to format onnx": (
        [{"format": "onnx", "path": "/m.onnx", "onnx": {"graphOptimization": "basic"}}],
        [{"format": "bandit", "onnx": {"graphOptimization": "basic"}}],
    ),
    "storageUri needs a format that loads a model file": (
        [{"format": "custom", "storageUri": "s3://b/m"}, {"format": "bandit"}],
        [{"format": "bandit", "storageUri": "s3://b/m"}],
    ),
    "storage settings need storageUri": (
        [{"format": "custom", "storageUri": "s3://b/m", "storage": {}}, {"format": "custom"}],
        [{"format": "custom", "storage": {"sha256": "0" * 64}}],
    ),
    "storage.secretName holds S3 settings": (
        [
            {"storageUri": "s3://bkt/m", "storage": {"secretName": "s3"}},
            {"storageUri": "https://h/m", "storage": {"sha256": "0" * 64}},
        ],
        [
            {"storageUri": "https://h/m", "storage": {"secretName": "s3"}},
            {"storageUri": "pvc://claim/m", "storage": {"secretName": "s3"}},
        ],
    ),
    "storage.sha256 checks one file": (
        [{"storageUri": "s3://bkt/m.onnx", "storage": {"sha256": "0" * 64}}],
        [{"storageUri": "s3://bkt/models/", "storage": {"sha256": "0" * 64}}],
    ),
    "storageUri must be pvc://CLAIM/path": (
        [
            "pvc://models/mlp/model.onnx",
            "pvc://models",
            "https://example.com/m.onnx?token=x",
            "http://10.0.0.1:8000/m",
            "s3://my-bucket/mlp/model.onnx",
            "s3://my.bucket/prefix/",
        ],
        [
            "gs://bucket/m",
            "file:///models/m",
            "/models/m",
            "hdfs://nn/m",
            "pvc://Models/m",
            "pvc://models//m",
            "s3://B/m",
            "s3://ab/m",
            "https:///m",
            "https://h/m m",
        ],
    ),
    "uri needs a scheme": (
        ["s3://bucket/model", "file:///models/m", "gs://b/m", "hf+git://x"],
        ["/models/m", "bucket/model", "S3://bucket", "://x"],
    ),
    "a redis feature store needs redis.urlSecretRef": (
        [
            {"type": "memory"},
            {"type": "redis", "redis": {"urlSecretRef": {"name": "redis", "key": "url"}}},
        ],
        [{"type": "redis"}],
    ),
    "redis settings need type: redis": (
        [{"type": "memory"}, {"type": "redis", "redis": {"urlSecretRef": {"name": "r"}}}],
        [{"type": "memory", "redis": {"urlSecretRef": {"name": "r", "key": "url"}}}],
    ),
    "set value or valueFrom, not both": (
        [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {}}}, {"name": "C"}],
        [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {}}}],
    ),
    "env must not set the MLKUBE_* variables": (
        [[], [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "MLKUBE_LOG_FORMAT"}]],
        [
            [{"name": "A"}, {"name": "MLKUBE_REVISION", "value": "x"}],
            [{"name": "MLKUBE_PORT"}],
            [{"name": "MLKUBE_GRPC_PORT", "value": "9000"}],
        ],
    ),
    "grpcPort must differ from port": (
        [{"port": 8080, "grpcPort": 8081}, {"port": 8081, "grpcPort": 8080}],
        [{"port": 8081, "grpcPort": 8081}, {"port": 9000, "grpcPort": 9000}],
    ),
    "cpu limit must be at least the cpu request": (
        [
            {},
            {"requests": {"cpu": "500m"}},
            {"limits": {"cpu": 1}},
            {"requests": {"cpu": "500m"}, "limits": {"cpu": 1}},
            {"requests": {"cpu": 2}, "limits": {"cpu": "2000m"}},
            {"requests": {"memory": "1Gi"}, "limits": {"cpu": "1"}},
        ],
        [
            {"requests": {"cpu": 2}, "limits": {"cpu": "1500m"}},
            {"requests": {"cpu": "1.5"}, "limits": {"cpu": 1}},
        ],
    ),
    "memory limit must be at least the memory request": (
        [
            {"requests": {"memory": "1Gi"}, "limits": {"memory": "1024Mi"}},
            {"requests": {"memory": "1G"}, "limits": {"memory": "1Gi"}},
            {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
        ],
        [
            {"requests": {"memory": "1Gi"}, "limits": {"memory": "1G"}},
            {"requests": {"memory": "2Gi"}, "limits": {"memory": "1536Mi"}},
        ],
    ),
    "timeoutSeconds must not exceed periodSeconds": (
        [{}, {"timeoutSeconds": 5}, {"timeoutSeconds": 5, "periodSeconds": 5}],
        [{"timeoutSeconds": 6, "periodSeconds": 5}],
    ),
    "a toleration with operator Exists must not have a value": (
        [
            {"key": "k", "operator": "Exists"},
            {"key": "k", "operator": "Equal", "value": "v"},
            {"key": "k", "value": "v"},
        ],
        [{"key": "k", "operator": "Exists", "value": "v"}],
    ),
    "tolerationSeconds applies only to effect NoExecute": (
        [{"key": "k"}, {"key": "k", "effect": "NoExecute", "tolerationSeconds": 30}],
        [
            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 30},
            {"key": "k", "tolerationSeconds": 30},
        ],
    ),
    # spec.rollout / spec.autoscaling (mlkube.api.rollout; tested in depth in tests/unit/rollout)
    "use either steps or stepWeight": (
        [{"steps": [10, 50]}, {}],
        [{"steps": [10], "stepWeight": 10}],
    ),
    "steps must be strictly increasing": (
        [{"steps": [5, 10]}, {}],
        [{"steps": [10, 10]}, {"steps": [9, 3]}],
    ),
    "trafficRouting gatewayAPI needs": (
        [{"trafficRouting": "replicas"}, {"trafficRouting": "gatewayAPI", "gatewayAPI": {}}],
        [{"trafficRouting": "gatewayAPI"}],
    ),
    "interval must be at least 10s": (
        [{"interval": "10s"}, {"interval": "2m"}],
        [{"interval": "5s"}],
    ),
    "compare needs min or max": ([{"max": 1.2}], [{"mode": "ratio"}]),
    "a metric without a query": (
        [{"name": "latencyP99"}, {"name": "x", "query": "q"}],
        [{"name": "x"}],
    ),
    "a metric needs min, max or compare": ([{"name": "a", "max": 1}], [{"name": "a"}]),
    "a step of 0 needs shadow": (
        [{"steps": [0, 50], "shadow": {"fraction": 0.1}}],
        [{"steps": [0, 50]}],
    ),
    "the last step must be above 0": (
        [{"steps": [10]}],
        [{"steps": [0], "shadow": {"fraction": 0.1}}],
    ),
    "rewardRate is judged by margin and confidence": (
        [{"name": "rewardRate", "confidence": 0.99}],
        [{"name": "rewardRate", "min": 0.05}],
    ),
    "margin and confidence apply to the built-in rewardRate only": (
        [{"name": "rewardRate", "margin": 0.05}],
        [{"name": "latencyP99", "max": 200, "margin": 0.05}],
    ),
    "successRate is a share": (
        [{"name": "successRate", "min": 0.99}],
        [{"name": "successRate", "min": 99}],
    ),
    "minReplicas must not exceed maxReplicas": (
        [{"minReplicas": 1, "maxReplicas": 2}],
        [{"minReplicas": 3, "maxReplicas": 2}],
    ),
    "a custom query needs mode builtin": ([{"mode": "hpa"}], [{"mode": "hpa", "query": "sum(x)"}]),
    "a GPU signal needs target": (
        [{"signal": "gpuUtilization", "target": 70}],
        [{"signal": "gpuUtilization"}],
    ),
    "use either signal or query": (
        [{"query": "q"}],
        [{"signal": "gpuMemoryUsed", "target": 1, "query": "q"}],
    ),
    "a GPU signal needs mode builtin": (
        [{"signal": "gpuUtilization", "target": 1}],
        [{"mode": "hpa", "signal": "gpuUtilization", "target": 1}],
    ),
}


def _case_for(message: str) -> tuple[list[Any], list[Any]]:
    matches = [key for key in CASES if message.startswith(key)]
    assert matches, f"no test cases for the rule {message!r}"
    return CASES[matches[0]]


def test_every_rule_is_tested() -> None:
    messages = {r["message"] for _, r in RULES}
    assert len(messages) == len(CASES), sorted(messages)
    for message in messages:
        good, bad = _case_for(message)
        assert good, message
        assert bad, message


@pytest.mark.parametrize(
    ("path", "rule"), RULES, ids=[f"{p}:{r['message'][:40]}" for p, r in RULES]
)
def test_rule_accepts_good_and_refuses_bad(cel_eval: Any, path: str, rule: dict[str, Any]) -> None:
    assert_rule_cases(cel_eval, path, rule, *_case_for(rule["message"]))


def test_rules_carry_messages_people_can_read() -> None:
    for path, rule in RULES:
        assert len(rule["message"]) >= 20, (path, rule)
        assert rule["message"][0].islower() or rule["message"][0].isdigit(), (path, rule)


def test_name_rules_are_reported_at_metadata_name() -> None:
    """On the whole object the API server reports a failed rule at `<nil>`; on the name
    node it says `metadata.name: Invalid value: "<name>": <message>`."""
    at_name = {r["message"][:30] for p, r in RULES if p == "metadata.name"}
    assert at_name == {"name must be a DNS-1035 label ", "name must be at most 56 charac"}
    assert not [r for p, r in RULES if p == "<root>" and "metadata" in r["rule"]]


def test_field_paths_point_at_declared_fields() -> None:
    """The API server rejects a CRD whose fieldPath names an undeclared field."""

    def node_at(path: str) -> dict[str, Any]:
        node = SCHEMA
        for part in path.replace("[]", ".[]").split("."):
            if not part:
                continue
            node = node["items"] if part == "[]" else node["properties"][part]
        return node

    for path, rule in RULES:
        if "fieldPath" in rule:
            base = "" if path == "<root>" else path
            node_at(base + rule["fieldPath"])
