"""The operator's metrics: what each recording call makes Prometheus see, and the endpoint."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import aiohttp
import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlkube.api.modelservice import ModelServiceStatus
from mlkube.api.pytorchjob import ConditionType, JobCondition, PyTorchJobStatus
from mlkube.api.rollout import AutoscalingStatus, RolloutPhase, RolloutStatus
from mlkube.operator.config import ConfigError, parse_config
from mlkube.operator.metrics import OperatorMetrics, job_state, start_server


def value(m: OperatorMetrics, metric: str, /, **labels: str) -> float | None:
    return m.registry.get_sample_value(metric, labels)


def test_reconciles_are_counted_by_result_and_timed() -> None:
    m = OperatorMetrics()
    with m.reconcile("ModelService"):
        pass
    with m.reconcile("ModelService") as outcome:
        outcome.result = "invalid_spec"
    with pytest.raises(kopf.TemporaryError), m.reconcile("ModelService"):
        raise kopf.TemporaryError("API server: 503")
    with pytest.raises(RuntimeError), m.reconcile("PyTorchJob"):
        raise RuntimeError("bug")

    total = "mlkube_operator_reconciles_total"
    assert value(m, total, kind="ModelService", result="success") == 1
    assert value(m, total, kind="ModelService", result="invalid_spec") == 1
    assert value(m, total, kind="ModelService", result="retry") == 1
    assert value(m, total, kind="PyTorchJob", result="error") == 1
    duration = "mlkube_operator_reconcile_duration_seconds_count"
    assert value(m, duration, kind="ModelService") == 3
    assert value(m, duration, kind="PyTorchJob") == 1


def test_apply_failures_by_child_kind_and_code() -> None:
    m = OperatorMetrics()
    m.apply_failed("HTTPRoute", 404)
    m.apply_failed("HTTPRoute", 404)
    m.apply_failed("Deployment", 503)
    name = "mlkube_operator_apply_failures_total"
    assert value(m, name, kind="HTTPRoute", code="404") == 2
    assert value(m, name, kind="Deployment", code="503") == 1


def _status(
    phase: RolloutPhase, weight: int, canary: str | None, desired: int | None
) -> ModelServiceStatus:
    return ModelServiceStatus(
        rollout=RolloutStatus(phase=phase, canary_revision=canary, canary_weight=weight),
        autoscaling=AutoscalingStatus(mode="builtin", desired_replicas=desired)
        if desired is not None
        else None,
    )


def test_modelservice_state_follows_its_status_and_goes_with_it() -> None:
    m = OperatorMetrics()
    m.observe_modelservice("ml", "recs", _status(RolloutPhase.PROGRESSING, 20, "abc", 4))
    phase = "mlkube_operator_modelservice_rollout_phase"
    assert value(m, phase, namespace="ml", name="recs", phase="Progressing") == 1
    assert value(m, phase, namespace="ml", name="recs", phase="Succeeded") == 0
    weight = "mlkube_operator_modelservice_canary_weight"
    assert value(m, weight, namespace="ml", name="recs") == 20
    desired = "mlkube_operator_modelservice_desired_replicas"
    assert value(m, desired, namespace="ml", name="recs") == 4

    # Promoted: the canary is gone (its weight with it), autoscaling switched off.
    m.observe_modelservice("ml", "recs", _status(RolloutPhase.SUCCEEDED, 100, None, None))
    assert value(m, phase, namespace="ml", name="recs", phase="Progressing") == 0
    assert value(m, phase, namespace="ml", name="recs", phase="Succeeded") == 1
    assert value(m, weight, namespace="ml", name="recs") == 0
    assert value(m, desired, namespace="ml", name="recs") is None

    m.forget_modelservice("ml", "recs")
    m.forget_modelservice("ml", "never-seen")
    assert b'name="recs"' not in m.exposition()


def _job(*true: ConditionType) -> PyTorchJobStatus:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return PyTorchJobStatus(
        conditions=[
            JobCondition(type=c, status="True" if c in true else "False", last_update_time=now)
            for c in (ConditionType.CREATED, ConditionType.RUNNING, ConditionType.SUCCEEDED)
        ]
    )


def test_job_state_is_the_first_true_condition_in_health_order() -> None:
    assert job_state(PyTorchJobStatus()) == "Pending"
    assert job_state(_job(ConditionType.CREATED)) == "Created"
    assert job_state(_job(ConditionType.CREATED, ConditionType.RUNNING)) == "Running"
    assert job_state(_job(ConditionType.CREATED, ConditionType.SUCCEEDED)) == "Succeeded"


def test_pytorchjobs_are_counted_by_state() -> None:
    m = OperatorMetrics()
    name = "mlkube_operator_pytorchjobs"
    assert value(m, name, state="Running") == 0  # every state is there from the start
    m.observe_pytorchjob("ml", "a", _job(ConditionType.CREATED, ConditionType.RUNNING))
    m.observe_pytorchjob("ml", "b", _job(ConditionType.CREATED, ConditionType.RUNNING))
    m.observe_pytorchjob("ml", "a", _job(ConditionType.CREATED, ConditionType.RUNNING))
    assert value(m, name, state="Running") == 2
    m.observe_pytorchjob("ml", "a", _job(ConditionType.CREATED, ConditionType.SUCCEEDED))
    assert value(m, name, state="Running") == 1
    assert value(m, name, state="Succeeded") == 1
    m.forget_pytorchjob("ml", "a")
    m.forget_pytorchjob("ml", "a")
    assert value(m, name, state="Succeeded") == 0


def test_two_operators_keep_separate_registries() -> None:
    a, b = OperatorMetrics(), OperatorMetrics()
    with a.reconcile("ModelService"):
        pass
    total = "mlkube_operator_reconciles_total"
    assert value(a, total, kind="ModelService", result="success") == 1
    assert value(b, total, kind="ModelService", result="success") is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_the_endpoint_serves_the_registry_in_prometheus_text_format() -> None:
    m = OperatorMetrics()
    m.apply_failed("HTTPRoute", 404)
    port = _free_port()
    runner = await start_server(m, "127.0.0.1", port)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            text = await response.text()
    finally:
        await runner.cleanup()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = [
        s for s in families["mlkube_operator_apply_failures"].samples if s.name.endswith("_total")
    ]
    assert sample.labels == {"kind": "HTTPRoute", "code": "404"}
    assert sample.value == 1
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            await session.get(f"http://127.0.0.1:{port}/metrics")


async def test_a_port_in_use_fails_at_once() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError, match="address already in use"):
            await start_server(OperatorMetrics(), "127.0.0.1", busy.getsockname()[1])


def test_metrics_port_default_environment_flag_and_off() -> None:
    assert parse_config([], {}).metrics_port == 8082
    assert parse_config([], {"MLKUBE_METRICS_PORT": "9100"}).metrics_port == 9100
    assert (
        parse_config(["--metrics-port", "9200"], {"MLKUBE_METRICS_PORT": "9100"}).metrics_port
        == 9200
    )
    assert parse_config(["--metrics-port", "0"], {}).metrics_port == 0


@pytest.mark.parametrize("port", ["http", "-1", "65536", "8081"])
def test_bad_metrics_ports_are_refused(port: str) -> None:
    with pytest.raises(ConfigError, match=f"^MLKUBE_METRICS_PORT='{port}': "):
        parse_config([], {"MLKUBE_METRICS_PORT": port})
