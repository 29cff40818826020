"""The ``rewardRate`` analysis metric: is the canary's reward rate no worse than stable's?

Each revision's reward rate over the analysis window is a Beta-Binomial posterior: with ``n``
scored items that got feedback and ``s`` the sum of their rewards (rewards are in [0, 1]),
the rate is ``Beta(1 + s, 1 + n - s)`` (a uniform prior). The check asks one question of
the two posteriors, for a relative ``margin`` m and a ``confidence`` c:

    p = P(canary rate >= stable rate * (1 - m))

* ``p >= c``: pass (the canary is, with confidence c, not worse than stable by more than m);
* ``1 - p >= c``, i.e. P(canary rate < stable rate * (1 - m)) >= c: fail;
* otherwise wait: not enough evidence either way is never a pass.

Because c > 1/2, pass and fail cannot both hold. ``p`` is estimated by Monte Carlo with
exact Beta draws from libbetadist (:class:`mlkube.native.BetaSampler`), seeded from the
counts themselves so that the same data always give the same decision (a reconcile that
runs twice decides twice alike). With :data:`DRAWS` pairs the standard error of ``p`` is at
most 0.0016 (0.0007 near p = 0.95); the tests compare it with a numerical integration.

Everything here is pure; the counts come from the runtime's counters through
:func:`mlkube.operator.analysis.reward_queries`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mlkube.api.rollout import Verdict

DRAWS = 100_000
DEFAULT_MARGIN = 0.02
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class RewardCounts:
    """One revision's feedback in the window: items with feedback and their rewards' sum."""

    items: float
    rewards: float

    def clamped(self) -> RewardCounts:
        """Counts a Beta posterior accepts: ``increase()`` extrapolates, so neither count
        may be trusted to be at least zero, nor the rewards at most the items."""
        items = max(0.0, self.items)
        return RewardCounts(items, min(max(0.0, self.rewards), items))

    @property
    def alpha(self) -> float:
        return 1.0 + self.rewards

    @property
    def beta(self) -> float:
        return 1.0 + self.items - self.rewards

    @property
    def mean(self) -> float:
        """The posterior mean of the rate."""
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True)
class RewardJudgement:
    """One check: both posterior means, the probability and what it decides."""

    verdict: Verdict
    canary_mean: float
    stable_mean: float
    probability: float
    """P(canary rate >= stable rate * (1 - margin))."""


def draw_seed(canary: RewardCounts, stable: RewardCounts) -> int:
    """A seed that is a function of the data: the same counts, the same decision."""
    text = f"{canary.items!r}:{canary.rewards!r}:{stable.items!r}:{stable.rewards!r}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def probability_not_worse(
    canary: RewardCounts, stable: RewardCounts, margin: float, seed: int, draws: int = DRAWS
) -> float:
    """Monte Carlo estimate of P(canary rate >= stable rate * (1 - margin)).

    ``draws`` pairs of exact Beta draws from libbetadist, the canary's and the stable's from
    one seeded sampler (the same seed, the same estimate).
    """
    from mlkube.native import BetaSampler

    canary, stable = canary.clamped(), stable.clamped()
    sampler = BetaSampler(seed)
    alpha = np.empty(2 * draws, dtype=np.float64)
    beta = np.empty(2 * draws, dtype=np.float64)
    alpha[:draws], beta[:draws] = canary.alpha, canary.beta
    alpha[draws:], beta[draws:] = stable.alpha, stable.beta
    rates = sampler.sample(alpha, beta)
    return float(np.mean(rates[:draws] >= rates[draws:] * (1.0 - margin)))


def decide(probability: float, confidence: float) -> Verdict:
    """Pass, fail or wait on ``p = P(canary >= stable * (1 - margin))``."""
    if probability >= confidence:
        return Verdict.PASS
    if 1.0 - probability >= confidence:
        return Verdict.FAIL
    return Verdict.WAIT


def judge_reward(
    canary: RewardCounts,
    stable: RewardCounts,
    margin: float,
    confidence: float,
    draws: int = DRAWS,
) -> RewardJudgement:
    """The whole rule on one window's counts (pure: the seed comes from the counts)."""
    canary, stable = canary.clamped(), stable.clamped()
    p = probability_not_worse(canary, stable, margin, draw_seed(canary, stable), draws)
    return RewardJudgement(decide(p, confidence), canary.mean, stable.mean, p)
