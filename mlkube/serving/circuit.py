"""A circuit breaker around the feature store: pure state transitions plus a thin holder.

When Redis is down every call would otherwise wait for a socket timeout; the breaker turns
that into an immediate "unavailable" after ``failure_threshold`` consecutive failures, lets a
single probe through after ``reset_timeout``, and closes again on the first success, so the
server recovers by itself when Redis returns.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace


class CircuitState(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    failure_threshold: int = 3
    reset_timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class Circuit:
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False


def admit(circuit: Circuit, policy: CircuitPolicy, now: float) -> tuple[bool, Circuit]:
    """May a call go to the store now? Returns the decision and the next state."""
    if circuit.state is CircuitState.CLOSED:
        return True, circuit
    if circuit.state is CircuitState.OPEN:
        if now - circuit.opened_at >= policy.reset_timeout:
            return True, replace(circuit, state=CircuitState.HALF_OPEN, probing=True)
        return False, circuit
    # HALF_OPEN: one probe at a time.
    if circuit.probing:
        return False, circuit
    return True, replace(circuit, probing=True)


def on_success(circuit: Circuit) -> Circuit:
    return Circuit()


def on_failure(circuit: Circuit, policy: CircuitPolicy, now: float) -> Circuit:
    failures = circuit.failures + 1
    if circuit.state is CircuitState.HALF_OPEN or failures >= policy.failure_threshold:
        return Circuit(CircuitState.OPEN, failures, now, False)
    return replace(circuit, failures=failures)


def retry_after(circuit: Circuit, policy: CircuitPolicy, now: float) -> int:
    """Whole seconds a client should wait before retrying (Retry-After), at least 1."""
    if circuit.state is CircuitState.OPEN:
        return max(1, math.ceil(policy.reset_timeout - (now - circuit.opened_at)))
    return 1


class Breaker:
    """Holds the current :class:`Circuit`; single event loop, so no locking is needed."""

    def __init__(self, policy: CircuitPolicy) -> None:
        self.policy = policy
        self.circuit = Circuit()

    @property
    def state(self) -> CircuitState:
        return self.circuit.state

    def admit(self, now: float) -> bool:
        allowed, self.circuit = admit(self.circuit, self.policy, now)
        return allowed

    def success(self) -> None:
        self.circuit = on_success(self.circuit)

    def failure(self, now: float) -> None:
        self.circuit = on_failure(self.circuit, self.policy, now)

    def retry_after(self, now: float) -> int:
        return retry_after(self.circuit, self.policy, now)
