"""CEL evaluation for the rollout/autoscaling schema rules.

cel-python implements CEL itself; the rules here also use two things from Kubernetes'
CEL environment: the standard ``duration()`` (cel-python has it) and ``isSorted()`` from
Kubernetes' lists library (Kubernetes 1.27+), registered here with the same meaning.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import celpy
import pytest
from celpy import celtypes


def _is_sorted(items: Any) -> celtypes.BoolType:
    values = list(items)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


CelEval = Callable[[str, Any], bool]


@pytest.fixture(scope="session")
def cel_eval() -> CelEval:
    """Evaluate one ``x-kubernetes-validations`` rule with ``self`` bound to a JSON value."""
    env = celpy.Environment()
    cache: dict[str, Any] = {}

    def evaluate(expression: str, value: Any) -> bool:
        program = cache.get(expression)
        if program is None:
            program = env.program(env.compile(expression), functions={"isSorted": _is_sorted})
            cache[expression] = program
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, celtypes.BoolType), f"{expression} gave {result!r}"
        return bool(result)

    return evaluate
