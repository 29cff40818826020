"""Benchmark: libbetadist's BetaSampler against numpy and scipy on bandit-shaped parameters.

Every figure is samples per second on ONE core (one thread, no parallelism), with
alpha ~ U(1, 1000) and beta ~ U(1, 10000) drawn per item -- the posterior counts of a
Thompson-sampling bandit.  n=400 is one request's worth of arms (per-call overhead matters),
n=1,000,000 is the bulk rate.  The baselines run in the same process and the same run:
numpy ``Generator.beta`` on PCG64 and ``scipy.stats.beta.rvs``.  Each case is timed in
several rounds; the best round and the median are printed, plus the load average, because
the machine may be shared.

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


def measure(name: str, n: int, call: Callable[[], object], rounds: int, round_s: float) -> Result:
    """Samples/s of ``call`` (n draws each) over ``rounds`` rounds of about ``round_s``."""
    call()  # warm up: first-touch of the output, lazy state set-up
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(round_s / once))
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        elapsed = time.perf_counter() - start
        rates.append(n * calls / elapsed)
    return Result(name, n, rates)


def cases(n: int, backend: str, with_scipy: bool) -> list[tuple[str, Callable[[], object]]]:
    """What to time at size n.  libbetadist allocates its output like numpy does; the
    ``out=`` row shows what reusing a buffer (the serving runtime's pattern) changes."""
    alpha, beta = bandit_parameters(n)
    out = np.empty(n)
    sampler = BetaSampler(1)
    generator = np.random.Generator(np.random.PCG64(1))
    native.set_backend(backend)
    name = f"libbetadist {native.backend()}"
    found: list[tuple[str, Callable[[], object]]] = [
        (name, lambda: sampler.sample(alpha, beta)),
        (f"{name}, out=", lambda: sampler.sample(alpha, beta, out)),
    ]
    if backend == "auto":  # the baselines once per size
        found.append(("numpy Generator.beta", lambda: generator.beta(alpha, beta)))
        if with_scipy:
            from scipy import stats

            found.append(
                (
                    "scipy.stats.beta.rvs",
                    lambda: stats.beta.rvs(alpha, beta, random_state=generator),
                )
            )
    return found


def run(
    sizes: list[int], rounds: int, round_s: float, backends: list[str], with_scipy: bool
) -> list[Result]:
    results: list[Result] = []
    try:
        for n in sizes:
            for backend in backends:
                for name, call in cases(n, backend, with_scipy):
                    native.set_backend(backend)
                    results.append(measure(name, n, call, rounds, round_s))
    finally:
        native.set_backend("auto")
    return results


def report(results: list[Result], markdown: bool) -> None:
    """Print the table; ratios are against numpy at the same n (best/best, median/median)."""
    rows = []
    for r in results:
        base = next(x for x in results if x.n == r.n and x.name.startswith("numpy"))
        rows.append(
            (
                r.name,
                f"{r.n:,}",
                f"{r.best / 1e6:.2f}",
                f"{r.median / 1e6:.2f}",
                f"{r.best / base.best:.2f}x",
                f"{r.median / base.median:.2f}x",
            )
        )
    header = ("case", "n", "best Msamples/s", "median Msamples/s", "vs numpy (best)", "(median)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
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
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per case")
    parser.add_argument("--round-seconds", type=float, default=0.25, help="length of a round")
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
