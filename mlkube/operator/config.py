"""Operator configuration: command-line flags over environment variables over defaults.

Every setting has an environment variable (what the Helm chart sets) and a flag (what a
person types); flags win. Parsing is pure (argv and an environment mapping in, a frozen
config out) so it is unit-tested without touching the process environment.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mlkube import __version__

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

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def standalone(self) -> bool:
        return not self.peering

    @property
    def liveness_endpoint(self) -> str:
        return f"http://{self.health_host}:{self.health_port}/healthz"


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _integer(text: str) -> int | None:
    """A whole number as flags and environment variables write it, or None."""
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def parse_config(argv: Sequence[str], env: Mapping[str, str]) -> OperatorConfig:
    """Flags over ``MLKUBE_*`` environment variables over defaults."""
    parser = argparse.ArgumentParser(
        prog="mlkube operator",
        description="Run the mlkube operator (ModelService and PyTorchJob controllers).",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable, or comma-separated); default: "
        "MLKUBE_WATCH_NAMESPACES, or cluster-wide when empty",
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--peering",
        default=env.get("MLKUBE_PEERING", ""),
        help="kopf peering name for leader election between replicas (MLKUBE_PEERING); "
        "empty: standalone",
    )
    parser.add_argument("--standalone", action="store_true", help="ignore peering")
    parser.add_argument(
        "--peering-priority",
        default=env.get("MLKUBE_PEERING_PRIORITY", "0"),
        help="this instance's peering priority (MLKUBE_PEERING_PRIORITY, integer, default 0): "
        "the highest live priority works, the others stand by",
    )
    parser.add_argument(
        "--peering-lifetime",
        default=env.get("MLKUBE_PEERING_LIFETIME", "60"),
        help="seconds a keep-alive stays valid (MLKUBE_PEERING_LIFETIME, default 60)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging (MLKUBE_LOG_LEVEL=DEBUG)"
    )
    parser.add_argument(
        "--log-level",
        default=env.get("MLKUBE_LOG_LEVEL", "INFO").upper(),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    parser.add_argument(
        "--log-format",
        default=env.get("MLKUBE_LOG_FORMAT", "text").lower(),
        choices=["json", "text"],
    )
    parser.add_argument(
        "--default-image",
        default=env.get("MLKUBE_DEFAULT_IMAGE") or default_image(),
        help="model-server image when a ModelService names none (MLKUBE_DEFAULT_IMAGE)",
    )
    parser.add_argument(
        "--image-pull-policy",
        default=env.get("MLKUBE_IMAGE_PULL_POLICY") or None,
        choices=["Always", "IfNotPresent", "Never"],
    )
    parser.add_argument("--prometheus-url", default=env.get("MLKUBE_PROMETHEUS_URL") or None)
    parser.add_argument(
        "--health-port",
        type=int,
        default=int(env.get("MLKUBE_HEALTH_PORT", "8081")),
        help="port of the liveness endpoint /healthz",
    )
    parser.add_argument(
        "--health-host",
        default=env.get("MLKUBE_HEALTH_HOST", "0.0.0.0"),
        help="address the liveness and metrics endpoints listen on",
    )
    parser.add_argument(
        "--metrics-port",
        default=env.get("MLKUBE_METRICS_PORT", str(DEFAULT_METRICS_PORT)),
        help=f"port of the Prometheus endpoint /metrics (MLKUBE_METRICS_PORT, default "
        f"{DEFAULT_METRICS_PORT}); 0 serves none",
    )
    parser.add_argument(
        "--reconcile-interval",
        type=float,
        default=float(env.get("MLKUBE_RECONCILE_INTERVAL", "60")),
        help="seconds between drift checks of each ModelService",
    )
    parser.add_argument(
        "--watch-timeout",
        type=int,
        default=int(env.get("MLKUBE_WATCH_TIMEOUT", "300")),
        help="server-side watch timeout in seconds (the client gives up 30 s later)",
    )
    args = parser.parse_args(list(argv))

    namespaces: tuple[str, ...] = ()
    if not args.all_namespaces:
        if args.namespaces:
            namespaces = tuple(ns for item in args.namespaces for ns in _split(item))
        else:
            namespaces = _split(env.get("MLKUBE_WATCH_NAMESPACES", ""))
    if args.reconcile_interval <= 0:
        parser.error("--reconcile-interval must be positive")
    if args.watch_timeout <= 0:
        parser.error("--watch-timeout must be positive")
    priority = _integer(args.peering_priority)
    if priority is None:
        parser.error(f"--peering-priority must be an integer, not {args.peering_priority!r}")
    lifetime = _integer(args.peering_lifetime)
    if lifetime is None or lifetime <= 0:
        parser.error(
            f"--peering-lifetime must be a positive number of seconds, not "
            f"{args.peering_lifetime!r}"
        )
    metrics_port = _integer(args.metrics_port)
    if metrics_port is None or not 0 <= metrics_port <= 65535:
        parser.error(f"--metrics-port must be a port number or 0, not {args.metrics_port!r}")
    if metrics_port and metrics_port == args.health_port:
        parser.error(f"--metrics-port {metrics_port} is the liveness endpoint's port")
    return OperatorConfig(
        namespaces=namespaces,
        peering="" if args.standalone else args.peering,
        peering_priority=priority,
        peering_lifetime=lifetime,
        log_level="DEBUG" if args.verbose else args.log_level,
        log_format=args.log_format,
        default_image=args.default_image,
        image_pull_policy=args.image_pull_policy,
        prometheus_url=args.prometheus_url,
        health_host=args.health_host,
        health_port=args.health_port,
        metrics_port=metrics_port,
        reconcile_interval=args.reconcile_interval,
        watch_server_timeout=args.watch_timeout,
        watch_client_timeout=args.watch_timeout + 30.0,
    )
