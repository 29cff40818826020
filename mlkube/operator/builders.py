"""Pure builders: a ModelService (plus operator settings) in, Kubernetes manifests out.

Nothing here talks to the API server or reads the clock, so every decision about what the
children look like is unit-tested on plain data, and running the reconcile twice yields
byte-identical manifests (which server-side apply then turns into no-ops).

Names and labels follow the contract shared with the rollout code: the stable Deployment is
``N``, a canary Deployment is ``N-canary`` (``build_deployment(..., track="canary")``), the
Service ``N`` selects every track, the PodDisruptionBudget ``N`` exists when replicas > 1.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from mlkube.api.modelservice import (
    API_VERSION,
    DEFAULT_GPU_RESOURCE,
    KIND,
    BanditSpec,
    FeatureStoreType,
    ModelFormat,
    ModelService,
    ModelServiceSpec,
    OnnxSpec,
    ProbeSpec,
)
from mlkube.serving.config import env_name
from mlkube.storage.uri import MODEL_MOUNT, StorageURI, pod_path
from mlkube.storage.uri import parse as parse_storage_uri

JsonDict = dict[str, Any]
Track = Literal["stable", "canary"]

FIELD_MANAGER = "mlkube"
CONTAINER_NAME = "model-server"
PORT_NAME = "http"
SERVICE_PORT = 80
GRPC_PORT_NAME = "grpc"
SERVICE_GRPC_PORT = 8081
"""The Service's gRPC port: the runtime's default, whatever ``runtime.grpcPort`` the pods use."""
GRPC_APP_PROTOCOL = "kubernetes.io/h2c"
"""HTTP/2 without TLS (gRPC in cleartext), as Kubernetes names it for ``appProtocol``."""
TMP_MOUNT = "/tmp"
FETCH_CONTAINER = "fetch-model"
"""The init container that puts ``spec.model.storageUri`` under :data:`MODEL_VOLUME`."""
MODEL_VOLUME = "model"
S3_SECRET_KEYS = (
    ("AWS_ACCESS_KEY_ID", False),
    ("AWS_SECRET_ACCESS_KEY", False),
    ("AWS_SESSION_TOKEN", True),
    ("AWS_ENDPOINT_URL", True),
    ("AWS_REGION", True),
)
"""The keys of a ModelService's S3 Secret and whether each may be absent: the AWS SDKs'
own variable names, which `mlkube fetch` reads and KServe users already keep in theirs."""
PRESTOP_SLEEP_SECONDS = 5
TERMINATION_GRACE_SECONDS = 30
RUN_AS_USER = 65532
"""The image's numeric non-root user (see the Dockerfile)."""

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_MODELSERVICE = "mlkube.dev/modelservice"
LABEL_REVISION = "mlkube.dev/revision"
LABEL_TRACK = "mlkube.dev/track"
ANNOTATION_REVISION = "mlkube.dev/revision"

# Per-probe defaults. Startup gives a slow model load up to 3 minutes before liveness may
# restart the container; readiness gates traffic on the model being loaded; liveness only
# checks that the process answers, so a slow feature store never causes restarts.
PROBE_DEFAULTS: dict[str, ProbeSpec] = {
    "startup": ProbeSpec(
        path="/v2/health/live",
        initial_delay_seconds=0,
        period_seconds=2,
        timeout_seconds=2,
        failure_threshold=90,
    ),
    "readiness": ProbeSpec(
        path="/v2/health/ready",
        initial_delay_seconds=0,
        period_seconds=5,
        timeout_seconds=2,
        failure_threshold=3,
    ),
    "liveness": ProbeSpec(
        path="/v2/health/live",
        initial_delay_seconds=0,
        period_seconds=10,
        timeout_seconds=2,
        failure_threshold=3,
    ),
}


@dataclass(frozen=True)
class BuildSettings:
    """Operator-level inputs to the builders (from flags / environment)."""

    default_image: str
    image_pull_policy: str | None = None


def child_name(name: str, track: Track = "stable") -> str:
    """``N`` for the stable track, ``N-canary`` for the canary."""
    return name if track == "stable" else f"{name}-{track}"


def selector_labels(name: str, track: Track = "stable") -> dict[str, str]:
    """The Deployment selector (immutable in Kubernetes, so it must never change)."""
    return {LABEL_MODELSERVICE: name, LABEL_TRACK: track}


def common_labels(name: str) -> dict[str, str]:
    """Labels on every child of a ModelService."""
    return {
        LABEL_NAME: "mlkube-model",
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: "model-server",
        LABEL_MANAGED_BY: "mlkube",
        LABEL_MODELSERVICE: name,
    }


def pod_selector(name: str) -> str:
    """String form of the selector of every pod of a ModelService (all tracks): what the
    scale subresource reports and what the Service selects."""
    return f"{LABEL_MODELSERVICE}={name}"


def service_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc.cluster.local"


def resolve_image(spec: ModelServiceSpec, settings: BuildSettings) -> str:
    return spec.runtime.image or settings.default_image


def compute_revision(spec: ModelServiceSpec, image: str, owner: str = "") -> str:
    """A short hash of everything that ends up in the pod template.

    Replicas are left out (scaling is not a new revision); the image is resolved first, so
    upgrading the operator's default image is a new revision, as it should be. ``owner``
    (``namespace/name``) makes the hash unique per ModelService: the canary analysis selects
    Prometheus series by ``revision``, and two ModelServices with the same spec (staging and
    production from one Git base) must never be judged on each other's traffic.
    """
    essence = spec.to_kube()
    essence.pop("replicas", None)
    for block in ("rollout", "autoscaling"):  # traffic/scaling policy, not pod content
        essence.pop(block, None)
    essence["image"] = image
    if owner:
        essence["owner"] = owner
    blob = json.dumps(essence, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def owner_key(ms: ModelService) -> str:
    """``namespace/name``: what makes a revision hash unique to one ModelService."""
    return f"{ms.metadata.namespace}/{ms.metadata.name}"


def owner_reference(ms: ModelService) -> JsonDict:
    """Controller reference: children are garbage-collected with the ModelService, and
    ``kubectl get deploy -o yaml`` shows who owns them."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ms.metadata.name,
        "uid": ms.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(ms: ModelService, name: str, labels: dict[str, str]) -> JsonDict:
    """Metadata of a child object: in the ModelService's namespace, owned by it (so the
    garbage collector removes it with the ModelService)."""
    return {
        "name": name,
        "namespace": ms.metadata.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(ms)],
    }


def _var(path: tuple[str, ...], value: str) -> JsonDict:
    """One ``MLKUBE_*`` variable, named by the runtime's own table (``ENV_VARS``)."""
    return {"name": env_name(path), "value": value}


def onnx_provider(spec: ModelServiceSpec) -> str:
    """The ONNX execution provider for the pods: CUDA when they get NVIDIA GPUs, else CPU
    (set either way: an image built on a CUDA base image claims a GPU in its environment)."""
    if spec.gpu.count > 0 and spec.gpu.resource_name == DEFAULT_GPU_RESOURCE:
        return "cuda"
    return "cpu"


def max_latency_seconds(text: str) -> float:
    """``batching.maxLatency`` (``"2ms"``) in seconds."""
    return int(text.removesuffix("ms")) / 1000


def build_env(ms: ModelService, revision: str) -> list[JsonDict]:
    """The runtime's configuration, per the serving contract (MLKUBE_* variables)."""
    spec = ms.spec
    model = spec.model
    env: list[JsonDict] = [
        _var(("server", "port"), str(spec.runtime.port)),
        _var(("server", "grpc_port"), str(spec.runtime.grpc_port)),
        _var(("server", "host"), "0.0.0.0"),
        _var(("model", "name"), model.name),
        _var(("model", "version"), model.version),
        _var(("model", "format"), model.format.value),
        _var(("revision",), revision),
    ]
    if model.class_name:
        env.append(_var(("model", "class"), model.class_name))
    if model.uri:
        env.append(_var(("model", "uri"), model.uri))
    if model.path:
        env.append(_var(("model", "path"), model.path))
    if model.format is ModelFormat.ONNX:
        onnx = model.onnx or OnnxSpec()
        env.append(_var(("onnx", "provider"), onnx_provider(spec)))
        env.append(_var(("onnx", "graph_optimization"), onnx.graph_optimization.value))
        if onnx.intra_op_threads is not None:
            env.append(_var(("onnx", "intra_op_threads"), str(onnx.intra_op_threads)))
    if spec.batching is not None:
        env += [
            _var(("batching", "enabled"), "true"),
            _var(("batching", "max_batch_size"), str(spec.batching.max_batch_size)),
            _var(("batching", "max_delay"), repr(max_latency_seconds(spec.batching.max_latency))),
        ]
    storage = storage_uri(spec)
    if storage is not None:
        env.append(_var(("model", "storage_uri"), pod_path(storage)))
    if model.format is ModelFormat.BANDIT:
        bandit = model.bandit or BanditSpec()
        env += [
            _var(("bandit", "prior_alpha"), repr(bandit.prior_alpha)),
            _var(("bandit", "prior_beta"), repr(bandit.prior_beta)),
            _var(("bandit", "max_items"), str(bandit.max_items)),
        ]
    if spec.runtime.workers is not None:
        env.append(_var(("server", "workers"), str(spec.runtime.workers)))
    store = spec.feature_store
    env.append(_var(("feature_store", "kind"), store.type.value))
    if store.type is FeatureStoreType.REDIS and store.redis is not None:
        ref = store.redis.url_secret_ref
        env.append(
            {
                "name": env_name(("feature_store", "redis_url")),
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    env += [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    for var in spec.runtime.env:
        entry: JsonDict = {"name": var.name}
        if var.value_from is not None:
            entry["valueFrom"] = var.value_from
        else:
            entry["value"] = var.value or ""
        env.append(entry)
    return env


def storage_uri(spec: ModelServiceSpec) -> StorageURI | None:
    """The parsed ``spec.model.storageUri`` (None without one; ``spec_problems`` has already
    refused one that does not parse, so the builders never see it)."""
    if spec.model.storage_uri is None:
        return None
    return parse_storage_uri(spec.model.storage_uri, allow_local=False)


def build_model_volume(uri: StorageURI) -> JsonDict:
    """The claim itself (read-only) for pvc://; an emptyDir the init container fills
    otherwise (no size limit: a model is as large as it is; the node's ephemeral storage
    and the pod's ``ephemeral-storage`` limit, when set, bound it)."""
    if uri.scheme == "pvc":
        return {
            "name": MODEL_VOLUME,
            "persistentVolumeClaim": {"claimName": uri.authority, "readOnly": True},
        }
    return {"name": MODEL_VOLUME, "emptyDir": {}}


def build_fetch_container(
    spec: ModelServiceSpec, uri: StorageURI, image: str, pull_policy: str | None
) -> JsonDict:
    """The init container: `mlkube fetch` downloads (or, for pvc://, finds) the model and
    verifies it; a failure ends it with ``Reason: message`` in its termination message,
    which the operator copies into the ModelService's conditions."""
    args = ["--storage-uri", uri.uri, "--dest", MODEL_MOUNT, "--format", spec.model.format.value]
    storage = spec.model.storage
    if storage is not None and storage.sha256:
        args += ["--sha256", storage.sha256]
    env: list[JsonDict] = []
    if uri.scheme == "s3" and storage is not None and storage.secret_name:
        for key, optional in S3_SECRET_KEYS:
            ref: JsonDict = {"name": storage.secret_name, "key": key}
            if optional:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    resources = build_resources(spec)
    # The GPU stays with the model server: the scheduler counts the larger of the init
    # container's and the pod's requests, so CPU and memory alike cost nothing extra.
    for part in resources.values():
        part.pop(spec.gpu.resource_name, None)
    container: JsonDict = {
        "name": FETCH_CONTAINER,
        "image": image,
        "command": ["mlkube", "fetch"],
        "args": args,
        "resources": {k: v for k, v in resources.items() if v},
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": MODEL_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": uri.scheme == "pvc"},
            {"name": "tmp", "mountPath": TMP_MOUNT},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env:
        container["env"] = env
    if pull_policy:
        container["imagePullPolicy"] = pull_policy
    return container


def build_probe(
    kind: str, override: ProbeSpec | None, port_name: str = PORT_NAME
) -> JsonDict | None:
    """One HTTP probe: the defaults for ``kind`` with the user's overrides on top."""
    if override is not None and not override.enabled:
        return None
    base = PROBE_DEFAULTS[kind]
    merged = base.model_copy(
        update={
            k: v for k, v in (override.model_dump() if override else {}).items() if v is not None
        }
    )
    probe: JsonDict = {
        "httpGet": {"path": merged.path, "port": port_name, "scheme": "HTTP"},
        "initialDelaySeconds": merged.initial_delay_seconds,
        "periodSeconds": merged.period_seconds,
        "timeoutSeconds": merged.timeout_seconds,
        "failureThreshold": merged.failure_threshold,
    }
    if kind != "readiness":
        probe["successThreshold"] = 1  # Kubernetes requires 1 for startup and liveness
    return probe


def build_resources(spec: ModelServiceSpec) -> JsonDict:
    """Requests/limits, with GPUs as a limit on the extended resource (Kubernetes sets the
    request equal to the limit for extended resources)."""
    res = spec.runtime.resources
    out: JsonDict = {}
    requests = res.requests.to_kube() if res.requests else {}
    limits = res.limits.to_kube() if res.limits else {}
    if spec.gpu.count > 0:
        limits[spec.gpu.resource_name] = str(spec.gpu.count)
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def build_tolerations(spec: ModelServiceSpec) -> list[JsonDict]:
    """The user's tolerations plus one for the GPU resource's taint.

    GPU node pools are tainted ``<resource>:NoSchedule`` (GKE, AKS and the NVIDIA GPU
    operator's convention) so that CPU pods stay off them; a pod asking for GPUs must
    tolerate that taint or it never schedules.
    """
    out = [t.to_kube() for t in spec.tolerations]
    if spec.gpu.count > 0:
        gpu = {"key": spec.gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"}
        if gpu not in out:
            out.append(gpu)
    return out


def container_security_context() -> JsonDict:
    """Kubernetes' "restricted" Pod Security Standard, met in full."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> JsonDict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_labels(ms: ModelService, revision: str, track: Track) -> dict[str, str]:
    """User pod labels first, ours last so they cannot be overridden."""
    name = ms.metadata.name
    return {
        **ms.spec.pod_labels,
        **common_labels(name),
        LABEL_VERSION: ms.spec.model.version,
        LABEL_REVISION: revision,
        LABEL_TRACK: track,
    }


def build_pod_template(
    ms: ModelService, *, image: str, revision: str, track: Track, settings: BuildSettings
) -> JsonDict:
    spec = ms.spec
    port = spec.runtime.port
    container: JsonDict = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["mlkube", "serve"],
        "args": list(spec.runtime.args),
        "ports": [
            {"name": PORT_NAME, "containerPort": port, "protocol": "TCP"},
            {"name": GRPC_PORT_NAME, "containerPort": spec.runtime.grpc_port, "protocol": "TCP"},
        ],
        "env": build_env(ms, revision),
        "resources": build_resources(spec),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_MOUNT}],
        "lifecycle": {
            # Endpoints are removed asynchronously; keep serving while kube-proxy and
            # ingress controllers catch up, then let SIGTERM start the graceful shutdown.
            "preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_SECONDS)]}}
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pull_policy = spec.runtime.image_pull_policy or settings.image_pull_policy
    if pull_policy:
        container["imagePullPolicy"] = pull_policy
    for kind in ("startup", "readiness", "liveness"):
        probe = build_probe(kind, getattr(spec.probes, kind))
        if probe is not None:
            container[f"{kind}Probe"] = probe
    volumes: list[JsonDict] = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    init_containers: list[JsonDict] = []
    storage = storage_uri(spec)
    if storage is not None:
        container["volumeMounts"].append(
            {"name": MODEL_VOLUME, "mountPath": MODEL_MOUNT, "readOnly": True}
        )
        volumes.append(build_model_volume(storage))
        init_containers.append(build_fetch_container(spec, storage, image, pull_policy))

    annotations = {
        **spec.pod_annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
        ANNOTATION_REVISION: revision,
    }
    pod_spec: JsonDict = {
        **({"initContainers": init_containers} if init_containers else {}),
        "containers": [container],
        "securityContext": pod_security_context(),
        "volumes": volumes,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    tolerations = build_tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if spec.affinity:
        pod_spec["affinity"] = spec.affinity
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    if spec.runtime_class_name:
        pod_spec["runtimeClassName"] = spec.runtime_class_name
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s.name} for s in spec.image_pull_secrets]
    return {
        "metadata": {"labels": pod_labels(ms, revision, track), "annotations": annotations},
        "spec": pod_spec,
    }


def build_deployment(
    ms: ModelService,
    settings: BuildSettings,
    *,
    revision: str | None = None,
    track: Track = "stable",
    replicas: int | None = None,
) -> JsonDict:
    """The Deployment of one track.

    ``revision`` defaults to the spec's own (the stable track during a canary keeps the old
    revision's template, which the rollout code passes in); ``replicas`` defaults to
    ``spec.replicas``.
    """
    image = resolve_image(ms.spec, settings)
    rev = revision or compute_revision(ms.spec, image, owner_key(ms))
    name = ms.metadata.name
    labels = {
        **common_labels(name),
        LABEL_VERSION: ms.spec.model.version,
        LABEL_REVISION: rev,
        LABEL_TRACK: track,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **child_metadata(ms, child_name(name, track), labels),
            "annotations": {ANNOTATION_REVISION: rev},
        },
        "spec": {
            "replicas": ms.spec.replicas if replicas is None else replicas,
            "selector": {"matchLabels": selector_labels(name, track)},
            "strategy": {
                "type": "RollingUpdate",
                # Capacity never dips during an update: new pods come up before old ones go.
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 600,
            "template": build_pod_template(
                ms, image=image, revision=rev, track=track, settings=settings
            ),
        },
    }


def cluster_ip_service(
    ms: ModelService, name: str, labels: dict[str, str], selector: dict[str, str]
) -> JsonDict:
    """A ClusterIP Service ``name`` owned by ``ms``: port 80 to the pods' named http port,
    port 8081 to their named grpc port (``appProtocol`` h2c: gRPC without TLS).

    Every Service the operator makes (``N`` and, for Gateway API routing, the per-track
    ones) has this one port shape, so that clients and routes can address any of them alike.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(ms, name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": SERVICE_PORT,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": GRPC_PORT_NAME,
                    "port": SERVICE_GRPC_PORT,
                    "targetPort": GRPC_PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": GRPC_APP_PROTOCOL,
                },
            ],
        },
    }


def build_service(ms: ModelService) -> JsonDict:
    """ClusterIP Service ``N`` on ports 80 (http) and 8081 (grpc), selecting the pods of
    every track."""
    name = ms.metadata.name
    return cluster_ip_service(ms, name, common_labels(name), {LABEL_MODELSERVICE: name})


def build_pdb(ms: ModelService, replicas: int | None = None) -> JsonDict | None:
    """At most one pod voluntarily disrupted at a time; none for a single replica (a PDB
    that forbids evicting the only pod blocks node drains forever)."""
    count = ms.spec.replicas if replicas is None else replicas
    if count <= 1:
        return None
    name = ms.metadata.name
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(ms, name, common_labels(name)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {LABEL_MODELSERVICE: name}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


@dataclass(frozen=True)
class DesiredState:
    """Everything one reconcile converges to."""

    revision: str
    image: str
    deployment: JsonDict
    service: JsonDict
    pdb: JsonDict | None

    @property
    def objects(self) -> list[JsonDict]:
        """What to apply, in dependency order (Service before pods appear, PDB last)."""
        return [self.service, self.deployment, *([self.pdb] if self.pdb else [])]


def desired_state(ms: ModelService, settings: BuildSettings) -> DesiredState:
    image = resolve_image(ms.spec, settings)
    revision = compute_revision(ms.spec, image, owner_key(ms))
    return DesiredState(
        revision=revision,
        image=image,
        deployment=build_deployment(ms, settings, revision=revision),
        service=build_service(ms),
        pdb=build_pdb(ms),
    )
