"""The operator's /metrics endpoint, scraped over HTTP while the real operator works on kmock.

The operator runs exactly as ``mlkube operator`` runs it (``run_operator`` with a config
from ``parse_config``, metrics port from ``MLKUBE_METRICS_PORT``); the test plays a user who
creates ModelServices and Prometheus scraping the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlkube.operator.app import OperatorContext, run_operator
from mlkube.operator.config import OperatorConfig, parse_config
from mlkube.operator.kube import KubeAPI, collection_path

pytestmark = [pytest.mark.slow]

NS = "ml"
MS_API = "mlkube.dev/v1alpha1"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _fast_exit(settings: kopf.OperatorSettings) -> None:
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 1.0


@pytest.fixture
async def metered(kubeconfig: Path) -> AsyncIterator[OperatorConfig]:
    """The operator with its metrics endpoint on a free loopback port."""
    config = parse_config(
        [],
        {
            "MLKUBE_DEFAULT_IMAGE": "ghcr.io/mlkube/mlkube:test",
            "MLKUBE_RECONCILE_INTERVAL": "0.5",
            "MLKUBE_HEALTH_HOST": "127.0.0.1",
            "MLKUBE_HEALTH_PORT": str(_free_port()),
            "MLKUBE_METRICS_PORT": str(_free_port()),
        },
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_operator(
            OperatorContext(config), stop_flag=stop, ready_flag=ready, settings_hook=_fast_exit
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), timeout=15)
        yield config
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=20)


async def scrape(config: OperatorConfig) -> Samples:
    url = f"http://127.0.0.1:{config.metrics_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": MS_API,
        "kind": "ModelService",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {"model": {"name": "ranker", "version": "v1"}, "replicas": 2, **spec},
    }


async def eventually_scraped(config: OperatorConfig, check: Any, what: str) -> Samples:
    deadline = asyncio.get_running_loop().time() + 15.0
    samples: Samples = {}
    while asyncio.get_running_loop().time() < deadline:
        samples = await scrape(config)
        if check(samples):
            return samples
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; scraped: {samples}")


async def test_reconciles_show_up_on_the_metrics_endpoint(
    cluster: Any, api: KubeAPI, metered: OperatorConfig
) -> None:
    total = "mlkube_operator_reconciles_total"
    before = await scrape(metered)
    assert sample(before, total, kind="ModelService", result="success") is None
    # Every PyTorchJob state is reported from the start (0), so "no jobs" is a value.
    assert sample(before, "mlkube_operator_pytorchjobs", state="Running") == 0

    path = collection_path(MS_API, "modelservices", NS)
    await api.request("POST", path, body=manifest("recs"))
    await api.request("POST", path, body=manifest("broken", featureStore={"type": "redis"}))

    def settled(s: Samples) -> bool:
        return (sample(s, total, kind="ModelService", result="success") or 0) >= 1 and (
            sample(s, total, kind="ModelService", result="invalid_spec") or 0
        ) >= 1

    samples = await eventually_scraped(metered, settled, "both reconciles counted")
    assert await api.get("Deployment", NS, "recs") is not None
    count = sample(samples, "mlkube_operator_reconcile_duration_seconds_count", kind="ModelService")
    assert (count or 0) >= 2
    # A plain ModelService rolls out in place: its rollout is Succeeded, no canary.
    phase = "mlkube_operator_modelservice_rollout_phase"
    assert sample(samples, phase, namespace=NS, name="recs", phase="Succeeded") == 1
    assert sample(samples, phase, namespace=NS, name="recs", phase="Progressing") == 0
    weight = "mlkube_operator_modelservice_canary_weight"
    assert sample(samples, weight, namespace=NS, name="recs") == 0

    # The drift timer (0.5 s) keeps reconciling: the counter moves on.
    first = sample(samples, total, kind="ModelService", result="success") or 0
    await eventually_scraped(
        metered,
        lambda s: (sample(s, total, kind="ModelService", result="success") or 0) > first,
        "the drift timer's reconciles",
    )


async def test_a_refused_child_counts_as_an_apply_failure(
    cluster: Any, api: KubeAPI, metered: OperatorConfig
) -> None:
    """Gateway API routing on a cluster without the Gateway API CRDs: 404 for the route."""
    cluster.unserved = {"gateway.networking.k8s.io/httproutes"}
    rollout = {"trafficRouting": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    body = copy.deepcopy(manifest("routed", rollout=rollout))
    await api.request("POST", collection_path(MS_API, "modelservices", NS), body=body)
    await eventually_scraped(
        metered,
        lambda s: sample(s, "mlkube_operator_apply_failures_total", kind="HTTPRoute", code="404"),
        "the refused HTTPRoute",
    )
    # The reconcile is counted when it ends, after its status is written: a moment later.
    total = "mlkube_operator_reconciles_total"
    samples = await eventually_scraped(
        metered,
        lambda s: (sample(s, total, kind="ModelService", result="apply_failed") or 0) >= 1,
        "the reconcile counted as apply_failed",
    )
    assert not sample(samples, total, kind="ModelService", result="success")
