"""``mlkube operator``: run the controllers until SIGTERM/SIGINT.

Examples::

    mlkube operator                          # cluster-wide, standalone, text logs
    mlkube operator -n team-a -n team-b      # only these namespaces
    MLKUBE_PEERING=mlkube mlkube operator    # several replicas, one active (kopf peering)
    mlkube operator --log-format json -v     # JSON logs at debug level

The liveness endpoint (``/healthz`` on :8081 by default) answers once the operator is up
and stops answering if its event loop is stuck, so the kubelet restarts a wedged operator.
Prometheus metrics are on :8082/metrics (``--metrics-port``, 0 turns them off).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from mlkube.operator.app import OperatorContext, configure_logging, run_operator
from mlkube.operator.config import parse_config


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(list(argv) if argv is not None else sys.argv[1:], os.environ)
    configure_logging(config)
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
