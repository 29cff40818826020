"""What a user meets at ``kubectl apply``, checked against a real API server.

The CRDs in crds/ are applied exactly as the README tells users to; every example
must be accepted, and each bad object must be refused by the API server's own
schema and CEL evaluation with the message a person can act on. Defaults,
printer columns and the scale subresource are the server's behaviour too, so
they can only be proven here, not with kmock.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlkube import migrate as mlkube_migrate
from tests.support.kubectl import modelservice

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def pytorchjob(name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "mlkube.dev/v1alpha1",
            "kind": "PyTorchJob",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


MODEL = {"name": "ranker", "version": "v1"}


def replica(replicas: int, container: str = "pytorch") -> dict[str, Any]:
    return {
        "replicas": replicas,
        "template": {"spec": {"containers": [{"name": container, "image": "trainer:1"}]}},
    }


def test_crds_are_established_and_cover_both_kinds(cluster: Any, crds_installed: list[str]) -> None:
    assert "modelservices.mlkube.dev" in crds_installed
    assert "pytorchjobs.mlkube.dev" in crds_installed
    for name in ("modelservices.mlkube.dev", "pytorchjobs.mlkube.dev"):
        crd = cluster.kubectl_json("get", "crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"
    # short names and the category work through discovery, as users type them
    out = cluster.kubectl("api-resources", "--api-group=mlkube.dev", "-o", "wide").stdout
    assert "msvc" in out
    assert "ptj" in out
    cluster.kubectl("get", "mlkube", "--all-namespaces")


def test_applying_the_crds_twice_changes_nothing(cluster: Any, crds_installed: list[str]) -> None:
    """GitOps re-applies crds/ on every sync: it must be a no-op, not a new generation."""
    before = {n: cluster.kubectl_json("get", "crd", n)["metadata"] for n in crds_installed}
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    for name in crds_installed:
        after = cluster.kubectl_json("get", "crd", name)["metadata"]
        assert after["resourceVersion"] == before[name]["resourceVersion"], name


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_applies_cleanly(
    cluster: Any, crds_installed: list[str], namespace: str, example: Path
) -> None:
    out = cluster.kubectl("-n", namespace, "apply", "--server-side", "-f", str(example))
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    assert out.stdout.count("serverside-applied") == len(docs)
    for doc in docs:
        got = cluster.kubectl_json("-n", namespace, "get", doc["kind"], doc["metadata"]["name"])
        metadata = got["metadata"]
        assert isinstance(metadata, dict)
        assert metadata["uid"]
        if doc["apiVersion"].startswith("mlkube.dev/"):
            assert metadata["generation"] == 1


BAD_MODELSERVICES: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "dns-1035-name",
        "bad.name",
        {"model": MODEL},
        [
            'metadata.name: Invalid value: "bad.name": name must be a DNS-1035 label',
            "because it names the Service",
        ],
    ),
    (
        "name-too-long",
        "a" * 57,
        {"model": MODEL},
        [f'metadata.name: Invalid value: "{"a" * 57}": name must be at most 56 characters'],
    ),
    (
        "model-required",
        "no-model",
        {"replicas": 1},
        ["spec.model: Required value"],
    ),
    (
        "format-enum",
        "tensorrt",
        {"model": {**MODEL, "format": "tensorrt"}},
        ['spec.model.format: Unsupported value: "tensorrt"', '"bandit", "custom", "onnx"'],
    ),
    (
        "onnx-needs-path",
        "onnx",
        {"model": {**MODEL, "format": "onnx"}},
        ["spec.model.path: Required value", "format onnx needs path"],
    ),
    (
        "custom-needs-class",
        "custom",
        {"model": {**MODEL, "format": "custom"}},
        ["spec.model.className: Required value", "format custom needs className"],
    ),
    (
        "version-label-value",
        "bad-version",
        {"model": {**MODEL, "version": "v 1"}},
        ["spec.model.version", "version must be a valid label value"],
    ),
    (
        "redis-needs-secret",
        "redis",
        {"model": MODEL, "featureStore": {"type": "redis"}},
        ["spec.featureStore.redis: Required value", "never written inline"],
    ),
    (
        "reserved-env",
        "env",
        {"model": MODEL, "runtime": {"env": [{"name": "MLKUBE_PORT", "value": "9000"}]}},
        ["spec.runtime.env", "env must not set the MLKUBE_* variables"],
    ),
    (
        "grpc-port-is-the-rest-port",
        "grpc",
        {"model": MODEL, "runtime": {"port": 8081}},
        ["spec.runtime.grpcPort", "grpcPort must differ from port"],
    ),
    (
        "limit-below-request",
        "cpu",
        {
            "model": MODEL,
            "runtime": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}},
        },
        ["spec.runtime.resources.limits.cpu", "cpu limit must be at least the cpu request"],
    ),
    (
        "storage-uri-scheme",
        "gcs",
        {"model": {**MODEL, "format": "custom", "className": "m:M", "storageUri": "gs://b/m"}},
        ["spec.model.storageUri", "storageUri must be pvc://CLAIM/path, http(s)://host/path"],
    ),
    (
        "storage-secret-needs-s3",
        "https-secret",
        {
            "model": {
                **MODEL,
                "format": "custom",
                "className": "m:M",
                "storageUri": "https://models.example.com/m.onnx",
                "storage": {"secretName": "s3"},
            }
        },
        ["spec.model.storage.secretName", "it applies only to s3:// URIs"],
    ),
    (
        "negative-replicas",
        "replicas",
        {"model": MODEL, "replicas": -1},
        ["spec.replicas", "should be greater than or equal to 0"],
    ),
    (
        "negative-gpus",
        "gpus",
        {"model": MODEL, "gpu": {"count": -1}},
        ["spec.gpu.count", "should be greater than or equal to 0"],
    ),
]


def refused(
    cluster: Any, namespace: str, kind: str, name: str, manifest: str, messages: list[str]
) -> str:
    """Apply ``manifest``: the API server must refuse it with every one of ``messages``, each
    at the field it is about. Returns kubectl's error output."""
    proc = cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", stdin=manifest, check=False
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    assert f'The {kind} "{name}" is invalid' in proc.stderr
    for message in messages:
        assert message in proc.stderr
        # each of our errors names the field it is about (a rule on the whole object would
        # be reported at `<nil>`); the server's own "some validation rules were not
        # checked" note is at `<nil>` by design and not ours
        for line in proc.stderr.splitlines():
            assert message not in line or "<nil>" not in line, line
    return str(proc.stderr)


@pytest.mark.parametrize(
    ("name", "spec", "messages"),
    [case[1:] for case in BAD_MODELSERVICES],
    ids=[case[0] for case in BAD_MODELSERVICES],
)
def test_bad_modelservice_is_refused_with_a_clear_message(
    cluster: Any,
    crds_installed: list[str],
    namespace: str,
    name: str,
    spec: dict[str, Any],
    messages: list[str],
) -> None:
    refused(cluster, namespace, "ModelService", name, modelservice(name, spec), messages)
    listed = cluster.kubectl("-n", namespace, "get", "msvc", "-o", "name").stdout
    assert listed.strip() == ""


BAD_PYTORCHJOBS: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "two-masters",
        "two-masters",
        {"pytorchReplicaSpecs": {"Master": replica(2)}},
        ["spec.pytorchReplicaSpecs", "there must be exactly 1 Master replica"],
    ),
    (
        "container-name",
        "container",
        {"pytorchReplicaSpecs": {"Master": replica(1, container="main")}},
        ["the pod template needs a container named 'pytorch'"],
    ),
    (
        "replica-type",
        "chief",
        {"pytorchReplicaSpecs": {"Master": replica(1), "Chief": replica(1)}},
        ["pytorchReplicaSpecs accepts only the replica types Master and Worker"],
    ),
    (
        "no-replicas",
        "empty",
        {"pytorchReplicaSpecs": {}},
        ["pytorchReplicaSpecs needs a Master (exactly 1 replica) or a Worker (at least 1"],
    ),
    (
        "no-worker-replicas",
        "idle",
        {"pytorchReplicaSpecs": {"Worker": replica(0)}},
        ["a job without a Master needs at least 1 Worker replica"],
    ),
    (
        "elastic-bounds",
        "elastic",
        {
            "elasticPolicy": {"minReplicas": 3, "maxReplicas": 2},
            "pytorchReplicaSpecs": {"Worker": replica(2)},
        },
        ["spec.elasticPolicy", "minReplicas must not exceed elasticPolicy.maxReplicas"],
    ),
    (
        "name-too-long",
        "a" * 64,
        {"pytorchReplicaSpecs": {"Master": replica(1)}},
        [f'metadata.name: Invalid value: "{"a" * 64}": the name must be at most 63 characters'],
    ),
    (
        "master-without-replicas",
        "master",
        {"pytorchReplicaSpecs": {"Master": {"template": replica(1)["template"]}}},
        ["spec.pytorchReplicaSpecs", "there must be exactly 1 Master replica"],
    ),
    (
        "managed-by-unknown",
        "managed",
        {
            "runPolicy": {"managedBy": "example.com/other"},
            "pytorchReplicaSpecs": {"Master": replica(1)},
        },
        ['spec.runPolicy.managedBy: Unsupported value: "example.com/other"'],
    ),
    (
        "dns-1035-name",
        "mnist.v2",
        {"pytorchReplicaSpecs": {"Master": replica(1)}},
        ['metadata.name: Invalid value: "mnist.v2": the name must be a DNS-1035 label'],
    ),
]


@pytest.mark.parametrize(
    ("name", "spec", "messages"),
    [case[1:] for case in BAD_PYTORCHJOBS],
    ids=[case[0] for case in BAD_PYTORCHJOBS],
)
def test_bad_pytorchjob_is_refused_with_a_clear_message(
    cluster: Any,
    crds_installed: list[str],
    namespace: str,
    name: str,
    spec: dict[str, Any],
    messages: list[str],
) -> None:
    stderr = refused(cluster, namespace, "PyTorchJob", name, pytorchjob(name, spec), messages)
    # every rule guards the keys it reads: no "no such key: Worker evaluating rule: ..."
    assert "evaluating rule" not in stderr


KUBEFLOW = sorted((ROOT / "tests" / "data" / "kubeflow").glob("*.yaml"))


def test_kubeflow_manifests_apply_with_only_the_api_version_changed(
    cluster: Any, crds_installed: list[str], namespace: str
) -> None:
    """Kubeflow v1 PyTorchJobs (GPU, elastic with HPA metrics and nprocPerNode xpu,
    minReplicas 0, a 58-character name, every runPolicy field, activeDeadlineSeconds 0,
    `creationTimestamp: null` in the template) are accepted by the typed schema, both
    server-side and client-side, and stored exactly as written: no defaults added."""
    assert len(KUBEFLOW) >= 3
    for path in KUBEFLOW:
        doc = yaml.safe_load(path.read_text())
        doc["apiVersion"] = "mlkube.dev/v1alpha1"
        doc["metadata"].pop("namespace", None)
        # server-side apply keeps an explicit null (creationTimestamp), a create drops it
        for how, stored in (
            ("--server-side", doc["spec"]),
            ("--validate=strict", _without_nulls(doc["spec"])),
        ):
            cluster.kubectl("-n", namespace, "apply", how, "-f", "-", stdin=json.dumps(doc))
            got = cluster.kubectl_json("-n", namespace, "get", "ptj", doc["metadata"]["name"])
            assert got["spec"] == stored, path.name
            cluster.kubectl("-n", namespace, "delete", "ptj", doc["metadata"]["name"])


def _without_nulls(value: Any) -> Any:
    """What the API server stores of a value: explicit nulls are dropped."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize(
    ("container", "server_side", "client_side"),
    [
        (
            {"imagePulPolicy": "Always"},
            ['containers[name="pytorch"].imagePulPolicy: field not declared in schema'],
            [
                'unknown field "spec.pytorchReplicaSpecs.Master.template.spec.containers[0]'
                '.imagePulPolicy"'
            ],
        ),
        (
            {"ports": [{"containerPort": "abc"}]},
            ['containers[name="pytorch"].ports[0].containerPort: expected numeric'],
            [
                "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].ports[0]"
                ".containerPort in body must be of type integer"
            ],
        ),
    ],
    ids=["misspelt-field", "mistyped-port"],
)
def test_misspelt_or_mistyped_template_fields_are_refused(
    cluster: Any,
    crds_installed: list[str],
    namespace: str,
    container: dict[str, Any],
    server_side: list[str],
    client_side: list[str],
) -> None:
    master = replica(1)
    master["template"]["spec"]["containers"][0].update(container)
    manifest = pytorchjob("typo", {"pytorchReplicaSpecs": {"Master": master}})
    for how, messages in (("--server-side", server_side), ("--validate=strict", client_side)):
        proc = cluster.kubectl(
            "-n", namespace, "apply", how, "-f", "-", stdin=manifest, check=False
        )  # fmt: skip
        assert proc.returncode != 0, proc.stdout
        for message in messages:
            assert message in proc.stderr, proc.stderr
    assert cluster.kubectl("-n", namespace, "get", "ptj", "-o", "name").stdout.strip() == ""


def test_managed_by_is_immutable(cluster: Any, crds_installed: list[str], namespace: str) -> None:
    """Kubeflow's rule: runPolicy.managedBy cannot be set, changed or removed later."""
    multikueue = {"managedBy": "kueue.x-k8s.io/multikueue"}
    for name, run_policy in (("plain", {}), ("remote", multikueue)):
        spec = {"runPolicy": run_policy, "pytorchReplicaSpecs": {"Master": replica(1)}}
        cluster.kubectl(
            "-n", namespace, "apply", "--server-side", "-f", "-", stdin=pytorchjob(name, spec)
        )  # fmt: skip
    changes = [
        ("plain", "merge", {"spec": {"runPolicy": multikueue}}),
        (
            "remote",
            "merge",
            {"spec": {"runPolicy": {"managedBy": "kubeflow.org/training-operator"}}},
        ),
        ("remote", "json", [{"op": "remove", "path": "/spec/runPolicy/managedBy"}]),
    ]
    for name, kind, patch in changes:
        proc = cluster.kubectl(
            "-n", namespace, "patch", "ptj", name, f"--type={kind}", "-p", json.dumps(patch),
            check=False,
        )  # fmt: skip
        assert proc.returncode != 0, (name, patch)
        assert "spec.runPolicy.managedBy: Invalid value" in proc.stderr
        assert "managedBy is immutable" in proc.stderr
    # anything else may change
    cluster.kubectl(
        "-n", namespace, "patch", "ptj", "remote", "--type=merge",
        "-p", json.dumps({"spec": {"runPolicy": {"backoffLimit": 2}}}),
    )  # fmt: skip


def test_schema_defaults_appear_on_created_objects(
    cluster: Any, crds_installed: list[str], namespace: str
) -> None:
    spec = {
        "model": MODEL,
        "featureStore": {"type": "redis", "redis": {"urlSecretRef": {"name": "redis"}}},
        "gpu": {"count": 1},
        "runtime": {},
    }
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-", stdin=modelservice("d", spec)
    )
    got = cluster.kubectl_json("-n", namespace, "get", "msvc", "d")["spec"]
    assert isinstance(got, dict)
    assert got["model"]["format"] == "bandit"
    assert got["replicas"] == 1
    assert got["featureStore"]["redis"]["urlSecretRef"]["key"] == "url"
    assert got["gpu"]["resourceName"] == "nvidia.com/gpu"
    assert got["runtime"]["port"] == 8080

    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-",
        stdin=pytorchjob("j", {"pytorchReplicaSpecs": {"Worker": replica(2)}}),
    )  # fmt: skip
    job = cluster.kubectl_json("-n", namespace, "get", "ptj", "j")["spec"]
    # a PyTorchJob's defaults are the operator's, in memory: stored is what was written
    assert job == {"pytorchReplicaSpecs": {"Worker": replica(2)}}


def header(out: str) -> list[str]:
    return out.splitlines()[0].split()


def test_printer_columns(cluster: Any, crds_installed: list[str], namespace: str) -> None:
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-",
        stdin=modelservice("cols", {"model": MODEL}),
    )  # fmt: skip
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-",
        stdin=pytorchjob("cols", {"pytorchReplicaSpecs": {"Master": replica(1)}}),
    )  # fmt: skip
    out = cluster.kubectl("-n", namespace, "get", "msvc").stdout
    assert header(out) == ["NAME", "READY", "VERSION", "REPLICAS", "AGE"]
    assert out.splitlines()[1].split()[0] == "cols"
    wide = cluster.kubectl("-n", namespace, "get", "msvc", "-o", "wide").stdout
    assert header(wide) == [
        "NAME", "READY", "VERSION", "REPLICAS", "AGE", "URL", "REVISION", "ROLLOUT", "CANARY",
    ]  # fmt: skip
    jobs = cluster.kubectl("-n", namespace, "get", "ptj").stdout
    assert header(jobs)[0] == "NAME"
    assert "STATE" in header(jobs)
    assert header(jobs)[-1] == "AGE"


def test_kubectl_scale_goes_through_the_scale_subresource(
    cluster: Any, crds_installed: list[str], namespace: str
) -> None:
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-",
        stdin=modelservice("web", {"model": MODEL, "replicas": 1}),
    )  # fmt: skip
    out = cluster.kubectl("-n", namespace, "scale", "msvc/web", "--replicas", "3").stdout
    assert "scaled" in out
    ms = cluster.kubectl_json("-n", namespace, "get", "msvc", "web")
    assert ms["spec"]["replicas"] == 3
    assert ms["metadata"]["generation"] == 2
    scale = json.loads(
        cluster.kubectl(
            "get", "--raw",
            f"/apis/mlkube.dev/v1alpha1/namespaces/{namespace}/modelservices/web/scale",
        ).stdout
    )  # fmt: skip
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 3
    # the schema's bound holds on the scale path too
    refused = cluster.kubectl("-n", namespace, "scale", "msvc/web", "--replicas", "-1", check=False)
    assert refused.returncode != 0


KUBEFLOW_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "pytorchjobs.kubeflow.org"},
    "spec": {
        "group": "kubeflow.org",
        "names": {"kind": "PyTorchJob", "plural": "pytorchjobs", "singular": "pytorchjob"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def test_migrate_from_files_and_from_a_cluster_with_both_crds(
    cluster: Any, crds_installed: list[str], namespace: str
) -> None:
    """`mlkube migrate` output applies as it is, from files and from Kubeflow jobs read out
    of the cluster; with both CRDs installed, `pytorchjobs` names Kubeflow's (kubectl
    prefers kubeflow.org) while `ptj` and `pytorchjobs.mlkube.dev` name mlkube's."""
    migrate = [sys.executable, "-m", "mlkube", "migrate"]
    out, err = io.StringIO(), io.StringIO()
    text = "\n---\n".join(path.read_text() for path in KUBEFLOW)
    assert mlkube_migrate.run(mlkube_migrate.documents(text), False, out, err) == 0
    assert "could not carry" not in err.getvalue()
    docs = [d for d in yaml.safe_load_all(out.getvalue()) if d]
    for doc in docs:
        doc["metadata"].pop("namespace", None)
    cluster.kubectl(
        "-n", namespace, "apply", "--server-side", "-f", "-",
        stdin="\n---\n".join(json.dumps(d) for d in docs),
    )  # fmt: skip
    names = {d["metadata"]["name"] for d in docs}
    listed = cluster.kubectl("-n", namespace, "get", "ptj", "-o", "name").stdout.split()
    assert {n.split("/", 1)[1] for n in listed} == names

    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(KUBEFLOW_CRD))
    try:
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/pytorchjobs.kubeflow.org"
        )  # fmt: skip
        kf_ns = f"{namespace}-kf"
        cluster.kubectl("create", "namespace", kf_ns)
        job = yaml.safe_load((ROOT / "tests" / "data" / "kubeflow" / "mnist-gpu.yaml").read_text())
        job["metadata"]["name"] = "from-kubeflow"
        cluster.kubectl("-n", kf_ns, "create", "-f", "-", stdin=json.dumps(job))
        assert (
            "kubeflow.org"
            in cluster.kubectl("-n", kf_ns, "get", "pytorchjobs", "-o", "name").stdout
        )
        assert cluster.kubectl("-n", kf_ns, "get", "ptj", "-o", "name").stdout.strip() == ""
        assert cluster.kubectl(
            "-n", kf_ns, "get", "pytorchjobs.mlkube.dev", "-o", "name"
        ).stdout.strip() == ""  # fmt: skip

        out = subprocess.run(
            [*migrate, "--from-cluster", "-n", kf_ns],
            capture_output=True, text=True, check=True, cwd=ROOT, env=cluster.env(),
        )  # fmt: skip
        assert f"{kf_ns}/from-kubeflow: metadata.uid: dropped" in out.stderr
        cluster.kubectl("apply", "--server-side", "-f", "-", stdin=out.stdout)
        got = cluster.kubectl_json("-n", kf_ns, "get", "pytorchjobs.mlkube.dev", "from-kubeflow")
        assert got["spec"] == job["spec"]
    finally:
        cluster.kubectl("delete", "crd", "pytorchjobs.kubeflow.org", "--wait=false")
