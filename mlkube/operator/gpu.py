"""GPU signals: PromQL over NVIDIA dcgm-exporter's series for the pods of a ModelService.

dcgm-exporter exports one series per GPU (labels ``gpu``, ``UUID``, ``device``,
``modelName``, ``Hostname``). Run in Kubernetes with its pod mapping on
(``DCGM_EXPORTER_KUBERNETES=true`` and the kubelet's pod-resources socket mounted), it adds
the pod the GPU is allocated to as ``namespace``, ``pod`` and ``container`` (the names in
``internal/pkg/transformation/const.go`` of github.com/NVIDIA/dcgm-exporter).

Prometheus may rename them: a scrape through a ServiceMonitor or PodMonitor attaches the
exporter's *own* ``namespace`` and ``pod`` as target labels, and with ``honor_labels: false``
(the default) the exported ones become ``exported_namespace`` and ``exported_pod``. Which
of the two a cluster has is a property of its Prometheus, so the mapping is operator
configuration (``MLKUBE_GPU_METRIC_LABELS``), by default both: each mapping selects the
series that name one of the ModelService's pods under those labels, the per-pod values
are keyed by one label of ours (``mlkube_pod``), and ``or`` keeps one value per pod even
if a series could be read both ways.

The pods are the operator's own view (its watch-fed cache) of the ModelService's pods and
their revision label, so a revision's GPUs are exactly its pods' GPUs: a same-named pod of
another namespace, or another ModelService's pod, is never counted.

Everything here is pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlkube.api.rollout import format_duration

#: dcgm-exporter's metric names (DCGM field identifiers) and their units.
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # percent of time the GPU was busy, 0-100
FB_USED = "DCGM_FI_DEV_FB_USED"  # framebuffer memory used, MiB
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"  # power draw, W

POD_KEY = "mlkube_pod"
"""The label the per-pod values are keyed by, whichever mapping found them."""

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class GPUSignal:
    """One named signal: the DCGM metric, how a pod's GPUs add up, and its unit."""

    name: str
    metric: str
    per_pod: str
    """``avg`` (utilisation: a pod with two GPUs at 80% is at 80%) or ``sum`` (MiB, W)."""
    unit: str


SIGNALS: dict[str, GPUSignal] = {
    s.name: s
    for s in (
        GPUSignal("gpuUtilization", GPU_UTIL, "avg", "%"),
        GPUSignal("gpuMemoryUsed", FB_USED, "sum", "MiB"),
        GPUSignal("gpuPowerUsage", POWER_USAGE, "sum", "W"),
    )
}


@dataclass(frozen=True)
class LabelMapping:
    """The labels under which a series names the namespace and pod its GPU serves."""

    namespace: str
    pod: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.pod}"


DEFAULT_LABEL_MAPPINGS = (
    LabelMapping("namespace", "pod"),
    LabelMapping("exported_namespace", "exported_pod"),
)


def parse_label_mappings(text: str) -> tuple[LabelMapping, ...]:
    """``namespace:pod,exported_namespace:exported_pod`` -> mappings; raises ValueError."""
    mappings: list[LabelMapping] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        names = [n.strip() for n in item.split(":")]
        if len(names) != 2 or not all(_LABEL_NAME.match(n) for n in names):
            raise ValueError(f"{item!r} is not NAMESPACE_LABEL:POD_LABEL (Prometheus label names)")
        mappings.append(LabelMapping(names[0], names[1]))
    if not mappings:
        raise ValueError("expected at least one NAMESPACE_LABEL:POD_LABEL pair")
    if len(set(mappings)) != len(mappings):
        raise ValueError("a label mapping is listed twice")
    return tuple(mappings)


def pods_by_revision(
    pods: Iterable[Mapping[str, Any]], revision_label: str
) -> dict[str, tuple[str, ...]]:
    """Pod names per revision label value, sorted (pods without the label are left out)."""
    out: dict[str, list[str]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        revision = (meta.get("labels") or {}).get(revision_label)
        if revision and meta.get("name"):
            out.setdefault(revision, []).append(str(meta["name"]))
    return {revision: tuple(sorted(names)) for revision, names in out.items()}


def _string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _regex_escape(text: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\\" else c for c in text)


def per_pod_query(
    signal: GPUSignal,
    namespace: str,
    pods: Sequence[str],
    window_seconds: int,
    mappings: Sequence[LabelMapping] = DEFAULT_LABEL_MAPPINGS,
) -> str:
    """One value per pod (label ``mlkube_pod``): each GPU's series averaged over the window,
    then the pod's GPUs averaged or summed. ``pods`` must not be empty."""
    if not pods:
        raise ValueError("no pods to measure")
    if not mappings:
        raise ValueError("no label mappings")
    names = sorted(set(pods))
    window = format_duration(window_seconds)
    alternatives = "|".join(_regex_escape(p) for p in names)
    parts = []
    for mapping in mappings:
        selector = (
            f"{mapping.namespace}={_string(namespace)},{mapping.pod}=~{_string(alternatives)}"
        )
        series = f"avg_over_time({signal.metric}{{{selector}}}[{window}])"
        keyed = f'label_replace({series}, "{POD_KEY}", "$1", "{mapping.pod}", "(.+)")'
        parts.append(f"{signal.per_pod} by ({POD_KEY}) ({keyed})")
    return " or ".join(parts)


def service_query(
    signal: GPUSignal,
    namespace: str,
    pods: Sequence[str],
    window_seconds: int,
    mappings: Sequence[LabelMapping] = DEFAULT_LABEL_MAPPINGS,
) -> str:
    """The service's total (autoscaler): the per-pod values summed over its pods."""
    return f"sum({per_pod_query(signal, namespace, pods, window_seconds, mappings)})"


def revision_query(
    signal: GPUSignal,
    namespace: str,
    pods: Sequence[str],
    window_seconds: int,
    mappings: Sequence[LabelMapping] = DEFAULT_LABEL_MAPPINGS,
) -> str:
    """A revision's typical pod (canary analysis): the per-pod values averaged, so a canary
    of one pod compares with a stable track of ten."""
    return f"avg({per_pod_query(signal, namespace, pods, window_seconds, mappings)})"
