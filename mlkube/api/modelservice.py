"""The `ModelService` custom resource (`mlkube.dev/v1alpha1`): spec, status, CRD metadata.

These models are the single source of truth: `mlkube crds` turns them into
`crds/modelservices.mlkube.dev.yaml` and the operator parses live objects with them.
Validation lives in two places on purpose: CEL rules in the schema so that `kubectl
apply` refuses a bad object with a message a person understands, and the same checks in
pure Python (`spec_problems`) so that an object that slipped past an older CRD (or an API
server without the CEL `quantity` library) becomes a `Degraded` condition instead of a
broken Deployment.

The rollout/autoscaling blocks are declared in `mlkube.api.rollout` and plugged into
`ModelServiceSpec` as plain optional fields.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from mlkube.api.contract import runtime_bounds, runtime_enum
from mlkube.api.rollout import AutoscalingSpec, AutoscalingStatus, RolloutSpec, RolloutStatus
from mlkube.api.schema import (
    DNS1035_LABEL,
    CustomResource,
    KubeModel,
    PrinterColumn,
    Quantity,
    Scale,
    kube,
    parse_quantity,
    register,
    rule,
)
from mlkube.api.schema import GROUP as GROUP
from mlkube.api.schema import VERSION as VERSION
from mlkube.serving.config import (
    ENV_VARS,
    MODEL_NAME_PATTERN,
    ConfigError,
    env_name,
    load_config,
)
from mlkube.storage.uri import SHA256_PATTERN, STORAGE_URI_PATTERN, StorageURIError
from mlkube.storage.uri import parse as parse_storage_uri

API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelService"
PLURAL = "modelservices"

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
MAX_NAME_LENGTH = 56
"""63 (a Service name, a label value) minus room for the `-canary` suffix."""

DEFAULT_PORT = 8080
DEFAULT_GRPC_PORT = 8081
"""The runtime's OIP v2 gRPC port (KServe's, next to REST on 8080)."""
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
RESERVED_ENV = tuple(
    env_name(path)
    for path in (
        ("server", "host"),
        ("server", "port"),
        ("server", "grpc_port"),
        ("model", "name"),
        ("model", "version"),
        ("model", "format"),
        ("model", "class"),
        ("model", "uri"),
        ("model", "path"),
        ("onnx", "provider"),
        ("onnx", "graph_optimization"),
        ("onnx", "intra_op_threads"),
        ("batching", "enabled"),
        ("batching", "max_batch_size"),
        ("batching", "max_delay"),
        ("model", "storage_uri"),
        ("revision",),
        ("feature_store", "kind"),
        ("feature_store", "redis_url"),
        ("server", "workers"),
        ("bandit", "prior_alpha"),
        ("bandit", "prior_beta"),
        ("bandit", "max_items"),
    )
)
"""Variables the operator derives from the spec; setting them in `runtime.env` would
make the pod disagree with the spec (and with the revision hash), so the schema refuses.
The names come from the runtime's own table (`mlkube.serving.config.ENV_VARS`)."""

Name = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)]


# --------------------------------------------------------------------------- the model


class ModelFormat(StrEnum):
    """How the runtime loads the model; new formats are added here."""

    BANDIT = "bandit"
    CUSTOM = "custom"
    ONNX = "onnx"


runtime_enum("model.format", ("model", "format"), ModelFormat)


class GraphOptimization(StrEnum):
    """ONNX Runtime's graph optimisation levels."""

    DISABLED = "disabled"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


runtime_enum("model.onnx.graphOptimization", ("onnx", "graph_optimization"), GraphOptimization)


class OnnxSpec(KubeModel):
    """ONNX Runtime session settings (format `onnx`). The execution provider follows `gpu`:
    CUDA when the pods get NVIDIA GPUs (the image must carry onnxruntime-gpu), else CPU."""

    graph_optimization: GraphOptimization = GraphOptimization.ALL
    """How much ONNX Runtime rewrites the graph before it runs it (`disabled` to `all`)."""
    intra_op_threads: (
        Annotated[
            int,
            runtime_bounds("model.onnx.intraOpThreads", ("onnx", "intra_op_threads"), le=64),
        ]
        | None
    ) = None
    """Threads one inference uses (default: the pod's CPU limit divided by its workers)."""


class BanditSpec(KubeModel):
    """Thompson-sampling bandit parameters (format `bandit`)."""

    # Bounds: the runtime's (mlkube.api.contract), the priors' ceiling lower on purpose.
    prior_alpha: Annotated[
        float, runtime_bounds("model.bandit.priorAlpha", ("bandit", "prior_alpha"), le=1e6)
    ] = 1.0
    """Alpha of the Beta prior every item starts from (successes + 1 in the classic form)."""
    prior_beta: Annotated[
        float, runtime_bounds("model.bandit.priorBeta", ("bandit", "prior_beta"), le=1e6)
    ] = 1.0
    """Beta of the Beta prior every item starts from (failures + 1 in the classic form)."""
    max_items: Annotated[int, runtime_bounds("model.bandit.maxItems", ("bandit", "max_items"))] = (
        10_000
    )
    """Most items one request may ask to rank; larger requests get a 400."""


class StorageSpec(KubeModel):
    """How to fetch and verify the model named by ``storageUri``."""

    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    """Expected SHA-256 of the model file (64 lower-case hex digits); a download that differs
    fails the pod's `fetch-model` init container with `ChecksumMismatch`."""
    secret_name: Name | None = None
    """Secret (in this namespace) with the S3 settings, `s3://` only: `AWS_ACCESS_KEY_ID` and
    `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL` (an
    S3-compatible server) and `AWS_REGION`. Without it, objects are read unsigned
    (public buckets)."""


class ModelSpec(KubeModel):
    """Which model the pods serve."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "self.format != 'custom' || has(self.className)",
                    "format custom needs className (the module:Class to load)",
                    field_path=".className",
                    reason="FieldValueRequired",
                ),
                rule(
                    "!has(self.bandit) || self.format == 'bandit'",
                    "bandit settings apply only to format bandit",
                    field_path=".bandit",
                ),
                rule(
                    "self.format != 'onnx' || has(self.path) || has(self.storageUri)",
                    "format onnx needs path (the .onnx file in the container) or storageUri",
                    field_path=".path",
                    reason="FieldValueRequired",
                ),
                rule(
                    "!has(self.onnx) || self.format == 'onnx'",
                    "onnx settings apply only to format onnx",
                    field_path=".onnx",
                ),
                rule(
                    "!has(self.storageUri) || self.format != 'bandit'",
                    "storageUri needs a format that loads a model file (bandit has none)",
                    field_path=".storageUri",
                ),
                rule(
                    "!has(self.storage) || has(self.storageUri)",
                    "storage settings need storageUri",
                    field_path=".storage",
                    reason="FieldValueRequired",
                ),
                rule(
                    "!has(self.storage) || !has(self.storage.secretName) || "
                    "self.storageUri.startsWith('s3://')",
                    "storage.secretName holds S3 settings: it applies only to s3:// URIs",
                    field_path=".storage.secretName",
                ),
                rule(
                    "!has(self.storage) || !has(self.storage.sha256) || "
                    "!self.storageUri.endsWith('/')",
                    "storage.sha256 checks one file: it does not apply to a storageUri ending "
                    "in '/' (a directory)",
                    field_path=".storage.sha256",
                ),
            ]
        )
    )

    name: Annotated[str, runtime_bounds("model.name", ("model", "name"))] = Field(
        pattern=MODEL_NAME_PATTERN
    )
    """Model name; reported by the inference API and in every metric's `model` label."""
    version: Annotated[str, runtime_bounds("model.version", ("model", "version"))] = Field(
        json_schema_extra=kube(
            validations=[
                rule(
                    f"self.matches('{LABEL_VALUE}')",
                    "version must be a valid label value: letters, digits, '-', '_' or '.', "
                    "starting and ending with a letter or digit",
                )
            ]
        ),
    )
    """A free string the user bumps to roll out a new model (e.g. `2024-06-01` or `v3`)."""
    format: ModelFormat = ModelFormat.BANDIT
    """`bandit` (built in), `custom` (a user's `module:Class`) or `onnx` (an ONNX model file
    run by ONNX Runtime)."""
    class_name: (
        Annotated[str, runtime_bounds("model.className", ("model", "class"), max_length=253)] | None
    ) = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
    )
    """Python `module:Class` of a custom model (format `custom` only)."""
    uri: Annotated[str, runtime_bounds("model.uri", ("model", "uri"), max_length=2048)] | None = (
        Field(
            default=None,
            json_schema_extra=kube(
                validations=[
                    rule(
                        "self.matches('^[a-z][a-z0-9+.-]*://')",
                        "uri needs a scheme, e.g. s3://bucket/model or file:///models/m",
                    )
                ]
            ),
        )
    )
    """Where the model's artefacts are stored (`s3://`, `gs://`, `file://`, ...), passed to a
    custom model as is; to have the pods fetch the model, use `storageUri`."""
    path: (
        Annotated[str, runtime_bounds("model.path", ("model", "path"), max_length=1024)] | None
    ) = Field(default=None, pattern=r"^/")
    """Absolute path of the model file in the container (format `onnx`): a file the image
    carries or one on a volume mounted through the pod. With `storageUri` it defaults to
    the fetched file (or, for a directory, its only `.onnx` file)."""
    storage_uri: str | None = Field(
        default=None,
        max_length=2048,
        json_schema_extra=kube(
            validations=[
                rule(
                    f"self.matches('{STORAGE_URI_PATTERN}')",
                    "storageUri must be pvc://CLAIM/path, http(s)://host/path or "
                    "s3://bucket/key (an unsupported scheme, or a malformed claim or bucket "
                    "name)",
                )
            ]
        ),
    )
    """Where the model file (or directory) is: `pvc://CLAIM/path` (mounted read-only),
    `http(s)://...` or `s3://bucket/key` (downloaded at pod start by the `fetch-model` init
    container). The runtime loads it from `/mnt/models`; see docs/storage.md."""
    storage: StorageSpec | None = None
    """Checksum and S3 credentials for `storageUri`."""
    bandit: BanditSpec | None = None
    """Bandit parameters; defaults apply when omitted."""
    onnx: OnnxSpec | None = None
    """ONNX Runtime settings (format `onnx`); defaults apply when omitted."""


class BatchingSpec(KubeModel):
    """Dynamic batching: concurrent requests are answered by one model call. For ONNX
    models they merge along the batch dimension (the first, when it is dynamic)."""

    max_batch_size: Annotated[
        int, runtime_bounds("batching.maxBatchSize", ("batching", "max_batch_size"))
    ] = 32
    """Most requests in one call."""
    max_latency: str = Field(default="2ms", pattern=r"^(1000|[0-9]{1,3})ms$")
    """Longest a request waits for others to join its batch: `0ms` to `1000ms`."""


# --------------------------------------------------------------------- feature store


class SecretKeyRef(KubeModel):
    """A key in a Secret in the ModelService's namespace."""

    name: Name
    """Name of the Secret."""
    key: str = Field(default="url", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key in the Secret whose value is used."""


class RedisSpec(KubeModel):
    """Connection to Redis. The URL (it may carry a password) only ever comes from a Secret."""

    url_secret_ref: SecretKeyRef
    """Secret key holding the `redis://` or `rediss://` URL."""


class FeatureStoreType(StrEnum):
    MEMORY = "memory"
    REDIS = "redis"


runtime_enum("featureStore.type", ("feature_store", "kind"), FeatureStoreType)


class FeatureStoreSpec(KubeModel):
    """Online feature store the runtime reads item statistics from."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "self.type != 'redis' || has(self.redis)",
                    "a redis feature store needs redis.urlSecretRef: the URL is read from a "
                    "Secret, never written inline",
                    field_path=".redis",
                    reason="FieldValueRequired",
                ),
                rule(
                    "self.type == 'redis' || !has(self.redis)",
                    "redis settings need type: redis",
                    field_path=".redis",
                ),
            ]
        )
    )

    type: FeatureStoreType = FeatureStoreType.MEMORY
    """`memory` (in-process, per pod) or `redis` (shared)."""
    redis: RedisSpec | None = None
    """Redis connection (type `redis` only)."""


# ---------------------------------------------------------------------------- runtime


def _limit_not_below_request(what: str) -> dict[str, Any]:
    return rule(
        f"!has(self.limits) || !has(self.requests) || !has(self.limits.{what}) || "
        f"!has(self.requests.{what}) || "
        f"quantity(string(self.limits.{what})).compareTo(quantity(string(self.requests.{what}))) >= 0",
        f"{what} limit must be at least the {what} request",
        field_path=f".limits.{what}",
    )


class ResourceList(KubeModel):
    """CPU and memory amounts (Kubernetes quantities: `500m`, `2`, `1Gi`)."""

    cpu: Quantity | None = None
    memory: Quantity | None = None


class ResourcesSpec(KubeModel):
    """Requests and limits of the model-server container (GPUs are set under `gpu`)."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[_limit_not_below_request("cpu"), _limit_not_below_request("memory")]
        )
    )

    requests: ResourceList | None = None
    """What the scheduler reserves."""
    limits: ResourceList | None = None
    """The most the container may use; must not be below the request."""


class EnvVar(KubeModel):
    """One environment variable: a literal value or a reference (Kubernetes `valueFrom`)."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "!(has(self.value) && has(self.valueFrom))",
                    "set value or valueFrom, not both",
                )
            ]
        )
    )

    name: str = Field(min_length=1, max_length=128, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = Field(default=None, max_length=32768)
    value_from: dict[str, Any] | None = Field(
        default=None, json_schema_extra=kube(preserve_unknown_fields=True)
    )
    """A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)."""


_RESERVED_ENV_CEL = "[" + ", ".join(f"'{n}'" for n in RESERVED_ENV) + "]"


class RuntimeSpec(KubeModel):
    """The model-server container."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "self.grpcPort != self.port",
                    "grpcPort must differ from port: the runtime listens on both",
                    field_path=".grpcPort",
                )
            ]
        )
    )

    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Container image; defaults to the mlkube image of the operator's own version."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    """Extra arguments after `mlkube serve`."""
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra=kube(
            list_type="map",
            list_map_keys=["name"],
            validations=[
                rule(
                    f"self.all(e, !(e.name in {_RESERVED_ENV_CEL}))",
                    "env must not set the MLKUBE_* variables the operator derives from the spec "
                    "(model, port, workers, feature store, revision): set the spec fields instead",
                )
            ],
        ),
    )
    """Extra environment variables (names are unique)."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """CPU and memory requests and limits."""
    workers: (
        Annotated[int, runtime_bounds("runtime.workers", ("server", "workers"), le=64)] | None
    ) = None
    """Worker processes per pod (default: one per CPU the runtime sees)."""
    port: Annotated[int, runtime_bounds("runtime.port", ("server", "port"), ge=1024)] = DEFAULT_PORT
    """Container port of the HTTP API and /metrics (1024-65535: the container runs as non-root)."""
    grpc_port: Annotated[
        int, runtime_bounds("runtime.grpcPort", ("server", "grpc_port"), ge=1024)
    ] = DEFAULT_GRPC_PORT
    """Container port of the OIP v2 gRPC API and gRPC health checks (1024-65535, not `port`);
    the Service exposes it as port 8081, named `grpc`."""


# ------------------------------------------------------------------ GPUs and placement


class GPUSpec(KubeModel):
    """Accelerators per pod, requested as an extended resource."""

    count: int = Field(default=0, ge=0, le=16)
    """GPUs per pod (0: CPU only)."""
    resource_name: str = Field(
        default=DEFAULT_GPU_RESOURCE,
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,}/[a-zA-Z0-9]([-._a-zA-Z0-9]*[a-zA-Z0-9])?$",
    )
    """Extended resource name: `nvidia.com/gpu`, `amd.com/gpu`, `gpu.intel.com/i915`..."""


class Toleration(KubeModel):
    """A Kubernetes toleration."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "!has(self.operator) || self.operator != 'Exists' || !has(self.value)",
                    "a toleration with operator Exists must not have a value",
                ),
                rule(
                    "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                    "tolerationSeconds applies only to effect NoExecute",
                ),
            ]
        )
    )

    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class LocalObjectReference(KubeModel):
    """A reference to an object in the same namespace."""

    name: Name


# ------------------------------------------------------------------------------ probes


class ProbeSpec(KubeModel):
    """Overrides of one HTTP probe; omitted fields keep the defaults of that probe."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[
                rule(
                    "!has(self.timeoutSeconds) || !has(self.periodSeconds) || "
                    "self.timeoutSeconds <= self.periodSeconds",
                    "timeoutSeconds must not exceed periodSeconds",
                    field_path=".timeoutSeconds",
                )
            ]
        )
    )

    enabled: bool = True
    """False removes the probe (not recommended)."""
    path: str | None = Field(default=None, max_length=1024, pattern=r"^/")
    """HTTP path on the runtime's port."""
    initial_delay_seconds: int | None = Field(default=None, ge=0, le=3600)
    period_seconds: int | None = Field(default=None, ge=1, le=3600)
    timeout_seconds: int | None = Field(default=None, ge=1, le=3600)
    failure_threshold: int | None = Field(default=None, ge=1, le=1000)


class ProbesSpec(KubeModel):
    """Probe overrides. Defaults: startup GET /v2/health/live every 2 s for up to 3 minutes;
    readiness GET /v2/health/ready every 5 s; liveness GET /v2/health/live every 10 s."""

    startup: ProbeSpec | None = None
    readiness: ProbeSpec | None = None
    liveness: ProbeSpec | None = None


# ------------------------------------------------------------------------------- spec


class ModelServiceSpec(KubeModel):
    """A model served over HTTP and gRPC (Open Inference Protocol v2) by a Deployment of
    mlkube runtime pods behind a ClusterIP Service."""

    model: ModelSpec
    """The model to serve."""
    feature_store: FeatureStoreSpec = Field(default_factory=FeatureStoreSpec)
    """Where per-item statistics live (memory by default)."""
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    """The model-server container."""
    gpu: GPUSpec = Field(default_factory=GPUSpec)
    """Accelerators per pod."""
    batching: BatchingSpec | None = None
    """Dynamic batching (off when omitted; `batching: {}` turns it on with the defaults)."""
    replicas: int = Field(default=1, ge=0, le=1000, json_schema_extra={"format": "int32"})
    """Pods to run when autoscaling is off (`kubectl scale` sets this)."""
    probes: ProbesSpec = Field(default_factory=ProbesSpec)
    """Startup, readiness and liveness probe overrides."""
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, json_schema_extra=kube(maxProperties=64)
    )
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    """Extra tolerations (those for the GPU resource's taint are added automatically)."""
    affinity: dict[str, Any] | None = Field(
        default=None, json_schema_extra=kube(preserve_unknown_fields=True)
    )
    """A Kubernetes Affinity (nodeAffinity, podAffinity, podAntiAffinity)."""
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=DNS1123_SUBDOMAIN)
    runtime_class_name: str | None = Field(default=None, max_length=253, pattern=DNS1123_SUBDOMAIN)
    service_account_name: str | None = Field(
        default=None, max_length=253, pattern=DNS1123_SUBDOMAIN
    )
    """Service account of the pods (default: the namespace's `default`)."""
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    pod_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, json_schema_extra=kube(maxProperties=64)
    )
    """Extra pod labels; the operator's own labels (`app.kubernetes.io/*`, `mlkube.dev/*`) win."""
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, json_schema_extra=kube(maxProperties=64)
    )
    """Extra pod annotations."""
    rollout: RolloutSpec | None = None
    """How a changed spec reaches users (canary with analysis, or rolling); without it a
    change rolls out in place like a Deployment update."""
    autoscaling: AutoscalingSpec | None = None
    """Scale on in-flight requests (built in) or through an HPA; replaces `replicas`."""


# ----------------------------------------------------------------------------- status


class Condition(KubeModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", max_length=1024)
    """CamelCase reason for the last transition."""
    message: str = Field(default="", max_length=32768)
    """What a person should know, in a sentence."""
    last_transition_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(default=None, ge=0)


class ModelServiceStatus(KubeModel):
    """What the operator observed, written only by the operator."""

    observed_generation: int | None = None
    """The `metadata.generation` this status describes."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra=kube(list_type="map", list_map_keys=["type"]),
    )
    """`Ready`, `Progressing` and `Degraded`."""
    replicas: int | None = None
    """Pods of every track that exist."""
    ready_replicas: int | None = None
    """Pods that pass their readiness probe."""
    updated_replicas: int | None = None
    """Pods that run the current revision."""
    selector: str | None = None
    """Label selector of the pods (what the scale subresource reports to autoscalers)."""
    url: str | None = None
    """In-cluster URL: `http://<name>.<namespace>.svc.cluster.local`."""
    revision: str | None = None
    """Hash of what the stable pods run."""
    model_version: str | None = None
    """Model version the stable pods serve."""
    rollout: RolloutStatus | None = None
    """Canary rollout: revisions, weight, analysis results, history."""
    autoscaling: AutoscalingStatus | None = None
    """Built-in autoscaler: desired replicas and why."""


# ------------------------------------------------------------------------ whole object


class ObjectMeta(KubeModel):
    """The parts of metadata the operator reads."""

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelService(KubeModel):
    """A whole ModelService object as the API server returns it."""

    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: ModelServiceSpec
    status: ModelServiceStatus | None = None


def spec_problems(spec: ModelServiceSpec) -> list[str]:
    """Checks the CEL rules also make, in pure Python, for objects that got past the schema.

    `quantity()` in CEL needs Kubernetes 1.28+; on older API servers the limit rules are
    not enforced at admission, so the operator repeats them before it builds anything.
    """
    problems: list[str] = []
    res = spec.runtime.resources
    if res.limits and res.requests:
        for what in ("cpu", "memory"):
            limit, request = getattr(res.limits, what), getattr(res.requests, what)
            if (
                limit is not None
                and request is not None
                and parse_quantity(limit) < parse_quantity(request)
            ):
                problems.append(
                    f"runtime.resources: {what} limit {limit} is below the request {request}"
                )
    if spec.feature_store.type is FeatureStoreType.REDIS and spec.feature_store.redis is None:
        problems.append("featureStore: type redis needs redis.urlSecretRef")
    if spec.model.format is ModelFormat.CUSTOM and not spec.model.class_name:
        problems.append("model: format custom needs className")
    model = spec.model
    if model.storage_uri is not None:
        try:
            parsed = parse_storage_uri(model.storage_uri, allow_local=False)
        except StorageURIError as exc:
            problems.append(f"model.storageUri: {exc}")
        else:
            if model.format is ModelFormat.BANDIT:
                problems.append("model.storageUri: format bandit loads no model file")
            if model.storage and model.storage.secret_name and parsed.scheme != "s3":
                problems.append("model.storage.secretName applies only to s3:// URIs")
            if model.storage and model.storage.sha256 and parsed.is_prefix:
                problems.append("model.storage.sha256 does not apply to a directory")
    elif model.storage is not None:
        problems.append("model.storage needs model.storageUri")
    if model.format is ModelFormat.ONNX and not model.path and not model.storage_uri:
        problems.append("model: format onnx needs path or storageUri")
    if spec.runtime.grpc_port == spec.runtime.port:
        problems.append(
            f"runtime: grpcPort must differ from port ({spec.runtime.port}): the runtime "
            "listens on both"
        )
    reserved = sorted({e.name for e in spec.runtime.env} & set(RESERVED_ENV))
    if reserved:
        problems.append(f"runtime.env: the operator sets {', '.join(reserved)} itself")
    # The runtime settings a user may set through env: the values the pod will read go
    # through the runtime's own loader now, so a bad one is a condition on the object, not
    # a crash-looping pod. (A value from a Secret or ConfigMap cannot be seen here.)
    settings = {
        e.name: e.value or ""
        for e in spec.runtime.env
        if e.name in ENV_VARS and e.name not in RESERVED_ENV and e.value_from is None
    }
    if settings:
        try:
            load_config(env=settings)
        except ConfigError as exc:
            problems.append(f"runtime.env: {exc}")
    return problems


MODELSERVICE = register(
    CustomResource(
        kind=KIND,
        plural=PLURAL,
        group=GROUP,
        version=VERSION,
        short_names=("msvc",),
        categories=("mlkube",),
        spec=ModelServiceSpec,
        status=ModelServiceStatus,
        description="ModelService runs a model behind HTTP and gRPC endpoints: a Deployment "
        "of mlkube serving pods, a ClusterIP Service and a PodDisruptionBudget.",
        printer_columns=(
            PrinterColumn(
                "Ready",
                '.status.conditions[?(@.type=="Ready")].status',
                description="Whether the service is ready",
            ),
            PrinterColumn("Version", ".status.modelVersion", description="Served model version"),
            PrinterColumn("Replicas", ".status.replicas", type="integer"),
            PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
            PrinterColumn("URL", ".status.url", priority=1),
            PrinterColumn("Revision", ".status.revision", priority=1),
            PrinterColumn(
                "Rollout", ".status.rollout.phase", priority=1, description="Canary rollout phase"
            ),
            PrinterColumn(
                "Canary",
                ".status.rollout.canaryWeight",
                type="integer",
                priority=1,
                description="Canary traffic weight, percent",
            ),
        ),
        scale=Scale(".spec.replicas", ".status.replicas", ".status.selector"),
        name_validations=(
            rule(
                f"self.matches('{DNS1035_LABEL}')",
                "name must be a DNS-1035 label (lower-case letters, digits and '-', starting "
                "with a letter) because it names the Service",
            ),
            rule(
                f"size(self) <= {MAX_NAME_LENGTH}",
                f"name must be at most {MAX_NAME_LENGTH} characters so that derived names "
                "(e.g. <name>-canary) stay within 63",
            ),
        ),
    )
)
