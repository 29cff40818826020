"""The cluster tier's host decisions, checked without a cluster: what reaches the pod
network, what teardown removes, and which mounts it unmounts. These run everywhere
(no root); the rules they check are the ones tests/cluster/cluster.py applies."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cluster.kit import tier

SAVE = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-OLD - [0:0]
-A INPUT -j KUBE-FIREWALL
-A OUTPUT -m comment --comment "kubelet firewall" -j KUBE-FIREWALL
-A FORWARD -j KUBE-OLD
-A FORWARD -j DOCKER-USER
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABC - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.213.1.1/32 -p tcp -j KUBE-SVC-ABC
COMMIT
"""


def test_teardown_removes_only_the_kube_chains_the_run_made() -> None:
    before = {("filter", "KUBE-OLD")}
    rules = tier.chain_removal(SAVE, keep=before)
    # Jumps first (quoted comments intact), then flush, then delete: deleting a chain
    # that is still referenced or not empty fails.
    assert rules == [
        ["-t", "filter", "-D", "INPUT", "-j", "KUBE-FIREWALL"],
        [
            "-t",
            "filter",
            "-D",
            "OUTPUT",
            "-m",
            "comment",
            "--comment",
            "kubelet firewall",
            "-j",
            "KUBE-FIREWALL",
        ],
        [
            "-t",
            "nat",
            "-D",
            "PREROUTING",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
        [
            "-t",
            "nat",
            "-D",
            "KUBE-SERVICES",
            "-d",
            "10.213.1.1/32",
            "-p",
            "tcp",
            "-j",
            "KUBE-SVC-ABC",
        ],
        ["-t", "filter", "-F", "KUBE-FIREWALL"],
        ["-t", "nat", "-F", "KUBE-SERVICES"],
        ["-t", "nat", "-F", "KUBE-SVC-ABC"],
        ["-t", "filter", "-X", "KUBE-FIREWALL"],
        ["-t", "nat", "-X", "KUBE-SERVICES"],
        ["-t", "nat", "-X", "KUBE-SVC-ABC"],
    ]
    assert tier.chain_removal(SAVE, keep=tier.kube_chains(SAVE)) == []


def test_guard_passes_only_bridge_to_bridge_traffic() -> None:
    rules = tier.guard_rules("br0", "G")
    assert rules[0] == ["-A", "G", "-i", "br0", "-o", "br0", "-j", "RETURN"]
    # Anything else entering or leaving the bridge is dropped: pods never route off it.
    assert ["-A", "G", "-i", "br0", "-j", "DROP"] in rules
    assert ["-A", "G", "-o", "br0", "-j", "DROP"] in rules


def test_pod_network_has_no_way_off_the_machine() -> None:
    conf = json.loads(
        tier.cni_conflist("br0", "10.9.0.0/24", "10.9.0.1", "10.9.1.0/24", Path("/x"))
    )
    bridge = conf["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["isDefaultGateway"] is False
    assert bridge["ipam"]["routes"] == [{"dst": "10.9.1.0/24"}]
    first = bridge["ipam"]["ranges"][0][0]
    assert (first["rangeStart"], first["rangeEnd"]) == ("10.9.0.10", "10.9.0.254")


def test_teardown_unmounts_deepest_first_and_only_under_its_workdir() -> None:
    mountinfo = "\n".join(
        f"{i} 1 0:1 / {point} rw - tmpfs tmpfs rw"
        for i, point in enumerate(
            [
                "/",
                "/tmp/w/kubelet/pods/a/volumes/x",
                "/tmp/w/kubelet",
                "/tmp/w2/other",
                "/tmp/w/run\\040dir",
            ]
        )
    )
    assert tier.parse_mounts(mountinfo, [Path("/tmp/w")]) == [
        "/tmp/w/kubelet/pods/a/volumes/x",
        "/tmp/w/kubelet",
        "/tmp/w/run dir",
    ]
