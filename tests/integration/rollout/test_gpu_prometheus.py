"""GPU signals against a real Prometheus fed with series shaped like dcgm-exporter's.

No GPU is needed: the point is the query and the label mapping. A small exporter written
for the test serves per-GPU series with dcgm-exporter's labels (``gpu``, ``UUID``,
``device``, ``modelName``, ``Hostname`` and, with its Kubernetes pod mapping on,
``namespace``, ``pod``, ``container``) for two nodes, and Debian's ``prometheus`` scrapes
them the two ways clusters do:

* node ``gpu-1`` with ``honor_labels: true`` (the series keep ``namespace`` and ``pod``);
* node ``gpu-2`` as a ServiceMonitor does, with the exporter pod's own ``namespace``, ``pod``
  and ``container`` as target labels and ``honor_labels`` off, so Prometheus itself renames
  the exported ones to ``exported_namespace``, ``exported_pod``, ``exported_container``.

Among the series are a same-named pod of another namespace, another ModelService's pod in
the same namespace and an unallocated GPU; none of them may count.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlkube.api.rollout import Analysis, AnalysisMetric, AutoscalingSpec, ScaleRecord, Verdict
from mlkube.operator import gpu
from mlkube.operator.analysis import (
    PrometheusQuerier,
    QueryContext,
    QueryStatus,
    evaluate,
    plan_queries,
)
from mlkube.operator.autoscaler import desired_replicas, load_query

from .test_real_prometheus import run_prometheus

pytestmark = pytest.mark.slow

WINDOW = 30
MODEL = "NVIDIA H100 80GB HBM3"
# (node, gpu index, namespace, pod or None if unallocated, util %, framebuffer MiB, W)
GPUS = [
    ("gpu-1", 0, "prod", "ranker-6f9c8-abcde", 90, 20000, 250),
    ("gpu-1", 1, "prod", "ranker-6f9c8-fghij", 70, 22000, 230),
    ("gpu-1", 2, "staging", "ranker-6f9c8-abcde", 100, 80000, 700),  # same name, other ns
    ("gpu-1", 3, "prod", "other-model-7d-klmno", 100, 80000, 700),  # another ModelService
    ("gpu-1", 4, None, None, 0, 0, 60),  # not allocated to any pod
    ("gpu-2", 0, "prod", "ranker-canary-5b7-pqrst", 98, 30000, 300),
    ("gpu-2", 1, "prod", "ranker-6f9c8-uvwxy", 80, 10000, 200),  # one pod, two GPUs
    ("gpu-2", 2, "prod", "ranker-6f9c8-uvwxy", 60, 10000, 200),
]
PODS = {
    "stable-rev": ("ranker-6f9c8-abcde", "ranker-6f9c8-fghij", "ranker-6f9c8-uvwxy"),
    "canary-rev": ("ranker-canary-5b7-pqrst",),
}
FIELDS = [
    (gpu.GPU_UTIL, "GPU utilization (in %).", 4),
    (gpu.FB_USED, "Framebuffer memory used (in MiB).", 5),
    (gpu.POWER_USAGE, "Power draw (in W).", 6),
]


def exposition(node: str) -> bytes:
    """The node's exporter page in the Prometheus text format, one series per GPU."""
    lines: list[str] = []
    for metric, help_text, column in FIELDS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for row in GPUS:
            if row[0] != node:
                continue
            index, namespace, pod = row[1], row[2], row[3]
            labels = (
                f'gpu="{index}",UUID="GPU-{node}-{index:04d}",device="nvidia{index}",'
                f'modelName="{MODEL}",Hostname="{node}"'
            )
            if pod is not None:
                labels += f',container="model-server",namespace="{namespace}",pod="{pod}"'
            lines.append(f"{metric}{{{labels}}} {row[column]}")
    return ("\n".join(lines) + "\n").encode()


class Exporter(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        node = self.path.strip("/")
        if node not in {row[0] for row in GPUS}:
            self.send_error(404)
            return
        body = exposition(node)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def prometheus_url(tmp_path: Path, exporter: int) -> Iterator[str]:
    target = f"'127.0.0.1:{exporter}'"
    with run_prometheus(
        tmp_path,
        "  - job_name: dcgm-honor-labels\n    honor_labels: true\n    metrics_path: /gpu-1\n"
        f"    static_configs:\n      - targets: [{target}]\n"
        "  - job_name: dcgm-servicemonitor\n    metrics_path: /gpu-2\n"
        f"    static_configs:\n      - targets: [{target}]\n"
        "        labels: {namespace: gpu-operator, pod: nvidia-dcgm-exporter-x7k2p,"
        " container: nvidia-dcgm-exporter}\n",
    ) as url:
        yield url


async def scraped(querier: PrometheusQuerier) -> None:
    """Until both nodes' series are in (one scrape of each is enough: they are constant)."""
    for _ in range(60):
        outcome = await asyncio.to_thread(querier.query, f"count({gpu.POWER_USAGE})")
        if outcome.value == len(GPUS):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"Prometheus did not scrape the exporter: {outcome}")


def context(mappings: tuple[gpu.LabelMapping, ...] = gpu.DEFAULT_LABEL_MAPPINGS) -> QueryContext:
    return QueryContext(
        "prod", "ranker", "ranker", "stable-rev", "canary-rev", WINDOW, PODS, mappings
    )


async def test_gpu_signals_count_exactly_this_modelservices_pods(prometheus_url: str) -> None:
    querier = PrometheusQuerier(prometheus_url, 5)
    await scraped(querier)

    # Prometheus itself renamed the ServiceMonitor-style node's labels.
    renamed = await asyncio.to_thread(
        querier.query,
        f'count({gpu.GPU_UTIL}{{exported_namespace="prod",namespace="gpu-operator",'
        f'exported_pod=~"ranker.*",exported_container="model-server"}})',
    )
    assert renamed.value == 3

    # Autoscaler: the per-pod utilisation summed over the service's four pods
    # (90 + 70 + avg(80, 60) + 98), nothing of staging, other-model or the idle GPU.
    policy = AutoscalingSpec(signal="gpuUtilization", target=82, maxReplicas=10)
    outcomes = await querier.run({"load": load_query(policy, context())})
    assert outcomes["load"].status is QueryStatus.OK
    assert outcomes["load"].value == pytest.approx(328.0)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    history = [ScaleRecord(time=now - timedelta(minutes=10), replicas=3)]
    decision = desired_replicas(outcomes["load"].value, policy, 3, history, now)
    assert decision.replicas == 4, decision.reason
    assert "gpuUtilization 328 / target 82 per replica = 4" in decision.reason

    # Memory adds a pod's GPUs up: 20000 + 22000 + (10000 + 10000) + 30000 MiB.
    memory = AutoscalingSpec(signal="gpuMemoryUsed", target=20000, maxReplicas=10)
    outcomes = await querier.run({"load": load_query(memory, context())})
    assert outcomes["load"].value == pytest.approx(92000.0)

    # With only dcgm-exporter's own labels configured, the renamed node is invisible.
    direct_only = context((gpu.LabelMapping("namespace", "pod"),))
    outcomes = await querier.run({"load": load_query(policy, direct_only)})
    assert outcomes["load"].value == pytest.approx(160.0)

    # Canary analysis: the canary's one pod at 98% and 30000 MiB fails against 90% and
    # 1.2x the stable pods' mean (62000 / 3 MiB) ...
    analysis = Analysis(
        metrics=[
            AnalysisMetric(name="gpuUtilization", max=90),
            AnalysisMetric(name="gpuMemoryUsed", compare={"max": 1.2}),
            AnalysisMetric(name="gpuPowerUsage", max=400),
        ],
        min_sample_count=0,
    )
    report = evaluate(analysis, await querier.run(plan_queries(analysis, context())))
    assert report.verdict is Verdict.FAIL, report.message
    assert [(r.name, r.verdict) for r in report.results] == [
        ("gpuUtilization", Verdict.FAIL),
        ("gpuMemoryUsed", Verdict.FAIL),
        ("gpuPowerUsage", Verdict.PASS),
    ]
    assert report.results[0].message == "metric gpuUtilization 98.0% > 90.0%"
    assert report.results[1].stable_value == pytest.approx(62000 / 3)
    assert report.results[2].value == pytest.approx(300.0)

    # ... while the stable pods judged the same way pass (mean 76.7%, 0.69x the memory).
    swapped = QueryContext("prod", "ranker", "ranker", "canary-rev", "stable-rev", WINDOW, PODS)
    report = evaluate(analysis, await querier.run(plan_queries(analysis, swapped)))
    assert report.verdict is Verdict.PASS, report.message
    assert report.results[0].value == pytest.approx(230 / 3)
