"""`helm install` on a real node: the operator pod runs the project's own image under the
restricted Pod Security level, the kubelet probes it, and every API call it makes passes
RBAC. Plus the tier's own promises: cluster DNS, the image, and network isolation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.kit import (
    OPERATOR_NS,
    OPERATOR_SA,
    apply_docs,
    get_json,
    run_pod,
    service_ip,
    tier,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def probe_counts(cluster: Any, pod: str) -> dict[tuple[str, str], float]:
    """The kubelet's own prober counters for ``pod``: {(probe_type, result): count}."""
    text = cluster.kubectl(
        "get", "--raw", f"/api/v1/nodes/{tier.NODE_NAME}/proxy/metrics/probes"
    ).stdout
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("prober_probe_total{") or f'pod="{pod}"' not in line:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        key = (labels["probe_type"], labels["result"])
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_operator_pod_runs_restricted_and_is_probed_by_the_kubelet(
    cluster: Any, operator: dict[str, Any]
) -> None:
    pod = get_json(cluster, "-n", OPERATOR_NS, "get", "pod", operator["pod"])
    assert pod["spec"]["containers"][0]["image"] == cluster.refs["mlkube-ref"]
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"], status
    assert status["restartCount"] == 0, status
    assert "running" in status["state"], status
    # The namespace enforces `restricted`: admission accepted the pod as it is.
    ns = get_json(cluster, "get", "namespace", OPERATOR_NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # The kubelet itself called the liveness endpoint, and it answered.
    counts = wait_until(
        lambda: (c := probe_counts(cluster, operator["pod"])).get(("Liveness", "successful")) and c,
        timeout=90,
        what="a successful liveness probe of the operator by the kubelet",
    )
    assert not counts.get(("Liveness", "failed")), counts


def test_every_operator_api_call_passes_rbac(cluster: Any, operator: dict[str, Any]) -> None:
    """The audit log of the real API server: the operator's ServiceAccount made calls
    (it runs in the pod, with the chart's RBAC) and none was refused by authentication or
    authorization. (A 403 with the decision "allow" is admission: an Event posted into a
    namespace that a test is deleting is refused as NamespaceTerminating, which is the
    API server doing its job, not a missing permission.)"""
    events = wait_until(
        lambda: cluster.audit_events(OPERATOR_SA),
        timeout=60,
        what="API calls by the operator's ServiceAccount",
    )
    refused = [
        f"{e['verb']} {e.get('requestURI')}: {e['responseStatus'].get('message')}"
        for e in events
        if e.get("responseStatus", {}).get("code") == 401
        or e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
    ]
    assert not refused, refused
    verbs = {e["verb"] for e in events}
    assert {"list", "watch"} <= verbs, verbs


def test_cluster_dns_resolves_services_and_refuses_outside_names(
    cluster: Any, namespace: str
) -> None:
    """From a pod: the API server's Service by name, the pod's own resolv.conf, and no
    route or resolution to anything outside the tier."""
    log = run_pod(
        cluster,
        namespace,
        "dns",
        """
        import socket
        print("kubernetes", socket.gethostbyname("kubernetes.default.svc.cluster.local"))
        print("short", socket.gethostbyname("kubernetes.default"))
        print("resolv", open("/etc/resolv.conf").read().replace("\\n", "|"))
        try:
            socket.gethostbyname("example.com")
            print("outside resolved")
        except OSError:
            print("outside refused")
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("192.0.2.1", 80))
            print("outside reached")
        except OSError as exc:
            print("outside unreachable", exc.errno)
        """,
    )
    lines = dict(line.split(" ", 1) for line in log.strip().splitlines())
    assert lines["kubernetes"] == tier.API_SERVICE_IP
    assert lines["short"] == tier.API_SERVICE_IP
    assert f"nameserver {tier.DNS_SERVICE_IP}" in lines["resolv"]
    assert lines["outside"] in ("refused", "unreachable 101")  # ENETUNREACH: no route out
    assert "outside reached" not in log
    assert "outside resolved" not in log


def test_host_has_only_the_tiers_guard_between_bridge_and_world(cluster: Any) -> None:
    """Forwarding between the pod bridge and any other interface is dropped, and the
    bridge does no masquerade of its own."""
    mangle = ("iptables", "-w", "-t", tier.GUARD_TABLE)
    rules = tier.run(*mangle, "-S", tier.GUARD_CHAIN).stdout
    assert f"-A {tier.GUARD_CHAIN} -i {tier.BRIDGE} -j DROP" in rules
    assert f"-A {tier.GUARD_CHAIN} -o {tier.BRIDGE} -j DROP" in rules
    # First in mangle FORWARD, which runs before every filter rule kube-proxy inserts.
    forward = tier.run(*mangle, "-S", "FORWARD").stdout.splitlines()
    assert forward[1] == f"-A FORWARD -j {tier.GUARD_CHAIN}", forward
    nat = tier.run("iptables", "-w", "-t", "nat", "-S", "POSTROUTING").stdout
    assert "CNI-" not in nat, nat  # the CNI bridge's ipMasq is off


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture
def outside() -> Iterator[str]:
    """A stand-in for "the world": an HTTP server in a network namespace of its own, joined
    to the host by a veth pair off the pod bridge. A broken guard would let pod traffic
    reach it, and never anything beyond this machine.

    The namespace belongs to the server process (``unshare --net``), not to a name under
    /run/netns: ``ip netns add`` would bind-mount /run/netns over itself on first use and
    hide the pod sandboxes' namespaces that containerd had mounted there."""
    host_if, host_ip, far_ip = "mlkout0", "10.213.3.1", "10.213.3.2"
    server = subprocess.Popen(
        [
            "unshare",
            "--net",
            "--",
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "0.0.0.0",
            "8000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pid = str(server.pid)
        # Until unshare has run, the process is still in the host's namespace.
        wait_until(
            lambda: os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"),
            timeout=10,
            what="the outside namespace",
            interval=0.05,
        )
        tier.run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", pid)
        tier.run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        tier.run("ip", "link", "set", host_if, "up")
        inside = ("nsenter", "--net", "--target", pid)
        tier.run(*inside, "ip", "addr", "add", f"{far_ip}/30", "dev", "eth0")
        tier.run(*inside, "ip", "link", "set", "eth0", "up")
        tier.run(*inside, "ip", "link", "set", "lo", "up")
        # Replies to a pod address would route back through the host.
        tier.run(*inside, "ip", "route", "add", "default", "via", host_ip)
        # The control: from the host (not forwarded) the server answers.
        wait_until(
            lambda: answers(f"http://{far_ip}:8000/"),
            timeout=20,
            what="the outside server answering the host",
        )
        yield far_ip
    finally:
        # The namespace dies with its last process, and the veth pair with it.
        server.terminate()
        server.wait(timeout=10)
        wait_until(
            lambda: tier.run("ip", "link", "show", host_if, check=False).returncode != 0,
            timeout=10,
            what=f"{host_if} gone with the outside namespace",
        )


def guard_drops(cluster: Any) -> int:
    """Packets the guard dropped coming off the bridge so far."""
    out = tier.run(
        "iptables", "-w", "-t", tier.GUARD_TABLE, "-L", tier.GUARD_CHAIN, "-v", "-x", "-n"
    )
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[2] == "DROP" and fields[5] == tier.BRIDGE:
            return int(fields[0])
    raise AssertionError(f"no DROP rule for traffic in from {tier.BRIDGE}:\n{out.stdout}")


def test_a_service_pointing_off_the_node_is_no_way_out(
    cluster: Any, namespace: str, outside: str
) -> None:
    """A selectorless Service whose endpoint lies beyond the bridge: kube-proxy rewrites a
    pod's connection to that address and the host would forward it; the guard drops it
    before any kube-proxy rule can accept it."""
    apply_docs(
        cluster,
        namespace,
        [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "away"},
                "spec": {"ports": [{"port": 80, "targetPort": 8000}]},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "away-1",
                    "labels": {"kubernetes.io/service-name": "away"},
                },
                "addressType": "IPv4",
                "ports": [{"port": 8000, "protocol": "TCP"}],
                "endpoints": [{"addresses": [outside]}],
            },
        ],
    )
    ip = service_ip(cluster, namespace, "away")
    before = guard_drops(cluster)
    log = run_pod(
        cluster,
        namespace,
        "escape",
        f"""
        import socket
        for attempt in range(3):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("{ip}", 80))
                print("reached")
            except OSError as exc:
                print("blocked", type(exc).__name__)
            finally:
                s.close()
        """,
    )
    assert "reached" not in log, log
    assert log.count("blocked") == 3, log
    assert guard_drops(cluster) > before  # dropped by the guard, not lost elsewhere
