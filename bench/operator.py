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


def run(count: int, timeout: float, breakdown: dict[str, int]) -> dict[str, float]:
    cpmod = load_controlplane()
    template = example_modelservice()
    results: dict[str, float] = {}
    with cpmod.running_control_plane() as cp:
        results["control_plane_start_s"] = cp.start_seconds
        apiserver_pid = cp.pid("kube-apiserver")
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

        # Baseline: the same volume of children written by kubectl alone.
        cp.kubectl("create", "namespace", "bench-direct")
        manifest = json.dumps(direct_children("bench-direct", count))
        cpu0 = cpu_seconds(apiserver_pid)
        t0 = time.monotonic()
        cp.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, timeout=timeout)
        results["baseline_s"] = time.monotonic() - t0
        results["baseline_apiserver_cpu_s"] = cpu_seconds(apiserver_pid) - cpu0

        # Baseline (b): the ModelServices alone, where no operator watches.
        cp.kubectl("create", "namespace", "bench-idle")
        manifest = json.dumps(modelservices(template, "bench-idle", count))
        t0 = time.monotonic()
        cp.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, timeout=timeout)
        results["baseline_crs_s"] = time.monotonic() - t0

        cp.kubectl("create", "namespace", "bench")
        log = cp.workdir / "operator.log"
        with log.open("wb") as fh:
            op = subprocess.Popen(
                [sys.executable, "-m", "mlkube", "operator", "--namespace", "bench"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=cp.env(
                    {
                        "MLKUBE_LOG_LEVEL": "WARNING",
                        "MLKUBE_LOG_FORMAT": "text",
                        "MLKUBE_HEALTH_HOST": "127.0.0.1",
                        "MLKUBE_HEALTH_PORT": str(cpmod.free_port()),
                        "MLKUBE_METRICS_PORT": str(cpmod.free_port()),
                    }
                ),
                cwd=ROOT,
                start_new_session=True,
            )
        try:
            time.sleep(5.0)  # let it start and list the (empty) cluster
            if op.poll() is not None:
                raise SystemExit(f"operator exited {op.returncode}:\n{log.read_text()[-3000:]}")
            results["operator_idle_rss_mib"] = rss_kib(op.pid, "VmRSS") / 1024
            manifest = json.dumps(modelservices(template, "bench", count))
            op_cpu0 = cpu_seconds(op.pid)
            api_cpu0 = cpu_seconds(apiserver_pid)
            t0 = time.monotonic()
            cp.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, timeout=timeout)
            results["apply_s"] = time.monotonic() - t0
            deadline = t0 + timeout
            t_deploy = wait_for(lambda: count_names(cp, "deployments", "bench"), count, deadline)
            results["operator_s"] = t_deploy - t0
            t_status = wait_for(lambda: count_observed(cp, "bench"), count, deadline, 1.0)
            results["status_s"] = t_status - t0
            results["operator_cpu_s"] = cpu_seconds(op.pid) - op_cpu0
            results["apiserver_cpu_s"] = cpu_seconds(apiserver_pid) - api_cpu0
            requests = operator_requests(cp, "bench")
            results["operator_writes"] = sum(
                n
                for key, n in requests.items()
                if key.split()[0] in ("create", "patch", "update", "delete")
            )
            breakdown.update(requests)
            results["operator_requests"] = sum(requests.values())
            results["operator_peak_rss_mib"] = rss_kib(op.pid, "VmHWM") / 1024
            results["services"] = count_names(cp, "services", "bench")
            results["pdbs"] = count_names(cp, "poddisruptionbudgets", "bench")
        finally:
            if op.poll() is None:
                op.send_signal(signal.SIGTERM)
                try:
                    op.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    op.kill()
                    op.wait()
    results["ratio"] = results["operator_s"] / (results["baseline_s"] + results["baseline_crs_s"])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    load_before = os.getloadavg()
    breakdown: dict[str, int] = {}
    r = run(args.count, args.timeout, breakdown)
    load_after = os.getloadavg()
    n = args.count
    print(f"| measure ({n} objects) | value |")
    print("| --- | --- |")
    print(f"| control plane warm start | {r['control_plane_start_s']:.1f} s |")
    print(
        f"| baseline: kubectl apply of {n} Deployments + Services + PDBs | {r['baseline_s']:.1f} s |"
    )
    print(
        f"| baseline: kubectl apply of {n} ModelServices, no operator | {r['baseline_crs_s']:.1f} s |"
    )
    print(
        f"| kubectl apply of {n} ModelServices, operator running (returns) | {r['apply_s']:.1f} s |"
    )
    print(f"| apply -> all {n} Deployments exist (operator) | {r['operator_s']:.1f} s |")
    print(f"| apply -> all {n} statuses observed | {r['status_s']:.1f} s |")
    print(f"| operator / (children + ModelServices baselines) | {r['ratio']:.2f}x |")
    print(
        f"| operator CPU for the {n} (to all statuses) | {r['operator_cpu_s']:.1f} s "
        f"({1000 * r['operator_cpu_s'] / n:.0f} ms per ModelService) |"
    )
    print(
        f"| kube-apiserver CPU: operator phase / children baseline | "
        f"{r['apiserver_cpu_s']:.1f} s / {r['baseline_apiserver_cpu_s']:.1f} s |"
    )
    print(
        f"| operator API requests (writes) per ModelService | "
        f"{r['operator_requests'] / n:.1f} ({r['operator_writes'] / n:.1f}) |"
    )
    print(
        f"| operator RSS idle / peak | {r['operator_idle_rss_mib']:.0f} / {r['operator_peak_rss_mib']:.0f} MiB |"
    )
    print(f"| children: Services / PDBs | {r['services']:.0f} / {r['pdbs']:.0f} |")
    print("\noperator requests by verb and resource (all ModelServices):")
    for key, value in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        print(f"  {value:6d}  {key}")
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"({os.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
