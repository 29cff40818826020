"""Benchmark: the PyTorchJob reconcile — the pure plan, and applying it over HTTP.

1. ``plan(job, pods, services, now)`` for jobs of N workers: the first pass (every pod and
   service to build) and a steady pass (everything in place, nothing to do), in ms.
2. Applying the first pass of a 256-worker job (257 pods + 257 headless services) to a real
   etcd + kube-apiserver (the e2e tier's control plane, ``scripts/e2e-build``) through the
   operator's own client, one call at a time (the baseline: what a sequential controller
   does) against the operator's bounded concurrency (``handlers.CONCURRENCY``); the ratio
   is the speed-up in the same run. Each round uses a fresh namespace.

    python bench/pytorchjob.py              # about a minute (the control plane starts first)
    python bench/pytorchjob.py --markdown   # also print rows for docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from mlkube.api.pytorchjob import PyTorchJob
from mlkube.operator.app import OperatorContext
from mlkube.operator.config import OperatorConfig
from mlkube.operator.pytorchjob import handlers
from mlkube.operator.pytorchjob.planner import plan

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_job(workers: int) -> PyTorchJob:
    template = {"spec": {"containers": [{"name": "pytorch", "image": "pytorch/pytorch:2.4.1"}]}}
    return PyTorchJob.model_validate(
        {
            "metadata": {"name": "bench", "namespace": "ml", "uid": "u-1", "generation": 1},
            "spec": {
                "pytorchReplicaSpecs": {
                    "Master": {"replicas": 1, "template": template},
                    "Worker": {"replicas": workers, "template": template},
                }
            },
        }
    )


def as_listed(objs: list[dict[str, Any]], phase: str | None) -> list[dict[str, Any]]:
    out = []
    for obj in objs:
        listed = dict(obj)
        if phase is not None:
            listed["status"] = {"phase": phase}
        out.append(listed)
    return out


def time_ms(fn: Any, rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return min(samples), statistics.median(samples)


def bench_plan(rows: list[tuple[str, str, str]]) -> None:
    print("plan() per reconcile, ms (best / median)")
    for workers in (8, 64, 512):
        job = make_job(workers)
        first = plan(job, [], [], NOW)
        job.status = first.status
        pods = as_listed(first.create_pods, "Running")
        services = as_listed(first.create_services, None)
        cold = time_ms(lambda job=job: plan(job, [], [], NOW), 7)
        steady = time_ms(lambda job=job, p=pods, s=services: plan(job, p, s, NOW), 7)
        print(
            f"  {workers:4d} workers: first pass {cold[0]:7.2f} / {cold[1]:7.2f}   "
            f"steady {steady[0]:6.2f} / {steady[1]:6.2f}"
        )
        rows.append((f"plan, {workers} workers, first pass", f"{cold[1]:.2f} ms", ""))
        rows.append((f"plan, {workers} workers, steady", f"{steady[1]:.2f} ms", ""))


def _controlplane() -> Any:
    """The e2e tier's control-plane helpers, imported by path (tests/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "e2e" / "controlplane.py"
    spec = importlib.util.spec_from_file_location("mlkube_e2e_controlplane", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def apply_once(
    info: kopf.ConnectionInfo, namespace: str, workers: int, concurrency: int
) -> float:
    job = make_job(workers)
    job.metadata["namespace"] = namespace
    todo = plan(job, [], [], NOW)
    for obj in todo.create_pods + todo.create_services:
        obj["metadata"]["namespace"] = namespace
        del obj["metadata"]["ownerReferences"]  # no PyTorchJob object to own them here
    ctx = OperatorContext(OperatorConfig(request_timeout=60))
    ctx.connection = info
    handlers.CONCURRENCY = concurrency
    try:
        start = time.perf_counter()
        await handlers.apply_plan(ctx, job, todo, [], [])
        elapsed = time.perf_counter() - start
        listed = await ctx.api.request("GET", f"/api/v1/namespaces/{namespace}/pods")
        assert len(listed["items"]) == workers + 1, len(listed["items"])
    finally:
        await ctx.close()
    return elapsed


def bench_apply(rows: list[tuple[str, str, str]], workers: int = 256) -> None:
    cp_module = _controlplane()
    with cp_module.running_control_plane() as cp:
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
        assert info is not None
        print(f"apply the first pass of a {workers}-worker job to kube-apiserver, s")
        results: dict[int, list[float]] = {1: [], 16: []}
        for round_ in range(3):
            for concurrency in (1, 16):  # interleaved, so load changes hit both alike
                namespace = f"bench-{round_}-{concurrency}"
                cp.kubectl("create", "namespace", namespace)
                elapsed = asyncio.run(apply_once(info, namespace, workers, concurrency))
                results[concurrency].append(elapsed)
    base = statistics.median(results[1])
    for concurrency, samples in results.items():
        median = statistics.median(samples)
        print(
            f"  concurrency {concurrency:2d}: best {min(samples):.3f}  median {median:.3f}  "
            f"({base / median:.2f}x the sequential baseline)"
        )
        rows.append(
            (
                f"apply {2 * (workers + 1)} creations, concurrency {concurrency}",
                f"{median:.3f} s",
                f"{base / median:.2f}x",
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows: list[tuple[str, str, str]] = []
    bench_plan(rows)
    bench_apply(rows)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.markdown:
        print("\n| case | median | vs sequential |\n| --- | ---: | ---: |")
        for case, value, ratio in rows:
            print(f"| {case} | {value} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
