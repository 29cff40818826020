"""Benchmark: libbetadist's BetaSampler against numpy and scipy on bandit-shaped parameters.

Every figure is samples per second on ONE core (one thread, no parallelism), with
alpha ~ U(1, 1000) and beta ~ U(1, 10000) drawn per item -- the posterior counts of a
Thompson-sampling bandit.  n=400 is one request's worth of arms (per-call overhead matters),
n=1,000,000 is the bulk rate.  The baselines run in the same process and the same run:
numpy ``Generator.beta`` on PCG64 and ``scipy.stats.beta.rvs``.  Each case is timed in
several rounds, interleaved across cases; the best round, the median, and the median of the
per-round ratios to numpy are printed, plus the load average, because the machine may be
shared.

    python bench/sampler.py            # full run (about half a minute)
    python bench/sampler.py --demo     # a few seconds: samples/s against numpy
    python bench/sampler.py --markdown # also print rows for docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from mlkube import native
from mlkube.native import BetaSampler

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Result:
    name: str
    n: int
    rates: list[float]  # samples/s of each round

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def bandit_parameters(n: int, seed: int = 2026) -> tuple[Array, Array]:
    rng = np.random.default_rng(seed)
    return rng.uniform(1.0, 1000.0, n), rng.uniform(1.0, 10000.0, n)


@dataclass
class Case:
    name: str
    backend: str
    call: Callable[[], object]
    calls_per_round: int = 1


def calibrate(case: Case, round_s: float) -> None:
    """Warm up (first touch of buffers, lazy state set-up) and size a round to ~round_s."""
    native.set_backend(case.backend)
    case.call()
    start = time.perf_counter()
    case.call()
    once = max(time.perf_counter() - start, 1e-7)
    case.calls_per_round = max(1, int(round_s / once))


def time_round(case: Case, n: int) -> float:
    """Samples/s of one round of ``case``."""
    native.set_backend(case.backend)
    start = time.perf_counter()
    for _ in range(case.calls_per_round):
        case.call()
    return n * case.calls_per_round / (time.perf_counter() - start)


def cases(n: int, backends: list[str], with_scipy: bool) -> list[Case]:
    """What to time at size n.  libbetadist allocates its output like numpy does; the
    ``out=`` row shows what reusing a buffer (the serving runtime's pattern) changes."""
    alpha, beta = bandit_parameters(n)
    out = np.empty(n)
    generator = np.random.Generator(np.random.PCG64(1))
    found: list[Case] = []
    for backend in backends:
        native.set_backend(backend)
        name = f"libbetadist {native.backend()}"
        sampler = BetaSampler(1)
        found.append(Case(name, backend, partial(sampler.sample, alpha, beta)))
        found.append(Case(f"{name}, out=", backend, partial(sampler.sample, alpha, beta, out)))
    found.append(Case("numpy Generator.beta", "auto", partial(generator.beta, alpha, beta)))
    if with_scipy:
        from scipy import stats

        found.append(
            Case(
                "scipy.stats.beta.rvs",
                "auto",
                partial(stats.beta.rvs, alpha, beta, random_state=generator),
            )
        )
    return found


def run(
    sizes: list[int], rounds: int, round_s: float, backends: list[str], with_scipy: bool
) -> list[Result]:
    """Rounds are interleaved (round 1 of every case, then round 2, ...), so that another
    job's burst on a shared machine hits all cases alike; per-round ratios pair them up."""
    results: list[Result] = []
    try:
        for n in sizes:
            timed = cases(n, backends, with_scipy)
            for case in timed:
                calibrate(case, round_s)
            rates: list[list[float]] = [[] for _ in timed]
            for _ in range(rounds):
                for k, case in enumerate(timed):
                    rates[k].append(time_round(case, n))
            results.extend(Result(case.name, n, r) for case, r in zip(timed, rates, strict=True))
    finally:
        native.set_backend("auto")
    return results


def report(results: list[Result], markdown: bool) -> None:
    """Print the table.  Ratios are against numpy at the same n: best round over best round,
    and the median over rounds of the ratio within each round (robust to load bursts)."""
    rows = []
    for r in results:
        base = next(x for x in results if x.n == r.n and x.name.startswith("numpy"))
        paired = statistics.median(a / b for a, b in zip(r.rates, base.rates, strict=True))
        rows.append(
            (
                r.name,
                f"{r.n:,}",
                f"{r.best / 1e6:.2f}",
                f"{r.median / 1e6:.2f}",
                f"{r.best / base.best:.2f}x",
                f"{paired:.2f}x",
            )
        )
    header = (
        "case",
        "n",
        "best Msamples/s",
        "median Msamples/s",
        "vs numpy (best)",
        "vs numpy (median of rounds)",
    )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = zip(row, widths, strict=True)
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
    if markdown:
        print()
        print("| " + " | ".join(header) + " |")
        print("| --- |" + " ---: |" * (len(header) - 1))
        for row in rows:
            print("| " + " | ".join(row) + " |")


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu}; {os.cpu_count()} CPUs; load average {load}; numpy {np.__version__}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="a few seconds, against numpy only")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per case")
    parser.add_argument("--round-seconds", type=float, default=0.2, help="length of a round")
    args = parser.parse_args(argv)

    # "auto" is AVX2 where the CPU has it; the scalar row shows the portable path.
    backends = ["auto"] if args.demo or native.backend() == "scalar" else ["auto", "scalar"]
    print(f"machine: {describe_machine()}")
    print(
        "workload: alpha ~ U(1, 1000), beta ~ U(1, 10000) per item; one thread; "
        "exact sampling on every path"
    )
    if args.demo:
        results = run([400, 1_000_000], rounds=3, round_s=0.2, backends=backends, with_scipy=False)
    else:
        results = run(
            [400, 1_000_000], args.rounds, args.round_seconds, backends=backends, with_scipy=True
        )
    report(results, args.markdown)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
