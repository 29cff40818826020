"""What the cluster tier's tests share: the tier module, and helpers that read state and
act as a user would (kubectl, helm, HTTP to ClusterIPs, one-shot client pods)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART = ROOT / "charts" / "mlkube"
EXAMPLES = ROOT / "examples"
HELM = ROOT / ".venv" / "bin" / "helm"
OPERATOR_NS = "mlkube-system"
OPERATOR_SA = f"system:serviceaccount:{OPERATOR_NS}:mlkube"


def _load_cluster_module() -> ModuleType:
    """tests/cluster/cluster.py by path (it is also a script: `make cluster`)."""
    name = "mlkube_cluster_tier"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "cluster.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


tier = _load_cluster_module()
wait_until = tier.wait_until


def helm(cluster: Any, *args: str) -> str:
    """The real helm against the cluster; fails with its stderr."""
    proc = subprocess.run(
        [str(HELM), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=cluster.env(),
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


# ------------------------------------------------------------------- reading state
def get_json(cluster: Any, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = cluster.kubectl_json(*args)
    return out


def pods(cluster: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cluster, "-n", namespace, "get", "pods", "-l", selector)[
        "items"
    ]
    return items


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod.get("metadata", {}).get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def ready_pods(cluster: Any, namespace: str, selector: str, count: int) -> list[str] | None:
    """Names of the Ready pods when exactly ``count`` pods exist and all are Ready."""
    items = [
        p for p in pods(cluster, namespace, selector) if not p["metadata"].get("deletionTimestamp")
    ]
    if len(items) == count and all(is_ready(p) for p in items):
        return sorted(p["metadata"]["name"] for p in items)
    return None


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []):
        if c.get("type") == kind:
            return dict(c)
    return {}


# ------------------------------------------------------------------ acting as a user
#: The label the operator puts on every pod of a ModelService.
MS = "mlkube.dev/modelservice"


def msvc(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return get_json(cluster, "-n", namespace, "get", "modelservice", name)


def wait_serving(cluster: Any, namespace: str, name: str, replicas: int) -> list[str]:
    """Until the ModelService says Ready and exactly ``replicas`` pods are Ready."""
    names: list[str] = wait_until(
        lambda: ready_pods(cluster, namespace, f"{MS}={name}", replicas),
        timeout=180,
        interval=0.5,
        what=f"{replicas} Ready pods of {name}",
    )
    wait_until(
        lambda: condition(msvc(cluster, namespace, name), "Ready").get("status") == "True",
        timeout=60,
        what=f"ModelService {name} Ready",
    )
    return names


def http_json(url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One HTTP request from the host (to a ClusterIP or pod address on the bridge)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def service_ip(cluster: Any, namespace: str, name: str) -> str:
    ip: str = get_json(cluster, "-n", namespace, "get", "service", name)["spec"]["clusterIP"]
    return ip


def run_pod(
    cluster: Any,
    namespace: str,
    name: str,
    script: str,
    image: str | None = None,
    timeout: float = 120.0,
) -> str:
    """Run ``script`` (Python) in a one-shot pod of the project's image; return its log.

    The pod is a client like any other in the cluster: it resolves names through the
    cluster DNS and reaches Services through kube-proxy.
    """
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": "client",
                    "image": image or cluster.refs["mlkube-ref"],
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", textwrap.dedent(script)],
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))

    def finished() -> str | None:
        phase = get_json(cluster, "-n", namespace, "get", "pod", name)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(finished, timeout=timeout, what=f"pod {name} to finish")
    log: str = cluster.kubectl("-n", namespace, "logs", name).stdout
    assert phase == "Succeeded", f"pod {name} {phase}:\n{log}"
    return log


def fit_to_node(doc: dict[str, Any], cpu: str) -> dict[str, Any]:
    """The example with its CPU *requests* lowered to ``cpu``: the examples size pods for a
    production node, the tier has one node with two cores. Limits, replicas and everything
    else stay as written."""
    spec = doc.get("spec", {})
    if doc.get("kind") == "ModelService":
        requests = spec.get("runtime", {}).get("resources", {}).get("requests")
        if requests and "cpu" in requests:
            requests["cpu"] = cpu
    elif doc.get("kind") == "PyTorchJob":
        for replica in spec.get("pytorchReplicaSpecs", {}).values():
            for container in replica["template"]["spec"]["containers"]:
                requests = container.get("resources", {}).get("requests")
                if requests and "cpu" in requests:
                    requests["cpu"] = cpu
    return doc


def apply_example(cluster: Any, namespace: str, filename: str, cpu: str = "100m") -> dict[str, Any]:
    """``kubectl apply`` of examples/FILENAME into ``namespace`` (CPU requests fitted to the
    node); returns its first mlkube object."""
    import yaml

    docs = [d for d in yaml.safe_load_all((EXAMPLES / filename).read_text()) if d]
    docs = [fit_to_node(d, cpu) for d in docs]
    apply_docs(cluster, namespace, docs)
    main: dict[str, Any] = next(d for d in docs if d["apiVersion"].startswith("mlkube.dev/"))
    return main


def apply_docs(cluster: Any, namespace: str, docs: list[dict[str, Any]]) -> None:
    """``kubectl apply`` of several objects into ``namespace`` at once."""
    cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
    )


@dataclass(frozen=True)
class Answer:
    """One request of a load generator: when it was sent, and what came back."""

    sent: float  # time.time()
    seconds: float
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)
    version: str | None  # model_version of a 200
    error: str | None


class LoadGenerator:
    """Clients sending OIP v2 infer requests to ``url`` for the whole of a ``with`` block,
    recording every answer. Bounded: ``threads`` clients, each at most ``rate`` requests a
    second, and never longer than ``limit`` seconds. Each request opens a new connection,
    as a client behind a Service that spreads its load would."""

    def __init__(
        self,
        url: str,
        body: dict[str, Any],
        threads: int = 4,
        rate: float = 10.0,
        limit: float = 600.0,
        timeout: float = 5.0,
    ) -> None:
        self.url, self.body = url, json.dumps(body).encode()
        self.threads, self.period, self.limit, self.timeout = threads, 1.0 / rate, limit, timeout
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> LoadGenerator:
        deadline = time.monotonic() + self.limit
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, args=(deadline,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=self.timeout + 5)

    def _run(self, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            answer = self._one()
            with self._lock:
                self.answers.append(answer)
            self._stop.wait(max(0.0, self.period - (time.monotonic() - began)))

    def _one(self) -> Answer:
        sent, began = time.time(), time.monotonic()
        req = urllib.request.Request(self.url, data=self.body, method="POST")
        req.add_header("Content-Type", "application/json")
        req.add_header("Connection", "close")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read())
                status, version, error = resp.status, payload.get("model_version"), None
        except urllib.error.HTTPError as exc:
            status, version, error = exc.code, None, exc.read()[:200].decode(errors="replace")
        except (OSError, ValueError) as exc:
            status, version, error = 0, None, f"{type(exc).__name__}: {exc}"
        return Answer(sent, time.monotonic() - began, status, version, error)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def failures(self) -> list[Answer]:
        return [a for a in self.snapshot() if a.status != 200]


def serving(cluster: Any, namespace: str, name: str, replicas: int) -> None:
    """Until the ModelService is Ready and its Service routes to every pod.

    Ready pods are not yet a routable Service: the EndpointSlice follows the pods, and
    kube-proxy programs it a moment later; until then the ClusterIP has no endpoint and
    kube-proxy refuses connections to it. (Load started on Ready pods alone saw 20 and 226
    refused connections in two runs.)"""
    names = wait_serving(cluster, namespace, name, replicas)
    wait_until(
        lambda: endpoint_pods(cluster, namespace, name) == set(names),
        timeout=60,
        what=f"the Service {name} listing its {replicas} pods",
    )
    url = f"http://{service_ip(cluster, namespace, name)}/v2/health/ready"
    wait_until(lambda: answers_200(url), timeout=60, what=f"the Service {name} routing")


def answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def endpoint_pods(cluster: Any, namespace: str, service: str) -> set[str]:
    """Pods behind the Service that kube-proxy sends new connections to (ready endpoints)."""
    slices = get_json(
        cluster,
        "-n",
        namespace,
        "get",
        "endpointslices",
        "-l",
        f"kubernetes.io/service-name={service}",
    )
    return {
        e["targetRef"]["name"]
        for s in slices["items"]
        for e in s.get("endpoints") or []
        if e.get("conditions", {}).get("ready") and e.get("targetRef")
    }
