"""Distribution of BetaSampler's draws against scipy.stats.beta.

Fixed seeds keep every test deterministic; each pair runs on every backend the CPU has.
For tiny shapes a large share of the exact values lies below the smallest double or within
half an ulp of 1, so the sample has atoms at 0 and 1.  The KS statistic below is taken
against the CDF of the *rounded* variable (scipy's CDF with those atoms) -- the continuous
KS distribution then gives a conservative p-value.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from scipy import special, stats

from mlkube.native import BetaSampler

N = 20_000
# Half the smallest subnormal, and the midpoint between 1 - 2^-53 and 1: the rounding edges.
_TINY_EDGE = 2.0**-1075
_ONE_EDGE = 2.0**-54

PAIRS = [
    (1e-3, 1e-3),  # both tiny: Johnk in log space, atoms at 0 and 1
    (1e-3, 1.0),  # tiny vs exactly 1: log-space gamma ratio
    (0.01, 0.02),
    (0.5, 0.5),
    (0.3, 30.0),
    (1.0, 1.0),  # exactly 1: Marsaglia-Tsang at its lower edge
    (1.0, 3.0),
    (2.0, 5.0),
    (37.5, 12.5),
    (500.0, 5000.0),  # bandit-realistic
    (1e6, 1e6),
    (1e6, 3.0),
    (1.0, 1e5),  # very asymmetric
    (1e5, 1.0),
]


def rounded_beta_ks(sample: npt.NDArray[np.float64], a: float, b: float) -> tuple[float, float]:
    """KS statistic and p-value of ``sample`` against Beta(a, b) rounded to doubles."""
    dist = stats.beta(a, b)
    x = np.sort(sample)
    values, counts = np.unique(x, return_counts=True)
    n = x.size
    ecdf_after = np.cumsum(counts) / n
    ecdf_before = ecdf_after - counts / n
    # P(X <= 2^-1075): F is x^a / (a B(a, b)) this close to 0, so F(t / 2) = F(t) 2^-a.
    mass_at_0 = float(dist.cdf(5e-324)) * 2.0 ** (-a)
    mass_at_1 = float(special.betainc(b, a, _ONE_EDGE))  # P(X > 1 - 2^-54)
    cdf_at = np.clip(dist.cdf(values), 0.0, 1.0)
    cdf_before = cdf_at.copy()
    cdf_at[values == 0.0] = mass_at_0
    cdf_before[values == 0.0] = 0.0
    cdf_at[values == 1.0] = 1.0
    cdf_before[values == 1.0] = 1.0 - mass_at_1
    d = max(np.max(np.abs(ecdf_after - cdf_at)), np.max(np.abs(ecdf_before - cdf_before)))
    if values[-1] < 1.0:  # no draw rounded to 1, yet the null may put mass there
        d = max(d, mass_at_1)
    if values[0] > 0.0:
        d = max(d, mass_at_0)
    return float(d), float(stats.kstwo.sf(d, n))


def _draw(seed: int, a: float, b: float, n: int = N) -> npt.NDArray[np.float64]:
    return BetaSampler(seed).sample(np.full(n, a), np.full(n, b))


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_matches_scipy_beta(backend: str, a: float, b: float) -> None:
    x = _draw(20261123, a, b)
    assert not np.isnan(x).any()
    assert x.min() >= 0.0
    assert x.max() <= 1.0
    d, p = rounded_beta_ks(x, a, b)
    assert p > 1e-3, f"KS D={d:.4f} p={p:.2e} for Beta({a}, {b}) on {backend}"


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_mean_and_variance(backend: str, a: float, b: float) -> None:
    x = _draw(7, a, b)
    mean, var, _, excess_kurtosis = (float(v) for v in stats.beta.stats(a, b, moments="mvsk"))
    mu4 = (excess_kurtosis + 3.0) * var * var
    assert abs(x.mean() - mean) < 5.0 * np.sqrt(var / N)
    assert abs(x.var(ddof=1) - var) < 5.0 * np.sqrt((mu4 - var * var) / N) + 1e-300


def test_a_wrong_distribution_is_rejected() -> None:
    """The KS check has power: Beta(1.1, 1) draws do not pass for Beta(1, 1)."""
    x = _draw(3, 1.1, 1.0)
    _, p = rounded_beta_ks(x, 1.0, 1.0)
    assert p < 1e-6


def test_mixed_parameters_in_one_batch(backend: str) -> None:
    """Per-item parameters: each position follows its own Beta (vector body and scalar tail)."""
    sampler = BetaSampler(11)
    pairs = [(1e-3, 1e-3), (2.0, 5.0), (0.5, 0.5), (500.0, 5000.0), (1.0, 1e5)]
    reps = 4_001  # odd, so the batch length is not a multiple of 4
    alpha = np.array([p[0] for p in pairs] * reps)
    beta = np.array([p[1] for p in pairs] * reps)
    x = sampler.sample(alpha, beta)
    for k, (a, b) in enumerate(pairs):
        _, p = rounded_beta_ks(x[k :: len(pairs)], a, b)
        assert p > 1e-3, f"Beta({a}, {b}) at positions {k} mod {len(pairs)}: p={p:.2e}"


def test_bandit_parameters_all_distinct(backend: str) -> None:
    """alpha ~ U(1, 1000), beta ~ U(1, 10000): probability integral transform is uniform."""
    rng = np.random.default_rng(5)
    alpha = rng.uniform(1.0, 1000.0, N)
    beta = rng.uniform(1.0, 10000.0, N)
    x = BetaSampler(5).sample(alpha, beta)
    pit = stats.beta.cdf(x, alpha, beta)
    assert stats.kstest(pit, "uniform").pvalue > 1e-3


EXTREMES = [5e-324, 1e-300, 1e-20, 0.5, 1.0, 1e300, np.finfo(np.float64).max]


@pytest.mark.parametrize("a", EXTREMES)
@pytest.mark.parametrize("b", EXTREMES)
def test_whole_parameter_range_stays_in_unit_interval(backend: str, a: float, b: float) -> None:
    """Subnormal to DBL_MAX shapes are valid input: draws stay in [0, 1], never NaN."""
    x = BetaSampler(8).sample(np.full(33, a), np.full(33, b))
    assert np.all((x >= 0.0) & (x <= 1.0)), x
    if a == b and a >= 1e300:
        assert np.all(x == 0.5)  # the spread, ~1e-150, is below double precision
    if a == b and a <= 1e-300:
        assert set(np.unique(x)) == {0.0, 1.0}  # Beta(eps, eps) tends to Bernoulli(1/2)
