"""Benchmark: `mlkube serve` under HTTP load, against a naive aiohttp server in the same run.

Load: wrk (Debian package) in its own process, 32 connections, POST /v2/models/bandit/infer
with 400 candidate items per request (drawn from 10,000 items that all have counts), for
``--duration`` seconds per case after a short warm-up. Cases:

* ``naive``: aiohttp + stdlib json + numpy ``Generator.beta``, one worker, counts in a dict
  (what a first version of this server would look like), default asyncio loop;
* ``mlkube memory``: `mlkube serve` with the in-process store;
* ``mlkube redis``: `mlkube serve` with the Redis store (a real redis-server on loopback);
* ``mlkube redis, Python path``: the same with the C request path off
  (``MLKUBE_NATIVE_PATH=false``): every request decoded, scored and rendered in Python;
* ``mlkube redis + batching``: the same with the dynamic batcher on (does it pay?).

Per case: requests/s, items/s, latency p50/p99 (wrk's own histogram), non-2xx answers, the
server's CPU seconds per request (utime + stime of the server's processes from /proc, before
and after), wrk's own CPU per request (getrusage of the finished wrk), and how much of the
machine's CPU went to processes other than the server, wrk and redis during the measurement
("others", in cores, from /proc/stat): wrk and the server share the machine's cores, and the
machine may be shared with other jobs, so throughput and tail latency are only comparable
between runs with similar "others".

    python bench/serve.py                  # full run: 5 cases x 10 s
    python bench/serve.py --duration 3     # quicker
    python bench/serve.py --markdown       # also print rows for docs/benchmarks.md
    python bench/serve.py --repeat 3       # the case list 3 times; best and median per case
    python bench/serve.py --naive-server PORT   # (internal) run the naive baseline server
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
N_ITEMS = 10_000
N_BODIES = 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the naive baseline ---------------------------------------------------------------------


def naive_server(port: int) -> None:
    """aiohttp + json + numpy: per-item Python lookups, stdlib JSON, one process."""
    import numpy as np
    from aiohttp import web

    rng = np.random.default_rng()
    counts: dict[str, tuple[float, float]] = {}
    for i in range(N_ITEMS):
        counts[f"item-{i}"] = (float(i % 50), float(i % 70))

    async def infer(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        items = body["inputs"][0]["data"]
        alpha = np.array([1.0 + counts.get(item, (0.0, 0.0))[0] for item in items])
        beta = np.array([1.0 + counts.get(item, (0.0, 0.0))[1] for item in items])
        scores = rng.beta(alpha, beta)
        order = np.argsort(-scores)
        return web.json_response(
            {
                "model_name": "bandit",
                "outputs": [
                    {"name": "scores", "datatype": "FP64", "shape": [len(items)],
                     "data": scores.tolist()},
                    {"name": "ranking", "datatype": "BYTES", "shape": [len(items)],
                     "data": [items[i] for i in order]},
                ],
            }
        )  # fmt: skip

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application()
    app.router.add_post("/v2/models/bandit/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# --- in-process CPU breakdown -----------------------------------------------------------------


def breakdown(items_per_request: int, rounds: int = 2000) -> list[tuple[str, float]]:
    """Thread CPU time of each hot-path stage for one request (no HTTP), in microseconds.

    CPU time, not wall time: on a shared machine the wall clock also counts the time other
    processes hold the core. Metrics are in prometheus-client's multiprocess mode (mmap'd
    files), as in `mlkube serve`, and the stage includes the in-flight gauge.
    """
    import asyncio

    metrics_dir = tempfile.mkdtemp(prefix="mlkube-bench-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    import numpy as np

    from mlkube.native import BetaSampler
    from mlkube.serving.bandit import BanditModel
    from mlkube.serving.config import load_config
    from mlkube.serving.metrics import Metrics
    from mlkube.serving.model import settings_from
    from mlkube.serving.protocol import parse_v2_infer, render_v2
    from mlkube.serving.snapshot import lookup_rows
    from mlkube.serving.store import MemoryStore

    rnd = random.Random(2)
    bodies = []
    for _ in range(N_BODIES):
        items = [f"item-{rnd.randrange(N_ITEMS)}" for _ in range(items_per_request)]
        bodies.append(
            json.dumps(
                {
                    "inputs": [
                        {"name": "items", "datatype": "BYTES", "shape": [len(items)], "data": items}
                    ],
                    "parameters": {"top_k": 10},
                }
            ).encode()
        )

    async def run() -> list[tuple[str, float]]:
        cfg = load_config({}, {})
        store = MemoryStore()
        names = [f"item-{i}" for i in range(N_ITEMS)]
        await store.add_feedback(
            "default",
            names,
            np.arange(N_ITEMS, dtype=np.float64) % 50,
            np.arange(N_ITEMS, dtype=np.float64) % 70,
            None,
        )
        metrics = Metrics("bandit", "1", "")
        model = BanditModel(settings_from(cfg), cfg, store, BetaSampler(1), metrics)
        await model.load()
        snap = model.cache.get("default")
        assert snap is not None
        sampler = BetaSampler(3)
        totals: dict[str, int] = {}

        def add(stage: str, t0: int) -> int:
            t1 = time.thread_time_ns()
            totals[stage] = totals.get(stage, 0) + t1 - t0
            return t1

        for i in range(rounds):
            body = bodies[i % N_BODIES]
            t = time.thread_time_ns()
            request = parse_v2_infer(body, 10_000)
            t = add("decode JSON + OIP checks", t)
            query = model.prepare(request)
            t = add("bandit input checks", t)
            rows = lookup_rows(snap, query.items)
            t = add("item id -> snapshot row (C table)", t)
            scores = sampler.sample(snap.alpha[rows], snap.beta[rows])
            t = add("gather + Beta draws (libbetadist)", t)
            response = model._respond(query, scores, None)
            t = add("top-k ranking + outputs", t)
            render_v2(response, "bandit", "1", None)
            t = add("encode response (orjson)", t)
            answer = model.infer_raw(body, "v2")
            assert answer is not None
            t = add("C request path: all of the above", t)
            metrics.inflight_now += 1
            metrics.inflight_now -= 1
            metrics.observe_request("infer", 200, 0.001)
            metrics.count_items(len(query.items))
            if i % 1000 == 999:  # the runtime flushes every 0.25 s: ~5,000 requests apart
                metrics.flush()
            add("metrics (tallied; multiprocess flush)", t)
        await model.close()
        return [(stage, ns / rounds / 1000) for stage, ns in totals.items()]

    try:
        return asyncio.run(run())
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


# --- processes ------------------------------------------------------------------------------


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} never answered 200")


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[tuple[str, int]]:
    """A real redis-server on loopback with the benchmark's counts; yields (url, pid)."""
    port = free_port()
    args = [
        shutil.which("redis-server") or "redis-server",
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(directory),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.05)
        pipe = client.pipeline()
        s: dict[Any, Any] = {f"item-{i}": float(i % 50) for i in range(N_ITEMS)}
        f: dict[Any, Any] = {f"item-{i}": float(i % 70) for i in range(N_ITEMS)}
        pipe.hset("mlkube:bandit:seg:default:s", mapping=s)
        pipe.hset("mlkube:bandit:seg:default:f", mapping=f)
        pipe.execute()
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def server(cmd: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (everything but idle and iowait), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal minus idle, iowait
    return busy / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its children (workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# --- load -----------------------------------------------------------------------------------


def binary_body(items: list[str], top_k: int) -> tuple[bytes, int]:
    """What tritonclient.http sends by default: binary items and top_k, binary outputs."""
    raw_items = b"".join(len(i).to_bytes(4, "little") + i.encode() for i in items)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "items",
                    "datatype": "BYTES",
                    "shape": [len(items)],
                    "parameters": {"binary_data_size": len(raw_items)},
                },
                {
                    "name": "top_k",
                    "datatype": "INT32",
                    "shape": [1],
                    "parameters": {"binary_data_size": 4},
                },
            ],
            "parameters": {"binary_data_output": True},
        },
        separators=(",", ":"),
    ).encode()
    return head + raw_items + top_k.to_bytes(4, "little"), len(head)


def _lua_string(data: bytes) -> str:
    """A Lua string literal holding exactly these bytes."""
    plain = set(range(0x20, 0x7F)) - {ord('"'), ord("\\")}
    return '"' + "".join(chr(b) if b in plain else f"\\{b:03d}" for b in data) + '"'


def request_bodies(
    items_per_request: int, seed: int = 1, binary: bool = False
) -> tuple[list[bytes], list[int]]:
    """The 64 request bodies of the load (and, for binary ones, their JSON header lengths)."""
    rnd = random.Random(seed)
    bodies: list[bytes] = []
    lengths: list[int] = []
    for _ in range(N_BODIES):
        items = [f"item-{rnd.randrange(N_ITEMS)}" for _ in range(items_per_request)]
        if binary:
            body, json_length = binary_body(items, 10)
            lengths.append(json_length)
        else:
            body = json.dumps(
                {
                    "inputs": [
                        {"name": "items", "datatype": "BYTES", "shape": [len(items)], "data": items}
                    ],
                    "parameters": {"top_k": 10},
                },
                separators=(",", ":"),
            ).encode()
        bodies.append(body)
    return bodies, lengths


def write_wrk_script(
    path: Path, items_per_request: int, seed: int = 1, binary: bool = False
) -> None:
    """64 request bodies for wrk to cycle through: JSON, or binary tensors."""
    bodies, lengths = request_bodies(items_per_request, seed, binary)
    lua = ["local bodies = {"]
    lua += [f"  {_lua_string(b)}," for b in bodies]
    lua += ["}", "local headers = {"]
    for n in lengths or [0] * len(bodies):
        content = "application/octet-stream" if binary else "application/json"
        extra = f', ["Inference-Header-Content-Length"] = "{n}"' if binary else ""
        lua.append(f'  {{["Content-Type"] = "{content}"{extra}}},')
    lua += [
        "}",
        "local i = 0",
        "request = function()",
        "  i = i + 1",
        "  local j = (i % #bodies) + 1",
        '  return wrk.format("POST", "/v2/models/bandit/infer", headers[j], bodies[j])',
        "end",
    ]
    path.write_text("\n".join(lua) + "\n")


@dataclass
class Result:
    case: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    cpu_seconds: float
    items: int
    load: float
    wrk_cpu_seconds: float = 0.0
    others_cores: float = 0.0  # CPU used by other processes during the run, in cores

    @property
    def wrk_us_per_request(self) -> float:
        return 1e6 * self.wrk_cpu_seconds / max(1, self.requests)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def items_per_s(self) -> float:
        return self.rps * self.items

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.cpu_seconds / max(1, self.requests)


@dataclass
class Summary:
    """The median over the repeated runs of one case (and the best run's figures)."""

    case: str
    runs: int
    items: int
    rps: float
    best_rps: float
    p50_ms: float
    p99_ms: float
    best_p99_ms: float
    cpu_us: float
    wrk_us: float
    others_cores: float
    load: float


def summarize(results: list[Result]) -> list[Summary]:
    """Medians per case, in the order the cases first ran."""
    by_case: dict[str, list[Result]] = {}
    for r in results:
        by_case.setdefault(r.case, []).append(r)
    med = statistics.median
    return [
        Summary(
            case,
            len(rs),
            rs[0].items,
            med(r.rps for r in rs),
            max(r.rps for r in rs),
            med(r.p50_ms for r in rs),
            med(r.p99_ms for r in rs),
            min(r.p99_ms for r in rs),
            med(r.cpu_us_per_request for r in rs),
            med(r.wrk_us_per_request for r in rs),
            med(r.others_cores for r in rs),
            med(r.load for r in rs),
        )
        for case, rs in by_case.items()
    ]


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(
    port: int, script: Path, connections: int, duration: float, threads: int
) -> dict[str, float]:
    cmd = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
        "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res: dict[str, float] = {"non_2xx": 0, "errors": 0}
    # only wrk finished in between: the servers and redis are still running
    res["wrk_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    if not m:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    res["requests"] = int(m.group(1))
    secs = float(m.group(2))
    res["seconds"] = secs / 1000 if m.group(3) == "ms" else secs * 60 if m.group(3) == "m" else secs
    for pct in ("50", "99"):
        pm = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = _ms(pm.group(1)) if pm else float("nan")
    nm = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if nm:
        res["non_2xx"] = int(nm.group(1))
    em = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if em:
        res["errors"] = sum(int(x) for x in em.groups())
    return res


def grpc_request_file(path: Path, items_per_request: int, seed: int = 1) -> None:
    """One serialized ModelInferRequest as tritonclient.grpc sends it by default: the items and
    top_k as raw input contents (ghz repeats a single message)."""
    from mlkube.serving.grpc import inference_pb2 as pb

    rnd = random.Random(seed)
    items = [f"item-{rnd.randrange(N_ITEMS)}".encode() for _ in range(items_per_request)]
    request = pb.ModelInferRequest(model_name="bandit")
    tensor = pb.ModelInferRequest.InferInputTensor
    request.inputs.append(tensor(name="items", datatype="BYTES", shape=[len(items)]))
    request.inputs.append(tensor(name="top_k", datatype="INT32", shape=[1]))
    request.raw_input_contents.append(b"".join(len(i).to_bytes(4, "little") + i for i in items))
    request.raw_input_contents.append((10).to_bytes(4, "little"))
    path.write_bytes(request.SerializeToString())


def run_ghz(
    ghz: str, port: int, message: Path, connections: int, duration: float
) -> dict[str, float]:
    """ghz at `connections` concurrent calls over as many HTTP/2 connections; the same keys
    as run_wrk's answer (wrk_cpu: ghz's own CPU)."""
    cmd = [
        ghz, "--insecure", "--import-paths", str(REPO),
        "--proto", "mlkube/serving/grpc/inference.proto",
        "--call", "inference.GRPCInferenceService.ModelInfer",
        "--binary", "-B", str(message), "-c", str(connections), "--connections", str(connections),
        "-z", f"{max(1, round(duration))}s", "-O", "json", f"127.0.0.1:{port}",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(out)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    ok = int(report.get("statusCodeDistribution", {}).get("OK", 0))
    # ghz cancels the calls in flight when its time is up ("use of closed network
    # connection", on its own side): not answers the server failed to give.
    errors = {
        e: n
        for e, n in (report.get("errorDistribution") or {}).items()
        if "use of closed network connection" not in e
    }
    cut_off = sum((report.get("errorDistribution") or {}).values()) - sum(errors.values())
    return {
        "wrk_cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "requests": ok,
        "seconds": report["total"] / 1e9,
        "p50": lat.get(50, float("nan")),
        "p99": lat.get(99, float("nan")),
        "non_2xx": int(report["count"]) - ok - cut_off,
        "errors": sum(errors.values()),
    }


def measure(
    case: str,
    proc: subprocess.Popen[bytes],
    port: int,
    script: Path,
    args: argparse.Namespace,
    redis_pid: int,
    ghz: str | None = None,
) -> Result:
    """`script` is a wrk script, or with `ghz` the gRPC message file (and `port` gRPC's)."""

    def load_for(seconds: float) -> dict[str, float]:
        if ghz is not None:
            return run_ghz(ghz, port, script, args.connections, seconds)
        return run_wrk(port, script, args.connections, seconds, args.wrk_threads)

    load_for(args.warmup)
    load = os.getloadavg()[0]
    cpu0 = tree_cpu_seconds(proc.pid)
    redis0 = tree_cpu_seconds(redis_pid)
    busy0, wall0 = machine_busy_seconds(), time.monotonic()
    res = load_for(args.duration)
    busy, wall = machine_busy_seconds() - busy0, time.monotonic() - wall0
    cpu = tree_cpu_seconds(proc.pid) - cpu0
    redis_cpu = tree_cpu_seconds(redis_pid) - redis0
    others = max(0.0, busy - cpu - redis_cpu - res["wrk_cpu"]) / wall
    return Result(
        case,
        int(res["requests"]),
        res["seconds"],
        res["p50"],
        res["p99"],
        int(res["non_2xx"]),
        int(res["errors"]),
        cpu,
        args.items,
        load,
        res["wrk_cpu"],
        others,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per case (default 10)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--items", type=int, default=400, help="candidate items per request")
    p.add_argument("--workers", type=int, default=None, help="mlkube workers (default: cores)")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument(
        "--cases",
        default="naive,memory,redis,redis-binary,redis-grpc,redis-python,redis-batching",
        help="comma list of: naive, memory, redis, redis-binary, redis-grpc, redis-python, "
        "redis-batching, redis-batching-nodelay",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="run the case list this many times (alternating)"
    )
    p.add_argument("--markdown", action="store_true")
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="only print the in-process CPU time of each hot-path stage",
    )
    p.add_argument("--naive-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.naive_server:
        naive_server(args.naive_server)
        return 0
    if args.breakdown:
        print(f"CPU time per request, {args.items} items, single process, no HTTP:")
        for stage, us in breakdown(args.items):
            print(f"  {stage:42s} {us:7.1f} us")
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed (make debs installs it)", file=sys.stderr)
        return 2
    workers = args.workers or len(os.sched_getaffinity(0))
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mlkube-bench-") as tmp:
        script = Path(tmp) / "infer.lua"
        write_wrk_script(script, args.items)
        binary_script = Path(tmp) / "infer-binary.lua"
        write_wrk_script(binary_script, args.items, binary=True)
        grpc_message = Path(tmp) / "infer.grpc.bin"
        ghz: str | None = None
        if any(c.endswith("grpc") for c in cases):
            grpc_request_file(grpc_message, args.items)
            ghz = subprocess.run(
                [str(REPO / "scripts" / "install-ghz")], capture_output=True, text=True, check=True
            ).stdout.strip()
        base_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(REPO),
            "MLKUBE_WORKERS": str(workers),
            "MLKUBE_HOST": "127.0.0.1",
            "MLKUBE_MAX_ITEMS": str(max(10_000, args.items)),
        }
        with redis_server(Path(tmp)) as (redis_url, redis_pid):
            for case in cases * max(1, args.repeat):
                port = free_port()
                grpc_port = next(p for p in iter(free_port, None) if p != port)
                env = dict(base_env, MLKUBE_PORT=str(port), MLKUBE_GRPC_PORT=str(grpc_port))
                if case == "naive":
                    cmd = [sys.executable, __file__, "--naive-server", str(port)]
                else:
                    cmd = [sys.executable, "-m", "mlkube", "serve"]
                    if case.startswith("redis"):
                        env.update(MLKUBE_FEATURE_STORE="redis", MLKUBE_REDIS_URL=redis_url)
                    if case.endswith("python"):
                        env.update(MLKUBE_NATIVE_PATH="false")
                    if case.endswith("batching"):
                        env.update(
                            MLKUBE_BATCHING="true",
                            MLKUBE_BATCH_MAX_SIZE="16",
                            MLKUBE_BATCH_MAX_DELAY="0.0005",
                        )
                    elif case.endswith("batching-nodelay"):
                        # no waiting: a batch is whatever arrived in the same loop iteration
                        env.update(
                            MLKUBE_BATCHING="true",
                            MLKUBE_BATCH_MAX_SIZE="16",
                            MLKUBE_BATCH_MAX_DELAY="0",
                        )
                name = {
                    "naive": "naive baseline (1 worker)",
                    "memory": f"mlkube memory store ({workers} workers)",
                    "redis": f"mlkube redis store ({workers} workers)",
                    "redis-python": f"mlkube redis, Python path ({workers} workers)",
                    "redis-batching": f"mlkube redis + batching ({workers} workers)",
                    "redis-batching-nodelay": f"mlkube redis + batching, 0 delay ({workers} w.)",
                    "redis-binary": f"mlkube redis, binary tensors ({workers} workers)",
                    "redis-grpc": f"mlkube redis, gRPC ({workers} workers)",
                }[case]
                with server(cmd, env, port) as proc:
                    if case == "redis-grpc":
                        result = measure(name, proc, grpc_port, grpc_message, args, redis_pid, ghz)
                    else:
                        load = binary_script if case == "redis-binary" else script
                        result = measure(name, proc, port, load, args, redis_pid)
                results.append(result)
                print(
                    f"{name:42s} {result.rps:9.0f} req/s {result.items_per_s / 1e6:7.3f} M items/s"
                    f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
                    f"  cpu {result.cpu_us_per_request:6.0f} us/req  non-2xx {result.non_2xx}"
                    f"  errors {result.errors}  wrk {result.wrk_us_per_request:4.0f} us/req"
                    f"  others {result.others_cores:.2f} cores  load {result.load:.2f}",
                    flush=True,
                )
    summaries = summarize(results)
    naive = next((m for m in summaries if m.case.startswith("naive")), None)
    if args.repeat > 1:
        print(f"\nmedian (best) of {args.repeat} runs per case:")
        for m in summaries:
            print(
                f"{m.case:42s} {m.rps:9.0f} ({m.best_rps:.0f}) req/s"
                f"  p99 {m.p99_ms:6.2f} ({m.best_p99_ms:.2f}) ms  cpu {m.cpu_us:6.0f} us/req"
                f"  others {m.others_cores:.2f} cores"
            )
    if naive is not None:
        for m in summaries:
            if m is not naive:
                print(f"{m.case}: {m.rps / naive.rps:.1f}x the naive baseline's throughput")
    if args.markdown:
        print()
        print(
            "| case | req/s | items/s | p50 ms | p99 ms | server CPU us/req | wrk CPU us/req"
            " | vs naive | others (cores) | load |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for m in summaries:
            ratio = f"{m.rps / naive.rps:.1f}x" if naive else "-"
            best = f" (best {m.best_rps:,.0f})" if args.repeat > 1 else ""
            print(
                f"| {m.case} | {m.rps:,.0f}{best} | {m.rps * m.items:,.0f} | {m.p50_ms:.2f} |"
                f" {m.p99_ms:.2f} | {m.cpu_us:,.0f} | {m.wrk_us:,.0f} | {ratio} |"
                f" {m.others_cores:.2f} | {m.load:.2f} |"
            )
    bad = [r for r in results if r.non_2xx or r.errors]
    if bad:
        print("some requests failed: " + ", ".join(r.case for r in bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
