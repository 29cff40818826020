"""Circuit breaker transitions (pure)."""

from __future__ import annotations

from mlkube.serving.circuit import (
    Circuit,
    CircuitPolicy,
    CircuitState,
    admit,
    on_failure,
    on_success,
    retry_after,
)

POLICY = CircuitPolicy(failure_threshold=3, reset_timeout=2.0)


def test_opens_after_threshold_consecutive_failures() -> None:
    c = Circuit()
    for t in (0.0, 0.1):
        c = on_failure(c, POLICY, t)
        assert c.state is CircuitState.CLOSED
    c = on_failure(c, POLICY, 0.2)
    assert c.state is CircuitState.OPEN
    allowed, c2 = admit(c, POLICY, 1.0)
    assert not allowed
    assert c2 == c
    assert retry_after(c, POLICY, 1.0) == 2  # ceil(2.0 - 0.8)


def test_success_resets_the_failure_count() -> None:
    c = on_failure(on_failure(Circuit(), POLICY, 0.0), POLICY, 0.0)
    c = on_success(c)
    c = on_failure(c, POLICY, 0.0)
    assert c.state is CircuitState.CLOSED
    assert c.failures == 1


def test_half_open_lets_one_probe_through() -> None:
    c = Circuit(CircuitState.OPEN, 3, opened_at=0.0)
    allowed, c = admit(c, POLICY, 2.5)
    assert allowed
    assert c.state is CircuitState.HALF_OPEN
    allowed, _ = admit(c, POLICY, 2.6)
    assert not allowed
    assert on_success(c).state is CircuitState.CLOSED
    reopened = on_failure(c, POLICY, 2.7)
    assert reopened.state is CircuitState.OPEN
    assert reopened.opened_at == 2.7
    assert retry_after(Circuit(), POLICY, 0.0) == 1
