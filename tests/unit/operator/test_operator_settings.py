"""One validated settings table for `mlkube operator`: flags and MLKUBE_* variables alike.

A bad value is refused the same way whichever source it came from, with one line that
names the setting and where it was set, and never reaches a Deployment or a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlkube.operator.config import (
    SETTINGS,
    ConfigError,
    OperatorConfig,
    parse_config,
    unknown_environment,
)

REPO = Path(__file__).resolve().parents[3]
OPERATOR_TEMPLATE = REPO / "charts" / "mlkube" / "templates" / "deployment.yaml"

ENV_TO_FLAG = {s.env: s.flag for s in SETTINGS}

# (environment variable, bad value, what the message says is expected)
BAD = [
    ("MLKUBE_RECONCILE_INTERVAL", "1m", "expected a number of seconds > 0"),
    ("MLKUBE_RECONCILE_INTERVAL", "0", "expected a number of seconds > 0"),
    ("MLKUBE_RECONCILE_INTERVAL", "-5", "expected a number of seconds > 0"),
    ("MLKUBE_RECONCILE_INTERVAL", "nan", "expected a number of seconds > 0"),
    ("MLKUBE_RECONCILE_INTERVAL", "inf", "expected a number of seconds > 0"),
    ("MLKUBE_RECONCILE_INTERVAL", "", "expected a number of seconds > 0"),
    ("MLKUBE_HEALTH_PORT", "x", "expected a port number 1..65535"),
    ("MLKUBE_HEALTH_PORT", "0", "expected a port number 1..65535"),
    ("MLKUBE_HEALTH_PORT", "65536", "expected a port number 1..65535"),
    ("MLKUBE_HEALTH_PORT", "8081.0", "expected a port number 1..65535"),
    ("MLKUBE_METRICS_PORT", "http", "expected a port number 1..65535, or 0 for none"),
    ("MLKUBE_METRICS_PORT", "-1", "expected a port number 1..65535, or 0 for none"),
    ("MLKUBE_METRICS_PORT", "65536", "expected a port number 1..65535, or 0 for none"),
    ("MLKUBE_IMAGE_PULL_POLICY", "sometimes", "expected one of Always, IfNotPresent, Never"),
    ("MLKUBE_IMAGE_PULL_POLICY", "always", "expected one of Always, IfNotPresent, Never"),
    ("MLKUBE_LOG_LEVEL", "verbose", "expected one of DEBUG, INFO, WARNING, ERROR"),
    ("MLKUBE_LOG_FORMAT", "xml", "expected one of json, text"),
    ("MLKUBE_WATCH_NAMESPACES", "Team_A", "'Team_A' is not a namespace name"),
    ("MLKUBE_WATCH_NAMESPACES", "a,-b", "'-b' is not a namespace name"),
    ("MLKUBE_WATCH_NAMESPACES", "x" * 64, "is not a namespace name"),
    ("MLKUBE_PEERING", "Not A Name", "expected a peering object name"),
    ("MLKUBE_PEERING_PRIORITY", "high", "expected an integer"),
    ("MLKUBE_PEERING_PRIORITY", "1.5", "expected an integer"),
    ("MLKUBE_PEERING_LIFETIME", "0", "expected a whole number of seconds > 0"),
    ("MLKUBE_PEERING_LIFETIME", "-10", "expected a whole number of seconds > 0"),
    ("MLKUBE_PEERING_LIFETIME", "soon", "expected a whole number of seconds > 0"),
    ("MLKUBE_WATCH_TIMEOUT", "5m", "expected a whole number of seconds > 0"),
    ("MLKUBE_WATCH_TIMEOUT", "0", "expected a whole number of seconds > 0"),
    ("MLKUBE_WATCH_CLIENT_TIMEOUT", "x", "expected a number of seconds > 0"),
    ("MLKUBE_REQUEST_TIMEOUT", "0", "expected a number of seconds > 0"),
    ("MLKUBE_PROMETHEUS_URL", "prom:9090", "expected an http:// or https:// URL"),
    ("MLKUBE_PROMETHEUS_URL", "ftp://prom", "expected an http:// or https:// URL"),
    ("MLKUBE_DEFAULT_IMAGE", "reg/img:1 latest", "expected an image reference"),
    ("MLKUBE_HEALTH_HOST", "not a host!", "expected an IP address or a host name"),
]
BAD_IDS = [f"{env}={value!r}" for env, value, _ in BAD]


def problems_of(argv: list[str], env: dict[str, str]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        parse_config(argv, env)
    return caught.value.problems


@pytest.mark.parametrize(("env", "value", "expected"), BAD, ids=BAD_IDS)
def test_a_bad_environment_value_is_one_line_naming_the_variable(
    env: str, value: str, expected: str
) -> None:
    (problem,) = problems_of([], {env: value})
    assert problem.startswith(f"{env}={value!r}: ")
    assert expected in problem
    assert "\n" not in problem


@pytest.mark.parametrize(("env", "value", "expected"), BAD, ids=BAD_IDS)
def test_the_same_bad_value_as_a_flag_is_one_line_naming_the_flag(
    env: str, value: str, expected: str
) -> None:
    flag = ENV_TO_FLAG[env]
    (problem,) = problems_of([f"{flag}={value}"], {})
    assert problem.startswith(f"{flag} {value!r}: ")
    assert expected in problem
    assert "\n" not in problem


def test_every_bad_setting_is_reported_at_once_in_table_order() -> None:
    problems = problems_of(
        ["--health-port", "x"],
        {"MLKUBE_RECONCILE_INTERVAL": "1m", "MLKUBE_IMAGE_PULL_POLICY": "sometimes"},
    )
    assert len(problems) == 3
    assert {p.split(" ", 1)[0].split("=", 1)[0] for p in problems} == {
        "MLKUBE_RECONCILE_INTERVAL",
        "MLKUBE_IMAGE_PULL_POLICY",
        "--health-port",
    }
    order = [s.env for s in SETTINGS]
    named = [ENV_TO_FLAG.get(p.split("=", 1)[0], p.split(" ", 1)[0]) for p in problems]
    flags = [s.flag for s in SETTINGS]
    assert named == sorted(named, key=flags.index)
    assert order  # the table is not empty


def test_the_metrics_port_may_not_be_the_liveness_port_from_either_source() -> None:
    (problem,) = problems_of([], {"MLKUBE_METRICS_PORT": "8081"})
    assert problem.startswith("MLKUBE_METRICS_PORT='8081': ")
    assert "liveness" in problem
    (problem,) = problems_of(["--metrics-port", "9000", "--health-port", "9000"], {})
    assert problem.startswith("--metrics-port '9000': ")
    assert "--health-port" in problem
    # 0 turns metrics off, so it never clashes
    assert parse_config(["--metrics-port", "0"], {"MLKUBE_HEALTH_PORT": "8082"}).metrics_port == 0


def test_the_watch_client_timeout_must_outlast_the_server_timeout() -> None:
    (problem,) = problems_of(["--watch-client-timeout", "300"], {"MLKUBE_WATCH_TIMEOUT": "300"})
    assert problem.startswith("--watch-client-timeout '300': ")
    assert "MLKUBE_WATCH_TIMEOUT" in problem
    config = parse_config([], {"MLKUBE_WATCH_TIMEOUT": "120"})
    assert (config.watch_server_timeout, config.watch_client_timeout) == (120, 150.0)
    config = parse_config([], {"MLKUBE_WATCH_TIMEOUT": "120", "MLKUBE_WATCH_CLIENT_TIMEOUT": "200"})
    assert config.watch_client_timeout == 200.0


def test_an_unknown_flag_or_a_missing_value_is_a_config_error_too() -> None:
    (problem,) = problems_of(["--reconcile-intervall", "5"], {})
    assert "unrecognized arguments" in problem
    (problem,) = problems_of(["--health-port"], {})
    assert "--health-port" in problem
    (problem,) = problems_of(["-A", "-n", "a"], {})
    assert "not allowed with" in problem


SAME = object()
"""The field holds the text as given."""

# (environment variable, good value, the field's value)
GOOD = [
    ("MLKUBE_WATCH_NAMESPACES", " a, b,,c ", ("a", "b", "c")),
    ("MLKUBE_WATCH_NAMESPACES", "", ()),
    ("MLKUBE_PEERING", "mlkube", "mlkube"),
    ("MLKUBE_PEERING", "ml-peers.example", "ml-peers.example"),
    ("MLKUBE_PEERING_PRIORITY", "-5", -5),
    ("MLKUBE_PEERING_LIFETIME", "30", 30),
    ("MLKUBE_LOG_LEVEL", "warning", "WARNING"),
    ("MLKUBE_LOG_FORMAT", "JSON", "json"),
    ("MLKUBE_DEFAULT_IMAGE", "reg.example:5000/ml/img@sha256:" + "a" * 64, SAME),
    ("MLKUBE_IMAGE_PULL_POLICY", "IfNotPresent", "IfNotPresent"),
    ("MLKUBE_IMAGE_PULL_POLICY", "", None),
    ("MLKUBE_PROMETHEUS_URL", "http://prom.monitoring:9090", "http://prom.monitoring:9090"),
    ("MLKUBE_PROMETHEUS_URL", "", None),
    ("MLKUBE_HEALTH_HOST", "127.0.0.1", "127.0.0.1"),
    ("MLKUBE_HEALTH_HOST", "localhost", "localhost"),
    ("MLKUBE_HEALTH_PORT", "9000", 9000),
    ("MLKUBE_METRICS_PORT", "0", 0),
    ("MLKUBE_RECONCILE_INTERVAL", "0.5", 0.5),
    ("MLKUBE_WATCH_TIMEOUT", "120", 120),
    ("MLKUBE_WATCH_CLIENT_TIMEOUT", "400", 400.0),
    ("MLKUBE_REQUEST_TIMEOUT", "15", 15.0),
]


@pytest.mark.parametrize(("env", "value", "parsed"), GOOD, ids=[f"{e}={v!r}" for e, v, _ in GOOD])
def test_a_good_value_means_the_same_from_either_source(
    env: str, value: str, parsed: object
) -> None:
    from_env = parse_config([], {env: value})
    from_flag = parse_config([f"{ENV_TO_FLAG[env]}={value}"], {})
    assert from_env == from_flag
    field = next(s.field for s in SETTINGS if s.env == env)
    assert getattr(from_env, field) == (value if parsed is SAME else parsed)


def test_flags_win_and_an_overridden_variable_is_not_consulted() -> None:
    config = parse_config(["--health-port", "9000"], {"MLKUBE_HEALTH_PORT": "x"})
    assert config.health_port == 9000


def test_the_table_covers_every_field_once() -> None:
    assert sorted(s.field for s in SETTINGS) == sorted(
        f.name for f in dataclasses.fields(OperatorConfig)
    )
    for attr in ("env", "flag"):
        names = [getattr(s, attr) for s in SETTINGS]
        assert len(names) == len(set(names)), attr
    assert all(s.env.startswith("MLKUBE_") and s.flag.startswith("--") for s in SETTINGS)


def test_help_names_every_flag_with_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_config(["--help"], {})
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for setting in SETTINGS:
        assert setting.flag in text
        assert setting.env in text


def test_unknown_mlkube_variables_are_found_for_a_warning() -> None:
    env = {"MLKUBE_RECONCILE_INTERVALL": "5", "MLKUBE_PEERING": "", "PATH": "/bin"}
    assert unknown_environment(env) == ["MLKUBE_RECONCILE_INTERVALL"]
    assert parse_config([], env).reconcile_interval == 60.0  # a warning, not an error


def test_every_mlkube_variable_the_chart_can_set_is_a_known_setting() -> None:
    """Read from the template text, so that conditional entries count too (a render only
    shows the branches its values take)."""
    text = OPERATOR_TEMPLATE.read_text(encoding="utf-8")
    charted = set(re.findall(r"-\s+name:\s+[\"']?(MLKUBE_[A-Z0-9_]+)", text))
    assert {"MLKUBE_RECONCILE_INTERVAL", "MLKUBE_IMAGE_PULL_POLICY"} <= charted
    assert charted - {s.env for s in SETTINGS} == set()


def _operator(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m mlkube operator ...` as the console script runs it, from this checkout."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLKUBE_")}
    return subprocess.run(
        [sys.executable, "-m", "mlkube", "operator", *args],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_refuses_a_bad_variable_in_one_line_with_exit_code_2() -> None:
    proc = _operator(MLKUBE_HEALTH_PORT="x")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "mlkube operator: MLKUBE_HEALTH_PORT='x': expected a port number 1..65535"
    ]
    assert proc.stdout == ""


def test_the_command_refuses_a_bad_flag_in_one_line_with_exit_code_2() -> None:
    proc = _operator("--reconcile-interval", "1m")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "mlkube operator: --reconcile-interval '1m': expected a number of seconds > 0"
    ]


def test_an_ipv6_health_host_makes_a_usable_liveness_url() -> None:
    config = parse_config(["--health-host", "::"], {})
    assert config.liveness_endpoint == "http://[::]:8081/healthz"
