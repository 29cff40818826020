"""Configuration of the serving runtime: one pydantic model, three sources.

Precedence (last wins): built-in defaults < ``--config FILE`` (YAML or JSON) < ``MLKUBE_*``
environment variables < command-line flags. Everything is validated once, in the master
process, before any worker starts: a bad value stops ``mlkube serve`` with a message that
names the field (and the variable or file it came from) instead of a crash loop later.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from mlkube.serving.cpulimit import CpuBudget
from mlkube.serving.cpulimit import detect as detect_cpu_budget

MODEL_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
"""A Kubernetes label value's characters (the length is the field's own constraint);
ModelService.spec.model.name takes this very pattern."""
_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_CLASS_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    """HTTP server and process settings."""

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    # None: one worker per CPU this process may use (cores, capped by its cgroup CPU quota).
    workers: int | None = Field(default=None, ge=1, le=256)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # After SIGTERM: keep serving (readiness already false) for drain_seconds so load
    # balancers notice, then stop accepting and give in-flight requests grace_seconds.
    drain_seconds: float = Field(default=0.0, ge=0, le=300)
    grace_seconds: float = Field(default=20.0, gt=0, le=3600)
    # Fraction of requests written to the access log (0 = none; the default because a
    # log line costs about half of the per-request CPU budget).
    access_log_sample_rate: float = Field(default=0.0, ge=0, le=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    backlog: int = Field(default=1024, ge=16, le=65535)
    # From a request's first byte, its headers must be complete within this (else 408).
    header_timeout: float = Field(default=30.0, gt=0, le=3600)
    # Once the headers are in, the whole body must arrive within this (else 408).
    body_timeout: float = Field(default=60.0, gt=0, le=3600)
    # A keep-alive connection with no request for this long is closed (longer than the
    # idle timeout of the load balancers in front, so that they close first).
    keepalive_timeout: float = Field(default=75.0, gt=0, le=3600)
    # Open connections one worker holds; beyond it new ones get 503 and are closed.
    max_connections: int = Field(default=10_000, ge=1, le=1_000_000)
    # Answers per keep-alive connection before `Connection: close` (0 = no limit), so that
    # long-lived clients spread over the workers again (after a worker restarts, say).
    max_requests_per_connection: int = Field(default=1000, ge=0)
    # OIP v2 over gRPC (grpc.health.v1 too) in every worker; 0 turns it off. 8081 is
    # KServe's gRPC port next to its REST 8080.
    grpc_port: int = Field(default=8081, ge=0, le=65535)

    @model_validator(mode="after")
    def _grpc_port_apart(self) -> ServerConfig:
        if self.grpc_port == self.port:
            raise ValueError(
                f"server.grpc_port must differ from server.port ({self.port}); 0 turns gRPC off"
            )
        return self


class ModelConfig(_Strict):
    """Which model this server runs."""

    name: str = Field(default="bandit", min_length=1, max_length=63)
    version: str = Field(default="1", min_length=1, max_length=63)
    format: Literal["bandit", "custom", "onnx"] = "bandit"
    # module:Class of a user model (format custom).
    class_path: str | None = Field(default=None, alias="class")
    uri: str | None = None
    # The model file on this machine (format onnx): a file in the image or on a volume.
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    # Where the model's file (or directory) is: a local path, or a pvc:// (mounted under
    # /mnt/models), http(s):// or s3:// URI that `mlkube serve` fetches before the workers
    # start. In a ModelService's pods the operator sets the local path its init container
    # filled (docs/storage.md).
    storage_uri: str | None = Field(default=None, min_length=1, max_length=2048)
    parameters: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("storage_uri")
    @classmethod
    def _check_storage_uri(cls, value: str | None) -> str | None:
        if value is not None:
            from mlkube.storage.uri import StorageURIError, parse

            try:
                parse(value)
            except StorageURIError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                "must be letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if "/" in value:
            raise ValueError("must not contain '/'")
        return value

    @field_validator("class_path")
    @classmethod
    def _check_class(cls, value: str | None) -> str | None:
        if value is not None and not _CLASS_RE.match(value):
            raise ValueError("must look like 'package.module:ClassName'")
        return value

    @model_validator(mode="after")
    def _custom_needs_class(self) -> ModelConfig:
        if self.format == "custom" and self.class_path is None:
            raise ValueError("model.class is required when model.format is 'custom'")
        if self.format == "onnx" and self.path is None and self.storage_uri is None:
            raise ValueError(
                "model.path (the .onnx file) or model.storage_uri is required when "
                "model.format is 'onnx'"
            )
        return self


class BanditConfig(_Strict):
    """Thompson-sampling bandit settings."""

    prior_alpha: float = Field(default=1.0, gt=0, le=1e9)
    prior_beta: float = Field(default=1.0, gt=0, le=1e9)
    max_items: int = Field(default=10_000, ge=1, le=1_000_000)
    max_item_id_length: int = Field(default=256, ge=1, le=4096)
    default_segment: str = "default"
    # Segments read before the server reports ready (the default segment always is).
    preload_segments: tuple[str, ...] = ()
    # Distinct segments one worker keeps a snapshot of; further ones are read per request.
    max_segments: int = Field(default=1024, ge=1)
    # Items one segment's snapshot may hold (items with feedback plus items seen in requests).
    max_snapshot_items: int = Field(default=5_000_000, ge=1)
    seed: int | None = Field(default=None, ge=0)
    # Answer plain requests through the C request path (native/score.h); other requests, and
    # every request when this is off, take the Python path. Same answers either way.
    native_path: bool = True


class FeatureStoreConfig(_Strict):
    """Where the bandit's counts live and how often each worker re-reads them."""

    kind: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="mlkube", min_length=1, max_length=64)
    refresh_interval: float = Field(default=0.5, gt=0, le=3600)
    # A prediction made from a snapshot older than this is marked degraded.
    max_staleness: float = Field(default=5.0, gt=0)
    timeout: float = Field(default=0.5, gt=0, le=60)
    idempotency_ttl: int = Field(default=86_400, ge=1)
    circuit_failure_threshold: int = Field(default=3, ge=1)
    circuit_reset_timeout: float = Field(default=1.0, gt=0, le=600)

    @field_validator("redis_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _staleness_above_interval(self) -> FeatureStoreConfig:
        if self.max_staleness <= self.refresh_interval:
            raise ValueError(
                "feature_store.max_staleness must be greater than feature_store.refresh_interval"
            )
        return self


class OnnxConfig(_Strict):
    """ONNX Runtime session settings (format onnx)."""

    # Threads one inference may use; None: the CPUs this process may use (cores, capped by
    # the cgroup quota: the pod's CPU limit) divided by the worker processes, at least 1.
    intra_op_threads: int | None = Field(default=None, ge=1, le=256)
    # Threads running independent graph branches at once (1: one branch after another).
    inter_op_threads: int = Field(default=1, ge=1, le=256)
    # ONNX Runtime's graph optimisation level (ORT_DISABLE_ALL .. ORT_ENABLE_ALL).
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"
    # Execution provider: auto (CUDA when onnxruntime has it and a GPU is visible, else
    # CPU), cpu, or cuda (falls back to CPU, reported, when onnxruntime has no CUDA).
    provider: Literal["auto", "cpu", "cuda"] = "auto"


class BatchingConfig(_Strict):
    """Dynamic batching of predict calls (off by default: it does not pay for the bandit;
    for ONNX models requests merge along the batch dimension)."""

    enabled: bool = False
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_delay: float = Field(default=0.001, ge=0, le=1)


class ShadowConfig(_Strict):
    """Copies of real requests to the canary (set on stable pods by the operator)."""

    # Base URL of the canary revision's Service; empty: no shadow traffic.
    url: str = ""
    fraction: float = Field(default=0.0, ge=0, le=1)
    # Copies waiting to be sent, per worker; more are dropped (and counted), never waited for.
    queue_size: int = Field(default=256, ge=1, le=65536)
    concurrency: int = Field(default=4, ge=1, le=256)
    timeout: float = Field(default=2.0, gt=0, le=60)
    # The ranking overlap compares the top k of both answers.
    top_k: int = Field(default=10, ge=1, le=10_000)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value and not value.startswith("http://"):
            raise ValueError("must start with http:// (copies go to a cluster Service, no TLS)")
        return value


class ServeConfig(_Strict):
    """Everything `mlkube serve` needs."""

    server: ServerConfig = ServerConfig()
    model: ModelConfig = ModelConfig()
    bandit: BanditConfig = BanditConfig()
    feature_store: FeatureStoreConfig = FeatureStoreConfig()
    batching: BatchingConfig = BatchingConfig()
    onnx: OnnxConfig = OnnxConfig()
    shadow: ShadowConfig = ShadowConfig()
    # Revision hash the operator stamps on the pod; a constant label on every metric.
    revision: str = ""
    # Seconds after scoring within which feedback is credited to the revision that scored
    # (the ticket's age); later feedback is still learned from but counted as expired.
    feedback_window: float = Field(default=3600.0, gt=0, le=7 * 86_400)


# environment variable -> path in the configuration tree
ENV_VARS: dict[str, tuple[str, ...]] = {
    "MLKUBE_HOST": ("server", "host"),
    "MLKUBE_PORT": ("server", "port"),
    "MLKUBE_GRPC_PORT": ("server", "grpc_port"),
    "MLKUBE_WORKERS": ("server", "workers"),
    "MLKUBE_MAX_BODY_BYTES": ("server", "max_body_bytes"),
    "MLKUBE_DRAIN_SECONDS": ("server", "drain_seconds"),
    "MLKUBE_GRACE_SECONDS": ("server", "grace_seconds"),
    "MLKUBE_HEADER_TIMEOUT": ("server", "header_timeout"),
    "MLKUBE_BODY_TIMEOUT": ("server", "body_timeout"),
    "MLKUBE_MAX_CONNECTIONS": ("server", "max_connections"),
    "MLKUBE_KEEPALIVE_TIMEOUT": ("server", "keepalive_timeout"),
    "MLKUBE_MAX_REQUESTS_PER_CONNECTION": ("server", "max_requests_per_connection"),
    "MLKUBE_ACCESS_LOG_SAMPLE_RATE": ("server", "access_log_sample_rate"),
    "MLKUBE_LOG_LEVEL": ("server", "log_level"),
    "MLKUBE_LOG_FORMAT": ("server", "log_format"),
    "MLKUBE_MODEL_NAME": ("model", "name"),
    "MLKUBE_MODEL_VERSION": ("model", "version"),
    "MLKUBE_MODEL_FORMAT": ("model", "format"),
    "MLKUBE_MODEL_CLASS": ("model", "class"),
    "MLKUBE_MODEL_URI": ("model", "uri"),
    "MLKUBE_MODEL_PATH": ("model", "path"),
    "MLKUBE_ONNX_INTRA_OP_THREADS": ("onnx", "intra_op_threads"),
    "MLKUBE_ONNX_INTER_OP_THREADS": ("onnx", "inter_op_threads"),
    "MLKUBE_ONNX_GRAPH_OPTIMIZATION": ("onnx", "graph_optimization"),
    "MLKUBE_ONNX_PROVIDER": ("onnx", "provider"),
    "MLKUBE_STORAGE_URI": ("model", "storage_uri"),
    "MLKUBE_REVISION": ("revision",),
    "MLKUBE_FEEDBACK_WINDOW": ("feedback_window",),
    "MLKUBE_FEATURE_STORE": ("feature_store", "kind"),
    "MLKUBE_REDIS_URL": ("feature_store", "redis_url"),
    "MLKUBE_REDIS_KEY_PREFIX": ("feature_store", "key_prefix"),
    "MLKUBE_REDIS_TIMEOUT": ("feature_store", "timeout"),
    "MLKUBE_REFRESH_INTERVAL": ("feature_store", "refresh_interval"),
    "MLKUBE_MAX_STALENESS": ("feature_store", "max_staleness"),
    "MLKUBE_BANDIT_PRIOR_ALPHA": ("bandit", "prior_alpha"),
    "MLKUBE_BANDIT_PRIOR_BETA": ("bandit", "prior_beta"),
    "MLKUBE_BANDIT_SEED": ("bandit", "seed"),
    "MLKUBE_MAX_ITEMS": ("bandit", "max_items"),
    "MLKUBE_NATIVE_PATH": ("bandit", "native_path"),
    "MLKUBE_BATCHING": ("batching", "enabled"),
    "MLKUBE_BATCH_MAX_SIZE": ("batching", "max_batch_size"),
    "MLKUBE_BATCH_MAX_DELAY": ("batching", "max_delay"),
    "MLKUBE_SHADOW_URL": ("shadow", "url"),
    "MLKUBE_SHADOW_FRACTION": ("shadow", "fraction"),
    "MLKUBE_SHADOW_QUEUE_SIZE": ("shadow", "queue_size"),
}

_ENV_BY_PATH = {path: var for var, path in ENV_VARS.items()}
if len(_ENV_BY_PATH) != len(ENV_VARS):  # pragma: no cover - a typo in ENV_VARS
    raise RuntimeError("ENV_VARS: two variables set one field")

BOUND_KINDS = ("gt", "ge", "lt", "le", "min_length", "max_length")
"""The constraints ``field_bounds`` reports (annotated-types names, as ``Field`` takes them)."""


def env_name(path: tuple[str, ...]) -> str:
    """The ``MLKUBE_*`` variable that sets ``path`` (``("bandit", "max_items")``).

    The operator writes pod env with these names and the API reserves them, so a name is
    typed once, in ``ENV_VARS``; an unknown path is a ``KeyError`` at import time of the
    caller, not a variable the runtime silently ignores.
    """
    return _ENV_BY_PATH[path]


def field_info(path: tuple[str, ...]) -> FieldInfo:
    """The pydantic field of ``ServeConfig`` at ``path`` (aliases such as ``class`` work)."""
    model: type[BaseModel] = ServeConfig
    info: FieldInfo | None = None
    for key in path:
        if info is not None:
            if not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)):
                raise KeyError(path)
            model = info.annotation
        fields = model.model_fields
        info = fields.get(key) or next((f for f in fields.values() if f.alias == key), None)
        if info is None:
            raise KeyError(path)
    if info is None:
        raise KeyError(path)
    return info


def field_bounds(path: tuple[str, ...]) -> dict[str, Any]:
    """The numeric and length constraints of one runtime field, as ``Field`` keywords.

    Read from the field's metadata rather than retyped, so that the API's schema (which
    must never accept what the runtime refuses) follows the runtime when it changes.
    """
    out: dict[str, Any] = {}
    for item in field_info(path).metadata:
        for kind in BOUND_KINDS:
            value = getattr(item, kind, None)
            if value is not None:
                out[kind] = value
    return out


def field_choices(path: tuple[str, ...]) -> tuple[Any, ...] | None:
    """The values a ``Literal`` field allows (``None`` if it is not a ``Literal``)."""
    annotation = field_info(path).annotation
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return None


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the field and its source."""


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML or JSON file into a mapping (JSON is YAML, but its errors read better)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {file}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {file}: not valid YAML/JSON: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {file}: the top level must be a mapping")
    return data


def _format_errors(exc: ValidationError, sources: Mapping[tuple[str, ...], str]) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        field = ".".join(loc) or "config"
        source = next(
            (src for path, src in sources.items() if loc[: len(path)] == path),
            None,
        )
        where = f" (from {source})" if source else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{field}{where}: {message}")
    return "invalid configuration: " + "; ".join(lines)


def load_config(
    file_data: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
    *,
    file_name: str = "config file",
) -> ServeConfig:
    """Merge the sources and validate; pure (the caller reads the file and the environment)."""
    tree: dict[str, Any] = json.loads(json.dumps(dict(file_data or {})))
    sources: dict[tuple[str, ...], str] = {}
    env_sources: dict[tuple[str, ...], str] = {}
    for var, path in ENV_VARS.items():
        if env is not None and var in env:
            raw = env[var]
            if raw.strip() == "":
                # An empty variable (a Kubernetes manifest's `value: ""`) means "not set".
                continue
            value: Any = raw
            if var == "MLKUBE_WORKERS" and raw.strip().lower() == "auto":
                value = None
            _set_path(tree, path, value)
            env_sources[path] = var
    for path, value in (overrides or {}).items():
        _set_path(tree, path, value)
        sources[path] = "command line"
    for path, var in env_sources.items():
        sources.setdefault(path, var)
    for key in tree:
        sources.setdefault((key,), file_name)
    try:
        return ServeConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, sources)) from exc


def effective_workers(config: ServeConfig, budget: CpuBudget | None = None) -> tuple[int, str]:
    """Worker processes to start, and why: the configured number, else one per CPU this
    process may use (its cores, capped by its cgroup's CPU quota: a pod's CPU limit)."""
    if config.server.workers is not None:
        return config.server.workers, "server.workers"
    budget = budget if budget is not None else detect_cpu_budget()
    if budget.limit is not None and budget.limit < budget.cores:
        return budget.workers, f"CPU limit {budget.limit:g} (cgroup quota; {budget.cores} cores)"
    return budget.workers, f"{budget.cores} cores"
