"""Operator configuration: command-line flags over environment variables over defaults.

Every setting has an environment variable (what the Helm chart sets) and a flag (what a
person types); flags win. Both come from one table, :data:`SETTINGS`, and a value goes
through the same parser whichever source it came from, so ``MLKUBE_HEALTH_PORT=x`` and
``--health-port x`` are refused alike, with a line that names the setting and its source,
instead of a traceback at startup or a bad value in every Deployment the operator writes.

Parsing is pure (argv and an environment mapping in, a frozen config out, or a
:class:`ConfigError` listing every problem) so it is unit-tested without touching the
process environment; `mlkube operator` turns the error into stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

from mlkube import __version__
from mlkube.operator.gpu import DEFAULT_LABEL_MAPPINGS, LabelMapping, parse_label_mappings

DEFAULT_IMAGE_REPOSITORY = "ghcr.io/mlkube/mlkube"
DEFAULT_METRICS_PORT = 8082
"""The chart's ``operator.metricsPort`` default: next to the liveness endpoint's 8081."""


def default_image(version: str = __version__) -> str:
    """The mlkube image of this operator's own version (`mlkube serve` is in it)."""
    return f"{DEFAULT_IMAGE_REPOSITORY}:{version.split('+', 1)[0]}"


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means cluster-wide."""
    peering: str = ""
    """kopf peering object name; empty runs standalone (one replica, no leader election)."""
    peering_priority: int = 0
    """This instance's kopf peering priority. The highest-priority live peer works and the
    others pause; peers of equal priority all pause, so HA replicas need distinct values."""
    peering_lifetime: int = 60
    """Seconds this instance's keep-alive stays valid: how long the standby waits after the
    active instance dies without saying goodbye (a clean exit withdraws it at once)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "text"
    default_image: str = default_image()
    image_pull_policy: str | None = None
    prometheus_url: str | None = None
    """Prometheus the rollout analysis and autoscaler query (read by those components)."""
    gpu_metric_labels: tuple[LabelMapping, ...] = DEFAULT_LABEL_MAPPINGS
    """Labels under which dcgm-exporter's series name a GPU's namespace and pod, as this
    cluster's Prometheus stores them (``exported_*`` after a scrape with honor_labels off)."""
    health_host: str = "0.0.0.0"
    health_port: int = 8081
    metrics_port: int = 0
    """Port of the Prometheus endpoint ``/metrics`` (on ``health_host``); 0 serves none.
    The command line defaults to :data:`DEFAULT_METRICS_PORT`; an operator built in code
    (tests, an embedding program) opens no port it was not given."""
    reconcile_interval: float = 60.0
    """Seconds between drift checks per ModelService (recreates deleted or edited children)."""
    watch_server_timeout: int = 300
    """Ask the API server to end each watch after this many seconds (then it is renewed)."""
    watch_client_timeout: float = 330.0
    """Give up on a watch connection that outlives the server timeout: a silent stall."""
    request_timeout: float = 60.0
    workers: int = 16
    """Reconciles in flight at once (both controllers share the pool): bounds what a burst
    of a thousand objects asks of the API server at a time."""

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        return not self.peering

    @property
    def liveness_endpoint(self) -> str:
        host = f"[{self.health_host}]" if ":" in self.health_host else self.health_host
        return f"http://{host}:{self.health_port}/healthz"


PROG = "mlkube operator"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")
IMAGE_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
WATCH_CLIENT_MARGIN = 30.0
"""Seconds the client waits beyond the server's watch timeout unless told otherwise."""


class ConfigError(ValueError):
    """Settings that cannot be used; ``problems`` holds one line per setting, each naming
    the flag or environment variable it came from."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class _Invalid(ValueError):
    """Raised by a value parser; the message says what was expected."""


# ---------------------------------------------------------------------------- value parsers
# Each takes the text as a flag or an environment variable carries it and returns the
# field's value or raises _Invalid. The same function serves both sources.

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*[A-Za-z0-9]|[A-Za-z0-9]")


def _integer(text: str, expected: str) -> int:
    if not _INTEGER.fullmatch(text.strip()):
        raise _Invalid(expected)
    return int(text)


def _priority(text: str) -> int:
    return _integer(text, "expected an integer")


def _whole_seconds(text: str) -> int:
    expected = "expected a whole number of seconds > 0"
    value = _integer(text, expected)
    if value <= 0:
        raise _Invalid(expected)
    return value


def _seconds(text: str) -> float:
    expected = "expected a number of seconds > 0"
    try:
        value = float(text)
    except ValueError:
        raise _Invalid(expected) from None
    if not math.isfinite(value) or value <= 0:
        raise _Invalid(expected)
    return value


def _optional_seconds(text: str) -> float | None:
    return _seconds(text) if text.strip() else None


def _workers(text: str) -> int:
    expected = "expected a whole number 1..1000"
    value = _integer(text, expected)
    if not 1 <= value <= 1000:
        raise _Invalid(expected)
    return value


def _port(text: str) -> int:
    expected = "expected a port number 1..65535"
    value = _integer(text, expected)
    if not 1 <= value <= 65535:
        raise _Invalid(expected)
    return value


def _port_or_off(text: str) -> int:
    expected = "expected a port number 1..65535, or 0 for none"
    value = _integer(text, expected)
    if not 0 <= value <= 65535:
        raise _Invalid(expected)
    return value


def _choice(
    choices: Sequence[str], *, fold: Callable[[str], str] | None = None
) -> Callable[[str], str]:
    """One of ``choices``; ``fold`` (str.upper, str.lower) makes the match case-blind."""

    def parse(text: str) -> str:
        value = fold(text.strip()) if fold else text.strip()
        if value not in choices:
            raise _Invalid("expected one of " + ", ".join(choices))
        return value

    return parse


def _optional_choice(choices: Sequence[str]) -> Callable[[str], str | None]:
    strict = _choice(choices)

    def parse(text: str) -> str | None:
        return strict(text) if text.strip() else None

    return parse


def _namespaces(text: str) -> tuple[str, ...]:
    """Comma-separated namespace names (DNS-1123 labels); empty: cluster-wide."""
    names: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if not name:
            continue
        if not _DNS_LABEL.fullmatch(name):
            raise _Invalid(
                f"{name!r} is not a namespace name (lowercase letters, digits and '-', "
                "at most 63 characters, a letter or digit at each end)"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def _peering(text: str) -> str:
    """A KopfPeering object's name (a DNS-1123 subdomain); empty: standalone."""
    name = text.strip()
    if name and (len(name) > 253 or not all(_DNS_LABEL.fullmatch(p) for p in name.split("."))):
        raise _Invalid(
            "expected a peering object name (lowercase letters, digits, '-' and '.', at most "
            "253 characters), or empty for standalone"
        )
    return name


def _image(text: str) -> str:
    """An image reference, or empty for this operator's own image."""
    ref = text.strip()
    if not ref:
        return default_image()
    if not _IMAGE.fullmatch(ref):
        raise _Invalid("expected an image reference such as registry/repository:tag")
    return ref


def _prometheus_url(text: str) -> str | None:
    url = text.strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", url):
        raise _Invalid("expected an http:// or https:// URL, or empty for none")
    return url


def _gpu_labels(text: str) -> tuple[LabelMapping, ...]:
    try:
        return parse_label_mappings(text)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _host(text: str) -> str:
    """An address to listen on: an IP address or a host name."""
    host = text.strip()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in labels):
        raise _Invalid("expected an IP address or a host name")
    return host


# ---------------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Setting:
    """One operator setting: where it comes from and how its text becomes a value."""

    field: str
    """The :class:`OperatorConfig` field it fills."""
    env: str
    flag: str
    parse: Callable[[str], Any]
    default: str
    """The text used when neither source sets it (parsed like any other)."""
    help: str
    metavar: str
    short: str | None = None
    repeatable: bool = False
    """The flag may be given several times; its values are joined with commas."""
    shown_default: str | None = None
    """What --help says the default is, where the text above does not say it."""


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "namespaces", "MLKUBE_WATCH_NAMESPACES", "--namespace", _namespaces, "",
        "watch this namespace (repeatable, or comma-separated)", "NS",
        short="-n", repeatable=True, shown_default="cluster-wide",
    ),
    Setting(
        "peering", "MLKUBE_PEERING", "--peering", _peering, "",
        "kopf peering name for leader election between replicas", "NAME",
        shown_default="standalone",
    ),
    Setting(
        "peering_priority", "MLKUBE_PEERING_PRIORITY", "--peering-priority", _priority, "0",
        "this instance's peering priority, an integer: the highest live priority works, "
        "the others stand by", "INT",
    ),
    Setting(
        "peering_lifetime", "MLKUBE_PEERING_LIFETIME", "--peering-lifetime", _whole_seconds,
        "60", "seconds a keep-alive stays valid", "SECONDS",
    ),
    Setting(
        "log_level", "MLKUBE_LOG_LEVEL", "--log-level", _choice(LOG_LEVELS, fold=str.upper),
        "INFO", "log level (any case)", "{" + ",".join(LOG_LEVELS) + "}",
    ),
    Setting(
        "log_format", "MLKUBE_LOG_FORMAT", "--log-format", _choice(LOG_FORMATS, fold=str.lower),
        "text", "log format: json (one object per line) or text",
        "{" + ",".join(LOG_FORMATS) + "}",
    ),
    Setting(
        "default_image", "MLKUBE_DEFAULT_IMAGE", "--default-image", _image, "",
        "model-server image when a ModelService names none", "IMAGE",
        shown_default=default_image(),
    ),
    Setting(
        "image_pull_policy", "MLKUBE_IMAGE_PULL_POLICY", "--image-pull-policy",
        _optional_choice(IMAGE_PULL_POLICIES), "", "imagePullPolicy of model pods",
        "{" + ",".join(IMAGE_PULL_POLICIES) + "}", shown_default="Kubernetes' default",
    ),
    Setting(
        "prometheus_url", "MLKUBE_PROMETHEUS_URL", "--prometheus-url", _prometheus_url, "",
        "Prometheus that canary analysis and the autoscaler query", "URL",
        shown_default="none",
    ),
    Setting(
        "gpu_metric_labels", "MLKUBE_GPU_METRIC_LABELS", "--gpu-metric-labels", _gpu_labels,
        ",".join(str(m) for m in DEFAULT_LABEL_MAPPINGS),
        "how dcgm-exporter's series name a GPU's pod in Prometheus: comma-separated "
        "NAMESPACE_LABEL:POD_LABEL pairs, any of which may match", "PAIRS",
    ),
    Setting(
        "health_host", "MLKUBE_HEALTH_HOST", "--health-host", _host, "0.0.0.0",
        "address the liveness and metrics endpoints listen on", "HOST",
    ),
    Setting(
        "health_port", "MLKUBE_HEALTH_PORT", "--health-port", _port, "8081",
        "port of the liveness endpoint /healthz", "PORT",
    ),
    Setting(
        "metrics_port", "MLKUBE_METRICS_PORT", "--metrics-port", _port_or_off,
        str(DEFAULT_METRICS_PORT), "port of the Prometheus endpoint /metrics; 0 serves none",
        "PORT",
    ),
    Setting(
        "reconcile_interval", "MLKUBE_RECONCILE_INTERVAL", "--reconcile-interval", _seconds,
        "60", "seconds between drift checks of each ModelService", "SECONDS",
    ),
    Setting(
        "watch_server_timeout", "MLKUBE_WATCH_TIMEOUT", "--watch-timeout", _whole_seconds,
        "300", "ask the API server to end each watch after this many seconds", "SECONDS",
    ),
    Setting(
        "watch_client_timeout", "MLKUBE_WATCH_CLIENT_TIMEOUT", "--watch-client-timeout",
        _optional_seconds, "", "give up on a watch connection after this many seconds; "
        "more than --watch-timeout", "SECONDS",
        shown_default=f"--watch-timeout + {WATCH_CLIENT_MARGIN:g}",
    ),
    Setting(
        "request_timeout", "MLKUBE_REQUEST_TIMEOUT", "--request-timeout", _seconds, "60",
        "seconds an API request may take", "SECONDS",
    ),
    Setting(
        "workers", "MLKUBE_WORKERS", "--workers", _workers, "16",
        "reconciles in flight at once, across all objects", "N",
    ),
)  # fmt: skip

KNOWN_ENVIRONMENT = frozenset(s.env for s in SETTINGS)


def unknown_environment(env: Mapping[str, str]) -> list[str]:
    """``MLKUBE_*`` variables that no setting reads: most likely a typo, worth a warning."""
    return sorted(k for k in env if k.startswith("MLKUBE_") and k not in KNOWN_ENVIRONMENT)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors become a ConfigError instead of an exit."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError([message])


def build_parser() -> argparse.ArgumentParser:
    """The flags, derived from :data:`SETTINGS` (each help names its variable)."""
    parser = _Parser(
        prog=PROG,
        description="Run the mlkube operator (ModelService and PyTorchJob controllers).",
        epilog="Each setting can also come from the environment variable named in its help; "
        "a flag wins over its variable. Values are checked alike from either source.",
        allow_abbrev=False,
    )
    scope = parser.add_mutually_exclusive_group()
    for s in SETTINGS:
        default = s.shown_default if s.shown_default is not None else s.default
        parser_or_group: Any = scope if s.field == "namespaces" else parser
        parser_or_group.add_argument(
            *([s.short] if s.short else []),
            s.flag,
            dest=s.field,
            action="append" if s.repeatable else "store",
            default=None,
            metavar=s.metavar,
            help=f"{s.help} (env {s.env}; default: {default})".replace("%", "%%"),
        )
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch every namespace, whatever MLKUBE_WATCH_NAMESPACES says",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="ignore peering (and MLKUBE_PEERING)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging (as --log-level DEBUG)"
    )
    return parser


def parse_config(argv: Sequence[str], env: Mapping[str, str]) -> OperatorConfig:
    """Flags over ``MLKUBE_*`` environment variables over defaults.

    Raises :class:`ConfigError` naming every bad setting and its source. ``--help`` prints
    the usage and raises ``SystemExit(0)``, as argparse does.
    """
    args = build_parser().parse_args(list(argv))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    for s in SETTINGS:
        flagged: str | list[str] | None = getattr(args, s.field)
        from_env = env.get(s.env)
        if flagged is not None:
            raw = ",".join(flagged) if isinstance(flagged, list) else flagged
            sources[s.field] = f"{s.flag} {raw!r}"
        elif from_env is not None:
            raw = from_env
            sources[s.field] = f"{s.env}={raw!r}"
        else:
            raw = s.default
            sources[s.field] = f"the default {raw} of {s.flag}"
        try:
            values[s.field] = s.parse(raw)
        except _Invalid as exc:
            problems.append(f"{sources[s.field]}: {exc}")

    if args.all_namespaces:
        values["namespaces"] = ()
    if args.standalone:
        values["peering"] = ""
    if args.verbose:
        values["log_level"] = "DEBUG"

    metrics, health = values.get("metrics_port"), values.get("health_port")
    if metrics and health and metrics == health:
        problems.append(
            f"{sources['metrics_port']}: expected a port other than the liveness endpoint's "
            f"({sources['health_port']})"
        )
    server = values.get("watch_server_timeout")
    if server is not None and "watch_client_timeout" in values:
        client = values["watch_client_timeout"]
        if client is None:
            values["watch_client_timeout"] = server + WATCH_CLIENT_MARGIN
        elif client <= server:
            problems.append(
                f"{sources['watch_client_timeout']}: expected more seconds than the "
                f"server-side watch timeout ({sources['watch_server_timeout']})"
            )
    if problems:
        raise ConfigError(problems)
    return OperatorConfig(**values)
