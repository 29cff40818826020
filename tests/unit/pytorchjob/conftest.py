"""Fixtures for the PyTorchJob unit tests: a CEL admission check of the generated CRD
schema (cel-python evaluates the rules). The builders live in ``ptj_builders``."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import celpy
import pytest
from celpy import celtypes

sys.path.insert(0, str(Path(__file__).parent))

# ------------------------------------------------------------------------------ admission

CelEval = Callable[[str, Any], bool]


@pytest.fixture(scope="session")
def cel_eval() -> CelEval:
    env = celpy.Environment()
    cache: dict[str, Any] = {}

    def evaluate(expression: str, value: Any) -> bool:
        program = cache.get(expression)
        if program is None:
            program = env.program(env.compile(expression))
            cache[expression] = program
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, celtypes.BoolType), f"{expression} gave {result!r}"
        return bool(result)

    return evaluate


def _defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server applies it (only under existing parents)."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _defaults(child, value[name])
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in value:
            value[key] = _defaults(schema["additionalProperties"], value[key])
    if isinstance(value, list) and "items" in schema:
        value[:] = [_defaults(schema["items"], v) for v in value]
    return value


def _cel_errors(schema: dict[str, Any], value: Any, cel: CelEval) -> list[str]:
    errors = [
        r["message"]
        for r in schema.get("x-kubernetes-validations", [])
        if not cel(r["rule"], value)
    ]
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name in value:
                errors += _cel_errors(child, value[name], cel)
        if isinstance(schema.get("additionalProperties"), dict):
            for item in value.values():
                errors += _cel_errors(schema["additionalProperties"], item, cel)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            errors += _cel_errors(schema["items"], item, cel)
    return errors


Admit = Callable[[dict[str, Any]], list[str]]


@pytest.fixture(scope="session")
def crd_schema() -> dict[str, Any]:
    from mlkube.api.crdgen import build_crd
    from mlkube.api.pytorchjob import PYTORCHJOB

    schema: dict[str, Any] = build_crd(PYTORCHJOB)["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]
    return schema


@pytest.fixture(scope="session")
def admit(cel_eval: CelEval, crd_schema: dict[str, Any]) -> Admit:
    """What ``kubectl apply`` answers for a PyTorchJob: [] or the error messages.

    Defaulting, OpenAPI validation (jsonschema ignores the x-kubernetes-* keys), then every
    CEL rule at its node, the root ones seeing ``self.metadata.name``.
    """
    import jsonschema

    validator = jsonschema.Draft4Validator(crd_schema)

    def check(obj: dict[str, Any]) -> list[str]:
        obj = _defaults(crd_schema, copy.deepcopy(obj))
        errors = [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
        if errors:
            return errors
        return _cel_errors(crd_schema, obj, cel_eval)

    return check
