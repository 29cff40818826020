"""CEL evaluation for the CRD rule tests.

cel-python implements the CEL language but not the Kubernetes extension libraries. The
one our rules use is the quantity library (`quantity(s)`, `q.compareTo(other)`,
`isQuantity(s)`, Kubernetes 1.28+): it is registered here backed by
`mlkube.api.schema.parse_quantity`, which follows the same grammar (the regular expression
the API server uses) and compares exact decimal values, as `resource.Quantity.Cmp` does.
Everything else (has, matches, size, all, in, string()) is cel-python's own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import celpy
import pytest
from celpy import celtypes

from mlkube.api.schema import parse_quantity


class _Quantity:
    def __init__(self, value: Decimal) -> None:
        self.value = value


def _quantity(text: Any) -> _Quantity:
    return _Quantity(parse_quantity(str(text)))


def _compare_to(left: _Quantity, right: _Quantity) -> celtypes.IntType:
    return celtypes.IntType((left.value > right.value) - (left.value < right.value))


def _is_quantity(text: Any) -> celtypes.BoolType:
    try:
        parse_quantity(str(text))
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _is_sorted(items: Any) -> celtypes.BoolType:
    """Kubernetes' lists library ``isSorted()`` (used by spec.rollout.steps)."""
    values = list(items)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


KUBERNETES_FUNCTIONS: dict[str, Any] = {
    "quantity": _quantity,
    "compareTo": _compare_to,
    "isQuantity": _is_quantity,
    "isSorted": _is_sorted,
}

CelEval = Callable[[str, Any], bool]


@pytest.fixture(scope="session")
def cel_eval() -> CelEval:
    """Evaluate one `x-kubernetes-validations` rule with `self` bound to a JSON value."""
    env = celpy.Environment()
    cache: dict[str, Any] = {}

    def evaluate(expression: str, value: Any) -> bool:
        program = cache.get(expression)
        if program is None:
            program = env.program(env.compile(expression), functions=KUBERNETES_FUNCTIONS)
            cache[expression] = program
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, celtypes.BoolType), f"{expression} gave {result!r}"
        return bool(result)

    return evaluate


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: only where the parent exists."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = child["default"]
            if name in value:
                value[name] = _apply_defaults(child, value[name])
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in value:
            value[key] = _apply_defaults(schema["additionalProperties"], value[key])
    elif isinstance(value, list) and "items" in schema:
        value[:] = [_apply_defaults(schema["items"], v) for v in value]
    return value


def _cel_errors(schema: dict[str, Any], value: Any, path: str, cel: CelEval) -> list[str]:
    errors = [
        f"{path}: {r['message']}"
        for r in schema.get("x-kubernetes-validations", [])
        if not cel(r["rule"], value)
    ]
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                errors += _cel_errors(child, value[name], f"{path}.{name}", cel)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]", cel)
    return errors


Admit = Callable[[dict[str, Any]], list[str]]


@pytest.fixture(scope="session")
def admit(cel_eval: CelEval) -> Admit:
    """What `kubectl apply` would answer for a ModelService: [] or the error messages.

    Defaulting, OpenAPI validation (jsonschema understands the structural subset we emit;
    `x-kubernetes-*` keys are ignored by it) and then every CEL rule at its node.
    """
    import copy

    import jsonschema

    from mlkube.api.crdgen import build_crd
    from mlkube.api.modelservice import MODELSERVICE

    schema = build_crd(MODELSERVICE)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(schema)

    def check(obj: dict[str, Any]) -> list[str]:
        obj = _apply_defaults(schema, copy.deepcopy(obj))
        errors = [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
        if errors:
            return errors
        return _cel_errors(schema, obj, "", cel_eval)

    return check
