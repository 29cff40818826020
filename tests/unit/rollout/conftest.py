"""CEL evaluation for the rollout/autoscaling schema rules (``tests.support.cel``: cel-python
plus the Kubernetes functions the rules use, e.g. ``isSorted()``)."""

from __future__ import annotations

import pytest

from tests.support.cel import CelEval, cel_evaluator


@pytest.fixture(scope="session")
def cel_eval() -> CelEval:
    """Evaluate one ``x-kubernetes-validations`` rule with ``self`` bound to a JSON value."""
    return cel_evaluator()
