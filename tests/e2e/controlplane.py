"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, no nodes.

This is what controller-runtime's envtest gives Go operators, done for mlkube:
the binaries come from ``scripts/e2e-build`` (built once from the Go module
proxy and cached outside the repository), the certificates, service-account
keys and the admin credential are generated per run with ``openssl``, and every
process is stopped by PID when the run ends. Nothing else runs: no kubelet, no
controller-manager, no scheduler, so Deployments never get pods and anything
that needs status writes it through the status subresource.

Used by tests/e2e/conftest.py (session fixture), by ``make e2e-cluster``
(``python tests/e2e/controlplane.py``: start, print the kubeconfig, wait for
Ctrl-C) and by bench/operator.py. The module has no project imports so it can
be loaded by file path from all three.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "e2e-build"

# The cluster is for tests: a small service range, and fast etcd writes.
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


def wait_until(
    probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after timeout.

    Everything in this tier is eventually consistent (CRD establishment, the
    operator's reconcile), so tests wait for states rather than sleeping.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or probe}: {last!r}")


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or did not become ready."""


def build_binaries(env: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Run scripts/e2e-build (a no-op when cached) and return the binary paths.

    The build is the slow, one-time part (minutes); its output is cached under
    ~/.cache/mlkube keyed by version, so calling this on every run is cheap.
    """
    proc = subprocess.run(
        [str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
        env=dict(env) if env is not None else None,
    )
    if proc.returncode != 0:
        raise ControlPlaneError(
            f"scripts/e2e-build failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    paths = parse_build_output(proc.stdout)
    for name in ("kube-apiserver", "kubectl", "etcd"):
        if name not in paths:
            raise ControlPlaneError(f"scripts/e2e-build did not report {name}: {proc.stdout!r}")
    return paths


def parse_build_output(stdout: str) -> dict[str, Path]:
    """NAME=PATH lines -> {NAME: PATH}; other lines are ignored."""
    out: dict[str, Path] = {}
    for line in stdout.splitlines():
        name, sep, path = line.partition("=")
        if sep and name and path:
            out[name.strip()] = Path(path.strip())
    return out


def free_port() -> int:
    """A loopback port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


ADMIN_SUBJECT = "/O=system:masters/CN=mlkube-e2e-admin"


def generate_pki(
    pki: Path,
    server_ips: Sequence[str] = ("127.0.0.1", "10.96.0.1"),
    clients: Mapping[str, str] | None = None,
) -> None:
    """CA, apiserver serving cert, service-account keys and client certs.

    ``clients`` maps a file stem to a certificate subject; the default is one
    ``admin`` whose organisation is ``system:masters``, the group the API
    server's bootstrap RBAC policy binds to cluster-admin, so the kubeconfig
    can do anything (as a kind or envtest admin can). Other identities (the
    operator's service account, a node's kubelet) get their rights from RBAC
    objects or from the API server's bootstrap policy. ``server_ips`` are the
    serving certificate's IP SANs: the addresses clients dial.
    """
    pki.mkdir(parents=True, exist_ok=True)
    days = "2"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", days,
        "-subj", "/CN=mlkube-e2e-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=pki,
    )  # fmt: skip
    (pki / "serving.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName="
        + "".join(f"IP:{ip}," for ip in server_ips)
        + "DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local\n"
    )
    (pki / "client.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    identities = [("apiserver", "/CN=kube-apiserver", "serving.ext")]
    identities += [
        (name, subject, "client.ext")
        for name, subject in (clients or {"admin": ADMIN_SUBJECT}).items()
    ]
    for name, subject, ext in identities:
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
            cwd=pki,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", days, "-extfile", ext,
            cwd=pki,
        )  # fmt: skip
    # Service-account tokens are signed with this key and verified with its
    # public half (RSA: the algorithm every API server version accepts).
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _kubeconfig(server: str, ca_file: Path, user: str, credentials: dict[str, str]) -> str:
    """A kubeconfig (JSON is valid YAML) for ``server``, its CA inlined, as ``user``."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mlkube-e2e",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {
                "name": "mlkube-e2e",
                "context": {"cluster": "mlkube-e2e", "user": user, "namespace": "default"},
            }
        ],
        "current-context": "mlkube-e2e",
    }
    return json.dumps(config, indent=2) + "\n"


def kubeconfig_text(server: str, pki: Path, user: str = "admin") -> str:
    """A kubeconfig with the user's client certificate inlined."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    credentials = {
        "client-certificate-data": b64(pki / f"{user}.crt"),
        "client-key-data": b64(pki / f"{user}.key"),
    }
    return _kubeconfig(server, pki / "ca.crt", user, credentials)


def token_kubeconfig_text(server: str, ca_file: Path, token: str) -> str:
    """A kubeconfig that authenticates with a bearer token (a service account's)."""
    return _kubeconfig(server, ca_file, "sa", {"token": token})


def etcd_args(etcd: Path, data: Path, client_port: int, peer_port: int) -> list[str]:
    """etcd for a throwaway cluster: loopback only, no fsync (as envtest runs it)."""
    peer = f"http://127.0.0.1:{peer_port}"
    client = f"http://127.0.0.1:{client_port}"
    return [
        str(etcd),
        "--name=e2e",
        f"--data-dir={data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=e2e={peer}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


# Metadata-level audit of every request (who, verb, resource, response code) so
# tests can prove that an identity was never refused anything (RBAC e2e).
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""


def apiserver_args(
    apiserver: Path, pki: Path, etcd_port: int, secure_port: int, audit_dir: Path | None = None
) -> list[str]:
    """kube-apiserver with RBAC on, so the chart's ClusterRole is really enforced.

    The ServiceAccount admission plugin is off: it would refuse every pod whose
    namespace has no ``default`` ServiceAccount, and without a controller-manager
    nothing creates those. Everything else is the release's default admission
    chain, including validating admission policies and CEL on CRDs.
    """
    args = [
        str(apiserver),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # The `kubernetes` Service endpoints would point at a loopback address,
        # which the reconciler refuses; nothing in-cluster needs them here.
        "--endpoint-reconciler-type=none",
        f"--secure-port={secure_port}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=RBAC",
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
        "--v=0",
    ]
    if audit_dir is not None:
        (audit_dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        args += [
            f"--audit-policy-file={audit_dir / 'audit-policy.yaml'}",
            f"--audit-log-path={audit_dir / 'audit.log'}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        ]
    return args


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver pair and the files that describe it."""

    workdir: Path
    binaries: dict[str, Path]
    server: str = ""
    kubeconfig: Path = field(default_factory=Path)
    start_seconds: float = 0.0
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[Path] = field(default_factory=list)

    @property
    def kubectl_path(self) -> Path:
        return self.binaries["kubectl"]

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    def token_kubeconfig(self, token: str) -> str:
        """A kubeconfig for this cluster that authenticates with ``token``."""
        return token_kubeconfig_text(self.server, self.ca_file, token)

    def audit_events(self, username: str) -> list[dict[str, object]]:
        """Audit events (metadata level) of requests ``username`` made, oldest first."""
        events: list[dict[str, object]] = []
        log = self.workdir / "audit.log"
        if not log.exists():
            return events
        for line in log.read_text().splitlines():
            event = json.loads(line)
            user = event.get("user", {})
            if isinstance(user, dict) and user.get("username") == username:
                events.append(event)
        return events

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a client of this cluster (kubectl, the operator)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env.pop("KUBERNETES_SERVICE_HOST", None)
        env.update(extra or {})
        return env

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's kubectl; with check, a failure raises with its stderr."""
        env = self.env({"KUBECONFIG": str(kubeconfig)} if kubeconfig else None)
        proc = subprocess.run(
            [str(self.kubectl_path), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def kubectl_json(self, *args: str) -> dict[str, object]:
        """``kubectl ... -o json`` parsed."""
        out = self.kubectl(*args, "-o", "json").stdout
        data = json.loads(out)
        assert isinstance(data, dict)
        return data

    def start(self, timeout: float = 120.0) -> None:
        """Generate credentials, start etcd then kube-apiserver, wait for /readyz."""
        began = time.monotonic()
        pki = self.workdir / "pki"
        generate_pki(pki)
        etcd_port, peer_port, secure_port = free_port(), free_port(), free_port()
        self._spawn(
            "etcd",
            etcd_args(self.binaries["etcd"], self.workdir / "etcd", etcd_port, peer_port),
        )
        self._wait_http(f"http://127.0.0.1:{etcd_port}/health", None, timeout, "etcd")
        self._spawn(
            "kube-apiserver",
            apiserver_args(
                self.binaries["kube-apiserver"], pki, etcd_port, secure_port, self.workdir
            ),
        )
        self.server = f"https://127.0.0.1:{secure_port}"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(kubeconfig_text(self.server, pki))
        self.kubeconfig.chmod(0o600)
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._wait_http(f"{self.server}/readyz", ctx, timeout, "kube-apiserver")
        self._wait_default_namespace(timeout - (time.monotonic() - began))
        self.start_seconds = time.monotonic() - began

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        log = self.workdir / f"{name}.log"
        self._logs.append(log)
        with log.open("wb") as fh:
            # A session of its own: Ctrl-C at `make e2e-cluster` reaches only
            # Python, which then stops the children in order.
            proc = subprocess.Popen(
                list(args),
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs.append(proc)

    def _fail(self, what: str) -> ControlPlaneError:
        tails = []
        for log in self._logs:
            with contextlib.suppress(OSError):
                tails.append(f"--- {log.name} (last lines)\n" + log.read_text()[-3000:])
        return ControlPlaneError(what + "\n" + "\n".join(tails))

    def pid(self, name: str) -> int:
        """PID of ``etcd`` or ``kube-apiserver`` (for CPU and memory readings)."""
        for proc, log in zip(self._procs, self._logs, strict=True):
            if log.stem == name:
                return proc.pid
        raise KeyError(name)

    def alive(self) -> bool:
        """Both processes still run."""
        return bool(self._procs) and all(proc.poll() is None for proc in self._procs)

    def _check_alive(self) -> None:
        for proc, log in zip(self._procs, self._logs, strict=True):
            if proc.poll() is not None:
                raise self._fail(f"{log.stem} exited with {proc.returncode} during start-up")

    def _wait_http(self, url: str, ctx: ssl.SSLContext | None, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise self._fail(f"{what} not ready at {url} after {timeout:.0f} s: {last}")

    def _wait_default_namespace(self, timeout: float) -> None:
        """/readyz can pass a moment before the bootstrap controller creates ``default``."""
        deadline = time.monotonic() + max(timeout, 5.0)
        while time.monotonic() < deadline:
            if self.kubectl("get", "namespace", "default", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise self._fail("namespace default never appeared")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the API server, then etcd (reverse start order), SIGKILL stragglers."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=grace)
        self._procs.clear()


@contextlib.contextmanager
def running_control_plane(
    workdir: Path | None = None, timeout: float = 120.0
) -> Iterator[ControlPlane]:
    """Start a control plane for the duration of the ``with`` block."""
    binaries = build_binaries()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlkube-e2e-")))
        cp = ControlPlane(workdir=workdir, binaries=binaries)
        stack.callback(cp.stop)
        cp.start(timeout=timeout)
        yield cp


def main(argv: Sequence[str] | None = None) -> int:
    """``make e2e-cluster``: start, print how to use it, stop on Ctrl-C."""
    del argv
    print("building or finding the cached control plane (scripts/e2e-build) ...", flush=True)
    try:
        with running_control_plane() as cp:
            print(f"control plane ready in {cp.start_seconds:.1f} s at {cp.server}")
            print(f"kubeconfig: {cp.kubeconfig}")
            print(f"  export KUBECONFIG={cp.kubeconfig}")
            print(f"  alias kubectl={cp.kubectl_path}")
            print(f"logs: {cp.workdir}/*.log   (Ctrl-C stops everything)", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while cp.alive():
                    time.sleep(1)
                print("a control-plane process exited; stopping", file=sys.stderr)
                return 1
            print("\nstopping", flush=True)
    except ControlPlaneError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
