"""The chart's HA mode, run for real: two operator instances with the chart's environment.

`operator.replicas: 2` renders two Deployments whose containers differ only in
``MLKUBE_PEERING_PRIORITY``. Here the operator is started twice against kmock, each time
configured exactly as its pod would be: the environment is taken from the rendered
Deployment and parsed by the operator's own ``parse_config``. The promise of the HA mode:
the work gets done (a ModelService gets its Deployment) by the higher-priority instance,
the other stands by, and takes over when the first one stops.

To tell the instances apart in what they write, each gets its own model image
(``MLKUBE_DEFAULT_IMAGE``, the only setting changed from the rendered environment): the
Deployment's image names the instance that applied it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import MS, NS, eventually, fast_settings, free_port

from mlkube.operator.app import OperatorContext, run_operator
from mlkube.operator.config import parse_config
from mlkube.operator.kube import KubeAPI, collection_path, object_path

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "mlkube"


def chart_envs(helm: str) -> list[dict[str, str]]:
    """The plain env values of each operator instance the HA chart renders."""
    out = subprocess.run(
        [helm, "template", "mlkube", str(CHART), "-n", "mlkube-system",
         "--set", "operator.replicas=2"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    envs = []
    for doc in yaml.safe_load_all(out):
        if doc and doc["kind"] == "Deployment":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            envs.append({e["name"]: e["value"] for e in container["env"] if "value" in e})
    return envs


@contextlib.asynccontextmanager
async def instance(env: dict[str, str], pod: str) -> AsyncIterator[None]:
    """One operator process as its pod runs it (same env, its own identity)."""
    ports = {"MLKUBE_HEALTH_PORT": str(free_port()), "MLKUBE_METRICS_PORT": str(free_port())}
    config = parse_config([], {**env, **ports, "MLKUBE_HEALTH_HOST": "127.0.0.1"})
    stop, ready = asyncio.Event(), asyncio.Event()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POD_ID", pod)  # kopf's peer identity, from the downward API in the pod
        task = asyncio.create_task(
            run_operator(
                OperatorContext(config),
                stop_flag=stop,
                ready_flag=ready,
                settings_hook=fast_settings,
            )
        )
        await asyncio.wait_for(ready.wait(), timeout=15)
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


async def test_two_instances_from_the_ha_chart_get_the_work_done(
    emulator: Any, harness: KubeAPI, kubeconfig: Path, helm: str
) -> None:
    envs = chart_envs(helm)
    assert [e["MLKUBE_PEERING_PRIORITY"] for e in envs] == ["100", "99"]
    assert {e["MLKUBE_PEERING"] for e in envs} == {"mlkube"}
    await harness.request(
        "POST",
        collection_path("kopf.dev/v1", "clusterkopfpeerings", None),
        body={"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
              "metadata": {"name": "mlkube"}},
    )  # fmt: skip
    first = {**envs[0], "MLKUBE_DEFAULT_IMAGE": "ghcr.io/mlkube/mlkube:instance-0"}
    second = {**envs[1], "MLKUBE_DEFAULT_IMAGE": "ghcr.io/mlkube/mlkube:instance-1"}

    async def image() -> str | None:
        deployment = await harness.get("Deployment", NS, "recs")
        if deployment is None:
            return None
        image: str = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        return image

    async with instance(second, "mlkube-operator-standby-1-0"):
        async with instance(first, "mlkube-operator-0"):
            await asyncio.sleep(1.0)  # both keep-alives are in the peering object
            peering = await harness.request(
                "GET", object_path("kopf.dev/v1", "clusterkopfpeerings", None, "mlkube")
            )
            priorities = {k: v["priority"] for k, v in peering["status"].items()}
            assert priorities == {"mlkube-operator-0": 100, "mlkube-operator-standby-1-0": 99}
            await harness.request(
                "POST",
                collection_path("mlkube.dev/v1alpha1", "modelservices", NS),
                body=copy.deepcopy(MS),
            )
            assert (
                await eventually(image, what="a Deployment", within=10.0)
                == first["MLKUBE_DEFAULT_IMAGE"]
            ), "the lower-priority instance worked"
            await asyncio.sleep(1.5)  # the standby would have applied its own image by now
            assert await image() == first["MLKUBE_DEFAULT_IMAGE"], "both instances work"
        # The active instance stopped and withdrew its keep-alive: the standby resumes,
        # sees the ModelService for the first time and reconciles it with its own image.
        await eventually(
            lambda: _is(image, second["MLKUBE_DEFAULT_IMAGE"]),
            what="the standby to take over",
            within=20.0,
        )


async def _is(probe: Callable[[], Awaitable[str | None]], expected: str) -> bool:
    return await probe() == expected
