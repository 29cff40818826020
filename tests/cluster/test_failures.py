"""What a person sees when a model pod cannot run: the kubelet's own reason
(ImagePullBackOff, CrashLoopBackOff), or the scheduler's (Unschedulable: a GPU on a node
without one), in the ModelService's conditions, not only "not ready". The pulls go to the tier's closed registry endpoint, never off the machine."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.kit import MS, apply_docs, condition, get_json, pods, wait_until

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
