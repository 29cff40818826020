"""The PyTorchJob API: Kubeflow's defaults, and the checks ``kubectl apply`` makes."""

from __future__ import annotations

import copy
import json
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ptj_builders import job_body, make_job
from pydantic import ValidationError

from mlkube.api.crdgen import build_crd
from mlkube.api.pytorchjob import (
    PYTORCHJOB,
    CleanPodPolicy,
    JobRestartPolicy,
    PyTorchJob,
    RestartPolicy,
    managed_elsewhere,
    name_problem,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("pytorchjob-*.yaml"))


def test_kubeflow_defaults() -> None:
    job = make_job(workers=None)
    spec = job.spec
    master = spec.pytorch_replica_specs["Master"]
    assert master.replicas == 1
    assert master.restart_policy is RestartPolicy.ON_FAILURE
    assert spec.run_policy.clean_pod_policy is CleanPodPolicy.NONE
    assert spec.run_policy.restart_policy is JobRestartPolicy.PER_POD
    assert spec.run_policy.backoff_limit is None
    assert spec.effective_nproc_per_node() == "auto"
    assert spec.elastic_bounds() is None


def test_replicas_default_to_one_when_omitted() -> None:
    body = job_body()
    del body["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"]
    assert PyTorchJob.model_validate(body).spec.pytorch_replica_specs["Worker"].replicas == 1


@pytest.mark.parametrize(
    ("elastic", "workers", "bounds"),
    [
        ({}, 3, (3, 3)),
        ({"minReplicas": 2}, 3, (2, 2)),
        ({"maxReplicas": 5}, 3, (5, 5)),
        ({"minReplicas": 1, "maxReplicas": 4}, 3, (1, 4)),
    ],
)
def test_elastic_bounds_are_defaulted_like_kubeflow(
    elastic: dict[str, Any], workers: int, bounds: tuple[int, int]
) -> None:
    job = make_job(master=None, workers=workers, elasticPolicy=elastic)
    assert job.spec.elastic_bounds() == bounds
    assert job.spec.elastic_policy is not None
    assert str(job.spec.elastic_policy.rdzv_backend) == "c10d"


def test_deprecated_elastic_nproc_suppresses_the_auto_default() -> None:
    job = make_job(master=None, elasticPolicy={"nProcPerNode": 4})
    assert job.spec.effective_nproc_per_node() is None


def test_lower_case_replica_types_are_accepted_as_kubeflow_does() -> None:
    body = job_body()
    specs = body["spec"]["pytorchReplicaSpecs"]
    specs["master"], specs["worker"] = specs.pop("Master"), specs.pop("Worker")
    job = PyTorchJob.model_validate(body)
    assert set(job.spec.pytorch_replica_specs) == {"Master", "Worker"}


def _mutate(path: str, value: Any) -> dict[str, Any]:
    body = job_body()
    node: Any = body
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return body


_DELETE = object()

# (what is wrong, mutation, words in the message) — each must be refused by the CRD's
# schema/CEL rules *and* by the pydantic model the operator parses with.
MISTAKES = [
    (
        "unknown replica type",
        (
            "spec.pytorchReplicaSpecs.Chief",
            {"template": {"spec": {"containers": [{"name": "pytorch", "image": "x"}]}}},
        ),
        "Master and Worker",
    ),
    ("two masters", ("spec.pytorchReplicaSpecs.Master.replicas", 2), "exactly 1 Master"),
    ("no replica specs", ("spec.pytorchReplicaSpecs", {}), ""),
    (
        "no pytorch container",
        (
            "spec.pytorchReplicaSpecs.Worker.template.spec.containers",
            [{"name": "main", "image": "x"}],
        ),
        "pytorch",
    ),
    (
        "empty image",
        (
            "spec.pytorchReplicaSpecs.Worker.template.spec.containers",
            [{"name": "pytorch", "image": ""}],
        ),
        "image",
    ),
    ("no containers", ("spec.pytorchReplicaSpecs.Master.template.spec.containers", []), ""),
    ("bad restart policy", ("spec.pytorchReplicaSpecs.Worker.restartPolicy", "Sometimes"), ""),
    ("bad clean pod policy", ("spec.runPolicy", {"cleanPodPolicy": "Some"}), ""),
    ("bad nproc", ("spec.nprocPerNode", "4 gpus"), ""),
    ("zero nproc", ("spec.nprocPerNode", "0"), ""),
    ("master without replicas", ("spec.pytorchReplicaSpecs.Master.replicas", _DELETE), "Master"),
    ("negative replicas", ("spec.pytorchReplicaSpecs.Worker.replicas", -1), ""),
    (
        "elastic min above max",
        ("spec.elasticPolicy", {"minReplicas": 3, "maxReplicas": 2}),
        "minReplicas",
    ),
    ("both nproc fields", ("spec.elasticPolicy", {"nProcPerNode": 2}), "deprecated"),
]


@pytest.mark.parametrize(("what", "mutation", "words"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistakes_are_refused_by_the_crd_and_the_model(
    admit: Any, what: str, mutation: tuple[str, Any], words: str
) -> None:
    body = _mutate(*mutation)
    if what == "both nproc fields":
        body["spec"]["nprocPerNode"] = "2"
    if what == "unknown replica type":
        del body["spec"]["pytorchReplicaSpecs"]["Worker"]
    errors = admit(body)
    assert errors, f"the API server would admit a job with {what}"
    assert any(words in e for e in errors), errors
    with pytest.raises(ValidationError):
        PyTorchJob.model_validate(body)


def test_worker_only_job_needs_a_worker(admit: Any) -> None:
    body = job_body(master=None, workers=0)
    assert any("at least 1 Worker" in e for e in admit(body))
    with pytest.raises(ValidationError, match="at least 1 Worker"):
        PyTorchJob.model_validate(body)


def test_zero_workers_beside_a_master_is_allowed(admit: Any) -> None:
    body = job_body(master=1, workers=0)
    assert admit(body) == []
    assert PyTorchJob.model_validate(body).spec.total_replicas() == 1


def test_elastic_needs_workers(admit: Any) -> None:
    body = job_body(workers=None, elasticPolicy={"minReplicas": 1})
    assert any("Worker replica spec" in e for e in admit(body))
    with pytest.raises(ValidationError, match="Worker replica spec"):
        PyTorchJob.model_validate(body)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("mnist", True),
        ("a" * 50, True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("Mnist", False),
        ("1mnist", False),
        ("mnist.v2", False),
        ("mnist-", False),
    ],
)
def test_job_names_must_make_valid_pod_and_service_names(admit: Any, name: str, ok: bool) -> None:
    body = job_body(name=name)
    assert (admit(body) == []) is ok
    assert (name_problem(name) is None) is ok


@pytest.mark.parametrize(
    "change",
    [
        {"nprocPerNode": "xpu"},
        {"nprocPerNode": "npu"},
        {"runPolicy": {"activeDeadlineSeconds": 0}},
        {"elasticPolicy": {"minReplicas": 0, "maxReplicas": 2}},
    ],
    ids=["xpu", "privateuse1-device", "deadline-0", "elastic-min-0"],
)
def test_what_kubeflow_accepts_is_accepted(admit: Any, change: dict[str, Any]) -> None:
    body = job_body(**change)
    assert admit(body) == []
    PyTorchJob.model_validate(body)


def test_a_good_job_is_admitted(admit: Any) -> None:
    body = job_body(
        runPolicy={"backoffLimit": 3, "restartPolicy": "RestartAll", "cleanPodPolicy": "All"},
        nprocPerNode="4",
    )
    assert admit(body) == []


@pytest.mark.parametrize(
    ("manager", "admitted", "elsewhere"),
    [
        (None, True, None),
        ("kubeflow.org/training-operator", True, None),
        ("kueue.x-k8s.io/multikueue", True, "kueue.x-k8s.io/multikueue"),
        ("example.com/my-controller", False, "example.com/my-controller"),
        ("", False, ""),
    ],
)
def test_managed_by_takes_kubeflows_values_only(
    admit: Any, manager: str | None, admitted: bool, elsewhere: str | None
) -> None:
    body = job_body(runPolicy={} if manager is None else {"managedBy": manager})
    errors = admit(body)
    assert (errors == []) is admitted, errors
    if admitted:
        PyTorchJob.model_validate(body)
    else:
        with pytest.raises(ValidationError, match="managedBy"):
            PyTorchJob.model_validate(body)
    # the controller leaves a job alone when another controller is named, even an invalid one
    assert managed_elsewhere(body) == elsewhere


def test_managed_elsewhere_reads_any_shape() -> None:
    assert managed_elsewhere({}) is None
    assert managed_elsewhere({"spec": {"runPolicy": None}}) is None
    assert managed_elsewhere({"spec": []}) is None


def test_crd_names_columns_and_subresources() -> None:
    crd = build_crd(PYTORCHJOB)
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "PyTorchJob",
        "pytorchjobs",
        ["ptj"],
        ["mlkube"],
    )
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "State": ".status.conditions[-1:].type",
        "Age": ".metadata.creationTimestamp",
    }
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.pytorchReplicaSpecs.Worker.replicas",
        "statusReplicasPath": ".status.replicaStatuses.Worker.active",
        "labelSelectorPath": ".status.replicaStatuses.Worker.selector",
    }
    template = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "pytorchReplicaSpecs"
    ]["additionalProperties"]["properties"]["template"]
    # typed: the generated core/v1 PodTemplateSpec, nothing kept unchecked
    assert "x-kubernetes-preserve-unknown-fields" not in json.dumps(template)
    container = template["properties"]["spec"]["properties"]["containers"]["items"]
    assert container["properties"]["imagePullPolicy"] == {"type": "string"}
    assert container["required"] == ["name", "image"]


def test_the_spec_schema_writes_no_defaults_into_stored_jobs() -> None:
    """Defaults live in the models (the operator applies them in memory), never in the
    schema: `kubectl get -o yaml` and GitOps diffs show only what the user wrote."""
    spec = build_crd(PYTORCHJOB)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert '"default"' not in json.dumps(spec["properties"]["spec"])
    job = PyTorchJob.model_validate(job_body(runPolicy={}))
    assert job.spec.run_policy.terminating_timeout_seconds == 120
    assert job.spec.run_policy.restart_policy is JobRestartPolicy.PER_POD


def test_the_crd_fits_the_api_servers_and_kubectls_limits() -> None:
    """etcd takes requests up to 1.5 MiB; client-side `kubectl apply` keeps the whole object
    in an annotation, and all annotations together may hold 256 KiB."""
    crd = json.dumps(build_crd(PYTORCHJOB), separators=(",", ":"))
    assert len(crd) < 200 * 1024


def test_the_pod_template_schema_is_what_the_script_generates() -> None:
    """podtemplatespec.json is generated data: the script reproduces it from the pinned
    release's OpenAPI (skipped where the Go module cache lacks that release)."""
    script = ROOT / "scripts" / "gen-podtemplate-schema"
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        pytest.skip("no Go toolchain")
    cache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True).stdout
    if not list(Path(cache.strip()).glob("k8s.io/kubernetes@*/api/openapi-spec")):
        pytest.skip("no k8s.io/kubernetes module in the Go module cache")
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("containerPort", "abc"),
        ("resources", {"limits": {"memory": "1GB"}}),
        ("env", [{"value": "no name"}]),
    ],
)
def test_typed_pod_template_refuses_wrong_types(admit: Any, where: str, value: Any) -> None:
    body = job_body()
    container = body["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    if where == "containerPort":
        container["ports"] = [{"containerPort": value}]
    else:
        container[where] = value
    assert admit(body)


def test_pod_template_fields_survive(admit: Any) -> None:
    body = job_body()
    spec = body["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    spec["nodeSelector"] = {"pool": "gpu"}
    spec["containers"][0]["args"] = ["--epochs", "3"]
    assert admit(body) == []
    job = PyTorchJob.model_validate(copy.deepcopy(body))
    kept = job.spec.pytorch_replica_specs["Worker"].template["spec"]
    assert kept["nodeSelector"] == {"pool": "gpu"}
    assert kept["containers"][0]["args"] == ["--epochs", "3"]


# ------------------------------------------------------------------------------ examples


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_admitted_and_ship_the_script(admit: Any, path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    jobs = [d for d in docs if d["kind"] == "PyTorchJob"]
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(jobs) == 1
    assert admit(jobs[0]) == []
    PyTorchJob.model_validate(jobs[0])
    # The ConfigMap carries exactly the script in examples/pytorch (no silent drift).
    assert maps
    for key, text in maps[0]["data"].items():
        assert text == (ROOT / "examples" / "pytorch" / key).read_text(), key


@pytest.mark.parametrize(
    "script", sorted((ROOT / "examples" / "pytorch").glob("*.py")), ids=lambda p: p.name
)
def test_the_example_scripts_compile(tmp_path: Path, script: Path) -> None:
    py_compile.compile(str(script), cfile=str(tmp_path / f"{script.stem}.pyc"), doraise=True)
