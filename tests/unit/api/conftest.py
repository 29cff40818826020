"""CEL evaluation and admission for the ModelService CRD rule tests (``tests.support.cel``
plays the API server)."""

from __future__ import annotations

import pytest

from mlkube.api.modelservice import MODELSERVICE
from tests.support.cel import Admit, CelEval, admission, cel_evaluator, crd_schema


@pytest.fixture(scope="session")
def cel_eval() -> CelEval:
    """Evaluate one `x-kubernetes-validations` rule with `self` bound to a JSON value."""
    return cel_evaluator()


@pytest.fixture(scope="session")
def admit(cel_eval: CelEval) -> Admit:
    """What `kubectl apply` would answer for a ModelService: [] or the error messages, each
    CEL message prefixed with the path of the node that carries the rule."""
    return admission(crd_schema(MODELSERVICE), cel_eval, rule_paths=True)
