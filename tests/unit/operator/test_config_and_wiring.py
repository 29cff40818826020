"""Operator configuration parsing, kopf settings, object parsing and API paths."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from mlkube.operator.app import configure_settings
from mlkube.operator.config import ConfigError, OperatorConfig, default_image, parse_config
from mlkube.operator.handlers import parse
from mlkube.operator.kube import collection_path, object_path


def test_defaults_are_cluster_wide_standalone_text() -> None:
    config = parse_config([], {})
    assert config.clusterwide
    assert config.standalone
    assert config.log_format == "text"
    assert config.log_level == "INFO"
    assert config.default_image == default_image()
    assert config.default_image.startswith("ghcr.io/mlkube/mlkube:")
    assert config.liveness_endpoint == "http://0.0.0.0:8081/healthz"
    assert config.watch_client_timeout > config.watch_server_timeout


def test_environment_is_read() -> None:
    config = parse_config(
        [],
        {
            "MLKUBE_WATCH_NAMESPACES": "a, b,,c",
            "MLKUBE_PEERING": "mlkube",
            "MLKUBE_LOG_LEVEL": "debug",
            "MLKUBE_LOG_FORMAT": "JSON",
            "MLKUBE_DEFAULT_IMAGE": "reg/img:1",
            "MLKUBE_PROMETHEUS_URL": "http://prom:9090",
        },
    )
    assert config.namespaces == ("a", "b", "c")
    assert not config.clusterwide
    assert config.peering == "mlkube"
    assert not config.standalone
    assert config.log_level == "DEBUG"
    assert config.log_format == "json"
    assert config.default_image == "reg/img:1"
    assert config.prometheus_url == "http://prom:9090"


def test_flags_win_over_environment() -> None:
    env = {"MLKUBE_WATCH_NAMESPACES": "a", "MLKUBE_PEERING": "p", "MLKUBE_LOG_FORMAT": "json"}
    config = parse_config(
        ["-n", "x,y", "-n", "z", "--standalone", "--log-format", "text", "-v"], env
    )
    assert config.namespaces == ("x", "y", "z")
    assert config.standalone
    assert config.log_format == "text"
    assert config.log_level == "DEBUG"
    assert parse_config(["-A"], env).clusterwide


def test_bad_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="--reconcile-interval '0'"):
        parse_config(["--reconcile-interval", "0"], {})
    with pytest.raises(ConfigError, match="--log-format 'xml'"):
        parse_config(["--log-format", "xml"], {})


def test_kopf_state_lives_under_mlkube_dev() -> None:
    settings = kopf.OperatorSettings()
    configure_settings(settings, OperatorConfig(watch_server_timeout=120, watch_client_timeout=150))
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "mlkube.dev"
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert diffbase.prefix == "mlkube.dev"
    assert settings.persistence.finalizer == "mlkube.dev/finalizer"
    assert settings.watching.server_timeout == 120
    assert settings.watching.client_timeout == 150
    assert settings.posting.level == logging.WARNING
    assert settings.peering.standalone


def test_peering_mode_is_mandatory_when_named() -> None:
    settings = kopf.OperatorSettings()
    configure_settings(settings, OperatorConfig(peering="mlkube", namespaces=("a",)))
    assert not settings.peering.standalone
    assert settings.peering.mandatory
    assert settings.peering.name == "mlkube"
    assert not settings.peering.clusterwide


def test_peering_priority_and_lifetime_from_environment_and_flags() -> None:
    env = {
        "MLKUBE_PEERING": "mlkube",
        "MLKUBE_PEERING_PRIORITY": "99",
        "MLKUBE_PEERING_LIFETIME": "30",
    }
    config = parse_config([], env)
    assert (config.peering_priority, config.peering_lifetime) == (99, 30)
    flagged = parse_config(["--peering-priority", "-5", "--peering-lifetime", "15"], env)
    assert (flagged.peering_priority, flagged.peering_lifetime) == (-5, 15)
    defaults = parse_config([], {})
    assert (defaults.peering_priority, defaults.peering_lifetime) == (0, 60)


@pytest.mark.parametrize(
    "env",
    [
        {"MLKUBE_PEERING_PRIORITY": "high"},
        {"MLKUBE_PEERING_PRIORITY": "1.5"},
        {"MLKUBE_PEERING_LIFETIME": "0"},
        {"MLKUBE_PEERING_LIFETIME": "-10"},
        {"MLKUBE_PEERING_LIFETIME": "soon"},
    ],
)
def test_bad_peering_values_are_refused_naming_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config([], env)
    ((name, value),) = env.items()
    assert caught.value.problems[0].startswith(f"{name}={value!r}: ")


def test_peering_priority_and_lifetime_reach_kopf() -> None:
    settings = kopf.OperatorSettings()
    config = OperatorConfig(peering="mlkube", peering_priority=99, peering_lifetime=30)
    configure_settings(settings, config)
    assert settings.peering.priority == 99
    assert settings.peering.lifetime == 30


def _body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "recs", "namespace": "ml", "uid": "u", "generation": 2},
        "spec": {"model": {"name": "m", "version": "v1"}, **spec},
        "status": {"revision": "r1", "conditions": []},
    }


def test_parse_good_object() -> None:
    parsed = parse(_body(replicas=3))
    assert parsed.model is not None
    assert parsed.problems == []
    assert parsed.replicas == 3
    assert parsed.status is not None
    assert parsed.status.revision == "r1"


def test_parse_reports_unparseable_specs_with_field_paths() -> None:
    parsed = parse(_body(replicas="many", gpu={"count": -1}))
    assert parsed.model is None
    assert any(
        p.startswith("spec.spec.replicas") or p.startswith("spec.replicas") for p in parsed.problems
    )
    assert any("gpu.count" in p for p in parsed.problems)
    assert parsed.replicas == 0


def test_parse_reports_cross_field_problems() -> None:
    parsed = parse(_body(featureStore={"type": "redis"}))
    assert parsed.model is not None
    assert parsed.problems == ["featureStore: type redis needs redis.urlSecretRef"]


def test_parse_survives_a_garbled_status() -> None:
    body = _body()
    body["status"] = {"conditions": "nonsense"}
    assert parse(body).status is None


def test_api_paths() -> None:
    assert collection_path("v1", "pods", "ml") == "/api/v1/namespaces/ml/pods"
    assert (
        object_path("apps/v1", "deployments", "ml", "recs")
        == "/apis/apps/v1/namespaces/ml/deployments/recs"
    )
    assert (
        object_path("mlkube.dev/v1alpha1", "modelservices", "ml", "recs", "status")
        == "/apis/mlkube.dev/v1alpha1/namespaces/ml/modelservices/recs/status"
    )
    assert collection_path("v1", "namespaces", None) == "/api/v1/namespaces"
