"""Shadow traffic's cost to the stable revision: p99 with copies on vs off, and drops.

Two `mlkube serve` processes on loopback (one worker each, in-process store): the stable
revision and the canary, which receives the stable's shadow copies. Laid out as a cluster
runs them, on separate CPUs: the stable alone on core 0, the canary and the load generator
on core 1 (affinity set on the processes this script starts, the canary at nice 10 so that
the generator gets the core first; on a cluster the canary runs in its own pods, the clients
elsewhere). The load is bench/serve.py's request mix: OIP v2 JSON, 400 candidate ids, top_k
10. Cases, alternating round by round so that the machine's other load falls on all of them
alike:

* ``off``: no shadow (``MLKUBE_SHADOW_URL`` unset);
* ``10%``: ``MLKUBE_SHADOW_FRACTION=0.1`` (the documented example);
* ``100%``: every request copied.

Loads, per case:

* ``sat``: wrk, 16 connections, closed loop: the stable saturated (its core fully busy);
* ``80%`` and ``50%`` of the ``off`` case's saturated requests/s (measured first, for
  ``--duration`` seconds): an open-loop generator (``--generate``, below) that sends at that
  constant rate whatever the answers' latency, over 64 keep-alive connections; latency is
  from each request's send to its answer, and a request that finds all connections busy
  waits for one and is counted from its scheduled send time (no coordinated omission).

Per case and load: the stable's requests/s and p50/p99, the stable's CPU per request (its
process tree, from /proc), the copies sent, the copies dropped and their share.

Usage: ``PYTHONPATH=. .venv/bin/python bench/shadow.py [--duration 8] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.util
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
STABLE_CPU, OTHERS_CPU = 0, 1
GENERATOR_CONNECTIONS = 64
INFER = "/v2/models/bandit/infer"


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


# --- the open-loop generator ------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection of the generator: one request in flight at a time."""

    def __init__(self, generator: _Generator) -> None:
        self.generator = generator
        self.transport: Any = None  # uvloop's are not asyncio.Transport subclasses
        self.buffer = bytearray()
        self.need = -1  # bytes of the whole answer, once its head is in
        self.status = 0
        self.started = 0.0
        self.busy = False

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.need < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            self.status = int(head[9:12])
            at = head.index(b"content-length:") + 15
            stop = head.find(b"\r\n", at)
            self.need = end + 4 + int(head[at : stop if stop >= 0 else len(head)])
        if len(buffer) >= self.need:
            del buffer[: self.need]
            self.need = -1
            self.generator.answered(self, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.generator.lost(self)


class _Generator:
    def __init__(self, requests: list[bytes], measure_from: float) -> None:
        self.requests = requests
        self.measure_from = measure_from
        self.idle: list[_Connection] = []
        self.backlog: collections.deque[float] = collections.deque()
        self.latencies: list[float] = []
        self.non_2xx = self.errors = self.waited = self.sent = 0
        self.outstanding = 0
        self.all_sent = False
        self.drained = asyncio.Event()  # all sent, all answered (or lost)

    def _check_drained(self) -> None:
        if self.all_sent and self.outstanding == 0 and not self.backlog:
            self.drained.set()

    def send(self, connection: _Connection, scheduled: float) -> None:
        assert connection.transport is not None
        connection.started = scheduled
        connection.busy = True
        connection.transport.write(self.requests[self.sent % len(self.requests)])
        self.sent += 1
        self.outstanding += 1

    def offer(self, scheduled: float) -> None:
        if self.idle:
            self.send(self.idle.pop(), time.perf_counter())
        else:
            self.waited += scheduled >= self.measure_from
            self.backlog.append(scheduled)

    def answered(self, connection: _Connection, status: int) -> None:
        self.outstanding -= 1
        connection.busy = False
        if connection.started >= self.measure_from:
            self.latencies.append(time.perf_counter() - connection.started)
            self.non_2xx += not 200 <= status < 300
        if self.backlog:
            self.send(connection, self.backlog.popleft())
        else:
            self.idle.append(connection)
        self._check_drained()

    def lost(self, connection: _Connection) -> None:
        if connection.busy:
            self.outstanding -= 1
            self.errors += 1
            self._check_drained()
        elif connection in self.idle:
            self.idle.remove(connection)


async def _generate(port: int, rate: float, duration: float, warmup: float) -> dict[str, float]:
    serve = _serve_bench()
    bodies, _ = serve.request_bodies(400)
    requests = [
        f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        for body in bodies
    ]
    loop = asyncio.get_running_loop()
    generator = _Generator(requests, 0.0)
    for _ in range(GENERATOR_CONNECTIONS):
        transport, protocol = await loop.create_connection(
            lambda: _Connection(generator), "127.0.0.1", port
        )
        protocol.transport = transport
        generator.idle.append(protocol)
    start = time.perf_counter() + 0.05
    generator.measure_from = start + warmup
    total = int(rate * (warmup + duration))
    interval = 1.0 / rate
    i = 0
    while i < total:
        now = time.perf_counter()
        due = start + i * interval
        if due > now:
            await asyncio.sleep(max(due - now, 0.001))  # the loop's timers: 1 ms grain
            continue
        while i < total and start + i * interval <= now:  # all that are due, in order
            generator.offer(start + i * interval)
            i += 1
    generator.all_sent = True
    generator._check_drained()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(generator.drained.wait(), 5.0)
    lat = sorted(generator.latencies)
    return {
        "requests": len(lat),
        "seconds": duration,
        "p50": 1e3 * lat[len(lat) // 2] if lat else float("nan"),
        "p99": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "non_2xx": generator.non_2xx,
        "errors": generator.errors + generator.outstanding + len(generator.backlog),
        "waited": generator.waited,
        "sent": generator.sent,
    }


def generate(port: int, rate: float, duration: float, warmup: float = 1.0) -> dict[str, float]:
    """Open-loop load at ``rate`` requests/s in a child process (this one's CPU affinity)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--generate", str(port)]
    cmd += ["--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"the generator failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["generator_cpu_us"] = 1e6 * cpu / max(1, result["sent"])  # its start included
    return result


def _run_generator(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE.parent))
    coroutine = _generate(args.generate, args.rate, args.duration, args.warmup)
    try:
        import uvloop

        result = uvloop.run(coroutine)
    except ImportError:
        result = asyncio.run(coroutine)
    print(json.dumps(result))


# --- the cases --------------------------------------------------------------------------------


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        text: str = r.read().decode()
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16, help="wrk's, at saturation")
    parser.add_argument("--loads", default="0.5,0.8", help="shares of the off case's max")
    parser.add_argument("--generate", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        _run_generator(args)
        return
    serve = _serve_bench()
    # This process, and so wrk, the generator and the canary it starts, on core 1; the
    # stable's command is pinned to core 0 below.
    os.sched_setaffinity(0, {OTHERS_CPU})

    cases = {"off": None, "10%": "0.1", "100%": "1.0"}
    shares = [float(s) for s in args.loads.split(",")]
    loads = ["sat", *(f"{s:.0%}" for s in shares)]
    rows: dict[tuple[str, str], list[dict[str, float]]] = {
        (case, load): [] for case in cases for load in loads
    }
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
        # The canary yields core 1 to the load generator: on a cluster they are different
        # machines, and a canary busy with copies must not slow the clients down here.
        canary_cmd = ["nice", "-n", "10", *cmd]
        stable_cmd = ["taskset", "-c", str(STABLE_CPU), *cmd]

        def stable(fraction: str | None) -> Any:
            port = serve.free_port()
            env = {**base, "MLKUBE_PORT": str(port), "MLKUBE_REVISION": "stable"}
            if fraction is not None:
                env["MLKUBE_SHADOW_URL"] = f"http://127.0.0.1:{canary_port}"
                env["MLKUBE_SHADOW_FRACTION"] = fraction
            return port, serve.server(stable_cmd, env, port)

        with serve.server(canary_cmd, canary_env, canary_port):
            port, server = stable(None)
            with server:
                serve.run_wrk(port, script, args.connections, 1, 1)  # warm-up
                top = serve.run_wrk(port, script, args.connections, args.duration, 1)
            max_rps = top["requests"] / top["seconds"]
            rates = {f"{s:.0%}": s * max_rps for s in shares}
            print(f"off at saturation: {max_rps:,.0f} req/s; rates {rates}", file=sys.stderr)
            for round_ in range(args.repeat):
                for case, fraction in cases.items():
                    port, server = stable(fraction)
                    with server as proc:
                        serve.run_wrk(port, script, args.connections, 1, 1)  # warm-up
                        for load in loads:
                            before = _metrics(port)
                            cpu = serve.tree_cpu_seconds(proc.pid)
                            if load == "sat":
                                res = serve.run_wrk(
                                    port, script, args.connections, args.duration, 1
                                )
                            else:
                                res = generate(port, rates[load], args.duration)
                            cpu = serve.tree_cpu_seconds(proc.pid) - cpu
                            time.sleep(2.5)  # the queue drains and the last tallies flush
                            after = _metrics(port)
                            sent, dropped = (
                                _series_sum(after, name) - _series_sum(before, name)
                                for name in (
                                    "mlkube_shadow_requests_total",
                                    "mlkube_shadow_dropped_total",
                                )
                            )
                            row = {
                                "rps": res["requests"] / res["seconds"],
                                "p50": res["p50"],
                                "p99": res["p99"],
                                "cpu_us": 1e6 * cpu / max(1, res.get("sent", res["requests"])),
                                "sent": sent,
                                "dropped": dropped,
                                "non_2xx": res["non_2xx"] + res["errors"],
                                "waited": res.get("waited", 0),
                                # all requests the stable answered, warm-up included
                                "total": res.get("sent", res["requests"]),
                            }
                            rows[(case, load)].append(row)
                            print(f"round {round_ + 1} {case} {load}: {row}", file=sys.stderr)

    med = statistics.median
    print(
        f"median of {args.repeat} rounds, {args.duration:g} s each; off at saturation "
        f"{max_rps:,.0f} req/s; load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| load | shadow | req/s | p50 ms | p99 ms | p99 vs off | stable CPU us/req "
        "| CPU us/copy | copies sent/s | dropped | dropped share | non-2xx |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for load in loads:
        off_p99 = med(r["p99"] for r in rows[("off", load)])
        off_cpu = med(r["cpu_us"] for r in rows[("off", load)])
        name = "saturated (wrk)" if load == "sat" else f"{load} ({rates[load]:,.0f} req/s)"
        for case in cases:
            rs = rows[(case, load)]
            p99 = med(r["p99"] for r in rs)
            sent = med(r["sent"] for r in rs)
            dropped = med(r["dropped"] for r in rs)
            share = dropped / (sent + dropped) if sent + dropped else 0.0
            cpu = med(r["cpu_us"] for r in rs)
            rps = med(r["rps"] for r in rs)
            total = med(r["total"] for r in rs)
            # the stable's extra CPU over off, per copy sent
            per_copy = f"{(cpu - off_cpu) * total / sent:.0f}" if sent else "-"
            copies_per_s = sent * rps / total
            print(
                f"| {name} | {case} | {rps:,.0f} "
                f"| {med(r['p50'] for r in rs):.2f} | {p99:.2f} | {100 * (p99 / off_p99 - 1):+.1f}% "
                f"| {cpu:.0f} | {per_copy} | {copies_per_s:,.0f} "
                f"| {dropped:,.0f} | {share:.1%} "
                f"| {sum(r['non_2xx'] for r in rs):.0f} |"
            )


if __name__ == "__main__":
    main()
