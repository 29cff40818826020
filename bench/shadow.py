"""Shadow traffic's cost to the stable revision: p99 with copies on vs off, and drops.

Two `mlkube serve` processes on loopback (one worker each, in-process store): the stable
revision, loaded by wrk (the bench/serve.py request mix: OIP v2 JSON, 400 candidate ids,
top_k 10), and the canary, which receives the stable's shadow copies. Cases, alternating
round by round so that the machine's other load falls on all of them alike:

* ``off``: no shadow (``MLKUBE_SHADOW_URL`` unset);
* ``10%``: ``MLKUBE_SHADOW_FRACTION=0.1`` (the documented example);
* ``100%``: every request copied: more copies than the 4 senders and the canary keep up
  with, so the bounded queue (256) fills and copies are dropped.

Per case: the stable's requests/s and p50/p99 (wrk's histogram), the stable's CPU per
request (its process tree, from /proc), the copies sent, the copies dropped and their
share. Both servers and wrk share this machine's cores, so the canary's work on the copies
takes CPU the stable would otherwise get; on a cluster the canary runs in its own pods.

Usage: ``PYTHONPATH=. .venv/bin/python bench/shadow.py [--duration 8] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def _serve_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_serve", HERE / "serve.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_serve"] = module
    spec.loader.exec_module(module)
    return module


def _series_sum(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if re.match(rf"{name}(\{{|\s)", line)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    serve = _serve_bench()

    cases = {"off": None, "10%": "0.1", "100%": "1.0"}
    rows: dict[str, list[dict[str, float]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bodies.lua"
        serve.write_wrk_script(script, 400)
        base = {
            **os.environ,
            "MLKUBE_HOST": "127.0.0.1",
            "MLKUBE_WORKERS": "1",
            "MLKUBE_GRPC_PORT": "0",
            "MLKUBE_LOG_LEVEL": "WARNING",
            "MLKUBE_MODEL_NAME": "bandit",
        }
        canary_port = serve.free_port()
        canary_env = {**base, "MLKUBE_PORT": str(canary_port), "MLKUBE_REVISION": "canary"}
        cmd = [sys.executable, "-m", "mlkube", "serve"]
        with serve.server(cmd, canary_env, canary_port):
            for round_ in range(args.repeat):
                for case, fraction in cases.items():
                    port = serve.free_port()
                    env = {**base, "MLKUBE_PORT": str(port), "MLKUBE_REVISION": "stable"}
                    if fraction is not None:
                        env["MLKUBE_SHADOW_URL"] = f"http://127.0.0.1:{canary_port}"
                        env["MLKUBE_SHADOW_FRACTION"] = fraction
                    with serve.server(cmd, env, port) as proc:
                        serve.run_wrk(port, script, args.connections, 1, 1)  # warm-up
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
                            before = r.read().decode()
                        cpu = serve.tree_cpu_seconds(proc.pid)
                        load = serve.run_wrk(port, script, args.connections, args.duration, 1)
                        cpu = serve.tree_cpu_seconds(proc.pid) - cpu
                        time.sleep(2.5)  # the queue drains and the last tallies flush
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
                            after = r.read().decode()
                    sent = _series_sum(after, "mlkube_shadow_requests_total") - _series_sum(
                        before, "mlkube_shadow_requests_total"
                    )
                    dropped = _series_sum(after, "mlkube_shadow_dropped_total") - _series_sum(
                        before, "mlkube_shadow_dropped_total"
                    )
                    rows[case].append(
                        {
                            "rps": load["requests"] / load["seconds"],
                            "p50": load["p50"],
                            "p99": load["p99"],
                            "cpu_us": 1e6 * cpu / max(1, load["requests"]),
                            "sent": sent,
                            "dropped": dropped,
                            "non_2xx": load["non_2xx"] + load["errors"],
                        }
                    )
                    print(f"round {round_ + 1} {case}: {rows[case][-1]}", file=sys.stderr)

    med = statistics.median
    print(
        f"median of {args.repeat} rounds, {args.duration:g} s each, "
        f"{args.connections} connections, load {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| shadow | req/s | p50 ms | p99 ms | p99 vs off | stable CPU us/req "
        "| copies sent/s | dropped | dropped share | non-2xx |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    off_p99 = med(r["p99"] for r in rows["off"])
    for case, rs in rows.items():
        p99 = med(r["p99"] for r in rs)
        sent = med(r["sent"] for r in rs)
        dropped = med(r["dropped"] for r in rs)
        share = dropped / (sent + dropped) if sent + dropped else 0.0
        print(
            f"| {case} | {med(r['rps'] for r in rs):,.0f} | {med(r['p50'] for r in rs):.2f} "
            f"| {p99:.2f} | {100 * (p99 / off_p99 - 1):+.1f}% | {med(r['cpu_us'] for r in rs):.0f} "
            f"| {sent / args.duration:,.0f} | {dropped:,.0f} | {share:.1%} "
            f"| {sum(r['non_2xx'] for r in rs):.0f} |"
        )


if __name__ == "__main__":
    main()
