"""Benchmark: an ONNX MLP behind `mlkube serve`, dynamic batching on vs off, and a naive
onnxruntime + aiohttp server, in the same run.

The model: an MLP built here with the ``onnx`` package (tests/support/onnx_models.py), FP32,
256 inputs, two hidden layers of 1,024 (ReLU), 16 outputs, a dynamic batch dimension: 1.3 M
weights (5 MB). Every request carries one row (batch 1), as JSON (OIP v2 REST), one of 64
random bodies. Load: wrk, 32 connections, ``--duration`` seconds per case after a warm-up.

Cases:

* ``naive``: aiohttp + stdlib json + ``onnxruntime.InferenceSession.run`` in the handler,
  one process, onnxruntime's default threads (what a first version of a model server looks
  like);
* ``mlkube, batching off``: `mlkube serve --model-format onnx`, one worker;
* ``mlkube, batching on``: the same with ``--batching`` (up to ``--max-batch`` requests,
  at most ``--max-delay`` seconds of waiting).

Per case: items/s (= requests/s: one row each), p50/p99 latency (wrk's histogram), non-2xx,
the server's CPU per request, wrk's own CPU (in cores), the load average before the case
and the CPU that other processes used meanwhile ("others", in cores: the machine's busy
time less the server's and wrk's): the machine is shared, so compare ratios
within one run.

    python bench/onnx_serve.py                 # 3 cases x 5 s
    python bench/onnx_serve.py --repeat 3      # the case list 3 times; medians
    python bench/onnx_serve.py --markdown      # rows for docs/benchmarks.md
    python bench/onnx_serve.py --naive-server PORT MODEL   # (internal) the naive server
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import serve as common  # bench/serve.py: process, wrk and CPU helpers

REPO = Path(__file__).resolve().parents[1]
SIZES = (256, 1024, 1024, 16)
N_BODIES = 64
MODEL = "mlp"


def naive_server(port: int, model_path: str) -> None:
    """aiohttp + json + onnxruntime, one process, the session run in the handler."""
    import numpy as np
    import onnxruntime as ort
    from aiohttp import web

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])

    async def infer(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        tensor = body["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        (y,) = session.run(None, {"x": x})
        answer = {
            "model_name": MODEL,
            "outputs": [
                {
                    "name": "y",
                    "datatype": "FP32",
                    "shape": list(y.shape),
                    "data": y.ravel().tolist(),
                }
            ],
        }
        return web.json_response(answer)

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application()
    app.router.add_post(f"/v2/models/{MODEL}/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def write_script(path: Path, seed: int = 1) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(N_BODIES):
        row = rng.standard_normal(SIZES[0]).astype(np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, SIZES[0]],
                            "data": [round(float(v), 5) for v in row]}]}  # fmt: skip
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    lua = ["local bodies = {"]
    lua += [f"  {common._lua_string(b)}," for b in bodies]
    lua += [
        "}",
        'local headers = {["Content-Type"] = "application/json"}',
        "local i = 0",
        "request = function()",
        "  i = i + 1",
        f'  return wrk.format("POST", "/v2/models/{MODEL}/infer", headers, '
        "bodies[(i % #bodies) + 1])",
        "end",
    ]
    path.write_text("\n".join(lua) + "\n")


@dataclass
class Run:
    case: str
    items_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    cpu_us: float
    load1: float
    others: float
    wrk: float  # the load generator's own CPU, in cores


def measure(case: str, cmd: list[str], env: dict[str, str], port: int, script: Path,
            args: argparse.Namespace) -> Run:  # fmt: skip
    with common.server(cmd, env, port) as proc:
        common.run_wrk(port, script, args.connections, args.warmup, 1)
        load1 = os.getloadavg()[0]
        cpu0, busy0, t0 = (
            common.tree_cpu_seconds(proc.pid),
            common.machine_busy_seconds(),
            time.monotonic(),
        )
        res = common.run_wrk(port, script, args.connections, args.duration, 1)
        cpu = common.tree_cpu_seconds(proc.pid) - cpu0
        busy = common.machine_busy_seconds() - busy0
        wall = time.monotonic() - t0
    others = max(0.0, busy - cpu - res["wrk_cpu"]) / wall
    return Run(
        case,
        res["requests"] / res["seconds"],
        res["p50"],
        res["p99"],
        int(res["non_2xx"] + res["errors"]),
        1e6 * cpu / max(1, res["requests"]),
        load1,
        others,
        res["wrk_cpu"] / wall,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per case (default 5)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-delay", type=float, default=0.002)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="mlkube's worker processes (default 1, like the naive server's one process)",
    )
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--naive-server", nargs=2, metavar=("PORT", "MODEL"))
    args = p.parse_args(argv)
    if args.naive_server:
        naive_server(int(args.naive_server[0]), args.naive_server[1])
        return 0

    sys.path.insert(0, str(REPO))
    from tests.support.onnx_models import mlp

    py = sys.executable
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="mlkube-bench-onnx-") as tmp:
        model = str(mlp(Path(tmp) / "mlp.onnx", SIZES))
        script = Path(tmp) / "load.lua"
        write_script(script)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for _ in range(args.repeat):
            port = common.free_port()
            runs.append(measure("naive", [py, __file__, "--naive-server", str(port), model],
                                env, port, script, args))  # fmt: skip
            for batching in (False, True):
                port = common.free_port()
                cmd = [
                    py, "-m", "mlkube", "serve", "--model-format", "onnx", "--model-path", model,
                    "--model-name", MODEL, "--workers", str(args.workers), "--port", str(port),
                    "--grpc-port", "0", "--log-level", "WARNING",
                    "--batching" if batching else "--no-batching",
                    "--batch-max-size", str(args.max_batch), "--batch-max-delay", str(args.max_delay),
                ]  # fmt: skip
                case = "mlkube, batching on" if batching else "mlkube, batching off"
                runs.append(measure(case, cmd, env, port, script, args))
            for r in runs[-3:]:
                print(
                    f"{r.case:22} {r.items_per_s:8.0f} items/s  p50 {r.p50_ms:6.2f} ms  "
                    f"p99 {r.p99_ms:6.2f} ms  non-2xx {r.non_2xx}  cpu {r.cpu_us:6.0f} us/req  "
                    f"load {r.load1:.2f}  others {r.others:.2f} cores  wrk {r.wrk:.2f} cores",
                    flush=True,
                )
    med = statistics.median
    cases = ["naive", "mlkube, batching off", "mlkube, batching on"]
    summary = {
        c: (
            med(r.items_per_s for r in runs if r.case == c),
            med(r.p99_ms for r in runs if r.case == c),
            med(r.p50_ms for r in runs if r.case == c),
            med(r.cpu_us for r in runs if r.case == c),
            med(r.load1 for r in runs if r.case == c),
            med(r.others for r in runs if r.case == c),
            med(r.wrk for r in runs if r.case == c),
        )
        for c in cases
    }
    on, off, naive = (
        summary[c][0] for c in ("mlkube, batching on", "mlkube, batching off", "naive")
    )
    print(f"batching on / off: {on / off:.2f}x items/s; on / naive: {on / naive:.2f}x; "
          f"p99 on {summary['mlkube, batching on'][1]:.2f} ms vs off "
          f"{summary['mlkube, batching off'][1]:.2f} ms")  # fmt: skip
    if args.markdown:
        print(
            "| case | items/s | p50 ms | p99 ms | server CPU µs/req | wrk (cores) | load avg "
            "| others (cores) |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for c in cases:
            items, p99, p50, cpu, load, others, wrk = summary[c]
            print(
                f"| {c} | {items:,.0f} | {p50:.2f} | {p99:.2f} | {cpu:,.0f} | {wrk:.2f} "
                f"| {load:.2f} | {others:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
