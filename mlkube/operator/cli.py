"""``mlkube operator``: run the controllers until SIGTERM/SIGINT.

Examples::

    mlkube operator                          # cluster-wide, standalone, text logs
    mlkube operator -n team-a -n team-b      # only these namespaces
    MLKUBE_PEERING=mlkube mlkube operator    # several replicas, one active (kopf peering)
    mlkube operator --log-format json -v     # JSON logs at debug level

The liveness endpoint (``/healthz`` on :8081 by default) answers once the operator is up
and stops answering if its event loop is stuck, so the kubelet restarts a wedged operator.
Prometheus metrics are on :8082/metrics (``--metrics-port``, 0 turns them off).

Every flag has an ``MLKUBE_*`` environment variable (``mlkube operator --help`` names
them). A bad value from either source stops the command before it does anything: one line
per bad setting on stderr, naming the flag or variable, and exit code 2 (argparse's usage
error code), never a traceback. An ``MLKUBE_*`` variable that no setting reads is logged
as a warning: it is most likely a typo, but not worth refusing to start over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from mlkube.operator.app import OperatorContext, configure_logging, run_operator
from mlkube.operator.config import PROG, ConfigError, parse_config, unknown_environment

USAGE_ERROR = 2
"""argparse's exit code for a command line it cannot use."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_config(list(argv) if argv is not None else sys.argv[1:], os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{PROG}: {problem}", file=sys.stderr)
        return USAGE_ERROR
    configure_logging(config)
    unknown = unknown_environment(os.environ)
    if unknown:
        logging.getLogger("mlkube.operator").warning(
            "ignoring %s: not an operator setting (`%s --help` lists them)",
            ", ".join(unknown),
            PROG,
        )
    scope = "cluster-wide" if config.clusterwide else "namespaces " + ",".join(config.namespaces)
    mode = f"peering {config.peering}" if config.peering else "standalone"
    logging.getLogger("mlkube.operator").info(
        "mlkube operator starting: %s, %s, default image %s, liveness %s, metrics %s",
        scope,
        mode,
        config.default_image,
        config.liveness_endpoint,
        f"http://{config.health_host}:{config.metrics_port}/metrics"
        if config.metrics_port
        else "off",
    )
    try:
        asyncio.run(run_operator(OperatorContext(config)))
    except KeyboardInterrupt:
        return 130
    return 0
