"""CEL admission of the generated CRD schemas, as the API server does it, for the unit tests.

cel-python implements the CEL language but not the Kubernetes extension libraries. The ones
our rules use are registered here with the API server's meaning:

* the quantity library (`quantity(s)`, `q.compareTo(other)`, `isQuantity(s)`, Kubernetes
  1.28+), backed by `mlkube.api.schema.parse_quantity`, which follows the same grammar (the
  regular expression the API server uses) and compares exact decimal values, as
  `resource.Quantity.Cmp` does;
* `isSorted()` from the lists library (Kubernetes 1.27+).

Everything else (has, matches, size, all, in, string(), duration()) is cel-python's own.
Registering a function no rule calls changes nothing, so every area evaluates with all of them.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import celpy
import jsonschema
from celpy import celtypes

from mlkube.api.crdgen import build_crd
from mlkube.api.schema import CustomResource, parse_quantity

JsonDict = dict[str, Any]
CelEval = Callable[..., bool]
"""``(expression, self)`` or, for a transition rule, ``(expression, self, oldSelf)``."""
Admit = Callable[[JsonDict], list[str]]


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


def cel_evaluator() -> CelEval:
    """Evaluate one `x-kubernetes-validations` rule with `self` bound to a JSON value
    (compiled programs are cached per expression)."""
    env = celpy.Environment()
    cache: dict[str, Any] = {}

    def evaluate(expression: str, value: Any, *old: Any) -> bool:
        program = cache.get(expression)
        if program is None:
            program = env.program(env.compile(expression), functions=KUBERNETES_FUNCTIONS)
            cache[expression] = program
        activation = {"self": celpy.json_to_cel(value)}
        if old:
            activation["oldSelf"] = celpy.json_to_cel(old[0])
        result = program.evaluate(activation)
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, celtypes.BoolType), f"{expression} gave {result!r}"
        return bool(result)

    return evaluate


def crd_schema(resource: CustomResource) -> JsonDict:
    """The openAPIV3Schema of the generated CRD of ``resource`` (its only version)."""
    schema: JsonDict = build_crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def rules_in(node: JsonDict, path: str = "") -> list[tuple[str, JsonDict]]:
    """Every CEL rule under ``node`` with where it sits (``a.b``, ``a[]``, ``a{}``;
    ``<root>`` for the node itself), in schema order."""
    found = [(path or "<root>", r) for r in node.get("x-kubernetes-validations", [])]
    for name, child in (node.get("properties") or {}).items():
        found += rules_in(child, f"{path}.{name}" if path else name)
    if "items" in node:
        found += rules_in(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += rules_in(node["additionalProperties"], f"{path}{{}}")
    return found


def apply_defaults(schema: JsonDict, value: Any) -> Any:
    """Structural defaulting as the API server applies it (only under existing parents)."""
    if isinstance(value, dict) and "properties" in schema:
        for name, child in schema["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(child, value[name])
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in value:
            value[key] = apply_defaults(schema["additionalProperties"], value[key])
    if isinstance(value, list) and "items" in schema:
        value[:] = [apply_defaults(schema["items"], v) for v in value]
    return value


def is_transition_rule(rule: JsonDict) -> bool:
    """A rule that reads ``oldSelf``: the API server runs it on updates only."""
    return "oldSelf" in rule["rule"]


def cel_errors(schema: JsonDict, value: Any, cel: CelEval, path: str | None = None) -> list[str]:
    """The messages of every rule that ``value`` breaks on create (transition rules do not
    run), each at its node; prefixed with
    ``<path>: `` when ``path`` is given (``""`` for the root)."""
    errors = [
        r["message"] if path is None else f"{path}: {r['message']}"
        for r in schema.get("x-kubernetes-validations", [])
        if not is_transition_rule(r) and not cel(r["rule"], value)
    ]
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name in value:
                where = None if path is None else f"{path}.{name}"
                errors += cel_errors(child, value[name], cel, where)
        if isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                where = None if path is None else f"{path}.{key}"
                errors += cel_errors(schema["additionalProperties"], item, cel, where)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            where = None if path is None else f"{path}[{i}]"
            errors += cel_errors(schema["items"], item, cel, where)
    return errors


def admission(schema: JsonDict, cel: CelEval, *, rule_paths: bool) -> Admit:
    """What `kubectl apply` answers for an object of ``schema``: [] or the error messages.

    Defaulting, OpenAPI validation (jsonschema understands the structural subset we emit;
    `x-kubernetes-*` keys are ignored by it), then every CEL rule at its node; with
    ``rule_paths`` a broken rule's message is prefixed with the path of its node.
    """
    validator = jsonschema.Draft4Validator(schema)

    def check(obj: JsonDict) -> list[str]:
        obj = apply_defaults(schema, copy.deepcopy(obj))
        errors = [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
        if errors:
            return errors
        return cel_errors(schema, obj, cel, "" if rule_paths else None)

    return check


def assert_rule_cases(
    cel: CelEval, path: str, rule: JsonDict, good: list[Any], bad: list[Any]
) -> None:
    """``rule`` accepts every value in ``good`` and refuses every value in ``bad``."""
    for value in good:
        assert cel(rule["rule"], value), f"{path}: refused {value!r}"
    for value in bad:
        assert not cel(rule["rule"], value), f"{path}: accepted {value!r}"
