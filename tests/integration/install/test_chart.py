"""The Helm chart, through the real helm binary: lint, render, schema, Kubernetes schemas.

What a platform team runs in its pipeline before `helm install`: `helm lint --strict`,
`helm template` with their values, and an offline schema check of every manifest. Values
that make no sense must fail at `helm install` with a message naming the value.
"""

from __future__ import annotations

import filecmp
import subprocess
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mlkube.api.modelservice import ModelService
from mlkube.operator.builders import BuildSettings, build_deployment

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "mlkube"
Render = Callable[..., list[dict[str, Any]]]
HelmRun = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.slow

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the
# bundled schemas know: every manifest must be valid for both.
KUBE_VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())

# Non-default value sets: every template branch is rendered by at least one of them.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "ha-cluster-wide": {
        "operator": {
            "replicas": 3,
            "prometheusUrl": "http://prometheus-operated.monitoring.svc:9090",
            "logLevel": "debug",
            "logFormat": "text",
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
                }
            ],
            "podDisruptionBudget": {"minAvailable": 2},
            "priorityClassName": "system-cluster-critical",
            "extraEnv": [{"name": "EXTRA", "value": "1"}],
        },
        "metrics": {
            "service": {"enabled": True},
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        },
        "modelMetrics": {"podMonitor": {"enabled": True}},
    },
    "namespaced-peering": {
        "operator": {
            "watchNamespaces": ["team-a", "team-b"],
            "peering": {"enabled": True, "name": "ml-peers", "priority": 50},
            "defaultRuntimeImage": "registry.example.com/ml/mlkube:custom",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml"}],
        },
        "image": {"digest": "sha256:" + "a" * 64},
        "imagePullSecrets": ["regcred"],
        "metrics": {"podMonitor": {"enabled": True}},
        "modelMetrics": {"podMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "serviceAccount": {"annotations": {"iam.example.com/role": "mlkube"}},
        "commonLabels": {"team": "ml-platform"},
    },
    "no-rbac-no-service": {
        "rbac": {"create": False},
        "serviceAccount": {"create": False, "name": "existing"},
        "metrics": {"service": {"enabled": False}},
        "fullnameOverride": "mlk",
    },
}


def kinds(manifests: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


def of_kind(manifests: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def chart_meta() -> dict[str, Any]:
    meta: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    return meta


# ------------------------------------------------------------------------------ metadata


def test_chart_versions_follow_the_package_version(package_version: str) -> None:
    meta = chart_meta()
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == package_version
    assert meta["version"] == package_version


def test_chart_crds_are_the_top_level_crds() -> None:
    top, chart = REPO / "crds", CHART / "crds"
    top_files = sorted(p.name for p in top.glob("*.yaml"))
    assert top_files, "crds/ is empty"
    assert sorted(p.name for p in chart.glob("*.yaml")) == top_files, (
        "charts/mlkube/crds/ must hold exactly the files of crds/: run scripts/sync-chart-crds"
    )
    _, mismatch, errors = filecmp.cmpfiles(top, chart, top_files, shallow=False)
    assert mismatch + errors == [], "differ from crds/: run scripts/sync-chart-crds"


def test_values_yaml_documents_every_key() -> None:
    """Every value a user can set has a comment: directly above it, or above a parent key.

    `helm show values` is the chart's manual; an uncommented knob is an unexplained one.
    """
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    undocumented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        above = next((p.strip() for p in reversed(lines[:i]) if p.strip()), "")
        documented = above.startswith("#") or any(doc for _, doc in stack)
        is_leaf = not stripped.endswith(":")
        if is_leaf and not documented:
            undocumented.append(f"line {i + 1}: {stripped}")
        stack.append((indent, documented))
    assert undocumented == [], f"values without a comment: {undocumented}"


# ---------------------------------------------------------------------------------- lint


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict(helm_run: HelmRun, name: str) -> None:
    proc = helm_run("lint", "--strict", str(CHART), values=VALUE_SETS[name])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


# ------------------------------------------------------------------------------ validate


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every CRD the chart ships."""
    out = {}
    for path in (CHART / "crds").glob("*.yaml"):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not crd:
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_manifest_is_valid_kubernetes(render: Render, name: str) -> None:
    manifests = render(VALUE_SETS[name], include_crds=True)
    own = _crd_schemas()
    checked = 0
    for m in manifests:
        key = (m["apiVersion"], m["kind"])
        where = f"{m['kind']}/{m['metadata']['name']}"
        if m["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # no bundled schema; test_monitors_render_only_when_asked checks them
        if key in own:
            jsonschema.Draft4Validator(own[key]).validate(m)
            checked += 1
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(m, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{where} invalid for Kubernetes {version}: {exc.message} at {exc.path}"
                )
        checked += 1
    crds = [m for m in manifests if m["kind"] == "CustomResourceDefinition"]
    assert len(crds) == len(list((CHART / "crds").glob("*.yaml")))
    assert checked > len(crds)


def test_validation_catches_a_broken_manifest(render: Render) -> None:
    """The check above can fail: a typo'd field is refused in strict mode."""
    deployment = of_kind(render(), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


# ------------------------------------------------------------------------------- default


def test_default_render(render: Render, package_version: str) -> None:
    manifests = render()
    assert kinds(manifests) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    (deployment,) = of_kind(manifests, "Deployment")
    assert deployment["metadata"]["namespace"] == "mlkube-system"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"ghcr.io/mlkube/mlkube:{package_version}"
    assert container["args"] == ["operator"]
    env = env_of(container)
    assert env["MLKUBE_DEFAULT_IMAGE"] == f"ghcr.io/mlkube/mlkube:{package_version}"
    assert env["MLKUBE_WATCH_NAMESPACES"] == ""
    assert env["MLKUBE_PEERING"] == ""
    assert env["MLKUBE_LOG_LEVEL"] == "info"
    assert env["MLKUBE_LOG_FORMAT"] == "json"
    assert "MLKUBE_PEERING_PRIORITY" not in env
    # the operator serves /metrics by default, behind the metrics Service
    assert env["MLKUBE_METRICS_PORT"] == "8082"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "health": 8081,
        "metrics": 8082,
    }
    (service,) = of_kind(manifests, "Service")
    assert service["metadata"]["name"] == "mlkube-operator-metrics"
    assert not of_kind(manifests, "ServiceMonitor")
    assert not of_kind(manifests, "PodMonitor")


def test_without_a_scraper_the_operator_opens_no_metrics_port(render: Render) -> None:
    manifests = render({"metrics": {"service": {"enabled": False}}})
    (deployment,) = of_kind(manifests, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["MLKUBE_METRICS_PORT"] == "0"
    assert [p["name"] for p in container["ports"]] == ["health"]
    assert not of_kind(manifests, "Service")


def test_metrics_service_selects_the_operator_pods(render: Render) -> None:
    manifests = render({"metrics": {"service": {"enabled": True}}})
    (deployment,) = of_kind(manifests, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["MLKUBE_METRICS_PORT"] == "8082"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "health": 8081,
        "metrics": 8082,
    }
    (service,) = of_kind(manifests, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert set(service["spec"]["selector"].items()) <= set(pod_labels.items())
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8082, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_configuration_reaches_the_operator(render: Render) -> None:
    manifests = render(
        {
            "operator": {
                "prometheusUrl": "http://prom.monitoring:9090",
                "defaultRuntimeImage": "registry.example.com/mlkube:2",
                "logLevel": "warning",
                "logFormat": "text",
                "watchNamespaces": ["a", "b"],
                "extraArgs": ["--verbose"],
                "runtimeImagePullPolicy": "Always",
                "reconcileInterval": 30,
                "gpuMetricLabels": "exported_namespace:exported_pod",
            },
            "image": {"repository": "registry.example.com/mlkube", "tag": "1.2.3"},
        }
    )
    (deployment,) = of_kind(manifests, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/mlkube:1.2.3"
    assert container["args"] == ["operator", "--verbose"]
    env = env_of(container)
    assert env["MLKUBE_PROMETHEUS_URL"] == "http://prom.monitoring:9090"
    assert env["MLKUBE_DEFAULT_IMAGE"] == "registry.example.com/mlkube:2"
    assert env["MLKUBE_LOG_LEVEL"] == "warning"
    assert env["MLKUBE_LOG_FORMAT"] == "text"
    assert env["MLKUBE_WATCH_NAMESPACES"] == "a,b"
    assert env["MLKUBE_IMAGE_PULL_POLICY"] == "Always"
    assert env["MLKUBE_RECONCILE_INTERVAL"] == "30"
    assert env["MLKUBE_GPU_METRIC_LABELS"] == "exported_namespace:exported_pod"


def test_digest_pins_operator_and_model_images(render: Render) -> None:
    digest = "sha256:" + "0" * 64
    (deployment,) = of_kind(render({"image": {"digest": digest, "tag": "ignored"}}), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/mlkube/mlkube@{digest}"
    assert env_of(container)["MLKUBE_DEFAULT_IMAGE"] == f"ghcr.io/mlkube/mlkube@{digest}"


# ------------------------------------------------------------------------ HA and peering


def test_replicas_become_peered_instances_with_distinct_priorities(render: Render) -> None:
    manifests = render({"operator": {"replicas": 3}})
    deployments = of_kind(manifests, "Deployment")
    assert [d["metadata"]["name"] for d in deployments] == [
        "mlkube-operator",
        "mlkube-operator-standby-1",
        "mlkube-operator-standby-2",
    ]
    envs = [env_of(d["spec"]["template"]["spec"]["containers"][0]) for d in deployments]
    assert {e["MLKUBE_PEERING"] for e in envs} == {"mlkube"}
    assert [e["MLKUBE_PEERING_PRIORITY"] for e in envs] == ["100", "99", "98"]
    assert all(e["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}} for e in envs)
    for d in deployments:
        assert d["spec"]["replicas"] == 1
        assert d["spec"]["strategy"] == {"type": "Recreate"}
    # selectors do not overlap: each Deployment owns exactly its own pod
    selectors = [tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in deployments]
    assert len(set(selectors)) == 3

    (peering,) = of_kind(manifests, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "mlkube"
    (pdb,) = of_kind(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = deployments[1]["spec"]["template"]["metadata"]["labels"]
    assert set(pdb["spec"]["selector"]["matchLabels"].items()) <= set(pod_labels.items())


def test_single_replica_has_no_pdb_and_no_peering(render: Render) -> None:
    manifests = render({"operator": {"replicas": 1}})
    assert not of_kind(manifests, "PodDisruptionBudget")
    assert not of_kind(manifests, "ClusterKopfPeering")
    assert not of_kind(manifests, "KopfPeering")


def test_namespaced_peering_objects_live_in_the_watched_namespaces(render: Render) -> None:
    manifests = render(VALUE_SETS["namespaced-peering"])
    peerings = of_kind(manifests, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("team-a", "ml-peers"),
        ("team-b", "ml-peers"),
    ]
    assert not of_kind(manifests, "ClusterKopfPeering")
    (deployment,) = of_kind(manifests, "Deployment")
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env["MLKUBE_PEERING"] == "ml-peers"
    assert env["MLKUBE_PEERING_PRIORITY"] == "50"


# ----------------------------------------------------------------------------- monitors


def test_monitors_render_only_when_asked(render: Render) -> None:
    assert not [m for m in render() if m["apiVersion"].startswith("monitoring.coreos.com/")]
    manifests = render(
        {
            "metrics": {
                "service": {"enabled": True},
                "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "podMonitor": {"enabled": True, "interval": "15s"},
            }
        }
    )
    (service,) = of_kind(manifests, "Service")
    (sm,) = of_kind(manifests, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert set(sm["spec"]["selector"]["matchLabels"].items()) <= set(
        service["metadata"]["labels"].items()
    )
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["mlkube-system"]}
    assert sm["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    (pm,) = of_kind(manifests, "PodMonitor")
    (deployment,) = of_kind(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert set(pm["spec"]["selector"]["matchLabels"].items()) <= set(pod_labels.items())
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pm["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"


def test_model_pod_monitor_selects_the_pods_the_operator_builds(render: Render) -> None:
    """The PodMonitor for model pods matches a Deployment's pod template as the operator
    builds it: the label it selects on, the port by name, the metrics path."""
    ms = ModelService.model_validate(
        {
            "metadata": {"name": "recs", "namespace": "team-a", "uid": "u", "generation": 1},
            "spec": {"model": {"name": "ranker", "version": "v1"}},
        }
    )
    template = build_deployment(ms, BuildSettings(default_image="x:1"))["spec"]["template"]
    (pm,) = [
        m
        for m in render({"modelMetrics": {"podMonitor": {"enabled": True, "interval": "5s"}}})
        if m["kind"] == "PodMonitor"
    ]
    assert pm["metadata"]["name"].endswith("-models")
    (expr,) = pm["spec"]["selector"]["matchExpressions"]
    assert expr["operator"] == "Exists"
    assert expr["key"] in template["metadata"]["labels"]
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    ports = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
    assert endpoint["port"] in ports
    assert endpoint["path"] == template["metadata"]["annotations"]["prometheus.io/path"]
    assert endpoint["interval"] == "5s"
    scoped = render(
        {
            "modelMetrics": {"podMonitor": {"enabled": True}},
            "operator": {"watchNamespaces": ["team-a"]},
        }
    )
    (pm,) = [m for m in scoped if m["kind"] == "PodMonitor"]
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


# --------------------------------------------------------------------- Pod Security


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The Pod Security Standards' "restricted" profile, checked field by field.

    Follows the published profile (kubernetes.io/docs/concepts/security/pod-security-standards):
    baseline (no host namespaces, no privileged, no hostPath, no host ports, default /proc
    mount, no unsafe sysctls) plus restricted (allowed volume types, runAsNonRoot, no
    privilege escalation, seccomp RuntimeDefault or Localhost, drop ALL capabilities and
    add at most NET_BIND_SERVICE, non-root user id).
    """
    bad: list[str] = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key) is True:
            bad.append(f"pod.{key}")
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod.get("volumes", []):
        kinds_ = set(volume) - {"name"}
        if not kinds_ <= allowed_volumes:
            bad.append(f"volume {volume['name']}: {sorted(kinds_)}")
    psc = pod.get("securityContext", {})
    for sysctl in psc.get("sysctls", []):
        bad.append(f"sysctl {sysctl['name']}")
    if psc.get("runAsUser") == 0:
        bad.append("pod.runAsUser 0")
    pod_seccomp = psc.get("seccompProfile", {}).get("type")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            bad.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                bad.append(f"{name}: hostPort {port['hostPort']}")
    return bad


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_operator_pods_meet_the_restricted_pod_security_profile(render: Render, name: str) -> None:
    for deployment in of_kind(render(VALUE_SETS[name]), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert restricted_violations(pod) == []
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts  # the only place the operator writes


def test_restricted_check_can_fail(render: Render) -> None:
    (deployment,) = of_kind(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["hostNetwork"] = True
    assert len(restricted_violations(pod)) == 2


# -------------------------------------------------------------------- schema rejections


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"logLevel": "verbose"}}, "/operator/logLevel"),
        ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
        ({"operator": {"replicas": 0}}, "/operator/replicas"),
        ({"operator": {"replicas": "2"}}, "/operator/replicas"),
        ({"operator": {"watchNamespaces": ["Team_A"]}}, "/operator/watchNamespaces/0"),
        ({"operator": {"watchNamespaces": "team-a"}}, "/operator/watchNamespaces"),
        ({"operator": {"prometheusUrl": "prometheus:9090"}}, "/operator/prometheusUrl"),
        ({"operator": {"gpuMetricLabels": "exported-pod"}}, "/operator/gpuMetricLabels"),
        ({"operator": {"replica": 2}}, "'replica' not allowed"),
        ({"operator": {"reconcileInterval": 1}}, "/operator/reconcileInterval"),
        ({"operator": {"runtimeImagePullPolicy": "Sometimes"}}, "/operator/runtimeImagePullPolicy"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"image": {"digest": "sha256:abc"}}, "/image/digest"),
        (
            {"metrics": {"serviceMonitor": {"interval": "often"}}},
            "/metrics/serviceMonitor/interval",
        ),
        ({"imagePullSecrets": [{"name": "x"}]}, "/imagePullSecrets/0"),
    ],
)
def test_schema_rejects_bad_values_with_a_message(
    helm_run: HelmRun, values: dict[str, Any], message: str
) -> None:
    proc = helm_run("template", "x", str(CHART), values=values)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"operator": {"replicas": 2, "podDisruptionBudget": {"minAvailable": 2}}},
            "must be less than operator.replicas",
        ),
        ({"operator": {"metricsPort": 8081}}, "liveness endpoint"),
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "needs metrics.service.enabled",
        ),
    ],
)
def test_contradictory_values_fail_with_a_message(
    helm_run: HelmRun, values: dict[str, Any], message: str
) -> None:
    proc = helm_run("template", "x", str(CHART), values=values)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------- NOTES


def test_notes_tell_the_next_step(helm_run: HelmRun) -> None:
    proc = helm_run(
        "install",
        "ml",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        "ops",
        values={"operator": {"watchNamespaces": ["models"]}},
    )
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n ops logs deploy/ml-mlkube-operator" in notes
    assert "kubectl apply -n models -f -" in notes
    assert "operator.prometheusUrl is empty" in notes
    # the ModelService the notes suggest is one the CRD accepts
    example = yaml.safe_load(notes.split("<<'YAML'\n", 1)[1].split("YAML\n", 1)[0])
    schema = _crd_schemas()[("mlkube.dev/v1alpha1", "ModelService")]
    jsonschema.Draft4Validator(schema).validate(example)


def test_chart_packages_with_its_crds_and_schema(
    helm_run: HelmRun, tmp_path: Path, package_version: str
) -> None:
    """What a chart repository serves: `helm package` keeps crds/, the schema and NOTES."""
    proc = helm_run("package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    archive = tmp_path / f"mlkube-{package_version}.tgz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    expected = {f"mlkube/crds/{p.name}" for p in (REPO / "crds").glob("*.yaml")} | {
        "mlkube/values.schema.json",
        "mlkube/templates/NOTES.txt",
        "mlkube/Chart.yaml",
    }
    assert expected <= names


def test_chart_refuses_clusters_older_than_its_kube_version(helm_run: HelmRun) -> None:
    """CEL rules in the CRDs need 1.28+: an older cluster is refused before anything runs."""
    old = helm_run("template", "x", str(CHART), "--kube-version", "1.27.9")
    assert old.returncode != 0
    assert "requires kubeVersion: >=1.28.0-0" in old.stderr, old.stderr
    assert helm_run("template", "x", str(CHART), "--kube-version", "1.28.0").returncode == 0


class _Recording(dict[str, str]):
    """An environment that remembers which variables were read."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_operator_understands_the_charts_configuration(render: Render, name: str) -> None:
    """The rendered environment, parsed by the operator's own parse_config, means what the
    values said; every MLKUBE_ variable the chart sets is one the operator reads."""
    from mlkube.operator.config import parse_config

    values = VALUE_SETS[name]
    op_values = values.get("operator", {})
    priorities = []
    for deployment in of_kind(render(values), "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = _Recording({k: v for k, v in env_of(container).items() if isinstance(v, str)})
        config = parse_config([a for a in container["args"] if a != "operator"], env)
        assert config.namespaces == tuple(op_values.get("watchNamespaces", []))
        assert config.prometheus_url == (op_values.get("prometheusUrl") or None)
        labels = op_values.get("gpuMetricLabels", "namespace:pod,exported_namespace:exported_pod")
        assert ",".join(str(m) for m in config.gpu_metric_labels) == labels
        assert config.log_level == op_values.get("logLevel", "info").upper()
        assert config.log_format == op_values.get("logFormat", "json")
        assert config.default_image == env["MLKUBE_DEFAULT_IMAGE"]
        peering = op_values.get("peering", {})
        if op_values.get("replicas", 1) > 1 or peering.get("enabled"):
            assert config.peering == peering.get("name", "mlkube")
            assert config.peering_lifetime == peering.get("lifetime", 60)
            priorities.append(config.peering_priority)
        else:
            assert config.standalone
        assert config.health_port == 8081  # the port the liveness probe calls
        metrics = values.get("metrics", {})
        scraped = metrics.get("service", {}).get("enabled", True) or metrics.get(
            "podMonitor", {}
        ).get("enabled", False)
        assert config.metrics_port == (op_values.get("metricsPort", 8082) if scraped else 0)
        ignored = {k for k in env if k.startswith("MLKUBE_")} - env.read
        assert not ignored, f"the operator ignores {sorted(ignored)}"
    # kopf pauses every instance that sees a live peer of equal priority: one each, the
    # first instance highest.
    top = peering.get("priority", 100)
    assert sorted(priorities, reverse=True) == [top - i for i in range(len(priorities))]
