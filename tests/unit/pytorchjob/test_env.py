"""The environment of training pods, exactly as Kubeflow training-operator v1 sets it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from ptj_builders import make_job

from mlkube.operator.pytorchjob.env import merge_env, nproc_per_node_int, pod_env, replica_name

MASTER_ENV = [
    ("MASTER_PORT", "23456"),
    ("PET_MASTER_PORT", "23456"),
    ("MASTER_ADDR", "mnist-master-0"),
    ("PET_MASTER_ADDR", "mnist-master-0"),
]


def _env(job_kwargs: dict[str, Any], rtype: str, index: int) -> list[tuple[str, str]]:
    job = make_job(**job_kwargs)
    return [(e["name"], e["value"]) for e in pod_env(job.name, job.spec, rtype, index)]


CASES: list[tuple[str, dict[str, Any], str, int, list[tuple[str, str]]]] = [
    (
        "master rank 0",
        {},
        "Master",
        0,
        [
            ("PYTHONUNBUFFERED", "1"),
            *MASTER_ENV,
            ("WORLD_SIZE", "3"),
            ("RANK", "0"),
            ("PET_NODE_RANK", "0"),
            ("PET_NPROC_PER_NODE", "auto"),
            ("PET_NNODES", "3"),
        ],
    ),
    (
        "worker ranks follow the master",
        {},
        "Worker",
        1,
        [
            ("PYTHONUNBUFFERED", "1"),
            *MASTER_ENV,
            ("WORLD_SIZE", "3"),
            ("RANK", "2"),
            ("PET_NODE_RANK", "2"),
            ("PET_NPROC_PER_NODE", "auto"),
            ("PET_NNODES", "3"),
        ],
    ),
    (
        "numeric nprocPerNode multiplies WORLD_SIZE",
        {"nprocPerNode": "4"},
        "Worker",
        0,
        [
            ("PYTHONUNBUFFERED", "1"),
            *MASTER_ENV,
            ("WORLD_SIZE", "12"),
            ("RANK", "1"),
            ("PET_NODE_RANK", "1"),
            ("PET_NPROC_PER_NODE", "4"),
            ("PET_NNODES", "3"),
        ],
    ),
    (
        "gpu nprocPerNode counts one per node",
        {"nprocPerNode": "gpu"},
        "Master",
        0,
        [
            ("PYTHONUNBUFFERED", "1"),
            *MASTER_ENV,
            ("WORLD_SIZE", "3"),
            ("RANK", "0"),
            ("PET_NODE_RANK", "0"),
            ("PET_NPROC_PER_NODE", "gpu"),
            ("PET_NNODES", "3"),
        ],
    ),
    (
        "master alone (replicas 0 workers)",
        {"workers": 0},
        "Master",
        0,
        [
            ("PYTHONUNBUFFERED", "1"),
            *MASTER_ENV,
            ("WORLD_SIZE", "1"),
            ("RANK", "0"),
            ("PET_NODE_RANK", "0"),
            ("PET_NPROC_PER_NODE", "auto"),
            ("PET_NNODES", "1"),
        ],
    ),
    (
        "no master: no MASTER_*/RANK (Kubeflow leaves them to torchrun)",
        {"master": None, "workers": 2},
        "Worker",
        1,
        [("PYTHONUNBUFFERED", "1"), ("PET_NPROC_PER_NODE", "auto"), ("PET_NNODES", "2")],
    ),
    (
        "elastic, every option",
        {
            "master": None,
            "workers": 2,
            "elasticPolicy": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "maxRestarts": 5,
                "rdzvId": "run-7",
                "rdzvConf": [{"key": "timeout", "value": "900"}, {"key": "x", "value": "y"}],
                "standalone": True,
            },
        },
        "Worker",
        0,
        [
            ("PYTHONUNBUFFERED", "1"),
            ("PET_NPROC_PER_NODE", "auto"),
            ("PET_RDZV_ENDPOINT", "mnist-worker-0:23456"),
            ("PET_RDZV_BACKEND", "c10d"),
            ("PET_NNODES", "1:3"),
            ("PET_MAX_RESTARTS", "5"),
            ("PET_RDZV_ID", "run-7"),
            ("PET_RDZV_CONF", "timeout=900,x=y"),
            ("PET_STANDALONE", ""),
        ],
    ),
    (
        "elastic defaults: nodes from Worker replicas, explicit endpoint",
        {
            "master": None,
            "workers": 4,
            "elasticPolicy": {"rdzvHost": "etcd.infra", "rdzvPort": 2379, "rdzvBackend": "etcd"},
        },
        "Worker",
        3,
        [
            ("PYTHONUNBUFFERED", "1"),
            ("PET_NPROC_PER_NODE", "auto"),
            ("PET_RDZV_ENDPOINT", "etcd.infra:2379"),
            ("PET_RDZV_BACKEND", "etcd"),
            ("PET_NNODES", "4:4"),
        ],
    ),
    (
        "elastic with the deprecated elasticPolicy.nProcPerNode",
        {"master": None, "workers": 2, "elasticPolicy": {"nProcPerNode": 2}},
        "Worker",
        0,
        [
            ("PYTHONUNBUFFERED", "1"),
            ("PET_RDZV_ENDPOINT", "mnist-worker-0:23456"),
            ("PET_RDZV_BACKEND", "c10d"),
            ("PET_NNODES", "2:2"),
            ("PET_NPROC_PER_NODE", "2"),
        ],
    ),
    (
        "elastic with a master keeps the master variables",
        {"workers": 2, "elasticPolicy": {"maxReplicas": 4}},
        "Worker",
        0,
        [
            ("PYTHONUNBUFFERED", "1"),
            *MASTER_ENV,
            ("WORLD_SIZE", "3"),
            ("RANK", "1"),
            ("PET_NODE_RANK", "1"),
            ("PET_NPROC_PER_NODE", "auto"),
            ("PET_RDZV_ENDPOINT", "mnist-worker-0:23456"),
            ("PET_RDZV_BACKEND", "c10d"),
            ("PET_NNODES", "4:4"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("what", "job", "rtype", "index", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_pod_env_matches_kubeflow(
    what: str, job: dict[str, Any], rtype: str, index: int, expected: list[tuple[str, str]]
) -> None:
    assert _env(job, rtype, index) == expected


def test_the_master_port_comes_from_the_pytorch_container() -> None:
    job = make_job()
    master = job.spec.pytorch_replica_specs["Master"].template["spec"]["containers"][0]
    master["ports"] = [{"name": "pytorchjob-port", "containerPort": 30000}]
    env = dict((e["name"], e["value"]) for e in pod_env(job.name, job.spec, "Worker", 0))
    assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "30000"


@pytest.mark.parametrize(
    ("value", "number"), [(None, 1), ("auto", 1), ("cpu", 1), ("xpu", 1), ("8", 8)]
)
def test_nproc_per_node_as_a_number(value: str | None, number: int) -> None:
    kwargs = {} if value is None else {"nprocPerNode": value}
    assert nproc_per_node_int(make_job(**kwargs).spec) == number


def test_user_variables_are_kept_and_ours_win_without_duplicates() -> None:
    user = [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "WORLD_SIZE", "value": "99"}]
    ours = [{"name": "WORLD_SIZE", "value": "3"}, {"name": "RANK", "value": "0"}]
    assert merge_env(user, ours) == [
        {"name": "NCCL_DEBUG", "value": "INFO"},
        {"name": "WORLD_SIZE", "value": "3"},
        {"name": "RANK", "value": "0"},
    ]


def test_elastic_min_replicas_zero_reaches_torchrun_as_one() -> None:
    """Kubeflow's schema takes minReplicas 0; torchrun asserts 0 < min nodes."""
    job = make_job(master=None, workers=2, elasticPolicy={"minReplicas": 0, "maxReplicas": 3})
    env = dict((e["name"], e["value"]) for e in pod_env(job.name, job.spec, "Worker", 0))
    assert env["PET_NNODES"] == "1:3"


@pytest.mark.parametrize("length", [1, 50, 54, 55, 63])
def test_children_of_a_long_named_job_still_have_service_names(length: int) -> None:
    """Job names may have 63 characters (Kubeflow's limit); pod and Service names stay
    Kubeflow's ``<job>-<type>-<index>`` while that fits a DNS-1035 label, and are cut with a
    digest of the whole job name beyond, so two long names never share children."""
    job = "j" + "a" * (length - 1)
    names = {replica_name(job, t, i) for t in ("Master", "Worker") for i in (0, 9, 10, 99999)}
    assert len(names) == 8
    for name in names:
        assert len(name) <= 63
        assert re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", name)
    if len(f"{job}-master-0") <= 63:
        assert replica_name(job, "Master", 0) == f"{job}-master-0"
    else:
        assert replica_name(job, "Master", 0).endswith("-master-0")
        assert replica_name(job, "Master", 0) != replica_name(job[:-1] + "b", "Master", 0)


def test_a_long_named_jobs_peers_are_told_the_shortened_names() -> None:
    name = "x" * 60
    job = make_job(name=name, master=None, workers=2, elasticPolicy={"maxReplicas": 2})
    env = dict((e["name"], e["value"]) for e in pod_env(job.name, job.spec, "Worker", 1))
    assert env["PET_RDZV_ENDPOINT"] == f"{replica_name(name, 'Worker', 0)}:23456"
    job = make_job(name=name)
    env = dict((e["name"], e["value"]) for e in pod_env(job.name, job.spec, "Worker", 1))
    assert env["MASTER_ADDR"] == replica_name(name, "Master", 0)
