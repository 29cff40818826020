"""The ``PyTorchJob`` custom resource: distributed PyTorch training, Kubeflow-compatible.

A Kubeflow ``kubeflow.org/v1`` PyTorchJob manifest runs unchanged on mlkube once its
``apiVersion`` reads ``mlkube.dev/v1alpha1``: the field names, enum values and defaults
below are Kubeflow training-operator v1's (``replicas`` 1, ``restartPolicy`` OnFailure,
``cleanPodPolicy`` None, ``nprocPerNode`` auto, elastic min/max copied from each other or
from the Worker replicas, the ``pytorchjob-port`` 23456 on the ``pytorch`` container).

mlkube adds two fields Kubeflow lacks, both under ``runPolicy`` so a Kubeflow manifest never
sets them by accident: ``restartPolicy: RestartAll`` (restart every pod together when one
fails: a lone restarted rank cannot rejoin an NCCL communicator, kubeflow/trainer #2269,
#2000) and ``terminatingTimeoutSeconds`` (a pod stuck Terminating on a lost node is treated
as failed after this long, #2072). The status also carries ``restartCount`` and
``observedGeneration`` besides Kubeflow's fields.

What Kubeflow's validating webhook checks is expressed as CEL rules here, so the API server
refuses a bad job at ``kubectl apply`` with the same messages; the pydantic validators check
the same things for the operator, which turns a job that slipped past an older CRD into a
``Failed`` condition instead of a crash loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from mlkube.api.podtemplate import pod_template_schema
from mlkube.api.schema import (
    DNS1035_LABEL,
    CustomResource,
    KubeModel,
    PrinterColumn,
    Quantity,
    Scale,
    kube,
    register,
    rule,
)
from mlkube.api.schema import GROUP as GROUP
from mlkube.api.schema import VERSION as VERSION

KIND = "PyTorchJob"
PLURAL = "pytorchjobs"

MASTER = "Master"
WORKER = "Worker"
REPLICA_TYPES = (MASTER, WORKER)

DEFAULT_CONTAINER_NAME = "pytorch"
DEFAULT_PORT_NAME = "pytorchjob-port"
DEFAULT_PORT = 23456
DEFAULT_NPROC_PER_NODE = "auto"
DEFAULT_TERMINATING_TIMEOUT_SECONDS = 120

# ``runPolicy.managedBy``: Kubeflow's two values. Kubeflow's own one names "the cluster's
# built-in PyTorchJob controller", which on an mlkube cluster is mlkube's (so a Kubeflow
# manifest that sets it still moves over by its apiVersion alone); MultiKueue's hands the job
# to Kueue, which runs it on another cluster and mirrors its status here.
MANAGED_BY_OPERATOR = "kubeflow.org/training-operator"
MANAGED_BY_MULTIKUEUE = "kueue.x-k8s.io/multikueue"
MANAGED_BY_VALUES = (MANAGED_BY_OPERATOR, MANAGED_BY_MULTIKUEUE)

# A DNS-1035 label, as Kubeflow's webhook requires. Pods and Services are named
# ``<job>-<type>-<index>`` while that fits 63 characters; a longer one is shortened with a
# digest of the job name (mlkube.operator.pytorchjob.env.replica_name).
MAX_NAME_LENGTH = 63
NAME_PATTERN = DNS1035_LABEL
# What torchrun's --nproc-per-node takes: a count, or a device kind that torchrun resolves
# itself (auto, cpu, gpu, xpu, or a PrivateUse1 backend's name such as npu). Kubeflow passes
# any string on; this refuses only what cannot be either (0, "4 gpus", "GPU").
NPROC_PATTERN = r"^([1-9][0-9]*|[a-z][a-z0-9]*)$"
_NAME_RE = re.compile(NAME_PATTERN)
_NPROC_RE = re.compile(NPROC_PATTERN)


class RestartPolicy(StrEnum):
    """When a replica's pod is restarted (Kubeflow's ``ReplicaSpec.restartPolicy``)."""

    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"
    EXIT_CODE = "ExitCode"
    """Restart on exit codes >= 128 (signals, OOM kills: retryable); fail the job on 1-127."""


class CleanPodPolicy(StrEnum):
    """Which pods are deleted once the job has finished."""

    ALL = "All"
    RUNNING = "Running"
    NONE = "None"


class JobRestartPolicy(StrEnum):
    """mlkube's ``runPolicy.restartPolicy``: restart one pod or the whole job."""

    PER_POD = "PerPod"
    RESTART_ALL = "RestartAll"


class RdzvBackend(StrEnum):
    C10D = "c10d"
    ETCD = "etcd"
    ETCD_V2 = "etcd-v2"


class ConditionType(StrEnum):
    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    SUSPENDED = "Suspended"
    FAILED = "Failed"
    GANG_SCHEDULING = "GangScheduling"
    """mlkube: False while the gang scheduler the job asks for is not installed."""


# ----------------------------------------------------------------------------- pod template

# The generated core/v1 PodTemplateSpec (mlkube/api/podtemplate.py), plus what the operator
# relies on: a ``pytorch`` container, an image in every container, few enough containers for
# the CEL rule's cost bound.
_TEMPLATE_CHECKS: dict[str, Any] = {
    "description": "The pod template of this replica type (a core/v1 PodTemplateSpec).",
    "required": ["spec"],
    "properties": {
        "spec": {
            "properties": {
                "containers": {
                    "minItems": 1,
                    "maxItems": 64,
                    "items": {
                        "required": ["name", "image"],
                        "properties": {
                            "name": {"minLength": 1, "maxLength": 63},
                            "image": {"minLength": 1},
                        },
                    },
                    "x-kubernetes-validations": [
                        rule(
                            f"self.exists(c, has(c.name) && c.name == '{DEFAULT_CONTAINER_NAME}')",
                            f"the pod template needs a container named "
                            f"'{DEFAULT_CONTAINER_NAME}' (the one that runs the training)",
                        )
                    ],
                }
            },
        },
    },
}
PodTemplate = Annotated[dict[str, Any], pod_template_schema(_TEMPLATE_CHECKS)]


def validate_template(template: dict[str, Any], replica_type: str) -> None:
    """The checks Kubeflow's webhook makes on a replica's pod template (messages alike)."""
    spec = template.get("spec")
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not isinstance(containers, list) or not containers:
        raise ValueError(f"containers definition expected in {replica_type}")
    named = False
    for container in containers:
        if not isinstance(container, dict) or not container.get("image"):
            raise ValueError(f"image is undefined in a container of {replica_type}")
        named = named or container.get("name") == DEFAULT_CONTAINER_NAME
    if not named:
        raise ValueError(f"there is no container named {DEFAULT_CONTAINER_NAME} in {replica_type}")


class ReplicaSpec(KubeModel):
    """One replica type (Master or Worker): how many pods, what they run, when to restart."""

    replicas: int = Field(default=1, ge=0, le=100_000)
    """Number of pods of this type (default 1; Master: exactly 1)."""
    template: PodTemplate
    """The pod template; must have a container named ``pytorch`` with an image."""
    restart_policy: RestartPolicy = RestartPolicy.ON_FAILURE
    """Always, OnFailure (default), Never, or ExitCode (retry on exit codes >= 128 only)."""


# ------------------------------------------------------------------------------ run policy


class SchedulingPolicy(KubeModel):
    """Gang scheduling (Kubeflow's): ``minAvailable``, ``queue``, ``minResources`` or
    ``scheduleTimeoutSeconds`` make a scheduler-plugins or Volcano PodGroup, whichever the
    cluster serves; ``priorityClass`` becomes the pods' ``priorityClassName`` when the
    template sets none."""

    min_available: int | None = Field(default=None, ge=0)
    queue: str | None = None
    min_resources: dict[str, Quantity] | None = None
    priority_class: str | None = None
    schedule_timeout_seconds: int | None = Field(default=None, ge=0)


class RunPolicy(KubeModel):
    """Lifecycle rules shared by all replica types (Kubeflow's RunPolicy plus two mlkube
    fields: ``restartPolicy`` and ``terminatingTimeoutSeconds``)."""

    clean_pod_policy: CleanPodPolicy = CleanPodPolicy.NONE
    """Pods to delete when the job finishes: All, Running (Running and Pending pods) or
    None (default: every pod is kept, running ones too, as in Kubeflow)."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Delete the whole job this long after it finished."""
    active_deadline_seconds: int | None = Field(default=None, ge=0)
    """Fail the job when it has been running (since start or resume) this long (0: at once,
    as Kubeflow does)."""
    backoff_limit: int | None = Field(default=None, ge=0)
    """The job fails when its restarts (pod recreations plus in-place container restarts)
    reach this number: at the N-th failure, as in Kubeflow (0 and 1: the first)."""
    suspend: bool = False
    """True deletes the pods and holds the job; false (default) again resumes it from
    scratch."""
    scheduling_policy: SchedulingPolicy | None = None
    restart_policy: JobRestartPolicy = JobRestartPolicy.PER_POD
    """mlkube: PerPod (default: Kubeflow's behaviour) or RestartAll, which restarts every pod
    of the job together when one fails, so that all ranks rendezvous again."""
    terminating_timeout_seconds: int = Field(
        default=DEFAULT_TERMINATING_TIMEOUT_SECONDS, ge=0, le=86_400
    )
    """mlkube: a pod still Terminating this long past its deletion deadline (its node is
    gone) is force-deleted and counted as failed, so the job can go on (default 120)."""
    managed_by: str | None = Field(
        default=None, json_schema_extra=kube(enum=list(MANAGED_BY_VALUES))
    )
    """The controller that reconciles this job: unset or ``kubeflow.org/training-operator``
    (mlkube's), or ``kueue.x-k8s.io/multikueue`` (Kueue runs it on a worker cluster; mlkube
    then creates nothing for it here). Immutable."""

    @field_validator("managed_by")
    @classmethod
    def _managed_by(cls, value: str | None) -> str | None:
        if value is not None and value not in MANAGED_BY_VALUES:
            raise ValueError(f"runPolicy.managedBy must be one of {', '.join(MANAGED_BY_VALUES)}")
        return value


# -------------------------------------------------------------------------- elastic policy


class RdzvConf(KubeModel):
    """One ``key=value`` of torchrun's ``--rdzv-conf``."""

    key: str = Field(min_length=1)
    value: str = ""


class ElasticPolicy(KubeModel):
    """torchrun elastic training: a node range and a rendezvous (PET_* environment)."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "!has(self.minReplicas) || !has(self.maxReplicas) "
                    "|| self.minReplicas <= self.maxReplicas",
                    "elasticPolicy.minReplicas must not exceed elasticPolicy.maxReplicas",
                )
            ]
        )
    )

    min_replicas: int | None = Field(default=None, ge=0)
    """Fewest nodes to train with (default: maxReplicas, else the Worker replicas). torchrun
    needs at least one, so 0 (which Kubeflow accepts) reaches it as 1."""
    max_replicas: int | None = Field(default=None, ge=1)
    """Most nodes to train with (default: minReplicas, else the Worker replicas)."""
    rdzv_backend: RdzvBackend = RdzvBackend.C10D
    """torchrun's rendezvous backend: c10d (default), etcd or etcd-v2."""
    rdzv_port: int | None = Field(default=None, ge=1, le=65535)
    """Rendezvous port (default: the Worker's pytorchjob-port)."""
    rdzv_host: str | None = None
    """Rendezvous host (default: ``<job>-worker-0``)."""
    rdzv_id: str | None = None
    rdzv_conf: list[RdzvConf] | None = Field(default=None, max_length=64)
    standalone: bool | None = None
    n_proc_per_node: int | None = Field(default=None, ge=1)
    """Deprecated (Kubeflow): use ``spec.nprocPerNode``."""
    max_restarts: int | None = Field(default=None, ge=0)
    metrics: list[dict[str, Any]] | None = None
    """autoscaling/v2 metrics: a HorizontalPodAutoscaler scales the Worker replicas between
    minReplicas and maxReplicas on them."""

    @model_validator(mode="after")
    def _bounds(self) -> ElasticPolicy:
        if (
            self.min_replicas is not None
            and self.max_replicas is not None
            and self.min_replicas > self.max_replicas
        ):
            raise ValueError("elasticPolicy.minReplicas must not exceed elasticPolicy.maxReplicas")
        return self


# ---------------------------------------------------------------------------------- spec

# Every rule guards each key it reads (`in` for the replica types, `has()` for fields):
# CEL fails on a missing key, and the API server then prints "no such key: Worker
# evaluating rule: ..." instead of (or next to) the message below. A Worker's missing
# `replicas` counts as 1 (the default, applied by the operator); a Master must state it, as
# Kubeflow's webhook requires.
_REPLICA_SPECS_RULES = [
    rule(
        "self.all(k, k == 'Master' || k == 'Worker')",
        "pytorchReplicaSpecs accepts only the replica types Master and Worker",
    ),
    rule(
        "'Master' in self || 'Worker' in self",
        "pytorchReplicaSpecs needs a Master (exactly 1 replica) or a Worker (at least 1 replica)",
    ),
    rule(
        "!('Master' in self) || (has(self.Master.replicas) && self.Master.replicas == 1)",
        "there must be exactly 1 Master replica (set Master.replicas: 1, as Kubeflow requires)",
    ),
    rule(
        "'Master' in self || !('Worker' in self) || !has(self.Worker.replicas) "
        "|| self.Worker.replicas >= 1",
        "a job without a Master needs at least 1 Worker replica",
    ),
]


# Presence and value of runPolicy.managedBy, old and new: set, changed and unset are all
# refused (a transition rule, so it sits on spec, which exists in both; runPolicy may not).
_HAS_MANAGED_BY = "(has({0}.runPolicy) && has({0}.runPolicy.managedBy))"
MANAGED_BY_IMMUTABLE = rule(
    f"{_HAS_MANAGED_BY.format('self')} == {_HAS_MANAGED_BY.format('oldSelf')} && "
    f"(!{_HAS_MANAGED_BY.format('self')} || self.runPolicy.managedBy == oldSelf.runPolicy.managedBy)",
    "spec.runPolicy.managedBy is immutable: it cannot be set, changed or removed after creation",
    field_path=".runPolicy.managedBy",
)


class PyTorchJobSpec(KubeModel):
    """Distributed PyTorch training: a Master and/or Workers, each a pod per replica, wired
    together with the environment torch.distributed and torchrun read."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                MANAGED_BY_IMMUTABLE,
                rule(
                    "!has(self.elasticPolicy) || (has(self.pytorchReplicaSpecs) "
                    "&& 'Worker' in self.pytorchReplicaSpecs)",
                    "elasticPolicy needs a Worker replica spec",
                ),
                rule(
                    "!(has(self.nprocPerNode) && has(self.elasticPolicy) "
                    "&& has(self.elasticPolicy.nProcPerNode))",
                    ".spec.elasticPolicy.nProcPerNode is deprecated, use .spec.nprocPerNode "
                    "instead (not both)",
                ),
            ]
        )
    )

    pytorch_replica_specs: dict[str, ReplicaSpec] = Field(
        alias="pytorchReplicaSpecs",
        json_schema_extra=kube(maxProperties=2, minProperties=1, validations=_REPLICA_SPECS_RULES),
    )
    """The replica types: ``Master`` (exactly 1) and ``Worker``."""
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    elastic_policy: ElasticPolicy | None = None
    nproc_per_node: str | None = Field(
        default=None, alias="nprocPerNode", json_schema_extra=kube(pattern=NPROC_PATTERN)
    )
    """Processes per node for torchrun: auto (default), cpu, gpu, xpu, another device kind
    torchrun knows, or a number."""

    @field_validator("pytorch_replica_specs", mode="before")
    @classmethod
    def _camel_case_types(cls, value: Any) -> Any:
        """Accept ``master``/``worker`` in any case, as Kubeflow's defaulting does."""
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for key, spec in value.items():
            canonical = next((t for t in REPLICA_TYPES if t.lower() == str(key).lower()), None)
            if canonical is None:
                raise ValueError(f"replica type {key!r} is not one of {', '.join(REPLICA_TYPES)}")
            out[canonical] = spec
        return out

    @field_validator("nproc_per_node")
    @classmethod
    def _nproc(cls, value: str | None) -> str | None:
        if value is not None and not _NPROC_RE.match(value):
            raise ValueError(
                "nprocPerNode must be a positive number or a device kind in lower case "
                "(auto, cpu, gpu, xpu...)"
            )
        return value

    @model_validator(mode="after")
    def _kubeflow_webhook_checks(self) -> PyTorchJobSpec:
        specs = self.pytorch_replica_specs
        if not specs:
            raise ValueError(
                "pytorchReplicaSpecs needs a Master (exactly 1 replica) or a Worker "
                "(at least 1 replica)"
            )
        for rtype, spec in specs.items():
            validate_template(spec.template, rtype)
        master = specs.get(MASTER)
        if master is not None and (
            "replicas" not in master.model_fields_set or master.replicas != 1
        ):
            raise ValueError(
                "there must be exactly 1 Master replica (set Master.replicas: 1, as Kubeflow "
                "requires)"
            )
        if MASTER not in specs and specs[WORKER].replicas < 1:
            raise ValueError("a job without a Master needs at least 1 Worker replica")
        if self.elastic_policy is not None and WORKER not in specs:
            raise ValueError("elasticPolicy needs a Worker replica spec")
        if (
            self.nproc_per_node is not None
            and self.elastic_policy is not None
            and self.elastic_policy.n_proc_per_node is not None
        ):
            raise ValueError(
                ".spec.elasticPolicy.nProcPerNode is deprecated, use .spec.nprocPerNode "
                "instead (not both)"
            )
        return self

    # Kubeflow's defaulting that cannot live in the schema (it depends on other fields).

    def effective_nproc_per_node(self) -> str | None:
        """``nprocPerNode`` after defaulting: ``auto`` unless the deprecated elastic field
        is used instead."""
        if self.nproc_per_node is not None:
            return self.nproc_per_node
        if self.elastic_policy is not None and self.elastic_policy.n_proc_per_node is not None:
            return None
        return DEFAULT_NPROC_PER_NODE

    def elastic_bounds(self) -> tuple[int, int] | None:
        """(min, max) nodes of an elastic job after Kubeflow's defaulting, else None."""
        policy = self.elastic_policy
        if policy is None:
            return None
        lo, hi = policy.min_replicas, policy.max_replicas
        if lo is None and hi is None:
            workers = self.pytorch_replica_specs[WORKER].replicas
            return workers, workers
        if lo is None:
            lo = hi
        if hi is None:
            hi = lo
        assert lo is not None
        assert hi is not None
        return lo, hi

    def total_replicas(self) -> int:
        return sum(spec.replicas for spec in self.pytorch_replica_specs.values())


# -------------------------------------------------------------------------------- status


class JobCondition(KubeModel):
    """One condition, Kubeflow's shape (the latest one is last: ``kubectl get`` shows it)."""

    type: ConditionType
    status: str = Field(json_schema_extra=kube(enum=["True", "False", "Unknown"]))
    reason: str | None = None
    message: str | None = None
    last_update_time: datetime | None = None
    last_transition_time: datetime | None = None


class LabelSelector(KubeModel):
    match_labels: dict[str, str] | None = None


class ReplicaStatus(KubeModel):
    """Pods of one replica type by state, and the selector that finds them."""

    active: int = 0
    succeeded: int = 0
    failed: int = 0
    label_selector: LabelSelector | None = None
    selector: str | None = None
    """The label selector as a string (what the scale subresource reports)."""


class PyTorchJobStatus(KubeModel):
    """Kubeflow's JobStatus plus ``observedGeneration`` and ``restartCount``."""

    conditions: list[JobCondition] = Field(default_factory=list)
    replica_statuses: dict[str, ReplicaStatus] = Field(default_factory=dict)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    last_reconcile_time: datetime | None = None
    observed_generation: int | None = None
    restart_count: int = 0
    """mlkube: pod restarts the operator made (one per RestartAll cycle)."""


class PyTorchJob(KubeModel):
    """The whole object as the operator reads it (metadata kept as a plain mapping)."""

    api_version: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: PyTorchJobSpec
    status: PyTorchJobStatus = Field(default_factory=PyTorchJobStatus)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "default"))


def managed_elsewhere(body: Mapping[str, Any]) -> str | None:
    """The controller named in ``spec.runPolicy.managedBy`` when it is not mlkube's, else None.

    Read from the raw object, before validation: a job another controller owns is left alone
    entirely (no children, no status), even one this version of the schema would refuse.
    """
    spec = body.get("spec")
    run_policy = spec.get("runPolicy") if isinstance(spec, Mapping) else None
    manager = run_policy.get("managedBy") if isinstance(run_policy, Mapping) else None
    if manager is None or manager == MANAGED_BY_OPERATOR:
        return None
    return str(manager)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a PyTorchJob's name (its pods and services derive from it)."""
    if not _NAME_RE.match(name):
        return (
            "the name must be a DNS-1035 label: lower-case letters, digits and '-', "
            "starting with a letter"
        )
    if len(name) > MAX_NAME_LENGTH:
        return f"the name must be at most {MAX_NAME_LENGTH} characters (a DNS-1035 label)"
    return None


PYTORCHJOB = register(
    CustomResource(
        kind=KIND,
        plural=PLURAL,
        spec=PyTorchJobSpec,
        status=PyTorchJobStatus,
        short_names=("ptj",),
        categories=("mlkube",),
        # Kubeflow's defaulting is in memory too: `kubectl get -o yaml` and GitOps diffs show
        # only what the user wrote; the operator reads every default from the models above.
        spec_defaults=False,
        printer_columns=(
            PrinterColumn(
                "State",
                ".status.conditions[-1:].type",
                description="The latest condition of the job",
            ),
            PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
        ),
        scale=Scale(
            spec_replicas_path=".spec.pytorchReplicaSpecs.Worker.replicas",
            status_replicas_path=".status.replicaStatuses.Worker.active",
            label_selector_path=".status.replicaStatuses.Worker.selector",
        ),
        name_validations=(
            rule(
                f"self.matches('{NAME_PATTERN}')",
                "the name must be a DNS-1035 label: lower-case letters, digits and '-', "
                "starting with a letter",
            ),
            rule(
                f"self.size() <= {MAX_NAME_LENGTH}",
                f"the name must be at most {MAX_NAME_LENGTH} characters (a DNS-1035 label)",
            ),
        ),
    )
)
