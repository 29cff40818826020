"""Every CEL rule of the PyTorchJob CRD, evaluated on a value it accepts and one it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from mlkube.api.pytorchjob import MANAGED_BY_IMMUTABLE, PYTORCHJOB
from tests.support.cel import crd_schema, is_transition_rule, rules_in

W = {"replicas": 2, "template": {}, "restartPolicy": "OnFailure"}
M = {"replicas": 1, "template": {}, "restartPolicy": "OnFailure"}

# rule expression -> (a value it accepts, a value it refuses), both at the rule's node.
CASES: dict[str, tuple[Any, Any]] = {
    # the name rules sit on metadata.name: `self` is the name
    "self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')": ("mnist-2", "MNIST"),
    "self.size() <= 63": ("a" * 63, "a" * 64),
    "!has(self.elasticPolicy) || (has(self.pytorchReplicaSpecs) "
    "&& 'Worker' in self.pytorchReplicaSpecs)": (
        {"elasticPolicy": {}, "pytorchReplicaSpecs": {"Worker": W}},
        {"elasticPolicy": {}, "pytorchReplicaSpecs": {"Master": M}},
    ),
    "!(has(self.nprocPerNode) && has(self.elasticPolicy) && has(self.elasticPolicy.nProcPerNode))": (
        {"nprocPerNode": "2", "elasticPolicy": {}},
        {"nprocPerNode": "2", "elasticPolicy": {"nProcPerNode": 2}},
    ),
    "self.all(k, k == 'Master' || k == 'Worker')": ({"Master": M, "Worker": W}, {"Chief": M}),
    "'Master' in self || 'Worker' in self": ({"Worker": W}, {}),
    "!('Master' in self) || (has(self.Master.replicas) && self.Master.replicas == 1)": (
        {"Master": M},
        {"Master": {"template": {}}},  # Kubeflow's webhook requires replicas on the Master
    ),
    "'Master' in self || !('Worker' in self) || !has(self.Worker.replicas) "
    "|| self.Worker.replicas >= 1": (
        {"Master": M, "Worker": {**W, "replicas": 0}},
        {"Worker": {**W, "replicas": 0}},
    ),
    "self.exists(c, has(c.name) && c.name == 'pytorch')": (
        [{"name": "sidecar", "image": "x"}, {"name": "pytorch", "image": "y"}],
        [{"name": "main", "image": "x"}],
    ),
    "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas": (
        {"minReplicas": 2, "maxReplicas": 2},
        {"minReplicas": 3, "maxReplicas": 2},
    ),
}


MK = {"runPolicy": {"managedBy": "kueue.x-k8s.io/multikueue"}}
KF = {"runPolicy": {"managedBy": "kubeflow.org/training-operator"}}
# transition rules: (new, old) pairs it accepts, and pairs it refuses
TRANSITION_CASES: dict[str, tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]] = {
    MANAGED_BY_IMMUTABLE["rule"]: (
        [({}, {}), (MK, MK), ({"runPolicy": {}}, {}), (KF, KF)],
        [(MK, {}), ({}, MK), (KF, MK), ({"runPolicy": {}}, KF), (MK, {"runPolicy": {}})],
    ),
}

ALL_RULES = [rule for _, rule in rules_in(crd_schema(PYTORCHJOB))]
RULES = [rule for rule in ALL_RULES if not is_transition_rule(rule)]


def test_every_rule_has_a_case() -> None:
    assert {r["rule"] for r in RULES} == set(CASES)
    assert {r["rule"] for r in ALL_RULES if is_transition_rule(r)} == set(TRANSITION_CASES)


@pytest.mark.parametrize("expression", list(TRANSITION_CASES))
def test_transition_rule(cel_eval: Any, expression: str) -> None:
    good, bad = TRANSITION_CASES[expression]
    for new, old in good:
        assert cel_eval(expression, new, old) is True, (new, old)
    for new, old in bad:
        assert cel_eval(expression, new, old) is False, (new, old)


@pytest.mark.parametrize("rule", RULES, ids=[r["message"][:40] for r in RULES])
def test_rule_accepts_good_and_refuses_bad(cel_eval: Any, rule: dict[str, Any]) -> None:
    good, bad = CASES[rule["rule"]]
    assert cel_eval(rule["rule"], good) is True
    assert cel_eval(rule["rule"], bad) is False
    assert len(rule["message"]) > 20  # a sentence a person can act on


# Values with keys missing that a rule may read: each rule must answer true or false on
# every one of them, never fail to evaluate (kubectl would print "no such key: Worker
# evaluating rule: ..." next to, or instead of, the message a person can act on).
MISSING_KEYS: list[Any] = [
    {},
    {"Master": {"template": {}}},
    {"Worker": {"template": {}}},
    {"Master": {"template": {}}, "Worker": {"template": {}}},
    {"elasticPolicy": {}},
    {"pytorchReplicaSpecs": {}},
    {"nprocPerNode": "2"},
    [{"image": "x"}],
    [],
]


def _evaluates(cel_eval: Any, expression: str, value: Any) -> bool:
    """False when the value's shape cannot reach this rule's node (a list for an object
    rule and so on), else evaluate: an evaluation error fails the test."""
    is_list_rule = expression.startswith("self.exists(")
    if isinstance(value, list) != is_list_rule:
        return False
    cel_eval(expression, value)
    return True


@pytest.mark.parametrize("rule", RULES, ids=[r["message"][:40] for r in RULES])
def test_no_rule_fails_on_missing_keys(cel_eval: Any, rule: dict[str, Any]) -> None:
    if rule["rule"].startswith("self.matches(") or rule["rule"].startswith("self.size()"):
        return  # the name rules: `self` is a string the API server always sets
    reached = [_evaluates(cel_eval, rule["rule"], value) for value in MISSING_KEYS]
    assert any(reached)
