"""A real single-node Kubernetes cluster on this machine: the cluster test tier.

The e2e tier (tests/e2e/controlplane.py) runs etcd and kube-apiserver with no
nodes. This tier adds a node that runs pods: containerd (Debian's package, its
own config, state and socket), kubelet, kube-controller-manager, kube-scheduler,
kube-proxy and CoreDNS, all built by ``scripts/cluster-build`` from the release
pinned in e2e/*/go.mod and cached outside the repository. Pods run the images
that script builds here (the sandbox image and the project's own image, from the
unmodified Dockerfile); nothing is pulled from a registry.

Network safety is part of the design:

- pods live on one bridge (``mlkube0``) that this module creates, in network
  namespaces that containerd creates for them; the node's address is the
  bridge's, so the API server, the kubelet and CoreDNS listen only there;
- pods get a route to the pod and Service ranges and no default route, the CNI
  bridge does no masquerade, and a filter chain (``MLKUBE-GUARD``, first in
  FORWARD) drops anything forwarded between the bridge and any other interface.
  The only address translation is kube-proxy's own: Service addresses to pod
  addresses, and its hairpin masquerade to the bridge's address;
- teardown removes every pod, container, mount, network namespace, cgroup,
  interface, route and iptables chain the run made, and restores the two
  sysctls it changed. Processes are stopped by PID.

Used by tests/cluster/conftest.py (session fixture) and by ``make cluster``
(``python tests/cluster/cluster.py``: start, print the kubeconfig, wait for
Ctrl-C). Like controlplane.py it has no project imports, so it loads by path.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUILD_SCRIPT = ROOT / "scripts" / "cluster-build"


def _load_controlplane() -> ModuleType:
    name = "mlkube_e2e_controlplane"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "e2e" / "controlplane.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cp = _load_controlplane()
wait_until = cp.wait_until
ClusterError = cp.ControlPlaneError

# ------------------------------------------------------------------ addresses
BRIDGE = "mlkube0"
POD_CIDR = "10.213.0.0/24"
NODE_IP = "10.213.0.1"  # the bridge's address: node, API server, kubelet, CoreDNS
SERVICE_CIDR = "10.213.1.0/24"
API_SERVICE_IP = "10.213.1.1"  # the first address of the range: `kubernetes`
DNS_SERVICE_IP = "10.213.1.10"
API_PORT = 6443
NODE_NAME = "mlkube-node"
CLUSTER_DOMAIN = "cluster.local"
GUARD_CHAIN = "MLKUBE-GUARD"
GUARD_TABLE = "mangle"
# A lock so that two runs on one machine never share the bridge or the chain.
LOCK_FILE = Path("/run/mlkube-cluster.lock")
# What a run changed on the host, rewritten at every change: a run killed before its
# teardown (SIGKILL, a lost session) is cleaned up by the next run from this record.
JOURNAL = Path("/run/mlkube-cluster.json")
IPTABLES = ("iptables", "ip6tables")
# Set to 1 for the run: routing between pods and Services, iptables on bridged traffic.
SYSCTLS = ("net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables")
# What the kubelet (its "kernel tunables") and kube-proxy may change on the host: read
# before the run and written back after it, whatever they did.
RESTORED_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)

# Identities (client certificate subjects). The API server's bootstrap RBAC binds
# system:kube-controller-manager, system:kube-scheduler and system:kube-proxy;
# system:node:NAME in system:nodes is what the Node authorizer admits.
CLIENTS = {
    "admin": cp.ADMIN_SUBJECT,
    "kubelet": f"/O=system:nodes/CN=system:node:{NODE_NAME}",
    "apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
    "controller-manager": "/CN=system:kube-controller-manager",
    "scheduler": "/CN=system:kube-scheduler",
    "proxy": "/CN=system:kube-proxy",
    "coredns": "/CN=mlkube:coredns",
    "prometheus": "/CN=mlkube:prometheus",
}

# Prometheus (built with Kubernetes service discovery: Debian's package has none), as a
# cluster runs it: on the node's address (the operator's pod queries it
# there), discovering model pods through the API server with the scrape job users are
# given (deploy/prometheus), scraping every 2 s so that the release tests' 10 s analysis
# windows hold several samples.
PROMETHEUS_PORT = 9090
PROMETHEUS_URL = f"http://{NODE_IP}:{PROMETHEUS_PORT}"
SCRAPE_JOB = (
    Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "scrape-model-pods.yaml"
)
SCRAPE_INTERVAL = "2s"


# --------------------------------------------------------------- pure configs
def cni_conflist(
    bridge: str, pod_cidr: str, gateway: str, service_cidr: str, data_dir: Path
) -> str:
    """The pod network: one bridge, no masquerade, routes only to pods and Services.

    ``isGateway`` puts the gateway address on the bridge (the node reaches pods,
    pods reach the node); with no ``isDefaultGateway`` and no 0.0.0.0/0 route a
    pod has no way off the bridge. ``hairpinMode`` lets a pod reach itself
    through its own Service.
    """
    net = ipaddress.ip_network(pod_cidr)
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "mlkube",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(data_dir),
                        "ranges": [
                            [
                                {
                                    "subnet": pod_cidr,
                                    "gateway": gateway,
                                    "rangeStart": str(net.network_address + 10),
                                    "rangeEnd": str(net.broadcast_address - 1),
                                }
                            ]
                        ],
                        "routes": [{"dst": service_cidr}],
                    },
                },
                {"type": "loopback"},
            ],
        },
        indent=2,
    )


# Registries a test's image names may point at. Each is sent to a closed loopback port,
# so a pull (a bad tag, say) fails here at once and nothing tries to leave the machine.
REGISTRY_HOSTS = ("_default", "ghcr.io", "docker.io", "registry.k8s.io", "mlkube.local")
CLOSED_REGISTRY = "http://127.0.0.1:9"


def registry_hosts_toml() -> str:
    """containerd's hosts.toml for one registry: its only endpoint is a closed port."""
    return (
        f'server = "{CLOSED_REGISTRY}"\n\n'
        f'[host."{CLOSED_REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def containerd_config(
    root: Path, state: Path, socket: Path, cni_conf_dir: Path, sandbox_image: str, hosts_dir: Path
) -> str:
    """containerd's own config: its own root, state and socket, CRI on runc + cgroupfs.

    ``restrict_oom_score_adj``: root here lacks CAP_SYS_RESOURCE, so runc cannot
    lower a container's oom_score_adj below its own; without this every sandbox
    fails with "can't get final child's PID from pipe".
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  max_container_log_line_size = 16384

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni_conf_dir}"
  max_conf_num = 1

[{cri}.registry]
  config_path = "{hosts_dir}"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "runc"
  SystemdCgroup = false
"""


def kubelet_config(
    pki: Path, socket: Path, resolv_conf: Path, node_ip: str, pod_logs: Path
) -> dict[str, Any]:
    """The kubelet's KubeletConfiguration for this machine.

    cgroup v1 with the cgroupfs driver (``failCgroupV1: false``: 1.35+ refuses v1
    otherwise); eviction thresholds low enough that a shared disk never evicts the
    tests' pods; image garbage collection off (images are imported, not pulled,
    so a collected one could not come back); swap tolerated.
    """
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(pod_logs),
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "maxPods": 110,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "shutdownGracePeriod": "0s",
        "registerNode": True,
        "fileCheckFrequency": "5s",
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
    }


def kube_proxy_config(
    kubeconfig: Path, cluster_cidr: str, healthz_port: int, metrics_port: int
) -> dict[str, Any]:
    """kube-proxy in iptables mode; conntrack left as the machine has it."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": cluster_cidr,
        "hostnameOverride": NODE_NAME,
        "bindAddress": "0.0.0.0",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # 0: leave the machine's conntrack table size and timeouts as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        # No NodePorts on 127.0.0.1: that would need route_localnet on the host.
        "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s", "localhostNodePorts": False},
    }


def corefile(node_ip: str, domain: str) -> str:
    """Cluster DNS only: the cluster's zone, answered from the API server's state.

    There is no upstream: a name outside the cluster is refused rather than sent
    anywhere off the machine.
    """
    return f"""{domain}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {node_ip}
    errors
    health {node_ip}:8080
    ready {node_ip}:8181
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {{kubeconfig}}
        pods verified
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""


def prometheus_config(api_server: str, pki: Path, interval: str) -> dict[str, Any]:
    """The shipped scrape job, pointed at this cluster's API server with Prometheus' own
    client certificate, at the tier's scrape interval."""
    jobs = yaml.safe_load(SCRAPE_JOB.read_text())
    tls = {
        "ca_file": str(pki / "ca.crt"),
        "cert_file": str(pki / "prometheus.crt"),
        "key_file": str(pki / "prometheus.key"),
    }
    for job in jobs:
        job["scrape_interval"] = interval
        for sd in job["kubernetes_sd_configs"]:
            sd.update({"api_server": api_server, "tls_config": tls})
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }


def prometheus_objects() -> list[dict[str, Any]]:
    """What Prometheus' pod discovery needs, as a cluster's Prometheus is granted it."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "mlkube:prometheus"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "mlkube:prometheus"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "mlkube:prometheus",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "mlkube:prometheus",
                }
            ],
        },
    ]


def dns_objects() -> list[dict[str, Any]]:
    """RBAC for CoreDNS and the ``kube-dns`` Service in front of it.

    CoreDNS runs on the node (a process, like the kubelet), so the Service has no
    selector and one EndpointSlice that points at the node's address; kube-proxy
    routes ``kube-dns`` to it as it would to a pod.
    """
    rules = [
        {
            "apiGroups": [""],
            "resources": ["services", "pods", "namespaces"],
            "verbs": ["list", "watch"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        },
    ]
    ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "mlkube:coredns"},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "mlkube:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "mlkube:coredns",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mlkube:coredns"}
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            },
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    {"name": name, "port": 53, "protocol": proto, "targetPort": 53}
                    for name, proto in ports
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-node",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "mlkube.dev-cluster-tier",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": name, "port": 53, "protocol": proto} for name, proto in ports],
        },
    ]


def guard_rules(bridge: str, chain: str) -> list[list[str]]:
    """iptables arguments that fill ``chain``: bridge-to-bridge passes, the rest drops."""
    return [
        ["-A", chain, "-i", bridge, "-o", bridge, "-j", "RETURN"],
        ["-A", chain, "-i", bridge, "-j", "DROP"],
        ["-A", chain, "-o", bridge, "-j", "DROP"],
    ]


def kube_chains(save: str) -> set[tuple[str, str]]:
    """(table, chain) of every ``KUBE-`` chain in ``iptables-save`` output."""
    table, found = "", set()
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":KUBE-"):
            found.add((table, line[1:].split()[0]))
    return found


def chain_removal(save: str, keep: set[tuple[str, str]]) -> list[list[str]]:
    """iptables arguments that remove the ``KUBE-`` chains not in ``keep`` (those the
    kubelet and kube-proxy made during the run): the rules jumping to them, then the
    chains, flushed and deleted."""
    gone = kube_chains(save) - keep
    table, jumps = "", []
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith("-A "):
            args = shlex.split(line)
            target = args[args.index("-j") + 1] if "-j" in args else ""
            if (table, target) in gone:
                jumps.append(["-t", table, "-D", *args[1:]])
    flushes = [["-t", t, "-F", c] for t, c in sorted(gone)]
    deletes = [["-t", t, "-X", c] for t, c in sorted(gone)]
    return jumps + flushes + deletes


def parse_mounts(text: str, under: Sequence[Path]) -> list[str]:
    """Mount points in /proc/self/mountinfo text below any of ``under``, deepest first."""
    prefixes = [str(p).rstrip("/") + "/" for p in under]
    points = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if any(point.startswith(p) or point + "/" == p for p in prefixes):
            points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


# ------------------------------------------------------------------ the shell
def run(*args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a host command; with check, a failure raises with its output."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def build_binaries() -> dict[str, Path]:
    """scripts/cluster-build (a cache lookup when warm): binary and image paths."""
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(
            f"scripts/cluster-build failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    out = cp.parse_build_output(proc.stdout)
    for name in (
        "kube-apiserver",
        "kubectl",
        "etcd",
        "kubelet",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
        "coredns",
        "prometheus",
        "pause-image",
        "redis-image",
        "mlkube-image",
        "flaky-image",
    ):
        if name not in out:
            raise ClusterError(f"scripts/cluster-build did not report {name}: {proc.stdout!r}")
    return out


@dataclass
class Cluster(cp.ControlPlane):  # type: ignore[misc]
    """A running single-node cluster; ``kubectl``/``env`` work as on the control plane."""

    refs: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _undo: list[tuple[str, Any]] = field(default_factory=list)
    _lock: Any = None
    _netns_before: set[str] = field(default_factory=set)

    # ---------------------------------------------------------------- paths
    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.workdir / "kubelet"

    def ctr(self, *args: str, check: bool = True, timeout: float = 120.0) -> str:
        """Run ``ctr`` against this cluster's containerd, in the CRI namespace."""
        return run(
            "ctr",
            "--address",
            str(self.containerd_socket),
            "--namespace",
            "k8s.io",
            *args,
            check=check,
            timeout=timeout,
        ).stdout

    # ---------------------------------------------------------------- start
    def start(self, timeout: float = 180.0) -> None:
        began = time.monotonic()
        self._take_lock()
        self._netns_before = set(os.listdir("/run/netns")) if Path("/run/netns").exists() else set()
        self._network_up()
        self._start_containerd(timeout)
        self.timings["containerd"] = time.monotonic() - began
        self._import_images()
        self.timings["images"] = time.monotonic() - began
        self._start_control_plane(timeout)
        self.timings["control-plane"] = time.monotonic() - began
        self._start_node(timeout)
        self.timings["node-ready"] = time.monotonic() - began
        self.start_seconds = time.monotonic() - began

    def _record(self, kind: str, arg: Any) -> None:
        self._undo.append((kind, arg))
        self._write_journal()

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        super()._spawn(name, args)
        self._write_journal()

    def _write_journal(self) -> None:
        state = {
            "workdir": str(self.workdir),
            "netns_before": sorted(self._netns_before),
            "pids": [proc.pid for proc in self._procs],
            "undo": [[kind, arg] for kind, arg in self._undo],
        }
        tmp = JOURNAL.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(JOURNAL)

    def _recover_killed_run(self) -> None:
        """Undo what a killed run left, from its journal (we hold the lock, so it is dead)."""
        state = json.loads(JOURNAL.read_text())
        workdir = Path(state["workdir"])
        print(f"cleaning up after a killed cluster run in {workdir}", file=sys.stderr)
        # Only processes whose argv names that run's workdir: ours, never another's.
        mine = []
        for pid in state["pids"]:
            with contextlib.suppress(OSError):
                if str(workdir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGTERM)
                    mine.append(pid)
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: not any(Path(f"/proc/{pid}").exists() for pid in mine),
                timeout=20,
                what="the killed run's processes to exit",
            )
        for pid in mine:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        stale = Cluster(workdir=workdir, binaries=self.binaries)
        stale._netns_before = set(state["netns_before"])
        errors = []
        for kind, arg in reversed(state["undo"]):
            try:
                stale._undo_one(kind, arg)
            except Exception as exc:  # undo the rest, report at the end
                errors.append(f"{kind}: {exc}")
        if errors:
            raise ClusterError(
                f"could not clean up after the killed run ({JOURNAL}):\n" + "\n".join(errors)
            )
        shutil.rmtree(workdir, ignore_errors=True)
        JOURNAL.unlink()

    def _take_lock(self) -> None:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        fh = LOCK_FILE.open("w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise ClusterError(
                f"another cluster tier run holds {LOCK_FILE}; one cluster per machine"
            ) from None
        self._lock = fh
        if JOURNAL.exists():
            self._recover_killed_run()
        if run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            raise ClusterError(
                f"interface {BRIDGE} exists but no cluster run holds the lock: a killed run "
                f"left it; remove it with `ip link delete {BRIDGE}` (and the {GUARD_TABLE} {GUARD_CHAIN} chain)"
            )

    def _network_up(self) -> None:
        for key in (*RESTORED_SYSCTLS, *SYSCTLS):
            path = Path("/proc/sys") / key.replace(".", "/")
            if path.exists():
                self._record("sysctl", [str(path), path.read_text().strip()])
        for key in SYSCTLS:
            (Path("/proc/sys") / key.replace(".", "/")).write_text("1\n")
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        self._record("link", BRIDGE)
        run("ip", "addr", "add", f"{NODE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # Service addresses route to the bridge too (only the node itself uses this).
        run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP)
        # In mangle, not filter: kube-proxy inserts its own rules at the top of filter
        # FORWARD (one accepts Service traffic bound off the node); mangle FORWARD runs
        # before any of them and kube-proxy never writes there.
        run("iptables", "-w", "-t", GUARD_TABLE, "-N", GUARD_CHAIN)
        self._record("chain", [GUARD_TABLE, GUARD_CHAIN])
        for rule in guard_rules(BRIDGE, GUARD_CHAIN):
            run("iptables", "-w", "-t", GUARD_TABLE, *rule)
        run("iptables", "-w", "-t", GUARD_TABLE, "-I", "FORWARD", "1", "-j", GUARD_CHAIN)
        self._record("kube-proxy-cleanup", None)
        # The kubelet makes chains too (KUBE-FIREWALL, its canaries): remove the new ones.
        self._record(
            "kube-chains",
            {cmd: sorted(kube_chains(run(f"{cmd}-save").stdout)) for cmd in IPTABLES},
        )

    def _start_containerd(self, timeout: float) -> None:
        base = self.workdir / "containerd"
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True)
        (cni / "net.d" / "10-mlkube.conflist").write_text(
            cni_conflist(BRIDGE, POD_CIDR, NODE_IP, SERVICE_CIDR, cni / "ipam")
        )
        base.mkdir(parents=True)
        hosts = base / "hosts.d"
        for host in REGISTRY_HOSTS:
            (hosts / host).mkdir(parents=True)
            (hosts / host / "hosts.toml").write_text(registry_hosts_toml())
        config = base / "config.toml"
        config.write_text(
            containerd_config(
                base / "root",
                base / "state",
                self.containerd_socket,
                cni / "net.d",
                self.refs["pause-ref"],
                hosts,
            )
        )
        self._record("containers", None)
        self._spawn("containerd", ["containerd", "--config", str(config)])
        wait_until(
            lambda: self.ctr("version", check=False) if self.containerd_socket.exists() else None,
            timeout=timeout,
            what="containerd's socket",
        )

    def _import_images(self) -> None:
        for key in ("pause-image", "redis-image", "mlkube-image", "flaky-image"):
            self.ctr("images", "import", str(self.binaries[key]), timeout=300)

    def _kubeconfig(self, user: str) -> Path:
        path = self.workdir / f"{user}.kubeconfig"
        path.write_text(cp.kubeconfig_text(self.server, self.workdir / "pki", user))
        path.chmod(0o600)
        return path

    def _start_control_plane(self, timeout: float) -> None:
        pki = self.workdir / "pki"
        cp.generate_pki(pki, server_ips=("127.0.0.1", NODE_IP, API_SERVICE_IP), clients=CLIENTS)
        etcd_port, peer_port = cp.free_port(), cp.free_port()
        self._spawn(
            "etcd", cp.etcd_args(self.binaries["etcd"], self.workdir / "etcd", etcd_port, peer_port)
        )
        self._wait_http(f"http://127.0.0.1:{etcd_port}/health", None, timeout, "etcd")
        args = cp.apiserver_args(
            self.binaries["kube-apiserver"], pki, etcd_port, API_PORT, self.workdir
        )
        drop = (
            "--bind-address",
            "--advertise-address",
            "--endpoint-reconciler-type",
            "--service-cluster-ip-range",
            "--authorization-mode",
            "--disable-admission-plugins",
        )
        args = [a for a in args if not a.startswith(drop)]
        args += [
            f"--bind-address={NODE_IP}",
            f"--advertise-address={NODE_IP}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
        ]
        self._spawn("kube-apiserver", args)
        self.server = f"https://{NODE_IP}:{API_PORT}"
        self.kubeconfig = self._kubeconfig("admin")
        import ssl

        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._wait_http(f"{self.server}/readyz", ctx, timeout, "kube-apiserver")
        self._wait_default_namespace(timeout)
        self.kubectl(
            "apply",
            "-f",
            "-",
            stdin=json.dumps(
                {"apiVersion": "v1", "kind": "List", "items": dns_objects() + prometheus_objects()}
            ),
        )
        bins = self.binaries
        self._spawn(
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"]),
                f"--kubeconfig={self._kubeconfig('controller-manager')}",
                f"--authentication-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--concurrent-gc-syncs=10",
                "--node-monitor-grace-period=40s",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(bins["kube-scheduler"]),
                f"--kubeconfig={self._kubeconfig('scheduler')}",
                f"--authentication-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
            ],
        )

    def _start_node(self, timeout: float) -> None:
        pki = self.workdir / "pki"
        resolv = self.workdir / "resolv.conf"
        # Pods resolve through cluster DNS only; no search path of the host's leaks in.
        resolv.write_text("")
        kcfg = self.workdir / "kubelet-config.json"
        kcfg.write_text(
            json.dumps(
                kubelet_config(pki, self.containerd_socket, resolv, NODE_IP, self.workdir / "pods")
            )
        )
        self.kubelet_root.mkdir()
        self._record("mounts", None)
        self._spawn(
            "kubelet",
            [
                str(self.binaries["kubelet"]),
                f"--config={kcfg}",
                f"--kubeconfig={self._kubeconfig('kubelet')}",
                f"--root-dir={self.kubelet_root}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )
        pcfg = self.workdir / "kube-proxy-config.json"
        pcfg.write_text(
            json.dumps(
                kube_proxy_config(
                    self._kubeconfig("proxy"), POD_CIDR, cp.free_port(), cp.free_port()
                )
            )
        )
        self._spawn("kube-proxy", [str(self.binaries["kube-proxy"]), f"--config={pcfg}"])
        core = self.workdir / "Corefile"
        core.write_text(
            corefile(NODE_IP, CLUSTER_DOMAIN).replace(
                "{kubeconfig}", f"{self._kubeconfig('coredns')} mlkube-e2e"
            )
        )
        self._spawn("coredns", [str(self.binaries["coredns"]), "-conf", str(core)])
        wait_until(
            lambda: self._node_ready(),
            timeout=timeout,
            interval=0.5,
            what=f"node {NODE_NAME} Ready",
        )
        self._wait_http(f"http://{NODE_IP}:8181/ready", None, timeout, "CoreDNS /ready")
        prom = self.workdir / "prometheus.yml"
        prom.write_text(yaml.safe_dump(prometheus_config(self.server, pki, SCRAPE_INTERVAL)))
        self._spawn(
            "prometheus",
            [
                str(self.binaries["prometheus"]),
                f"--config.file={prom}",
                f"--storage.tsdb.path={self.workdir / 'prometheus'}",
                "--storage.tsdb.retention.time=2h",
                f"--web.listen-address={NODE_IP}:{PROMETHEUS_PORT}",
                "--log.level=warn",
            ],
        )
        self._wait_http(f"{PROMETHEUS_URL}/-/ready", None, timeout, "Prometheus /-/ready")
        wait_until(
            lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
            timeout=timeout,
            what="the default ServiceAccount",
        )

    def _node_ready(self) -> bool:
        proc = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if proc.returncode != 0:
            return False
        conditions = json.loads(proc.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    # ----------------------------------------------------------------- stop
    def stop(self, grace: float = 10.0) -> None:
        """Delete every pod, stop every process, then undo every host change in reverse."""
        # A test may have left Prometheus stopped (SIGSTOP): let it see its SIGTERM.
        with contextlib.suppress(KeyError, ProcessLookupError):
            self.signal_process("prometheus", signal.SIGCONT)
        # Controllers first, so that no ReplicaSet or Job replaces a pod the drain deletes.
        self._stop_named(("kube-controller-manager", "kube-scheduler"), grace)
        with contextlib.suppress(Exception):
            if self._procs and all(p.poll() is None for p in self._procs):
                self._drain_pods()
        super().stop(grace)
        errors: list[str] = []
        for kind, arg in reversed(self._undo):
            try:
                self._undo_one(kind, arg)
            except Exception as exc:  # keep undoing the rest, report at the end
                errors.append(f"{kind}: {exc}")
        self._undo.clear()
        if not errors:
            JOURNAL.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if errors:
            raise ClusterError("cluster teardown left things behind:\n" + "\n".join(errors))

    def signal_process(self, name: str, sig: int) -> None:
        """Send ``sig`` to the tier's process ``name``: SIGSTOP and SIGCONT to Prometheus
        make it stop answering and answer again, as an outage would."""
        for proc, log in zip(self._procs, self._logs, strict=True):
            if log.stem == name:
                proc.send_signal(sig)
                return
        raise KeyError(f"no process {name} in this cluster")

    def _stop_named(self, names: Sequence[str], grace: float) -> None:
        for proc, log in zip(self._procs, self._logs, strict=True):
            if log.stem in names and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=grace)

    def _drain_pods(self) -> None:
        """Delete all pods through the API so that the kubelet tears each sandbox down
        (CNI DEL releases the address and the veth) while it still runs."""
        self.kubectl(
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--grace-period=1",
            "--wait=false",
            check=False,
        )
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: not self.ctr("containers", "list", "-q", check=False).split(),
                timeout=60,
                what="every container removed",
            )

    def _undo_one(self, kind: str, arg: Any) -> None:
        if kind == "sysctl":
            path, old = arg
            Path(path).write_text(old + "\n")
        elif kind == "link":
            if run("ip", "link", "show", arg, check=False).returncode == 0:
                run("ip", "link", "delete", arg)
        elif kind == "chain":
            table, chain = arg
            ipt = ("iptables", "-w", "-t", table)
            while run(*ipt, "-D", "FORWARD", "-j", chain, check=False).returncode == 0:
                pass
            run(*ipt, "-F", chain, check=False)
            run(*ipt, "-X", chain)
        elif kind == "kube-chains":
            for cmd, before in arg.items():
                keep = {(t, c) for t, c in before}
                for rule in chain_removal(run(f"{cmd}-save").stdout, keep):
                    run(cmd, "-w", *rule, check=False)
        elif kind == "kube-proxy-cleanup":
            run(str(self.binaries["kube-proxy"]), "--cleanup", check=False)
        elif kind == "containers":
            self._kill_shims()
            self._remove_netns()
            self._remove_cgroups()
        elif kind == "mounts":
            self._unmount_all()

    def _kill_shims(self) -> None:
        """containerd's shims outlive it by design; ours name our socket in their argv."""
        needle = str(self.containerd_socket).encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"containerd-shim" in argv and needle in argv:
                    os.kill(int(pid), signal.SIGKILL)
        self._unmount_all()

    def _unmount_all(self) -> None:
        for point in parse_mounts(Path("/proc/self/mountinfo").read_text(), [self.workdir]):
            run("umount", "-l", point, check=False)

    def _remove_netns(self) -> None:
        run_netns = Path("/run/netns")
        if not run_netns.exists():
            return
        for name in sorted(set(os.listdir(run_netns)) - self._netns_before):
            if name.startswith("cni-"):
                # Unmounts and removes it; a failure is reported by the teardown.
                run("ip", "netns", "delete", name)

    def _remove_cgroups(self) -> None:
        """The kubelet's pod cgroups (``kubepods``) in every v1 hierarchy, leaves first.

        A container whose shim was killed keeps running, reparented to init; it is
        still in its pod's cgroup (the kubelet made ``kubepods``, and the lock means
        only this run's kubelet did), so that is where it is found and stopped."""
        stragglers: set[int] = set()
        for procs in Path("/sys/fs/cgroup/pids/kubepods").rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                stragglers.update(int(pid) for pid in procs.read_text().split())
        for pid in stragglers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: not any(Path(f"/proc/{pid}").exists() for pid in stragglers),
                timeout=10,
                what="stray container processes to exit",
            )
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / "kubepods"
            if not top.is_dir():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()


@contextlib.contextmanager
def running_cluster(workdir: Path | None = None, timeout: float = 240.0) -> Iterator[Cluster]:
    """Build (or find cached), start a cluster for the ``with`` block, tear it down after."""
    began = time.monotonic()
    binaries = build_binaries()
    build_seconds = time.monotonic() - began
    refs = {k: str(v) for k, v in binaries.items() if k.endswith("-ref")}
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="mlkube-cluster-"))
            )
        cluster = Cluster(workdir=workdir, binaries=binaries, refs=refs)
        cluster.timings["build"] = build_seconds
        stack.callback(cluster.stop)
        cluster.start(timeout=timeout)
        yield cluster


def main(argv: Sequence[str] | None = None) -> int:
    """``make cluster``: start, print how to use it, stop on Ctrl-C."""
    del argv
    if os.geteuid() != 0:
        print("the cluster tier needs root (containerd, kubelet, iptables)", file=sys.stderr)
        return 1

    def interrupt(signum: int, frame: object) -> None:
        # Once: a second Ctrl-C must not cut the teardown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    # Ctrl-C, and SIGTERM from a supervisor, both tear the cluster down (a
    # background job inherits SIGINT ignored, so install both explicitly).
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    print("building or finding the cached cluster (scripts/cluster-build) ...", flush=True)
    try:
        with running_cluster() as cluster:
            print(
                f"cluster ready in {cluster.start_seconds:.1f} s "
                f"(build/cache check {cluster.timings['build']:.1f} s) at {cluster.server}"
            )
            print(f"  export KUBECONFIG={cluster.kubeconfig}")
            print(f"  alias kubectl={cluster.kubectl_path}")
            print(f"image: {cluster.refs['mlkube-ref']} (imagePullPolicy IfNotPresent)")
            print(f"logs: {cluster.workdir}/*.log   (Ctrl-C stops everything)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while cluster.alive():
                    time.sleep(1)
                print("a cluster process exited; stopping", file=sys.stderr)
                return 1
            print("\nstopping", flush=True)
    except ClusterError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
