"""The built-in canary queries against a real Prometheus scraping two real runtimes.

Two ``mlkube serve`` processes run the same scripted model as revisions ``stable-rev``
and ``canary-rev``; Debian's ``prometheus`` scrapes both every second.  The stable track
answers everything quickly; the canary fails every 10th request (500) and delays every
5th by 300ms.  The success-rate and p99 queries the operator sends must tell the two
apart, per revision, with the values the load actually had.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from mlkube.api.rollout import Analysis, AnalysisMetric, Verdict
from mlkube.operator.analysis import (
    PrometheusQuerier,
    QueryContext,
    QueryStatus,
    evaluate,
    latency_p99_query,
    plan_queries,
    samples_query,
    success_rate_query,
)
from mlkube.operator.autoscaler import inflight_query

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PROMETHEUS = shutil.which("prometheus")
WINDOW = 60
STABLE_REQUESTS = 400
CANARY_REQUESTS = 400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], deadline: float = 60.0) -> None:
    import urllib.error
    import urllib.request

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready within {deadline}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def runtimes(tmp_path: Path) -> Iterator[dict[str, int]]:
    """Two serving runtimes (one worker each) on loopback: revision -> port."""
    procs: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    try:
        for revision in ("stable-rev", "canary-rev"):
            port = free_port()
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
                "MLKUBE_HOST": "127.0.0.1",
                "MLKUBE_PORT": str(port),
                "MLKUBE_GRPC_PORT": str(next(p for p in iter(free_port, None) if p != port)),
                "MLKUBE_WORKERS": "1",
                "MLKUBE_MODEL_NAME": "ranker",
                "MLKUBE_MODEL_VERSION": "v1" if revision == "stable-rev" else "v2",
                "MLKUBE_MODEL_FORMAT": "custom",
                "MLKUBE_MODEL_CLASS": "scripted_model:ScriptedModel",
                "MLKUBE_REVISION": revision,
                "MLKUBE_LOG_LEVEL": "WARNING",
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{revision}"),
            }
            (tmp_path / f"metrics-{revision}").mkdir()
            log = (tmp_path / f"{revision}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlkube", "serve"], env=env, stdout=log, stderr=log
            )
            procs.append(proc)
            ports[revision] = port
        for (revision, port), proc in zip(ports.items(), procs, strict=True):
            try:
                wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
            except (RuntimeError, TimeoutError):
                print((tmp_path / f"{revision}.log").read_text())
                raise
        yield ports
    finally:
        for proc in procs:
            stop(proc)


@contextlib.contextmanager
def run_prometheus(tmp_path: Path, scrape_configs: str) -> Iterator[str]:
    """Debian's prometheus on loopback, scraping every second: its base URL, until exit.
    ``scrape_configs`` is the YAML list under ``scrape_configs:``."""
    # A missing binary is a missing install step, never a skip: `make test` installs it.
    assert PROMETHEUS is not None, "prometheus is not installed: run `make debs`"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n" + scrape_configs
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def scrape_runtimes(runtimes: dict[str, int]) -> str:
    """One job scraping every runtime's port each second."""
    targets = ", ".join(f"'127.0.0.1:{p}'" for p in runtimes.values())
    return (
        "  - job_name: mlkube\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: [{targets}]\n"
    )


@pytest.fixture
def prometheus_url(tmp_path: Path, runtimes: dict[str, int]) -> Iterator[str]:
    with run_prometheus(tmp_path, scrape_runtimes(runtimes)) as url:
        yield url


async def send(session: aiohttp.ClientSession, port: int, parameters: dict[str, object]) -> int:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    if parameters:
        body["parameters"] = parameters
    async with session.post(f"http://127.0.0.1:{port}/v2/models/ranker/infer", json=body) as r:
        await r.read()
        return r.status


def canary_script(i: int) -> dict[str, object]:
    if i % 10 == 9:
        return {"fail": True}
    if i % 5 == 0:
        return {"sleep_ms": 300}
    return {}


async def load(ports: dict[str, int]) -> dict[str, list[int]]:
    """Bounded concurrent load on both revisions; returns the status codes seen."""
    codes: dict[str, list[int]] = {"stable-rev": [], "canary-rev": []}
    sem = asyncio.Semaphore(16)

    async def one(revision: str, params: dict[str, object]) -> None:
        async with sem:
            codes[revision].append(await send(session, ports[revision], params))

    async with aiohttp.ClientSession() as session:
        tasks = [one("stable-rev", {}) for _ in range(STABLE_REQUESTS)]
        tasks += [one("canary-rev", canary_script(i)) for i in range(CANARY_REQUESTS)]
        await asyncio.gather(*tasks)
    return codes


async def scraped(querier: PrometheusQuerier, query: str, expect: float, within: float) -> float:
    """Poll until Prometheus has scraped the load (value near ``expect``) or give up."""
    value = float("nan")
    for _ in range(40):
        outcome = await asyncio.to_thread(querier.query, query)
        if outcome.status is QueryStatus.OK and outcome.value is not None:
            value = outcome.value
            if abs(value - expect) <= within:
                return value
        await asyncio.sleep(0.5)
    return value


@pytest.fixture
async def warmed(runtimes: dict[str, int], prometheus_url: str) -> None:
    """Create every series (200 and 500) and let Prometheus scrape them before the load,
    so the load is counted from a baseline rather than lost before the first scrape."""
    async with aiohttp.ClientSession() as session:
        await send(session, runtimes["stable-rev"], {})
        await send(session, runtimes["canary-rev"], {})
        assert await send(session, runtimes["canary-rev"], {"fail": True}) == 500
    querier = PrometheusQuerier(prometheus_url, 5)
    for _ in range(40):
        outcome = await asyncio.to_thread(
            querier.query, 'count(mlkube_requests_total{endpoint="infer"})'
        )
        if outcome.value == 3:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.5)  # two more scrapes: the baseline is in the window


async def test_builtin_queries_per_revision(
    runtimes: dict[str, int], prometheus_url: str, warmed: None
) -> None:
    codes = await load(runtimes)
    assert codes["stable-rev"].count(200) == STABLE_REQUESTS
    assert codes["canary-rev"].count(500) == CANARY_REQUESTS // 10
    querier = PrometheusQuerier(prometheus_url, 5)

    # Sample counts (increase() extrapolates to the window edges, so not to the request).
    for revision, sent in (("stable-rev", STABLE_REQUESTS), ("canary-rev", CANARY_REQUESTS)):
        seen = await scraped(querier, samples_query(revision, WINDOW), sent, sent * 0.35)
        assert abs(seen - sent) <= sent * 0.35, (revision, seen)

    stable_sr = await scraped(querier, success_rate_query("stable-rev", WINDOW), 1.0, 0.0)
    canary_sr = await scraped(querier, success_rate_query("canary-rev", WINDOW), 0.9, 0.02)
    assert stable_sr == 1.0
    assert canary_sr == pytest.approx(0.9, abs=0.02)

    stable_p99 = (
        await asyncio.to_thread(querier.query, latency_p99_query("stable-rev", WINDOW))
    ).value
    canary_p99 = (
        await asyncio.to_thread(querier.query, latency_p99_query("canary-rev", WINDOW))
    ).value
    assert stable_p99 is not None
    assert canary_p99 is not None
    print(  # the figures, for `pytest -s`
        f"\nsuccessRate stable={stable_sr:.4f} canary={canary_sr:.4f}; "
        f"latencyP99 stable={stable_p99:.1f}ms canary={canary_p99:.1f}ms"
    )
    # 20% of the canary's answers took >= 300ms: its p99 is in the (250ms, 500ms] bucket
    # (487.5ms by linear interpolation), or the next one if the machine is very loaded.
    assert 250 <= canary_p99 <= 1000, canary_p99
    assert stable_p99 < 250, stable_p99

    # The whole analysis, as the operator runs it, fails the canary on both metrics ...
    analysis = Analysis(
        metrics=[
            AnalysisMetric(name="successRate", min=0.95),
            AnalysisMetric(name="latencyP99", max=200),
            AnalysisMetric(
                name="latencyP99Ratio",
                query=latency_p99_query("{{ revision }}", WINDOW),
                compare={"max": 1.5},
            ),
        ],
        min_sample_count=100,
    )
    ctx = QueryContext("default", "ranker", "ranker", "stable-rev", "canary-rev", WINDOW)
    report = evaluate(analysis, await querier.run(plan_queries(analysis, ctx)))
    assert report.verdict is Verdict.FAIL
    assert [r.verdict for r in report.results] == [Verdict.FAIL] * 3
    assert "metric latencyP99 " in report.message
    # ... and passes the stable revision judged the same way.
    swapped = QueryContext("default", "ranker", "ranker", "canary-rev", "stable-rev", WINDOW)
    report = evaluate(analysis, await querier.run(plan_queries(analysis, swapped)))
    assert [r.verdict for r in report.results] == [Verdict.PASS, Verdict.PASS, Verdict.PASS]

    # The autoscaler's load signal answers (a number, not "no data") for both revisions.
    load_signal = await asyncio.to_thread(
        querier.query, inflight_query(["stable-rev", "canary-rev"], WINDOW)
    )
    assert load_signal.status is QueryStatus.OK
    assert load_signal.value is not None
    assert load_signal.value >= 0
