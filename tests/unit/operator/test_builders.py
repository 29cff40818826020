"""Pure builders: what a ModelService turns into, checked on plain data.

Every built object is also validated against the Kubernetes 1.37 OpenAPI schema in strict
mode (kubernetes-validate), so a typo in a field name fails here, not in a cluster.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from mlkube.api.modelservice import ModelService
from mlkube.operator.builders import (
    BuildSettings,
    build_deployment,
    build_pdb,
    build_service,
    compute_revision,
    desired_state,
    pod_selector,
)
from mlkube.serving.config import ENV_VARS, load_config

SETTINGS = BuildSettings(default_image="ghcr.io/mlkube/mlkube:0.1.0")


def ms(**spec: Any) -> ModelService:
    return ModelService.model_validate(
        {
            "metadata": {"name": "recs", "namespace": "ml", "uid": "u-1", "generation": 3},
            "spec": {"model": {"name": "ranker", "version": "v1"}, **spec},
        }
    )


def container(dep: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return result


def env(dep: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(dep)["env"]}


@pytest.mark.parametrize(
    "obj",
    [
        build_deployment(ms(), SETTINGS),
        build_deployment(
            ms(
                gpu={"count": 2},
                tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml"}],
                runtime={"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": 2}}},
                affinity={"nodeAffinity": {}},
                imagePullSecrets=[{"name": "regcred"}],
            ),
            SETTINGS,
            track="canary",
        ),
        build_service(ms()),
        build_pdb(ms(replicas=3)),
    ],
    ids=["deployment", "canary-gpu-deployment", "service", "pdb"],
)
def test_built_objects_are_valid_kubernetes(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, "1.37", strict=True)


def test_names_labels_selector_and_owner() -> None:
    dep = build_deployment(ms(), SETTINGS)
    assert dep["metadata"]["name"] == "recs"
    assert dep["metadata"]["namespace"] == "ml"
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "mlkube.dev/v1alpha1",
            "kind": "ModelService",
            "name": "recs",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["spec"]["selector"] == {
        "matchLabels": {"mlkube.dev/modelservice": "recs", "mlkube.dev/track": "stable"}
    }
    revision = compute_revision(ms().spec, SETTINGS.default_image, "ml/recs")
    assert dep["spec"]["template"]["metadata"]["labels"] == {
        "app.kubernetes.io/name": "mlkube-model",
        "app.kubernetes.io/instance": "recs",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": "mlkube",
        "app.kubernetes.io/version": "v1",
        "mlkube.dev/modelservice": "recs",
        "mlkube.dev/revision": revision,
        "mlkube.dev/track": "stable",
    }


def test_canary_track_is_a_parameter() -> None:
    dep = build_deployment(ms(), SETTINGS, track="canary", revision="abc123", replicas=1)
    assert dep["metadata"]["name"] == "recs-canary"
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["selector"]["matchLabels"]["mlkube.dev/track"] == "canary"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["mlkube.dev/revision"] == "abc123"
    assert env(dep)["MLKUBE_REVISION"] == "abc123"


def test_rolling_update_never_dips_capacity() -> None:
    strategy = build_deployment(ms(), SETTINGS)["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
    }


def test_image_defaults_to_the_operator_image_and_can_be_overridden() -> None:
    assert container(build_deployment(ms(), SETTINGS))["image"] == "ghcr.io/mlkube/mlkube:0.1.0"
    custom = build_deployment(ms(runtime={"image": "reg.example/m:1"}), SETTINGS)
    assert container(custom)["image"] == "reg.example/m:1"
    assert container(custom)["command"] == ["mlkube", "serve"]


def test_resources_gpu_limit_and_toleration() -> None:
    dep = build_deployment(
        ms(
            gpu={"count": 2, "resourceName": "amd.com/gpu"},
            runtime={
                "resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                    "limits": {"memory": "2Gi"},
                }
            },
        ),
        SETTINGS,
    )
    assert container(dep)["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2Gi", "amd.com/gpu": "2"},
    }
    tolerations = dep["spec"]["template"]["spec"]["tolerations"]
    assert tolerations == [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_no_gpu_means_no_gpu_limit_and_no_toleration() -> None:
    dep = build_deployment(ms(), SETTINGS)
    assert "limits" not in container(dep)["resources"]
    assert "tolerations" not in dep["spec"]["template"]["spec"]


def test_user_tolerations_are_kept_and_the_gpu_one_not_duplicated() -> None:
    gpu = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    dep = build_deployment(
        ms(gpu={"count": 1}, tolerations=[{"key": "spot", "operator": "Exists"}, gpu]), SETTINGS
    )
    assert dep["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "spot", "operator": "Exists"},
        gpu,
    ]


def test_probes_default_to_the_runtime_health_endpoints() -> None:
    c = container(build_deployment(ms(), SETTINGS))
    assert c["startupProbe"]["httpGet"] == {
        "path": "/v2/health/live",
        "port": "http",
        "scheme": "HTTP",
    }
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] == 180
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["livenessProbe"]["successThreshold"] == 1
    assert "successThreshold" not in c["readinessProbe"]


def test_probe_overrides_merge_with_defaults_and_can_disable() -> None:
    c = container(
        build_deployment(
            ms(
                probes={
                    "readiness": {"periodSeconds": 1, "timeoutSeconds": 1},
                    "liveness": {"enabled": False},
                }
            ),
            SETTINGS,
        )
    )
    assert c["readinessProbe"]["periodSeconds"] == 1
    assert c["readinessProbe"]["timeoutSeconds"] == 1
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["readinessProbe"]["failureThreshold"] == 3
    assert "livenessProbe" not in c


def test_restricted_security_context_and_writable_tmp() -> None:
    dep = build_deployment(ms(), SETTINGS)
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert pod["automountServiceAccountToken"] is False


def test_prestop_pause_and_scrape_annotations() -> None:
    dep = build_deployment(ms(runtime={"port": 9000}), SETTINGS)
    c = container(dep)
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 5
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9000"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert c["ports"] == [
        {"name": "http", "containerPort": 9000, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8081, "protocol": "TCP"},
    ]


def test_env_follows_the_serving_contract() -> None:
    dep = build_deployment(
        ms(
            model={
                "name": "ranker",
                "version": "v7",
                "bandit": {"priorAlpha": 2.0, "priorBeta": 3.0, "maxItems": 500},
            },
            featureStore={
                "type": "redis",
                "redis": {"urlSecretRef": {"name": "redis-creds", "key": "uri"}},
            },
            runtime={"workers": 2, "env": [{"name": "LOG_LEVEL", "value": "debug"}]},
        ),
        SETTINGS,
    )
    values = env(dep)
    assert values["MLKUBE_MODEL_NAME"] == "ranker"
    assert values["MLKUBE_MODEL_VERSION"] == "v7"
    assert values["MLKUBE_MODEL_FORMAT"] == "bandit"
    assert values["MLKUBE_PORT"] == "8080"
    assert values["MLKUBE_GRPC_PORT"] == "8081"
    assert values["MLKUBE_WORKERS"] == "2"
    assert values["MLKUBE_BANDIT_PRIOR_ALPHA"] == "2.0"
    assert values["MLKUBE_BANDIT_PRIOR_BETA"] == "3.0"
    assert values["MLKUBE_MAX_ITEMS"] == "500"
    assert values["MLKUBE_FEATURE_STORE"] == "redis"
    # The Redis URL is never written into the Deployment: only a reference to the Secret.
    assert values["MLKUBE_REDIS_URL"] == {"secretKeyRef": {"name": "redis-creds", "key": "uri"}}
    assert values["MLKUBE_REVISION"] == dep["metadata"]["labels"]["mlkube.dev/revision"]
    assert values["LOG_LEVEL"] == "debug"


def test_custom_model_env() -> None:
    dep = build_deployment(
        ms(
            model={
                "name": "m",
                "version": "1",
                "format": "custom",
                "className": "pkg.mod:Model",
                "uri": "s3://b/m",
            }
        ),
        SETTINGS,
    )
    values = env(dep)
    assert values["MLKUBE_MODEL_CLASS"] == "pkg.mod:Model"
    assert values["MLKUBE_MODEL_URI"] == "s3://b/m"
    assert "MLKUBE_BANDIT_PRIOR_ALPHA" not in values


def test_scheduling_fields_reach_the_pod() -> None:
    pod = build_deployment(
        ms(
            nodeSelector={"pool": "gpu"},
            priorityClassName="inference",
            runtimeClassName="nvidia",
            serviceAccountName="model-sa",
            imagePullSecrets=[{"name": "regcred"}],
            podLabels={"team": "recs", "app.kubernetes.io/name": "mine"},
            podAnnotations={"note": "x"},
        ),
        SETTINGS,
    )["spec"]["template"]
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["priorityClassName"] == "inference"
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["serviceAccountName"] == "model-sa"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["labels"]["team"] == "recs"
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "mlkube-model"  # ours win
    assert pod["metadata"]["annotations"]["note"] == "x"


def test_revision_tracks_pod_content_not_replicas() -> None:
    base = compute_revision(ms().spec, "img:1")
    assert compute_revision(ms(replicas=7).spec, "img:1") == base
    assert compute_revision(ms().spec, "img:2") != base
    assert compute_revision(ms(model={"name": "ranker", "version": "v2"}).spec, "img:1") != base
    assert compute_revision(ms(gpu={"count": 1}).spec, "img:1") != base
    # the same spec in another ModelService is another revision (Prometheus tells them apart)
    assert compute_revision(ms().spec, "img:1", "staging/recs") != compute_revision(
        ms().spec, "img:1", "prod/recs"
    )
    assert len(base) == 10


def test_service_selects_every_track() -> None:
    svc = build_service(ms())
    assert svc["metadata"]["name"] == "recs"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {"mlkube.dev/modelservice": "recs"}
    assert svc["spec"]["ports"] == [
        {
            "name": "http",
            "port": 80,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        },
        {
            "name": "grpc",
            "port": 8081,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
    ]


def test_onnx_model_env_and_the_provider_following_the_gpu() -> None:
    model = {"name": "m", "version": "1", "format": "onnx", "path": "/models/m.onnx"}
    values = env(build_deployment(ms(model=model), SETTINGS))
    assert values["MLKUBE_MODEL_FORMAT"] == "onnx"
    assert values["MLKUBE_MODEL_PATH"] == "/models/m.onnx"
    assert values["MLKUBE_ONNX_PROVIDER"] == "cpu"
    assert values["MLKUBE_ONNX_GRAPH_OPTIMIZATION"] == "all"
    assert "MLKUBE_BATCHING" not in values
    assert "MLKUBE_BANDIT_PRIOR_ALPHA" not in values
    gpu = build_deployment(
        ms(
            model={**model, "onnx": {"graphOptimization": "basic", "intraOpThreads": 2}},
            gpu={"count": 1},
            batching={"maxBatchSize": 16, "maxLatency": "5ms"},
        ),
        SETTINGS,
    )
    values = env(gpu)
    assert values["MLKUBE_ONNX_PROVIDER"] == "cuda"
    assert values["MLKUBE_ONNX_GRAPH_OPTIMIZATION"] == "basic"
    assert values["MLKUBE_ONNX_INTRA_OP_THREADS"] == "2"
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    config = load_config({}, {k: v for k, v in values.items() if isinstance(v, str)})
    assert config.onnx.provider == "cuda"
    assert (config.batching.enabled, config.batching.max_batch_size) == (True, 16)
    assert config.batching.max_delay == 0.005
    # Another vendor's GPUs: no CUDA for onnxruntime there.
    amd = build_deployment(
        ms(model=model, gpu={"count": 1, "resourceName": "amd.com/gpu"}), SETTINGS
    )
    assert env(amd)["MLKUBE_ONNX_PROVIDER"] == "cpu"


def test_grpc_port_reaches_the_container_env_and_service() -> None:
    spec = ms(runtime={"port": 9000, "grpcPort": 9001})
    dep = build_deployment(spec, SETTINGS)
    ports = {p["name"]: p["containerPort"] for p in container(dep)["ports"]}
    assert ports == {"http": 9000, "grpc": 9001}
    assert env(dep)["MLKUBE_GRPC_PORT"] == "9001"
    # the Service keeps its shape (80 and 8081) and targets the pods' ports by name
    service_ports = {p["name"]: p for p in build_service(spec)["spec"]["ports"]}
    assert (service_ports["grpc"]["port"], service_ports["grpc"]["targetPort"]) == (8081, "grpc")
    assert service_ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    # a new gRPC port is new pod content: a new revision
    assert compute_revision(spec.spec, "img:1") != compute_revision(
        ms(runtime={"port": 9000, "grpcPort": 9002}).spec, "img:1"
    )


@pytest.mark.parametrize(
    "runtime", [{}, {"port": 9000, "grpcPort": 9001}, {"port": 8081, "grpcPort": 8080}]
)
def test_the_env_the_operator_writes_is_a_valid_runtime_config(runtime: dict[str, Any]) -> None:
    """The serving contract at its boundary: every MLKUBE_* variable the operator sets is
    one the runtime reads, and the runtime accepts the values (ports included)."""
    spec = ms(runtime=runtime)
    values = {k: v for k, v in env(build_deployment(spec, SETTINGS)).items() if isinstance(v, str)}
    mlkube_vars = {k for k in values if k.startswith("MLKUBE_")}
    assert mlkube_vars <= set(ENV_VARS)
    config = load_config({}, values)
    assert config.server.port == spec.spec.runtime.port
    assert config.server.grpc_port == spec.spec.runtime.grpc_port


@pytest.mark.parametrize(("replicas", "expected"), [(0, False), (1, False), (2, True), (10, True)])
def test_pdb_only_with_more_than_one_replica(replicas: int, expected: bool) -> None:
    pdb = build_pdb(ms(replicas=replicas))
    assert (pdb is not None) is expected
    if pdb is not None:
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"] == {"matchLabels": {"mlkube.dev/modelservice": "recs"}}


def test_desired_state_is_deterministic_and_ordered() -> None:
    first = desired_state(ms(replicas=2), SETTINGS)
    second = desired_state(ms(replicas=2), SETTINGS)
    assert first == second
    assert [o["kind"] for o in first.objects] == ["Service", "Deployment", "PodDisruptionBudget"]
    assert pod_selector("recs") == "mlkube.dev/modelservice=recs"


# ------------------------------------------------------------ models from a storage URI

SHA = "ab" * 32


def custom(**model: Any) -> dict[str, Any]:
    return {
        "name": "ranker",
        "version": "v1",
        "format": "custom",
        "className": "pkg.m:Model",
        **model,
    }


def pod_spec(dep: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = dep["spec"]["template"]["spec"]
    return result


def test_without_a_storage_uri_there_is_no_init_container_and_no_model_volume() -> None:
    spec = pod_spec(build_deployment(ms(), SETTINGS))
    assert "initContainers" not in spec
    assert [v["name"] for v in spec["volumes"]] == ["tmp"]
    assert "MLKUBE_STORAGE_URI" not in env(build_deployment(ms(), SETTINGS))


def test_an_https_model_is_fetched_into_an_empty_dir_the_server_reads() -> None:
    obj = ms(
        model=custom(
            storageUri="https://models.example.com/mlp/model.onnx", storage={"sha256": SHA}
        ),
        runtime={"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": 2}}},
        gpu={"count": 1},
    )
    dep = build_deployment(obj, SETTINGS)
    kubernetes_validate.validate(dep, "1.37", strict=True)
    spec = pod_spec(dep)
    (init,) = spec["initContainers"]
    assert init["name"] == "fetch-model"
    assert init["image"] == container(dep)["image"]  # the same image
    assert init["command"] == ["mlkube", "fetch"]
    assert init["args"] == [
        "--storage-uri", "https://models.example.com/mlp/model.onnx",
        "--dest", "/mnt/models",
        "--format", "custom",
        "--sha256", SHA,
    ]  # fmt: skip
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert "env" not in init  # no credentials for plain https
    # CPU and memory as the server (admission sees a sized container); never the GPU
    assert init["resources"] == {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}
    assert {"name": "model", "emptyDir": {}} in spec["volumes"]
    assert {"name": "model", "mountPath": "/mnt/models", "readOnly": False} in init["volumeMounts"]
    assert {"name": "model", "mountPath": "/mnt/models", "readOnly": True} in container(dep)[
        "volumeMounts"
    ]
    assert env(dep)["MLKUBE_STORAGE_URI"] == "/mnt/models/model.onnx"


def test_an_s3_model_reads_endpoint_region_and_credentials_from_the_named_secret() -> None:
    obj = ms(model=custom(storageUri="s3://models/mlp/", storage={"secretName": "s3-creds"}))
    dep = build_deployment(obj, SETTINGS)
    kubernetes_validate.validate(dep, "1.37", strict=True)
    (init,) = pod_spec(dep)["initContainers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"]}
    assert refs == {
        "AWS_ACCESS_KEY_ID": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"},
        "AWS_SECRET_ACCESS_KEY": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"},
        "AWS_SESSION_TOKEN": {"name": "s3-creds", "key": "AWS_SESSION_TOKEN", "optional": True},
        "AWS_ENDPOINT_URL": {"name": "s3-creds", "key": "AWS_ENDPOINT_URL", "optional": True},
        "AWS_REGION": {"name": "s3-creds", "key": "AWS_REGION", "optional": True},
    }
    # a prefix: the directory itself is the model
    assert env(dep)["MLKUBE_STORAGE_URI"] == "/mnt/models"
    # the credentials reach the init container only, never the model server
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env(dep))


def test_a_pvc_model_is_the_claim_mounted_read_only_and_checked_in_place() -> None:
    obj = ms(model=custom(storageUri="pvc://model-store/mlp/v3/model.onnx"))
    dep = build_deployment(obj, SETTINGS)
    kubernetes_validate.validate(dep, "1.37", strict=True)
    spec = pod_spec(dep)
    assert {
        "name": "model",
        "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True},
    } in spec["volumes"]
    (init,) = spec["initContainers"]
    assert {"name": "model", "mountPath": "/mnt/models", "readOnly": True} in init["volumeMounts"]
    assert init["args"][:2] == ["--storage-uri", "pvc://model-store/mlp/v3/model.onnx"]
    assert env(dep)["MLKUBE_STORAGE_URI"] == "/mnt/models/mlp/v3/model.onnx"


def test_the_runtime_takes_what_the_operator_sets() -> None:
    obj = ms(model=custom(storageUri="s3://models/mlp/model.onnx"))
    values = {k: v for k, v in env(build_deployment(obj, SETTINGS)).items() if k in ENV_VARS}
    config = load_config(env={k: v for k, v in values.items() if isinstance(v, str)})
    assert config.model.storage_uri == "/mnt/models/model.onnx"


def test_a_new_storage_uri_is_a_new_revision_and_goes_through_the_canary() -> None:
    """The URI, its checksum and its Secret are pod content: each change is a new revision,
    which the rollout then treats like any other (canary Deployment, analysis, promotion)."""
    from mlkube.operator.progressive import build_children, rollout_spec
    from mlkube.operator.rollout import RolloutTarget, Workload, next_step

    def with_model(**model: Any) -> ModelService:
        return ms(model=custom(**model), rollout={"steps": [25, 50]}, replicas=4)

    v1 = with_model(storageUri="s3://models/mlp/v1/model.onnx")
    revisions = {
        compute_revision(m.spec, "img:1", "ml/recs")
        for m in (
            v1,
            with_model(storageUri="s3://models/mlp/v2/model.onnx"),
            with_model(storageUri="s3://models/mlp/v1/model.onnx", storage={"sha256": SHA}),
            with_model(storageUri="s3://models/mlp/v1/model.onnx", storage={"secretName": "s"}),
            with_model(storageUri="pvc://models/mlp/v1/model.onnx"),
        )
    }
    assert len(revisions) == 5

    from datetime import UTC, datetime

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = next_step(
        RolloutTarget(rollout_spec(v1.spec), desired_state(v1, SETTINGS).revision, "v1"),
        None,
        None,
        t0,
    )
    v2 = with_model(storageUri="s3://models/mlp/v2/model.onnx")
    desired = desired_state(v2, SETTINGS)
    decision = next_step(
        RolloutTarget(rollout_spec(v2.spec), desired.revision, "v1"),
        first.status,
        None,
        t0,
        Workload(),
    )
    assert decision.canary_revision == desired.revision
    children = build_children(
        v2, SETTINGS, desired, decision, total=4, stable_spec=v1.spec.to_kube(), hpa=False
    )
    by_name = {o["metadata"]["name"]: o for o in children.objects if o["kind"] == "Deployment"}
    stable_init = pod_spec(by_name["recs"])["initContainers"][0]
    canary_init = pod_spec(by_name["recs-canary"])["initContainers"][0]
    assert stable_init["args"][1] == "s3://models/mlp/v1/model.onnx"
    assert canary_init["args"][1] == "s3://models/mlp/v2/model.onnx"
    assert by_name["recs-canary"]["spec"]["replicas"] == 1
