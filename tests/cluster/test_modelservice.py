"""ModelServices on a real node: the examples become Ready pods of the project's image that
answer both inference protocols through their Service (by ClusterIP from the host and by
DNS name from another pod), feedback through the Service lands once in a Redis that runs
as a pod, `kubectl scale` and `kubectl drain` behave as Kubernetes users expect, deleting a
ModelService collects every child, and an operator killed mid-reconcile converges without
duplicates."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from typing import Any

import pytest

from mlkube.kubectl import cli
from tests.cluster.kit import (
    MS,
    OPERATOR_NS,
    apply_example,
    get_json,
    http_json,
    msvc,
    pods,
    ready_pods,
    run_pod,
    service_ip,
    serving,
    wait_serving,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ITEMS = ["a", "b", "c", "d"]


def v2_infer(base: str, model: str, items: list[str]) -> tuple[int, Any]:
    body = {
        "inputs": [{"name": "items", "datatype": "BYTES", "shape": [len(items)], "data": items}],
        "parameters": {"top_k": 2},
    }
    return http_json(f"{base}/v2/models/{model}/infer", body)


def test_bandit_example_serves_rest_and_grpc_through_its_service(
    cluster: Any, namespace: str
) -> None:
    ms = apply_example(cluster, namespace, "modelservice-bandit.yaml")
    name, model = ms["metadata"]["name"], ms["spec"]["model"]["name"]
    serving(cluster, namespace, name, 2)
    ip = service_ip(cluster, namespace, name)
    base = f"http://{ip}"

    status, body = v2_infer(base, model, ITEMS)
    assert status == 200, body
    assert body["model_name"] == model
    assert {o["name"] for o in body["outputs"]} >= {"ranking"}
    status, body = http_json(f"{base}/v1/models/{model}:predict", {"instances": ITEMS})
    assert status == 200, body
    assert len(body["predictions"]) == len(ITEMS)
    status, body = http_json(f"{base}/v2/models/{model}/infer", {"inputs": "nope"})
    assert status == 400, body
    assert "inputs" in json.dumps(body), body

    # From another pod, by the Service's DNS name, through the cluster DNS.
    host = f"{name}.{namespace}.svc.cluster.local"
    log = run_pod(
        cluster,
        namespace,
        "client",
        f"""
        import json, urllib.request
        base = "http://{host}"
        print(urllib.request.urlopen(base + "/v2/health/ready", timeout=10).status)
        req = urllib.request.Request(
            base + "/v1/models/{model}:predict",
            data=json.dumps({{"instances": {ITEMS!r}}}).encode(),
            headers={{"Content-Type": "application/json"}},
        )
        print(json.dumps(json.load(urllib.request.urlopen(req, timeout=10))))
        """,
    )
    ready, answer = log.strip().splitlines()[-2:]
    assert ready == "200"
    assert len(json.loads(answer)["predictions"]) == len(ITEMS)

    # OIP v2 over gRPC through the Service's grpc port (8081, appProtocol h2c).
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from mlkube.serving.grpc import inference_pb2 as pb
    from mlkube.serving.grpc import inference_pb2_grpc as pb_grpc

    service = get_json(cluster, "-n", namespace, "get", "service", name)
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["appProtocol"] == "kubernetes.io/h2c"
    with grpc.insecure_channel(f"{ip}:{grpc_port['port']}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        request = pb.ModelInferRequest(model_name=model)
        request.inputs.add(name="items", datatype="BYTES", shape=[len(ITEMS)])
        request.raw_input_contents.append(
            b"".join(len(i.encode()).to_bytes(4, "little") + i.encode() for i in ITEMS)
        )
        answer_grpc = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        assert [o.name for o in answer_grpc.outputs] == ["scores", "ranking"]
        assert len(answer_grpc.raw_output_contents[0]) == 8 * len(ITEMS)

    # kubectl mlkube on real pods: the tree down to them, and every pod's log, prefixed.
    code, out, err = kubectl_mlkube(cluster, "get", "msvc", name, "-n", namespace)
    assert code == 0, err
    running = [line for line in out.splitlines() if "Pod " in line and "Running  ready 1/1" in line]
    assert len(running) == 2, out
    assert "ReplicaSet " in out
    assert "2/2 ready" in out
    names = {p["metadata"]["name"] for p in pods(cluster, namespace, f"{MS}={name}")}
    code, out, err = kubectl_mlkube(cluster, "logs", name, "-n", namespace, "--tail", "20")
    assert code == 0, err
    assert {line.split("]", 1)[0].removeprefix("[pod/") for line in out.splitlines()} == names
    # -f streams until stopped (here after 5 s), every pod's lines still prefixed
    args = cli.parse(["logs", name, "-n", namespace, "-f", "--tail", "5",
                      "--kubeconfig", str(cluster.kubeconfig)])  # fmt: skip
    followed = io.StringIO()
    with contextlib.suppress(TimeoutError):
        asyncio.run(asyncio.wait_for(cli.run(args, followed), 5))
    assert prefixes(followed) == names

    # -f follows pods that start later: a deleted pod's replacement joins the stream.
    async def follow_through_a_replacement() -> set[str]:
        out = io.StringIO()
        task = asyncio.create_task(cli.run(args, out))
        try:
            for _ in range(40):  # every current pod is streaming
                if prefixes(out) == names:
                    break
                await asyncio.sleep(0.25)
            await asyncio.to_thread(
                cluster.kubectl, "-n", namespace, "delete", "pod", min(names), "--wait=false"
            )
            for _ in range(180):  # the ReplicaSet's new pod starts, and logs
                if prefixes(out) - names:
                    break
                await asyncio.sleep(0.5)
            return prefixes(out)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    seen = asyncio.run(follow_through_a_replacement())
    now = {p["metadata"]["name"] for p in pods(cluster, namespace, f"{MS}={name}")}
    assert seen - names, seen  # a pod that did not exist when logs -f started
    assert seen - names <= now, (seen, now)


def prefixes(out: io.StringIO) -> set[str]:
    """The pods whose lines ``kubectl mlkube logs`` printed (``[pod/NAME] line``)."""
    return {line.split("]", 1)[0].removeprefix("[pod/") for line in out.getvalue().splitlines()}


def kubectl_mlkube(cluster: Any, *args: str) -> tuple[int, str, str]:
    """``kubectl mlkube ...`` in-process, as the cluster's admin."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([*args, "--kubeconfig", str(cluster.kubeconfig)], prog="kubectl mlkube")
    return code, out.getvalue(), err.getvalue()


def redis_pod(cluster: Any, namespace: str) -> str:
    """Redis (Debian's redis-server, in the tier's image) as a Deployment + Service."""
    image = cluster.refs["redis-ref"]
    objects = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "redis"},
            "spec": {
                "selector": {"matchLabels": {"app": "redis"}},
                "template": {
                    "metadata": {"labels": {"app": "redis"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "redis",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                "command": [
                                    "redis-server",
                                    "--bind",
                                    "0.0.0.0",
                                    "--protected-mode",
                                    "no",
                                    "--save",
                                    "",
                                    "--appendonly",
                                    "no",
                                ],
                                "ports": [{"containerPort": 6379, "name": "redis"}],
                                "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1},
                                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "redis"},
            "spec": {"selector": {"app": "redis"}, "ports": [{"port": 6379, "name": "redis"}]},
        },
    ]
    cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    (pod,) = wait_until(
        lambda: ready_pods(cluster, namespace, "app=redis", 1), timeout=90, what="Redis Ready"
    )
    return str(pod)


def redis_cli(cluster: Any, namespace: str, pod: str, *args: str) -> str:
    out: str = cluster.kubectl("-n", namespace, "exec", pod, "--", "redis-cli", *args).stdout
    return out


def test_redis_example_counts_feedback_through_the_service_once(
    cluster: Any, namespace: str
) -> None:
    redis = redis_pod(cluster, namespace)
    cluster.kubectl(
        "-n",
        namespace,
        "create",
        "secret",
        "generic",
        "ranker-redis",
        "--from-literal=url=redis://redis:6379/0",
    )
    ms = apply_example(cluster, namespace, "modelservice-redis.yaml")
    name, model = ms["metadata"]["name"], ms["spec"]["model"]["name"]
    wait_serving(cluster, namespace, name, ms["spec"]["replicas"])
    base = f"http://{service_ip(cluster, namespace, name)}"

    # Ten feedback requests through the Service (kube-proxy spreads them over the pods),
    # each sent twice with the same idempotency key, as a client retrying would.
    keys = [str(uuid.uuid4()) for _ in range(10)]
    for key in keys:
        body = {
            "feedback": [{"item": "x", "reward": 1}, {"item": "y", "reward": 0}],
            "idempotency_key": key,
        }
        for _ in range(2):
            status, answer = http_json(f"{base}/v1/models/{model}:feedback", body)
            assert status == 200, answer
    successes = redis_cli(cluster, namespace, redis, "--scan", "--pattern", f"*:{model}:seg:*:s")
    (hash_key,) = successes.split()
    assert redis_cli(cluster, namespace, redis, "HGET", hash_key, "x").strip() == "10"
    assert redis_cli(cluster, namespace, redis, "HGET", hash_key, "y").strip() == "0"
    failures = hash_key[:-1] + "f"
    assert redis_cli(cluster, namespace, redis, "HGET", failures, "y").strip() == "10"

    # Every pod reads the shared counts: the rewarded item ranks first from any pod.
    for pod in pods(cluster, namespace, f"{MS}={name}"):
        ip = pod["status"]["podIP"]
        wait_until(
            lambda ip=ip: (
                (
                    r := http_json(
                        f"http://{ip}:8080/v1/models/{model}:predict", {"instances": ["y", "x"]}
                    )
                )[0]
                == 200
                and r[1]["ranking"][0] == "x"
            ),
            timeout=30,
            what=f"pod {ip} ranking the rewarded item first",
        )


def test_scale_drain_and_garbage_collection(cluster: Any, namespace: str) -> None:
    ms = apply_example(cluster, namespace, "modelservice-bandit.yaml")
    name = ms["metadata"]["name"]
    wait_serving(cluster, namespace, name, 2)

    cluster.kubectl("-n", namespace, "scale", "modelservice", name, "--replicas=3")
    wait_serving(cluster, namespace, name, 3)
    assert msvc(cluster, namespace, name)["status"]["replicas"] == 3

    # Drain the node of this ModelService's pods: the PDB (maxUnavailable 1) lets one go
    # at a time, and with a single node cordoned no replacement can start, so the drain
    # must stop short of taking the others.
    node = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"][0]
    node_name = node["metadata"]["name"]
    drain = cluster.kubectl(
        "drain",
        node_name,
        f"--pod-selector={MS}={name}",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=25s",
        check=False,
    )
    try:
        assert drain.returncode != 0, drain.stdout
        assert "disruption budget" in drain.stderr, drain.stderr
        running = [
            p
            for p in pods(cluster, namespace, f"{MS}={name}")
            if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"
        ]
        assert len(running) >= 2, [p["metadata"]["name"] for p in running]
    finally:
        cluster.kubectl("uncordon", node_name)
    wait_serving(cluster, namespace, name, 3)

    # Delete: the garbage collector removes every child through its owner reference.
    children = "deployments,replicasets,services,poddisruptionbudgets,pods"
    assert cluster.kubectl(
        "-n", namespace, "get", children, "-l", f"{MS}={name}", "-o", "name"
    ).stdout.split()
    cluster.kubectl("-n", namespace, "delete", "modelservice", name, "--wait=true")
    wait_until(
        lambda: not cluster.kubectl("-n", namespace, "get", children, "-o", "name").stdout.split(),
        timeout=120,
        what="every child collected",
    )


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    cluster: Any, namespace: str, operator: dict[str, Any]
) -> None:
    ms = apply_example(cluster, namespace, "modelservice-bandit.yaml")
    name = ms["metadata"]["name"]
    # Kill the operator as soon as it has started on this ModelService (its first child).
    wait_until(
        lambda: cluster.kubectl("-n", namespace, "get", "deployments", "-o", "name").stdout,
        timeout=60,
        interval=0.05,
        what="the operator's first child",
    )
    old = wait_until(
        lambda: ready_pods(cluster, OPERATOR_NS, "app.kubernetes.io/name=mlkube", 1),
        timeout=30,
        what="the operator pod",
    )[0]
    cluster.kubectl("-n", OPERATOR_NS, "delete", "pod", old, "--grace-period=0", "--force")
    new = wait_until(
        lambda: (
            (p := ready_pods(cluster, OPERATOR_NS, "app.kubernetes.io/name=mlkube", 1))
            and p[0] != old
            and p
        ),
        timeout=120,
        what="a new operator pod Ready",
    )[0]
    operator["pod"] = new
    wait_serving(cluster, namespace, name, 2)
    kinds = ("deployments", "services", "poddisruptionbudgets", "replicasets")
    for kind in kinds:
        names = cluster.kubectl("-n", namespace, "get", kind, "-o", "name").stdout.split()
        assert len(names) == len(set(names)), names
    deployments = cluster.kubectl("-n", namespace, "get", "deployments", "-o", "name").stdout
    assert deployments.split() == [f"deployment.apps/{name}"], deployments
    replicasets = cluster.kubectl("-n", namespace, "get", "replicasets", "-o", "name").stdout
    assert len(replicasets.split()) == 1, replicasets  # no second rollout of the same spec
