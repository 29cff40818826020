"""What a person sees when a model pod cannot run: the kubelet's own reason
(ImagePullBackOff, CrashLoopBackOff), the scheduler's (Unschedulable: a GPU on a node
without one) or the model fetch's (ChecksumMismatch) in the ModelService's conditions, not
only "not ready". The pulls go to the tier's closed registry endpoint, never off the machine."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.cluster.kit import MS, apply_docs, condition, get_json, pods, wait_serving, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def modelservice(name: str, model: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "replicas": 1,
            "runtime": {"resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}},
            **spec,
        },
    }


def conditions_text(cluster: Any, namespace: str, name: str) -> str:
    ms = get_json(cluster, "-n", namespace, "get", "modelservice", name)
    return " | ".join(
        f"{c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}"
        for c in ms.get("status", {}).get("conditions", [])
    )


def wait_reason(cluster: Any, namespace: str, name: str, reasons: tuple[str, ...]) -> str:
    def seen() -> str | None:
        ms = get_json(cluster, "-n", namespace, "get", "modelservice", name)
        text = conditions_text(cluster, namespace, name)
        ready = condition(ms, "Ready")
        if ready.get("status") == "False" and any(r in text for r in reasons):
            return text
        return None

    text: str = wait_until(seen, timeout=180, interval=1, what=f"{name}: one of {reasons}")
    return text


def test_a_bad_image_tag_shows_image_pull_back_off(cluster: Any, namespace: str) -> None:
    ms = modelservice("badtag", {"name": "m", "version": "1"})
    ms["spec"]["runtime"]["image"] = "ghcr.io/mlkube/mlkube:does-not-exist"
    apply_docs(cluster, namespace, [ms])
    text = wait_reason(cluster, namespace, "badtag", ("ImagePullBackOff", "ErrImagePull"))
    assert "does-not-exist" in text or "ImagePull" in text, text


def test_a_crashing_model_shows_crash_loop_back_off(cluster: Any, namespace: str) -> None:
    ms = modelservice(
        "crashing",
        {"name": "m", "version": "1", "format": "custom", "className": "no_such_module:Model"},
    )
    apply_docs(cluster, namespace, [ms])
    text = wait_reason(cluster, namespace, "crashing", ("CrashLoopBackOff",))
    assert "crashing" in text or "CrashLoopBackOff" in text, text


def test_a_gpu_on_a_node_without_one_shows_unschedulable(cluster: Any, namespace: str) -> None:
    ms = modelservice("needs-gpu", {"name": "m", "version": "1"}, gpu={"count": 1})
    apply_docs(cluster, namespace, [ms])
    text = wait_reason(cluster, namespace, "needs-gpu", ("Unschedulable",))
    # The scheduler's own words, e.g. "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    assert "Insufficient nvidia.com/gpu" in text, text
    (pod,) = pods(cluster, namespace, f"{MS}=needs-gpu")
    assert pod["status"]["phase"] == "Pending"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_a_model_fetched_over_http_serves_and_a_wrong_checksum_says_why(
    cluster: Any, namespace: str
) -> None:
    """The fetch-model init container on a real kubelet: it downloads from a Service in the
    cluster into the emptyDir as the image's non-root user under a read-only root
    filesystem, and a checksum that differs reaches the ModelService's conditions and
    Events through the container's termination message."""
    data = "weights of v1\n"
    sha = hashlib.sha256(data.encode()).hexdigest()
    files = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model-files"},
        "data": {"model.bin": data},
    }
    server = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "models", "labels": {"app": "models"}},
        "spec": {
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": "http",
                    "image": cluster.refs["mlkube-ref"],
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-m", "http.server", "8000", "--directory", "/data"],
                    "ports": [{"containerPort": 8000}],
                    "volumeMounts": [{"name": "files", "mountPath": "/data"}],
                    "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}},
                }
            ],
            "volumes": [{"name": "files", "configMap": {"name": "model-files"}}],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "models"},
        "spec": {"selector": {"app": "models"}, "ports": [{"port": 80, "targetPort": 8000}]},
    }

    def fetched(name: str, sha256: str) -> dict[str, Any]:
        ms = modelservice(
            name,
            {
                "name": "flaky",
                "version": "v1",
                "format": "custom",
                "className": "flaky_model:FlakyModel",
                "storageUri": "http://models/model.bin",
                "storage": {"sha256": sha256},
            },
        )
        ms["spec"]["runtime"].update(
            image=cluster.refs["flaky-ref"], imagePullPolicy="IfNotPresent", workers=1
        )
        return ms

    apply_docs(
        cluster,
        namespace,
        [files, server, service, fetched("fetched", sha), fetched("tampered", "0" * 64)],
    )
    wait_serving(cluster, namespace, "fetched", 1)
    text = wait_reason(cluster, namespace, "tampered", ("ChecksumMismatch",))
    assert f"sha256 of http://models/model.bin is {sha}, expected {'0' * 64}" in text, text
    assert "init container fetch-model" in text, text

    def warning() -> list[dict[str, Any]]:
        events = get_json(
            cluster, "-n", namespace, "get", "events", "--field-selector",
            "reason=ChecksumMismatch,involvedObject.kind=ModelService",
        )  # fmt: skip
        items: list[dict[str, Any]] = events.get("items") or []
        return items

    (event, *_) = wait_until(warning, timeout=60, interval=1, what="ChecksumMismatch Event")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["name"] == "tampered"
