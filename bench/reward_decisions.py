"""How often rewardRate decides wrongly: false promotions and false rollbacks, by simulation.

Each run simulates one analysis window: ``--items`` scored items get feedback, the canary's
share of them is ``--weight`` percent, and each item is rewarded with its revision's true
rate (binomial draws from a seeded numpy generator). The pure decision the operator makes
(:func:`mlkube.operator.reward.judge_reward`) judges the counts, with ``--draws`` libbetadist
draw pairs (20,000 by default against the operator's 100,000, to keep the run short on a
shared machine: the probability's standard error near 0.95 is then 0.0015 instead of 0.0007). Over ``--runs`` seeded runs per scenario it reports the share of checks that pass,
fail and wait, and the same for whole rollouts: ``--steps`` weights, each repeating its check
on a fresh window until it passes, fails, or ``--checks`` windows (the progress deadline)
have gone by; any fail or an exceeded deadline rolls back.

* a **false promotion** is a pass (or a promoted rollout) for a canary whose true rate is
  below stable x (1 - margin): the rule's guarantee is that a single check does this with a
  probability of about 1 - confidence at most, the worst case being a canary exactly at the
  margin;
* a **false rollback** is a fail (or a rollout rolled back on a failed check) for a canary
  whose true rate is above stable x (1 - margin);
* a canary exactly at the margin is the boundary: either verdict is a coin toss weighted
  by the confidence, and each should come out at about 1 - confidence.

Usage: ``.venv/bin/python bench/reward_decisions.py [--runs 200] [--items 40000]``.
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from mlkube.api.rollout import Verdict
from mlkube.operator.reward import RewardCounts, judge_reward

STABLE = 0.05


@dataclass(frozen=True)
class Scenario:
    name: str
    canary: float  # true reward rate of the canary (stable is STABLE)


SCENARIOS = (
    Scenario("better (5.5% vs 5.0%)", 0.055),
    Scenario("equal (5.0% vs 5.0%)", 0.050),
    Scenario("at the margin (4.9% = 5.0% x 0.98)", STABLE * 0.98),
    Scenario("worse by 5% (4.75%)", 0.0475),
    Scenario("worse (4.0% vs 5.0%)", 0.040),
)


def one_check(
    rng: np.random.Generator,
    canary_rate: float,
    items: int,
    weight: int,
    margin: float,
    confidence: float,
    draws: int,
) -> Verdict:
    n_canary = max(1, items * weight // 100)
    n_stable = items - n_canary
    canary = RewardCounts(n_canary, float(rng.binomial(n_canary, canary_rate)))
    stable = RewardCounts(n_stable, float(rng.binomial(n_stable, STABLE)))
    return judge_reward(canary, stable, margin, confidence, draws).verdict


def one_rollout(rng: np.random.Generator, canary_rate: float, args: argparse.Namespace) -> str:
    """promoted, rolled back on a failed check (failed), or on the deadline (deadline)."""
    for weight in args.steps:
        for _ in range(args.checks):
            verdict = one_check(
                rng, canary_rate, args.items, weight, args.margin, args.confidence, args.draws
            )
            if verdict is Verdict.FAIL:
                return "failed"
            if verdict is Verdict.PASS:
                break
        else:
            return "deadline"
    return "promoted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="seeded runs per scenario")
    parser.add_argument("--draws", type=int, default=20_000, help="Monte Carlo draw pairs")
    parser.add_argument("--items", type=int, default=40_000, help="items with feedback per window")
    parser.add_argument("--weight", type=int, default=50, help="canary weight of a single check")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument(
        "--checks", type=int, default=10, help="windows per step before the deadline"
    )
    parser.add_argument("--margin", type=float, default=0.02)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()

    started = time.monotonic()
    print(
        f"{args.runs} runs per scenario, {args.items} items with feedback per window, "
        f"{args.draws} draw pairs, "
        f"margin {args.margin}, confidence {args.confidence}; single checks at "
        f"{args.weight}% canary weight; rollouts over steps {args.steps}, "
        f"at most {args.checks} windows per step\n"
    )
    print(
        "| true rates (canary vs stable) | check: pass | fail | wait "
        "| rollout: promoted | rolled back (failed) | rolled back (deadline) | wrong |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for index, scenario in enumerate(SCENARIOS):
        rng = np.random.default_rng([args.seed, index])
        checks = [
            one_check(
                rng,
                scenario.canary,
                args.items,
                args.weight,
                args.margin,
                args.confidence,
                args.draws,
            )
            for _ in range(args.runs)
        ]
        rollouts = [one_rollout(rng, scenario.canary, args) for _ in range(args.runs)]
        share = {v: checks.count(v) / args.runs for v in Verdict}
        ends = {e: rollouts.count(e) / args.runs for e in ("promoted", "failed", "deadline")}
        boundary = STABLE * (1 - args.margin)
        if abs(scenario.canary - boundary) < 1e-12:
            wrong = (
                f"boundary: check passes {share[Verdict.PASS]:.2%}, fails "
                f"{share[Verdict.FAIL]:.2%} (each at most about {1 - args.confidence:.0%})"
            )
        elif scenario.canary > boundary:
            wrong = f"false rollback: check {share[Verdict.FAIL]:.2%}, rollout {ends['failed']:.2%}"
        else:
            wrong = (
                f"false promotion: check {share[Verdict.PASS]:.2%}, rollout {ends['promoted']:.2%}"
            )
        print(
            f"| {scenario.name} | {share[Verdict.PASS]:.1%} | {share[Verdict.FAIL]:.1%} "
            f"| {share[Verdict.WAIT]:.1%} | {ends['promoted']:.1%} | {ends['failed']:.1%} "
            f"| {ends['deadline']:.1%} | {wrong} |"
        )
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
