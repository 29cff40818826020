"""``mlkube migrate``: Kubeflow PyTorchJobs in, mlkube ones out, every change reported."""

from __future__ import annotations

import copy
import io
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlkube import migrate
from mlkube.api.pytorchjob import PyTorchJob

ROOT = Path(__file__).resolve().parents[2]
KUBEFLOW = sorted((ROOT / "tests" / "data" / "kubeflow").glob("*.yaml"))


def kubeflow_job(**spec: Any) -> dict[str, Any]:
    container = {"name": "pytorch", "image": "trainer:1"}
    replica = {"replicas": 1, "template": {"spec": {"containers": [container]}}}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "mnist", "namespace": "ml"},
        "spec": {
            "pytorchReplicaSpecs": {"Master": copy.deepcopy(replica), "Worker": replica},
            **spec,
        },
    }


def run(docs: list[Any], force: bool = False) -> tuple[int, list[Any], str]:
    out, err = io.StringIO(), io.StringIO()
    code = migrate.run(docs, force, out, err)
    return code, [d for d in yaml.safe_load_all(out.getvalue()) if d is not None], err.getvalue()


@pytest.mark.parametrize("path", KUBEFLOW, ids=lambda p: p.name)
def test_kubeflow_manifests_change_only_their_api_version(path: Path) -> None:
    docs = migrate.documents(path.read_text())
    code, written, report = run(docs)
    assert code == 0, report
    (job,) = written
    assert job == {**docs[0], "apiVersion": "mlkube.dev/v1alpha1"}
    assert report.splitlines() == [
        f"{docs[0]['metadata'].get('namespace', '-')}/{docs[0]['metadata']['name']}: "
        "apiVersion: kubeflow.org/v1 -> mlkube.dev/v1alpha1"
    ]
    PyTorchJob.model_validate(job)


def test_what_the_api_server_added_is_dropped_and_reported() -> None:
    """A job read from a cluster: server metadata, kubectl's annotation and a running
    status go; the report names each."""
    job = kubeflow_job()
    job["metadata"].update(
        uid="u1",
        resourceVersion="42",
        generation=3,
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "kubectl"}],
        annotations={migrate.LAST_APPLIED: "{}", "team": "vision"},
    )
    job["status"] = {"conditions": [{"type": "Running", "status": "True"}]}
    code, (out,), report = run([job])
    assert code == 0
    assert out["metadata"] == {
        "name": "mnist",
        "namespace": "ml",
        "annotations": {"team": "vision"},
    }
    assert "status" not in out
    for field in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
        assert f"ml/mnist: metadata.{field}: dropped" in report
    assert f"metadata.annotations.{migrate.LAST_APPLIED}: dropped" in report
    assert "ml/mnist: status: dropped (mlkube starts the job from its first pod)" in report


def test_a_finished_job_is_not_carried_unless_forced() -> None:
    job = kubeflow_job()
    job["status"] = {"conditions": [{"type": "Succeeded", "status": "True"}]}
    code, written, report = run([job])
    assert (code, written) == (1, [])
    assert "ml/mnist: could not carry: status: the job already finished on Kubeflow" in report
    assert "nothing written" in report
    code, written, _ = run([job], force=True)
    assert code == 0
    assert written[0]["apiVersion"] == "mlkube.dev/v1alpha1"


def test_fields_mlkube_lacks_are_named_and_left_out() -> None:
    job = kubeflow_job(runPolicy={"backoffLimit": 2, "futureField": True})
    container = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    container["imagePulPolicy"] = "Always"
    code, written, report = run([job])
    assert (code, written) == (1, [])
    assert "ml/mnist: could not carry: spec.runPolicy.futureField: mlkube has no such field" in (
        report
    )
    assert (
        "could not carry: spec.pytorchReplicaSpecs.Worker.template.spec.containers[0]"
        ".imagePulPolicy: mlkube has no such field"
    ) in report
    code, (out,), _ = run([job], force=True)
    assert code == 0
    assert out["spec"]["runPolicy"] == {"backoffLimit": 2}
    worker = out["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert worker == {"name": "pytorch", "image": "trainer:1"}


def test_kubeflows_lenient_spellings_are_made_explicit() -> None:
    job = kubeflow_job()
    specs = job["spec"]["pytorchReplicaSpecs"]
    specs["master"] = specs.pop("Master")
    del specs["master"]["replicas"]
    specs["worker"] = specs.pop("Worker")
    code, (out,), report = run([job])
    assert code == 0
    assert set(out["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    assert out["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    assert "spec.pytorchReplicaSpecs.master: renamed Master" in report
    assert "spec.pytorchReplicaSpecs.Master.replicas: set to 1" in report


def test_a_value_mlkube_refuses_leaves_the_job_out_even_when_forced() -> None:
    bad = kubeflow_job(nprocPerNode="4 gpus")
    good = kubeflow_job()
    good["metadata"]["name"] = "fine"
    code, written, report = run([bad, good], force=True)
    assert code == 0
    assert [d["metadata"]["name"] for d in written] == ["fine"]
    assert "ml/mnist: could not carry: spec.nprocPerNode: nprocPerNode must be" in report
    assert "job left out" in report


def test_other_documents_pass_and_lists_are_opened() -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "script"}}
    mine = {**kubeflow_job(), "apiVersion": "mlkube.dev/v1alpha1"}
    listed = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJobList",
        "items": [{k: v for k, v in kubeflow_job().items() if k not in ("apiVersion", "kind")}],
    }
    text = yaml.safe_dump_all([config, mine, listed])
    code, written, _ = run(migrate.documents(text))
    assert code == 0
    assert written[:2] == [config, mine]
    assert written[2]["apiVersion"] == "mlkube.dev/v1alpha1"
    assert written[2]["kind"] == "PyTorchJob"


def test_the_command_reads_stdin_and_files(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump(kubeflow_job())))
    assert migrate.main(["-f", "-", "-f", str(KUBEFLOW[0])]) == 0
    captured = capsys.readouterr()
    assert len([d for d in yaml.safe_load_all(captured.out) if d]) == 2
    assert "apiVersion: kubeflow.org/v1 -> mlkube.dev/v1alpha1" in captured.err
    with pytest.raises(SystemExit):
        migrate.main(["-f", "-", "-n", "ml"])  # -n goes with --from-cluster
    assert migrate.main(["-f", "/nonexistent.yaml"]) == 2
