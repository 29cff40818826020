"""Operator load benchmark: 200 ModelServices applied at once, against a real API server.

What it measures (on the e2e control plane: etcd + kube-apiserver, no nodes):

* **operator**: wall time from one ``kubectl apply --server-side`` of N ModelServices
  to all N Deployments existing, with ``mlkube operator`` (a subprocess, cluster-wide)
  doing the work; plus the time until every ModelService reports
  ``status.observedGeneration`` (the operator has written status for each);
* **baselines** (same run, same API server, no operator):
  (a) ``kubectl apply --server-side`` of N Deployments + N Services + N
  PodDisruptionBudgets directly: what the API server and etcd need to store that
  many children; (b) the same apply of N ModelServices into a namespace no
  operator watches: the cost of the custom resources themselves (schema, CEL).
  The ratio operator / (a + b) compares the operator's pipeline with writing the
  same objects one after another by hand;
* the operator's memory: resident set before the load (idle, CRDs watched) and
  its peak (``VmHWM`` from /proc, the kernel's high-water mark for the process).

The ModelService is the first ``kind: ModelService`` manifest in examples/, renamed
``bench-000`` ... so the benchmark follows the API as it evolves.

Usage: ``.venv/bin/python bench/operator.py [--count 200] [--timeout 600]``.
Prints a Markdown table for docs/benchmarks.md, with the machine's load average.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_controlplane() -> ModuleType:
    """tests/e2e/controlplane.py, loaded by path (it is not part of the package)."""
    name = "mlkube_e2e_controlplane"
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "e2e" / "controlplane.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def example_modelservice() -> dict[str, Any]:
    """The first ModelService manifest in examples/ (sorted by file name)."""
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ModelService":
                return doc
    raise SystemExit("no ModelService manifest in examples/")


def modelservices(template: dict[str, Any], namespace: str, count: int) -> dict[str, Any]:
    """A v1 List of ``count`` copies of ``template`` named bench-000, bench-001, ..."""
    items = []
    for i in range(count):
        obj = copy.deepcopy(template)
        obj["metadata"] = {"name": f"bench-{i:03d}", "namespace": namespace}
        items.append(obj)
    return {"apiVersion": "v1", "kind": "List", "items": items}


def direct_children(namespace: str, count: int) -> dict[str, Any]:
    """The baseline: Deployments, Services and PDBs of the same number and shape class."""
    items: list[dict[str, Any]] = []
    for i in range(count):
        name = f"direct-{i:03d}"
        labels = {"mlkube.dev/modelservice": name, "mlkube.dev/track": "stable"}
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "model-server",
                                    "image": "ghcr.io/mlkube/mlkube:bench",
                                    "args": ["serve"],
                                    "ports": [{"name": "http", "containerPort": 8080}],
                                    "readinessProbe": {
                                        "httpGet": {"path": "/v2/health/ready", "port": "http"}
                                    },
                                }
                            ]
                        },
                    },
                },
            }
        )
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "selector": {"mlkube.dev/modelservice": name},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                },
            }
        )
        items.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": items}


def rss_kib(pid: int, field: str) -> int:
    """VmRSS / VmHWM of a process, in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def operator_requests(cp: Any, namespace: str) -> dict[str, int]:
    """Requests the operator made about ``namespace``, by verb, from the audit log.

    The operator authenticates as the same admin as kubectl, so it is told apart
    by its user agent (anything that is not kubectl, the API server itself, or
    the fixture's readiness probe).
    """
    counts: dict[str, int] = {}
    for line in (cp.workdir / "audit.log").read_text().splitlines():
        event = json.loads(line)
        agent = event.get("userAgent", "")
        if agent.startswith(("kubectl/", "kube-apiserver/", "Python-urllib/")):
            continue
        if event.get("objectRef", {}).get("namespace") != namespace:
            continue
        ref = event.get("objectRef", {})
        resource = ref.get("resource", "") + (
            "/" + ref["subresource"] if ref.get("subresource") else ""
        )
        key = f"{event['verb']} {resource}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def count_names(cp: Any, kind: str, namespace: str) -> int:
    out = cp.kubectl("-n", namespace, "get", kind, "-o", "name").stdout
    return len(out.split())


def count_observed(cp: Any, namespace: str) -> int:
    data = json.loads(cp.kubectl("-n", namespace, "get", "modelservices", "-o", "json").stdout)
    return sum(
        1
        for item in data["items"]
        if item.get("status", {}).get("observedGeneration") == item["metadata"]["generation"]
    )


def wait_for(probe: Any, target: int, deadline: float, interval: float = 0.25) -> float:
    """Poll until probe() >= target; return the monotonic time it was first seen."""
    while True:
        now = time.monotonic()
        if probe() >= target:
            return now
        if now > deadline:
            raise SystemExit(f"timed out: {probe()} of {target}")
        time.sleep(interval)


IDLE_SECONDS = 75.0
"""The idle window: longer than the operator's default drift interval (60 s), so every
ModelService gets at least one full resync in it."""


def writes(requests: dict[str, int]) -> int:
    return sum(n for key, n in requests.items() if key.split()[0] in WRITE_VERBS)


WRITE_VERBS = ("create", "patch", "update", "delete")


def checkout(ref: str) -> Path:
    """A detached worktree of ``ref`` (the operator as it was), removed by :func:`drop`."""
    path = Path(f"/tmp/mlkube-bench-{ref.replace('/', '-')}")
    if path.exists():
        drop(path)
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
        check=True,
        capture_output=True,
    )
    return path


def drop(path: Path) -> None:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
        check=False,
        capture_output=True,
    )


def operator_phase(
    cp: Any,
    cpmod: Any,
    template: dict[str, Any],
    namespace: str,
    count: int,
    timeout: float,
    source: Path,
    breakdown: dict[str, int],
) -> dict[str, float]:
    """One operator (from ``source``) through creation, an idle window and an update burst."""
    results: dict[str, float] = {}
    apiserver_pid = cp.pid("kube-apiserver")
    cp.kubectl("create", "namespace", namespace)
    log = cp.workdir / f"operator-{namespace}.log"
    with log.open("wb") as fh:
        op = subprocess.Popen(
            [sys.executable, "-m", "mlkube", "operator", "--namespace", namespace],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=cp.env(
                {
                    "PYTHONPATH": str(source),
                    "MLKUBE_LOG_LEVEL": "WARNING",
                    "MLKUBE_LOG_FORMAT": "text",
                    "MLKUBE_HEALTH_HOST": "127.0.0.1",
                    "MLKUBE_HEALTH_PORT": str(cpmod.free_port()),
                    "MLKUBE_METRICS_PORT": str(cpmod.free_port()),
                }
            ),
            cwd=source,
            start_new_session=True,
        )
    try:
        time.sleep(5.0)  # let it start and list the (empty) namespace
        if op.poll() is not None:
            raise SystemExit(f"operator exited {op.returncode}:\n{log.read_text()[-3000:]}")
        results["operator_idle_rss_mib"] = rss_kib(op.pid, "VmRSS") / 1024
        manifest = json.dumps(modelservices(template, namespace, count))
        op_cpu0 = cpu_seconds(op.pid)
        api_cpu0 = cpu_seconds(apiserver_pid)
        t0 = time.monotonic()
        cp.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, timeout=timeout)
        results["apply_s"] = time.monotonic() - t0
        deadline = t0 + timeout
        t_deploy = wait_for(lambda: count_names(cp, "deployments", namespace), count, deadline)
        results["operator_s"] = t_deploy - t0
        t_status = wait_for(lambda: count_observed(cp, namespace), count, deadline, 1.0)
        results["status_s"] = t_status - t0
        results["operator_cpu_s"] = cpu_seconds(op.pid) - op_cpu0
        results["apiserver_cpu_s"] = cpu_seconds(apiserver_pid) - api_cpu0
        created = operator_requests(cp, namespace)
        breakdown.update(created)
        results["operator_requests"] = sum(created.values())
        results["operator_writes"] = writes(created)
        results["services"] = count_names(cp, "services", namespace)
        results["pdbs"] = count_names(cp, "poddisruptionbudgets", namespace)

        # Idle: nothing changes; every object's drift check runs at least once.
        time.sleep(5.0)
        before = operator_requests(cp, namespace)
        idle_cpu0 = cpu_seconds(op.pid)
        time.sleep(IDLE_SECONDS)
        after = operator_requests(cp, namespace)
        results["idle_requests"] = sum(after.values()) - sum(before.values())
        results["idle_writes"] = writes(after) - writes(before)
        results["idle_cpu_s"] = cpu_seconds(op.pid) - idle_cpu0

        # A burst: every ModelService changes at once (one more replica).
        changed = copy.deepcopy(template)
        changed["spec"]["replicas"] = int(changed["spec"].get("replicas", 1)) + 1
        manifest = json.dumps(modelservices(changed, namespace, count))
        t0 = time.monotonic()
        cp.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, timeout=timeout)
        t_burst = wait_for(lambda: count_observed(cp, namespace), count, t0 + timeout, 1.0)
        results["burst_status_s"] = t_burst - t0
        results["operator_peak_rss_mib"] = rss_kib(op.pid, "VmHWM") / 1024
    finally:
        if op.poll() is None:
            op.send_signal(signal.SIGTERM)
            try:
                op.wait(timeout=20)
            except subprocess.TimeoutExpired:
                op.kill()
                op.wait()
    return results


def run(
    count: int, timeout: float, before_ref: str | None
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """Baselines, then each operator variant on the same control plane, one after another."""
    cpmod = load_controlplane()
    template = example_modelservice()
    base: dict[str, float] = {}
    phases: dict[str, dict[str, float]] = {}
    breakdowns: dict[str, dict[str, int]] = {}
    worktree = checkout(before_ref) if before_ref else None
    try:
        with cpmod.running_control_plane() as cp:
            base["control_plane_start_s"] = cp.start_seconds
            apiserver_pid = cp.pid("kube-apiserver")
            cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

            # Baseline: the same volume of children written by kubectl alone.
            cp.kubectl("create", "namespace", "bench-direct")
            manifest = json.dumps(direct_children("bench-direct", count))
            cpu0 = cpu_seconds(apiserver_pid)
            t0 = time.monotonic()
            cp.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, timeout=timeout)
            base["baseline_s"] = time.monotonic() - t0
            base["baseline_apiserver_cpu_s"] = cpu_seconds(apiserver_pid) - cpu0

            # Baseline (b): the ModelServices alone, where no operator watches.
            cp.kubectl("create", "namespace", "bench-idle")
            manifest = json.dumps(modelservices(template, "bench-idle", count))
            t0 = time.monotonic()
            cp.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, timeout=timeout)
            base["baseline_crs_s"] = time.monotonic() - t0

            variants = [("before", worktree)] if worktree is not None else []
            variants.append(("now", ROOT))
            for label, source in variants:
                breakdowns[label] = {}
                phases[label] = operator_phase(
                    cp, cpmod, template, f"bench-{label}", count, timeout, source,
                    breakdowns[label],
                )  # fmt: skip
                phases[label]["ratio"] = phases[label]["operator_s"] / (
                    base["baseline_s"] + base["baseline_crs_s"]
                )
    finally:
        if worktree is not None:
            drop(worktree)
    return base, phases, breakdowns


ROWS = (
    ("kubectl apply of {n} ModelServices, operator running (returns)", "apply_s", "{:.1f} s"),
    ("**apply -> all {n} Deployments exist**", "operator_s", "**{:.1f} s**"),
    ("apply -> all {n} statuses observed", "status_s", "{:.1f} s"),
    ("operator / (children + ModelServices baselines)", "ratio", "{:.2f}x"),
    ("operator CPU, apply -> all statuses", "operator_cpu_s", "{:.1f} s"),
    ("kube-apiserver CPU, apply -> all statuses", "apiserver_cpu_s", "{:.1f} s"),
    ("**API requests per ModelService, creation**", "per_object_requests", "**{:.1f}**"),
    ("writes per ModelService, creation", "per_object_writes", "{:.1f}"),
    ("**idle {idle:.0f} s (every drift check runs): writes**", "idle_writes", "**{:.0f}**"),
    ("idle {idle:.0f} s: all requests / operator CPU", "idle_summary", "{}"),
    ("burst: all {n} specs changed -> every status observed", "burst_status_s", "{:.1f} s"),
    ("operator RSS idle", "operator_idle_rss_mib", "{:.0f} MiB"),
    ("**operator RSS peak**", "operator_peak_rss_mib", "**{:.0f} MiB**"),
    ("children: Services / PDBs", "children", "{}"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--before",
        metavar="GIT_REF",
        help="also run the operator as it was at this commit, first, on the same API server",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    base, phases, breakdowns = run(args.count, args.timeout, args.before)
    load_after = os.getloadavg()
    n = args.count
    for r in phases.values():
        r["per_object_requests"] = r["operator_requests"] / n
        r["per_object_writes"] = r["operator_writes"] / n
    labels = list(phases)
    names = {"before": f"before ({args.before})", "now": "now"}
    print(f"| measure ({n} ModelServices) | " + " | ".join(names[x] for x in labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    print(f"| control plane warm start | {base['control_plane_start_s']:.1f} s |")
    print(
        f"| baseline: kubectl apply of {n} Deployments + Services + PDBs | "
        f"{base['baseline_s']:.1f} s (kube-apiserver CPU {base['baseline_apiserver_cpu_s']:.1f} s) |"
    )
    print(
        f"| baseline: kubectl apply of {n} ModelServices, no operator | "
        f"{base['baseline_crs_s']:.1f} s |"
    )
    for title, key, fmt in ROWS:
        cells = []
        for label in labels:
            r = phases[label]
            if key == "idle_summary":
                cells.append(f"{r['idle_requests']:.0f} / {r['idle_cpu_s']:.1f} s")
            elif key == "children":
                cells.append(f"{r['services']:.0f} / {r['pdbs']:.0f}")
            else:
                cells.append(fmt.format(r[key]))
        print(f"| {title.format(n=n, idle=IDLE_SECONDS)} | " + " | ".join(cells) + " |")
    for label in labels:
        print(f"\n{names[label]}: requests during creation, by verb and resource:")
        for key, value in sorted(breakdowns[label].items(), key=lambda kv: -kv[1]):
            print(f"  {value:6d}  {key}")
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"({os.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
