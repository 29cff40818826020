"""ModelService manifests: the examples are accepted, mistakes are refused with a message.

`admit` (conftest) plays the API server: defaulting, the OpenAPI schema, the CEL rules.
The pydantic side must agree with it (the operator parses what the server accepted).
"""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mlkube.api.modelservice import ModelService, ModelServiceSpec, spec_problems
from mlkube.api.schema import parse_quantity

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("modelservice-*.yaml"))

BASE: dict[str, Any] = {
    "apiVersion": "mlkube.dev/v1alpha1",
    "kind": "ModelService",
    "metadata": {"name": "recs", "namespace": "ml"},
    "spec": {"model": {"name": "ranker", "version": "v1"}},
}


def with_spec(**spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    obj["spec"].update(spec)
    return obj


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_admitted_and_parse(admit: Any, path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    assert admit(obj) == []
    ms = ModelService.model_validate(obj)
    assert spec_problems(ms.spec) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"replicas": -1}, "spec.replicas: -1 is less than the minimum of 0"),
        ({"gpu": {"count": -1}}, "spec.gpu.count: -1 is less than the minimum of 0"),
        ({"runtime": {"port": 80}}, "spec.runtime.port: 80 is less than the minimum of 1024"),
        ({"runtime": {"port": 70000}}, "spec.runtime.port: 70000 is greater than the maximum"),
        ({"featureStore": {"type": "cassandra"}}, "'cassandra' is not one of ['memory', 'redis']"),
        ({"featureStore": {"type": "redis"}}, "a redis feature store needs redis.urlSecretRef"),
        (
            {"runtime": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}},
            "cpu limit must be at least the cpu request",
        ),
        (
            {"runtime": {"resources": {"requests": {"memory": "two gigs"}}}},
            "spec.runtime.resources.requests.memory: 'two gigs' does not match",
        ),
        (
            {"runtime": {"env": [{"name": "MLKUBE_REDIS_URL", "value": "redis://x"}]}},
            "env must not set the MLKUBE_* variables",
        ),
        (
            {"gpu": {"count": 1, "resourceName": "gpu"}},
            "spec.gpu.resourceName: 'gpu' does not match",
        ),
        ({"probes": {"liveness": {"path": "healthz"}}}, "spec.probes.liveness.path: 'healthz'"),
    ],
)
def test_mistakes_are_refused_with_a_message(
    admit: Any, spec: dict[str, Any], message: str
) -> None:
    errors = admit(with_spec(**spec))
    assert any(message in e for e in errors), errors


def test_the_model_block_is_required(admit: Any) -> None:
    obj = copy.deepcopy(BASE)
    del obj["spec"]["model"]
    assert any("'model' is a required property" in e for e in admit(obj))


def test_custom_format_needs_a_class(admit: Any) -> None:
    obj = with_spec(model={"name": "m", "version": "v1", "format": "custom"})
    assert admit(obj) == [".spec.model: format custom needs className (the module:Class to load)"]


def test_names_that_cannot_name_a_service_are_refused(admit: Any) -> None:
    obj = copy.deepcopy(BASE)
    obj["metadata"]["name"] = "2fast"
    assert any("DNS-1035" in e for e in admit(obj))
    obj["metadata"]["name"] = "a" * 57
    assert any("at most 56 characters" in e for e in admit(obj))


def test_pydantic_applies_the_same_defaults_as_the_schema() -> None:
    spec = ModelServiceSpec.model_validate(BASE["spec"])
    assert spec.replicas == 1
    assert spec.gpu.count == 0
    assert spec.gpu.resource_name == "nvidia.com/gpu"
    assert spec.feature_store.type == "memory"
    assert spec.runtime.port == 8080
    assert spec.model.format == "bandit"


def test_pydantic_refuses_what_the_schema_refuses() -> None:
    with pytest.raises(ValidationError, match="replicas"):
        ModelServiceSpec.model_validate({**BASE["spec"], "replicas": -1})
    with pytest.raises(ValidationError, match="not a Kubernetes quantity"):
        ModelServiceSpec.model_validate(
            {**BASE["spec"], "runtime": {"resources": {"limits": {"cpu": "lots"}}}}
        )


def test_round_trip_uses_kubernetes_field_names() -> None:
    spec = ModelServiceSpec.model_validate(
        {
            **BASE["spec"],
            "featureStore": {"type": "redis", "redis": {"urlSecretRef": {"name": "r"}}},
            "runtime": {"resources": {"limits": {"cpu": 2}}},
        }
    )
    out = spec.to_kube()
    assert out["featureStore"]["redis"]["urlSecretRef"] == {"name": "r", "key": "url"}
    assert out["runtime"]["resources"]["limits"] == {"cpu": "2"}
    assert "affinity" not in out  # None is left out, not written as null


def test_spec_problems_repeat_the_cross_field_rules() -> None:
    spec = ModelServiceSpec.model_validate(
        {
            "model": {"name": "m", "version": "v1", "format": "custom"},
            "featureStore": {"type": "redis"},
            "runtime": {
                "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1G"}},
                "env": [{"name": "MLKUBE_REVISION", "value": "x"}],
                "port": 8081,
            },
        }
    )
    problems = spec_problems(spec)
    assert problems == [
        "runtime.resources: memory limit 1G is below the request 1Gi",
        "featureStore: type redis needs redis.urlSecretRef",
        "model: format custom needs className",
        "runtime: grpcPort must differ from port (8081): the runtime listens on both",
        "runtime.env: the operator sets MLKUBE_REVISION itself",
    ]
    onnx = ModelServiceSpec.model_validate(
        {"model": {"name": "m", "version": "1", "format": "onnx"}}
    )
    assert spec_problems(onnx) == ["model: format onnx needs path or storageUri"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        (2, Decimal(2)),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("1.5Mi", Decimal(3 * 2**19)),
        ("1e3", Decimal(1000)),
        ("100n", Decimal("1e-7")),
    ],
)
def test_parse_quantity(text: Any, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1.2.3", "1gi", "Gi", "1 Gi", "ten"])
def test_parse_quantity_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)
