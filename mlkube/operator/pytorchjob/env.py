"""The environment of a training pod, as Kubeflow training-operator v1 computes it.

Scripts written for Kubeflow read these variables (``torch.distributed.init_process_group``
with ``init_method="env://"`` reads MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK; torchrun
reads every ``--option`` from ``PET_OPTION``), so the names, values and conditions below are
Kubeflow's, including its quirks:

* MASTER_* / WORLD_SIZE / RANK / PET_NODE_RANK are set only when the job has a Master;
  Workers' ranks start at 1 (the Master is rank 0);
* WORLD_SIZE is the total number of replicas times ``nprocPerNode`` when that is a number,
  else times 1 (with ``auto``/``cpu``/``gpu`` torchrun computes the real size itself);
* PET_NNODES is the replica count, or ``min:max`` for an elastic job, whose rendezvous
  endpoint defaults to ``<job>-worker-0`` on the Worker's pytorchjob-port.

The variables are added to every container of the pod, after the user's own; a user
variable of the same name is dropped rather than duplicated, which is what the kubelet's
"last one wins" made of Kubeflow's duplicates anyway, minus the API server's warning.
"""

from __future__ import annotations

import hashlib
from typing import Any

from mlkube.api.pytorchjob import (
    DEFAULT_CONTAINER_NAME,
    DEFAULT_PORT,
    DEFAULT_PORT_NAME,
    MASTER,
    WORKER,
    PyTorchJobSpec,
)

#: A Service's name is a DNS-1035 label: at most 63 characters.
MAX_CHILD_NAME = 63


def replica_name(job_name: str, replica_type: str, index: int) -> str:
    """``<job>-master-0``, ``<job>-worker-3``: the pod's and its service's name.

    Job names may have up to 63 characters, as on Kubeflow; where ``<job>-<type>-<index>``
    would be longer than a Service name may be (Kubeflow then fails to create the Service),
    the job name is cut and a digest of the whole of it keeps names of different jobs apart:
    ``<first 41 or so characters>-<8 hex digits>-worker-3``. Peers learn the name from the
    environment (MASTER_ADDR, PET_RDZV_ENDPOINT), never by rebuilding it.
    """
    suffix = f"-{replica_type.lower()}-{index}".replace("/", "-")
    name = f"{job_name}{suffix}".replace("/", "-")
    if len(name) <= MAX_CHILD_NAME:
        return name
    digest = hashlib.sha256(job_name.encode()).hexdigest()[:8]
    keep = MAX_CHILD_NAME - len(suffix) - len(digest) - 1
    return f"{job_name[:keep].rstrip('-')}-{digest}{suffix}"


def replica_port(spec: PyTorchJobSpec, replica_type: str) -> int:
    """The ``pytorchjob-port`` of the ``pytorch`` container (23456 unless the user set it)."""
    template = spec.pytorch_replica_specs[replica_type].template
    for container in template.get("spec", {}).get("containers", []):
        if container.get("name") != DEFAULT_CONTAINER_NAME:
            continue
        for port in container.get("ports") or []:
            if port.get("name") == DEFAULT_PORT_NAME and port.get("containerPort") is not None:
                return int(port["containerPort"])
    return DEFAULT_PORT


def nproc_per_node_int(spec: PyTorchJobSpec) -> int:
    """``nprocPerNode`` as a number, 1 for ``auto``/``cpu``/``gpu`` (Kubeflow's rule)."""
    value = spec.effective_nproc_per_node()
    if value is not None and value.isdigit():
        return int(value)
    return 1


def _master_env(job_name: str, spec: PyTorchJobSpec) -> list[dict[str, str]]:
    port = str(replica_port(spec, MASTER))
    addr = replica_name(job_name, MASTER, 0)
    return [
        {"name": "MASTER_PORT", "value": port},
        {"name": "PET_MASTER_PORT", "value": port},
        {"name": "MASTER_ADDR", "value": addr},
        {"name": "PET_MASTER_ADDR", "value": addr},
    ]


def _elastic_env(job_name: str, spec: PyTorchJobSpec) -> list[dict[str, str]]:
    policy = spec.elastic_policy
    bounds = spec.elastic_bounds()
    assert policy is not None
    assert bounds is not None
    host = policy.rdzv_host if policy.rdzv_host is not None else replica_name(job_name, WORKER, 0)
    port = policy.rdzv_port if policy.rdzv_port is not None else replica_port(spec, WORKER)
    env = [
        {"name": "PET_RDZV_ENDPOINT", "value": f"{host}:{port}"},
        {"name": "PET_RDZV_BACKEND", "value": str(policy.rdzv_backend)},
        # torchrun refuses fewer than 1 node; Kubeflow's schema lets minReplicas be 0
        {"name": "PET_NNODES", "value": f"{max(bounds[0], 1)}:{bounds[1]}"},
    ]
    if policy.max_restarts is not None:
        env.append({"name": "PET_MAX_RESTARTS", "value": str(policy.max_restarts)})
    if policy.n_proc_per_node is not None:
        env.append({"name": "PET_NPROC_PER_NODE", "value": str(policy.n_proc_per_node)})
    if policy.rdzv_id is not None:
        env.append({"name": "PET_RDZV_ID", "value": policy.rdzv_id})
    if policy.rdzv_conf:
        conf = ",".join(f"{c.key}={c.value}" for c in policy.rdzv_conf)
        env.append({"name": "PET_RDZV_CONF", "value": conf})
    if policy.standalone:
        env.append({"name": "PET_STANDALONE", "value": ""})
    return env


def pod_env(
    job_name: str, spec: PyTorchJobSpec, replica_type: str, index: int
) -> list[dict[str, str]]:
    """The variables the operator adds to each container of one replica's pod, in order."""
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    total = spec.total_replicas()
    if MASTER in spec.pytorch_replica_specs:
        rank = index + 1 if replica_type == WORKER else index
        env += _master_env(job_name, spec)
        env += [
            {"name": "WORLD_SIZE", "value": str(total * nproc_per_node_int(spec))},
            {"name": "RANK", "value": str(rank)},
            {"name": "PET_NODE_RANK", "value": str(rank)},
        ]
    nproc = spec.effective_nproc_per_node()
    if nproc is not None:
        env.append({"name": "PET_NPROC_PER_NODE", "value": nproc})
    if spec.elastic_policy is not None:
        env += _elastic_env(job_name, spec)
    else:
        env.append({"name": "PET_NNODES", "value": str(total)})
    return env


def merge_env(
    user: list[dict[str, Any]] | None, ours: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """The user's variables (minus those we set) followed by ours."""
    names = {item["name"] for item in ours}
    kept = [dict(item) for item in (user or []) if item.get("name") not in names]
    return kept + [dict(item) for item in ours]
