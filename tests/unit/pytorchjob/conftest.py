"""Fixtures for the PyTorchJob unit tests: a CEL admission check of the generated CRD
schema (``tests.support.cel`` plays the API server). The builders live in ``ptj_builders``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from mlkube.api.pytorchjob import PYTORCHJOB
from tests.support.cel import Admit, CelEval, admission, cel_evaluator
from tests.support.cel import crd_schema as build_crd_schema

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def cel_eval() -> CelEval:
    return cel_evaluator()


@pytest.fixture(scope="session")
def crd_schema() -> dict[str, Any]:
    return build_crd_schema(PYTORCHJOB)


@pytest.fixture(scope="session")
def admit(cel_eval: CelEval, crd_schema: dict[str, Any]) -> Admit:
    """What ``kubectl apply`` answers for a PyTorchJob: [] or the error messages.

    Defaulting, OpenAPI validation, then every CEL rule at its node (rules under
    ``pytorchReplicaSpecs`` too), the root ones seeing ``self.metadata.name``.
    """
    return admission(crd_schema, cel_eval, rule_paths=False)
