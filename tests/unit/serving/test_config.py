"""Configuration: sources, precedence, and errors that name the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlkube.serving.config import ConfigError, effective_workers, load_config, read_config_file


def test_defaults_match_the_contract() -> None:
    cfg = load_config({}, {})
    assert cfg.server.port == 8080
    assert cfg.server.grpc_port == 8081
    assert cfg.server.host == "0.0.0.0"
    assert cfg.model.name == "bandit"
    assert cfg.model.format == "bandit"
    assert (cfg.bandit.prior_alpha, cfg.bandit.prior_beta) == (1.0, 1.0)
    assert cfg.bandit.max_items == 10_000
    assert cfg.feature_store.kind == "memory"
    assert cfg.feature_store.refresh_interval < 1.0
    assert cfg.server.access_log_sample_rate == 0.0
    assert effective_workers(cfg)[0] >= 1


def test_env_overrides_file_and_flags_override_env() -> None:
    file = {"server": {"port": 9000, "workers": 3}, "model": {"name": "recs"}}
    env = {
        "MLKUBE_PORT": "9100",
        "MLKUBE_MODEL_VERSION": "v7",
        "MLKUBE_FEATURE_STORE": "redis",
        "MLKUBE_REDIS_URL": "redis://cache:6379/1",
        "MLKUBE_BANDIT_PRIOR_ALPHA": "2.5",
        "MLKUBE_MAX_ITEMS": "500",
        "MLKUBE_REVISION": "abc123",
        "MLKUBE_WORKERS": "auto",
    }
    cfg = load_config(file, env, {("server", "port"): 9200})
    assert cfg.server.port == 9200
    assert cfg.server.workers is None  # "auto" from the environment beats the file's 3
    assert cfg.model.name == "recs"
    assert cfg.model.version == "v7"
    assert cfg.feature_store.kind == "redis"
    assert cfg.feature_store.redis_url == "redis://cache:6379/1"
    assert cfg.bandit.prior_alpha == 2.5
    assert cfg.bandit.max_items == 500
    assert cfg.revision == "abc123"


@pytest.mark.parametrize(
    ("file", "env", "message"),
    [
        (
            {},
            {"MLKUBE_PORT": "http"},
            "server.port (from MLKUBE_PORT): Input should be a valid integer",
        ),
        ({}, {"MLKUBE_PORT": "70000"}, "server.port (from MLKUBE_PORT)"),
        ({"server": {"prot": 1}}, {}, "server.prot (from config file): Extra inputs"),
        (
            {},
            {"MLKUBE_BANDIT_PRIOR_BETA": "0"},
            "bandit.prior_beta (from MLKUBE_BANDIT_PRIOR_BETA)",
        ),
        ({}, {"MLKUBE_FEATURE_STORE": "etcd"}, "feature_store.kind (from MLKUBE_FEATURE_STORE)"),
        ({}, {"MLKUBE_REDIS_URL": "localhost"}, "feature_store.redis_url (from MLKUBE_REDIS_URL)"),
        ({}, {"MLKUBE_MODEL_NAME": "bad name"}, "model.name (from MLKUBE_MODEL_NAME)"),
        ({}, {"MLKUBE_MODEL_FORMAT": "custom"}, "model.class is required"),
        ({}, {"MLKUBE_MODEL_CLASS": "nocolon"}, "model.class (from MLKUBE_MODEL_CLASS)"),
        (
            {"feature_store": {"refresh_interval": 2, "max_staleness": 1}},
            {},
            "max_staleness must be greater",
        ),
        ({}, {"MLKUBE_WORKERS": "0"}, "server.workers (from MLKUBE_WORKERS)"),
        ({}, {"MLKUBE_GRPC_PORT": "-1"}, "server.grpc_port (from MLKUBE_GRPC_PORT)"),
        (
            {},
            {"MLKUBE_GRPC_PORT": "9000", "MLKUBE_PORT": "9000"},
            "server.grpc_port must differ from server.port (9000); 0 turns gRPC off",
        ),
    ],
)
def test_bad_values_name_the_field(file: dict, env: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        load_config(file, env)
    assert message in str(info.value)


def test_config_file_yaml_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "serve.yaml"
    good.write_text("server:\n  port: 9001\nbandit:\n  prior_alpha: 3\n")
    assert load_config(read_config_file(good), {}).server.port == 9001
    broken = tmp_path / "broken.yaml"
    broken.write_text("server: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(broken)
    scalar = tmp_path / "scalar.json"
    scalar.write_text("[1]")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        read_config_file(scalar)
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path / "missing.yaml")


@pytest.mark.slow
def test_bad_config_fails_at_start_naming_the_field(tmp_path: Path) -> None:
    """`mlkube serve` exits 2 before starting anything, with the field in the message."""
    env = {"MLKUBE_BANDIT_PRIOR_ALPHA": "-1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "mlkube", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "bandit.prior_alpha (from MLKUBE_BANDIT_PRIOR_ALPHA)" in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlkube",
            "serve",
            "--model-format",
            "custom",
            "--model-class",
            "no_such_module_xyz:Model",
        ],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "model.class: cannot import 'no_such_module_xyz'" in proc.stderr


def test_empty_variables_mean_not_set() -> None:
    env = {
        "MLKUBE_MODEL_CLASS": "",
        "MLKUBE_MODEL_URI": "",
        "MLKUBE_REDIS_URL": "",
        "MLKUBE_WORKERS": "",
        "MLKUBE_PORT": " ",
    }
    cfg = load_config({"server": {"port": 9000}}, env)
    assert cfg.model.class_path is None
    assert cfg.model.uri is None
    assert cfg.feature_store.redis_url == "redis://127.0.0.1:6379/0"
    assert cfg.server.workers is None
    assert cfg.server.port == 9000


def test_grpc_port_from_each_source_and_zero_turns_it_off() -> None:
    from mlkube.serving.cli import _parser, resolve_config

    assert load_config({"server": {"grpc_port": 9001}}, {}).server.grpc_port == 9001
    assert load_config({}, {"MLKUBE_GRPC_PORT": "9002"}).server.grpc_port == 9002
    assert load_config({}, {"MLKUBE_GRPC_PORT": "0"}).server.grpc_port == 0
    args = _parser().parse_args(["--grpc-port", "9003"])
    assert resolve_config(args, {"MLKUBE_GRPC_PORT": "9002"}).server.grpc_port == 9003
    # moving REST onto 8081 needs gRPC moved (or off) too
    with pytest.raises(ConfigError, match="grpc_port must differ"):
        load_config({}, {"MLKUBE_PORT": "8081"})
    assert load_config({}, {"MLKUBE_PORT": "8081", "MLKUBE_GRPC_PORT": "0"}).server.port == 8081
