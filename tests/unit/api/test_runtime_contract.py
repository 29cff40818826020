"""The one contract between the halves (DESIGN.md, principle 7), proven at the boundaries.

Every ModelService field that the operator turns into runtime configuration is set to each
boundary the generated CRD allows (minimum, maximum, every enum value, the default, the
shortest and longest string); the object must pass admission (`admit` plays the API
server), and the env that `build_env` writes must load in the runtime's own `load_config`,
the call `mlkube serve` makes. A CRD that accepts what the runtime refuses (a pod that
crash-loops) fails here.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import pytest

from mlkube.api.modelservice import (
    MODELSERVICE,
    RESERVED_ENV,
    ModelService,
    ModelServiceSpec,
    spec_problems,
)
from mlkube.operator.builders import build_env
from mlkube.serving.config import (
    ENV_VARS,
    MODEL_NAME_PATTERN,
    field_bounds,
    field_choices,
    load_config,
)
from tests.support.cel import crd_schema

SCHEMA = crd_schema(MODELSERVICE)
SPEC = SCHEMA["properties"]["spec"]

# Spec field (as in the CRD) -> the runtime field its variable sets. Written out here on
# purpose: `test_mapping_is_the_apis` checks the API declares the same.
MAPPED: dict[str, tuple[str, ...]] = {
    "model.name": ("model", "name"),
    "model.version": ("model", "version"),
    "model.format": ("model", "format"),
    "model.className": ("model", "class"),
    "model.uri": ("model", "uri"),
    "model.path": ("model", "path"),
    "model.onnx.graphOptimization": ("onnx", "graph_optimization"),
    "model.onnx.intraOpThreads": ("onnx", "intra_op_threads"),
    "batching.maxBatchSize": ("batching", "max_batch_size"),
    "model.bandit.priorAlpha": ("bandit", "prior_alpha"),
    "model.bandit.priorBeta": ("bandit", "prior_beta"),
    "model.bandit.maxItems": ("bandit", "max_items"),
    "featureStore.type": ("feature_store", "kind"),
    "runtime.workers": ("server", "workers"),
    "runtime.port": ("server", "port"),
    "runtime.grpcPort": ("server", "grpc_port"),
}

# Where the API is stricter than the runtime on purpose (CRD keys); never looser.
STRICTER: dict[str, dict[str, Any]] = {
    "model.bandit.priorAlpha": {"maximum": 1e6},
    "model.bandit.priorBeta": {"maximum": 1e6},
    "model.className": {"maxLength": 253},
    "model.uri": {"maxLength": 2048},
    "model.path": {"maxLength": 1024},
    "model.onnx.intraOpThreads": {"maximum": 64},
    "runtime.workers": {"maximum": 64},
    "runtime.port": {"minimum": 1024},
    "runtime.grpcPort": {"minimum": 1024},
}

# Strings cannot be made up from a pattern; these are the shortest and longest valid ones
# (`test_string_cases_reach_the_bounds` checks they reach the schema's lengths).
STRINGS: dict[str, list[str]] = {
    "model.name": ["a", "a" + "-._" * 20 + "b", "A" * 63],
    "model.version": ["1", "v" * 63],
    "model.className": ["m:C", "pkg.mod:Model", "p" * 200 + "." + "q" * 50 + ":C"],
    "model.uri": ["s3://b", "s3://" + "b" * 2043],
    "model.path": ["/", "/" + "m" * 1023],
}

BOUND_KEYS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
)


def node(spec_path: str) -> dict[str, Any]:
    found = SPEC
    for key in spec_path.split("."):
        found = found["properties"][key]
    return found


def boundaries(spec_path: str) -> list[Any]:
    """The values at the edges of what the CRD accepts for one field, and its default."""
    schema = node(spec_path)
    values: list[Any] = list(schema.get("enum", []))
    if schema["type"] in ("integer", "number"):
        step = (
            (lambda x, to: x + (1 if to > x else -1))
            if schema["type"] == "integer"
            else math.nextafter
        )
        if "minimum" in schema:
            low = schema["minimum"]
            values.append(step(low, math.inf) if schema.get("exclusiveMinimum") else low)
        if "maximum" in schema:
            high = schema["maximum"]
            values.append(step(high, -math.inf) if schema.get("exclusiveMaximum") else high)
    if schema["type"] == "string" and not values:
        values += STRINGS[spec_path]
    if "default" in schema:
        values.append(schema["default"])
    return values


def spec_with(spec_path: str, value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"name": "ranker", "version": "v1"}}
    target = spec
    *parents, leaf = spec_path.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    target[leaf] = value
    if spec_path == "model.className" or (spec_path, value) == ("model.format", "custom"):
        spec["model"]["format"] = "custom"
        spec["model"].setdefault("className", "pkg.mod:Model")
    if spec_path in ("model.path", "model.onnx.graphOptimization", "model.onnx.intraOpThreads") or (
        (spec_path, value) == ("model.format", "onnx")
    ):
        spec["model"]["format"] = "onnx"
        spec["model"].setdefault("path", "/models/m.onnx")
    if (spec_path, value) == ("featureStore.type", "redis"):
        spec["featureStore"]["redis"] = {"urlSecretRef": {"name": "redis"}}
    return spec


def runtime_value(config: Any, path: tuple[str, ...]) -> Any:
    tree = config.model_dump(by_alias=True)
    for key in path:
        tree = tree[key]
    return tree


CASES = [(p, v) for p in MAPPED for v in boundaries(p)]


@pytest.mark.parametrize(("spec_path", "value"), CASES, ids=[f"{p}={v!r:.20}" for p, v in CASES])
def test_every_admitted_boundary_starts_a_runtime(admit: Any, spec_path: str, value: Any) -> None:
    obj = {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "recs", "namespace": "ml", "uid": "u-1"},
        "spec": spec_with(spec_path, value),
    }
    assert admit(obj) == [], "the case itself must be one the API server accepts"
    env = build_env(ModelService.model_validate(obj), "0123456789")
    # Literal values only: a valueFrom (the Redis URL's Secret) is resolved by the kubelet.
    values = {e["name"]: e["value"] for e in env if "value" in e}
    config = load_config({}, values)  # raises ConfigError where the pod would crash-loop
    assert runtime_value(config, MAPPED[spec_path]) == value


def test_mapping_is_the_apis() -> None:
    from mlkube.api.contract import RUNTIME_FIELDS

    assert RUNTIME_FIELDS == MAPPED


def test_string_cases_reach_the_bounds() -> None:
    for spec_path, values in STRINGS.items():
        schema = node(spec_path)
        lengths = {len(v) for v in values}
        if "minLength" in schema:
            assert schema["minLength"] in lengths, spec_path
        assert schema["maxLength"] in lengths, spec_path


def _schema_bounds(runtime: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, value in runtime.items():
        key = {
            "ge": "minimum",
            "gt": "minimum",
            "le": "maximum",
            "lt": "maximum",
            "min_length": "minLength",
            "max_length": "maxLength",
        }[kind]
        out[key] = value
        if kind == "gt":
            out["exclusiveMinimum"] = True
        if kind == "lt":
            out["exclusiveMaximum"] = True
    return out


@pytest.mark.parametrize("spec_path", list(MAPPED))
def test_crd_bounds_are_the_runtimes(spec_path: str) -> None:
    """The CRD's bounds equal the runtime's, except the listed stricter ones."""
    schema = node(spec_path)
    runtime = _schema_bounds(field_bounds(MAPPED[spec_path]))
    expected = dict(runtime)
    for key, value in STRICTER.get(spec_path, {}).items():
        if key in ("minimum", "minLength"):
            assert key not in runtime or value >= runtime[key], f"{spec_path}: {key} looser"
            expected.pop("exclusiveMinimum", None)
        else:
            assert key not in runtime or value <= runtime[key], f"{spec_path}: {key} looser"
            expected.pop("exclusiveMaximum", None)
        expected[key] = value
    assert {k: schema[k] for k in BOUND_KEYS if k in schema} == expected
    choices = field_choices(MAPPED[spec_path])
    if "enum" in schema or choices is not None:
        assert set(schema["enum"]) == set(choices or ())


def test_a_looser_bound_is_refused_when_the_api_is_imported() -> None:
    from mlkube.api.contract import RUNTIME_FIELDS, runtime_bounds

    with pytest.raises(ValueError, match="looser than the runtime"):
        runtime_bounds("x.maxItems", ("bandit", "max_items"), le=10_000_000)
    with pytest.raises(ValueError, match="looser than the runtime"):
        runtime_bounds("x.priorAlpha", ("bandit", "prior_alpha"), ge=0)  # runtime: gt=0
    assert "x.maxItems" not in RUNTIME_FIELDS
    assert runtime_bounds("x.port", ("server", "port"), ge=1024).as_dict() == {
        "ge": 1024,
        "le": 65535,
    }
    RUNTIME_FIELDS.pop("x.port")


def test_model_name_pattern_is_the_runtimes() -> None:
    assert node("model.name")["pattern"] == MODEL_NAME_PATTERN


def test_env_names_come_from_the_runtime() -> None:
    assert set(RESERVED_ENV) <= set(ENV_VARS)
    obj = ModelService.model_validate(
        {"metadata": {"name": "r", "namespace": "ml"}, "spec": spec_with("model.uri", "s3://b")}
    )
    names = {e["name"] for e in build_env(obj, "r") if e["name"].startswith("MLKUBE_")}
    assert names <= set(ENV_VARS)


def test_every_variable_the_operator_sets_is_reserved() -> None:
    """What build_env writes from the spec (MLKUBE_HOST included) cannot also come from
    runtime.env: two values for one setting would make the pod disagree with the spec."""
    obj = ModelService.model_validate(
        {
            "metadata": {"name": "r", "namespace": "ml"},
            "spec": {
                **spec_with("model.uri", "s3://b"),
                "featureStore": {
                    "type": "redis",
                    "redis": {"urlSecretRef": {"name": "s", "key": "url"}},
                },
                "runtime": {"workers": 2},
                "batching": {"maxBatchSize": 8},
            },
        }
    )
    names = {e["name"] for e in build_env(obj, "r") if e["name"].startswith("MLKUBE_")}
    assert names <= set(RESERVED_ENV), sorted(names - set(RESERVED_ENV))


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("MLKUBE_LOG_LEVEL", "bogus", "server.log_level (from MLKUBE_LOG_LEVEL)"),
        ("MLKUBE_MAX_BODY_BYTES", "-1", "(from MLKUBE_MAX_BODY_BYTES)"),
        ("MLKUBE_NATIVE_PATH", "perhaps", "(from MLKUBE_NATIVE_PATH)"),
    ],
)
def test_a_runtime_setting_in_env_that_the_runtime_refuses_is_a_spec_problem(
    name: str, value: str, problem: str
) -> None:
    """Not a crash-looping pod: the operator refuses it with the runtime's own message."""
    spec = ModelServiceSpec.model_validate(
        {**spec_with("model.name", "m"), "runtime": {"env": [{"name": name, "value": value}]}}
    )
    (found,) = spec_problems(spec)
    assert found.startswith("runtime.env: ")
    assert problem in found


def test_runtime_settings_in_env_that_the_runtime_takes_start_a_runtime() -> None:
    env = [
        {"name": "MLKUBE_LOG_LEVEL", "value": "DEBUG"},
        {"name": "MLKUBE_MAX_BODY_BYTES", "value": "1048576"},
        {"name": "MLKUBE_NATIVE_PATH", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
        {"name": "OTHER", "value": "anything"},
    ]
    body = {"metadata": {"name": "r", "namespace": "ml"}, "spec": {**spec_with("model.name", "m")}}
    body["spec"]["runtime"] = {"env": env}
    obj = ModelService.model_validate(body)
    assert spec_problems(obj.spec) == []
    written = {e["name"]: e["value"] for e in build_env(obj, "r") if "value" in e}
    config = load_config(env=written)
    assert config.server.log_level == "DEBUG"


def test_the_contract_is_cheap_to_import() -> None:
    """The operator imports the runtime's settings; not numpy, aiohttp, gRPC or the C path."""
    code = (
        "import sys, mlkube.serving.config, mlkube.api.modelservice, mlkube.operator.builders;"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'numpy', 'aiohttp', 'grpc', 'cffi', 'redis', 'orjson'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"
