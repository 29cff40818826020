"""Fixtures for the cluster tier: one real single-node cluster per session, the
operator installed into it with the real helm, and helpers that act as a user would.

The cluster (tests/cluster/cluster.py) runs pods for real: the project's image built
from its own Dockerfile, probes called by the kubelet, Services routed by kube-proxy,
names resolved by CoreDNS, children collected by the garbage collector. Tests wait for
states (no sleeps) and talk to Services only at addresses on this machine: ClusterIPs
routed to the tier's bridge, or pod addresses on it.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.kit import CHART, OPERATOR_NS, helm, ready_pods, tier, wait_until


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find cached) everything before the first test, so that the first build's
    minutes are not charged to a test's timeout."""
    if any(item.get_closest_marker("cluster") for item in session.items):
        tier.build_binaries()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running single-node cluster (cluster.Cluster)."""
    if os.geteuid() != 0:
        pytest.fail("the cluster tier needs root (containerd, kubelet, iptables)")
    workdir = tmp_path_factory.mktemp("cluster")
    with tier.running_cluster(workdir=workdir) as c:
        timings = ", ".join(f"{k} {v:.1f} s" for k, v in c.timings.items())
        sys.stderr.write(f"\n[cluster] warm start {c.start_seconds:.1f} s ({timings})\n")
        yield c


@pytest.fixture(scope="session")
def operator(cluster: Any) -> dict[str, Any]:
    """``helm install`` of the chart into a namespace that enforces the restricted Pod
    Security level; returns once the operator's pod is Ready. The chart's CRDs come with
    it (helm installs crds/ first)."""
    cluster.kubectl("create", "namespace", OPERATOR_NS)
    cluster.kubectl(
        "label",
        "namespace",
        OPERATOR_NS,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    helm(
        cluster,
        "install",
        "mlkube",
        str(CHART),
        "--namespace",
        OPERATOR_NS,
        "--set",
        f"operator.prometheusUrl={tier.PROMETHEUS_URL}",
        "--wait",
        "--timeout",
        "180s",
    )
    pod = wait_until(
        lambda: ready_pods(cluster, OPERATOR_NS, "app.kubernetes.io/name=mlkube", 1),
        timeout=120,
        what="the operator pod Ready",
    )[0]
    return {"namespace": OPERATOR_NS, "pod": pod}


_ns_counter = itertools.count()


@pytest.fixture
def namespace(cluster: Any, operator: dict[str, Any]) -> Iterator[str]:
    """A fresh namespace per test; deleted (with everything in it) afterwards."""
    name = f"t{os.getpid() % 10000}-{next(_ns_counter)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
