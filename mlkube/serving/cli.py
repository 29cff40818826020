"""`mlkube serve`: validate the configuration, prepare metrics, start the workers.

Order matters: ``PROMETHEUS_MULTIPROC_DIR`` must be in the environment before anything
imports prometheus_client (it picks its value storage at import time), so the runtime is
imported only after the directory is set up.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlkube.serving.config import (
    ConfigError,
    ServeConfig,
    effective_workers,
    load_config,
    read_config_file,
)
from mlkube.storage.fetch import FetchError

log = logging.getLogger("mlkube.serving")

_FLAGS: dict[str, tuple[str, ...]] = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "grpc_port": ("server", "grpc_port"),
    "workers": ("server", "workers"),
    "model_name": ("model", "name"),
    "model_version": ("model", "version"),
    "model_format": ("model", "format"),
    "model_class": ("model", "class"),
    "model_path": ("model", "path"),
    "onnx_graph_optimization": ("onnx", "graph_optimization"),
    "onnx_provider": ("onnx", "provider"),
    "onnx_intra_op_threads": ("onnx", "intra_op_threads"),
    "batching": ("batching", "enabled"),
    "batch_max_size": ("batching", "max_batch_size"),
    "batch_max_delay": ("batching", "max_delay"),
    "storage_uri": ("model", "storage_uri"),
    "feature_store": ("feature_store", "kind"),
    "redis_url": ("feature_store", "redis_url"),
    "log_level": ("server", "log_level"),
    "log_format": ("server", "log_format"),
    "access_log_sample_rate": ("server", "access_log_sample_rate"),
    "drain_seconds": ("server", "drain_seconds"),
    "grace_seconds": ("server", "grace_seconds"),
    "header_timeout": ("server", "header_timeout"),
    "body_timeout": ("server", "body_timeout"),
    "max_connections": ("server", "max_connections"),
    "max_requests_per_connection": ("server", "max_requests_per_connection"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlkube serve",
        description="Run the mlkube model server (OIP v2 + KServe v1) on this machine.",
        epilog="Every option can also be set with MLKUBE_* variables; see docs/serving.md.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML or JSON configuration file")
    p.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument(
        "--grpc-port", type=int, help="port of the OIP v2 gRPC endpoint (default 8081; 0: off)"
    )
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument("--model-name")
    p.add_argument("--model-version")
    p.add_argument("--model-format", choices=["bandit", "custom", "onnx"])
    p.add_argument("--model-class", metavar="MODULE:CLASS")
    p.add_argument("--model-path", metavar="FILE", help="the model file (format onnx)")
    p.add_argument(
        "--onnx-graph-optimization",
        choices=["disabled", "basic", "extended", "all"],
        help="ONNX Runtime graph optimisation level (default all)",
    )
    p.add_argument(
        "--onnx-provider",
        choices=["auto", "cpu", "cuda"],
        help="execution provider (default auto: CUDA when available and a GPU is visible)",
    )
    p.add_argument(
        "--onnx-intra-op-threads",
        type=int,
        metavar="N",
        help="threads per inference (default: the CPU limit divided by the workers)",
    )
    p.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="dynamic batching of concurrent requests (default off)",
    )
    p.add_argument("--batch-max-size", type=int, metavar="N", help="requests per batch (32)")
    p.add_argument("--batch-max-delay", type=float, metavar="SECONDS", help="longest wait (0.001)")
    p.add_argument(
        "--storage-uri",
        metavar="URI",
        help="the model's file or directory: a local path, or an http(s)://, s3:// or "
        "pvc:// URI fetched before the workers start (docs/storage.md)",
    )
    p.add_argument("--feature-store", choices=["memory", "redis"])
    p.add_argument("--redis-url")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", choices=["json", "text"])
    p.add_argument("--access-log-sample-rate", type=float, metavar="FRACTION")
    p.add_argument("--drain-seconds", type=float)
    p.add_argument("--grace-seconds", type=float)
    p.add_argument(
        "--header-timeout", type=float, metavar="SECONDS", help="request headers (default 30)"
    )
    p.add_argument(
        "--body-timeout", type=float, metavar="SECONDS", help="request body (default 60)"
    )
    p.add_argument("--max-connections", type=int, metavar="N", help="per worker (default 10000)")
    p.add_argument(
        "--max-requests-per-connection",
        type=int,
        metavar="N",
        help="answers per keep-alive connection, then Connection: close (default 1000; 0 = no limit)",
    )
    p.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print it as JSON and exit",
    )
    return p


def resolve_config(args: argparse.Namespace, env: dict[str, str]) -> ServeConfig:
    file_data: dict[str, Any] = {}
    file_name = "config file"
    if args.config:
        file_data = read_config_file(args.config)
        file_name = f"--config {args.config}"
    overrides = {
        path: getattr(args, flag)
        for flag, path in _FLAGS.items()
        if getattr(args, flag) is not None
    }
    return load_config(file_data, env, overrides, file_name=file_name)


def prepare_metrics_dir(env: dict[str, str]) -> tuple[str, bool]:
    """The prometheus multiprocess directory, emptied; (path, created by us)."""
    configured = env.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # values of a previous run would be summed in
            stale.unlink()
        return str(path), False
    return tempfile.mkdtemp(prefix="mlkube-prometheus-", dir="/tmp"), True


def prepare_model(config: ServeConfig) -> tuple[ServeConfig, str | None]:
    """Make ``model.storage_uri`` a verified local path before any worker starts.

    A remote URI is downloaded into a temporary directory (returned, for removal at exit);
    a local path (what the operator's pods get) is checked in place. Either way a missing
    file or one that is not a model of ``model.format`` stops the server here, with one
    line that says why, instead of in every worker.
    """
    from mlkube.storage.fetch import fetch
    from mlkube.storage.uri import parse

    uri = config.model.storage_uri
    assert uri is not None
    created: str | None = None
    dest = Path("/tmp")
    if parse(uri).remote:
        created = tempfile.mkdtemp(prefix="mlkube-model-", dir="/tmp")
        dest = Path(created)
    try:
        path = fetch(uri, dest, fmt=config.model.format, env=os.environ)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    model = config.model.model_copy(update={"storage_uri": str(path)})
    return config.model_copy(update={"model": model}), created


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    env = dict(os.environ)
    try:
        config = resolve_config(args, env)
    except ConfigError as exc:
        print(f"mlkube serve: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(config.model_dump_json(indent=2, by_alias=True))
        return 0

    from mlkube.serving.logs import setup_logging

    setup_logging(config.server.log_level, config.server.log_format)

    model_dir: str | None = None
    if config.model.storage_uri:
        try:
            config, model_dir = prepare_model(config)
        except FetchError as exc:
            print(f"mlkube serve: model.storage_uri: {exc.line()}", file=sys.stderr)
            return 2

    if config.model.format == "custom":
        from mlkube.serving.model import ModelLoadError, resolve_class

        try:
            resolve_class(config.model.class_path or "")
        except ModelLoadError as exc:
            print(f"mlkube serve: {exc}", file=sys.stderr)
            return 2
    if config.model.format == "onnx":
        from mlkube.serving.onnxrt import check_model_file, onnx_file

        path = config.model.path or onnx_file(config.model.storage_uri or "")
        problem = check_model_file(path)
        if problem is not None:
            print(f"mlkube serve: model.path: {problem}", file=sys.stderr)
            if model_dir is not None:
                shutil.rmtree(model_dir, ignore_errors=True)
            return 2
        config = config.model_copy(update={"model": config.model.model_copy(update={"path": path})})

    workers, why = effective_workers(config)
    log.info("workers", extra={"workers": workers, "from": why})
    if config.feature_store.kind == "memory" and workers > 1:
        log.warning(
            "feature_store.kind is memory with %d workers: each worker keeps its own counts; "
            "use --workers 1 or the redis store for one shared view",
            workers,
        )

    from mlkube.serving.server import check_bind

    for field, port in (("port", config.server.port), ("grpc_port", config.server.grpc_port)):
        if not port:
            continue  # gRPC off
        try:
            check_bind(config.server.host, port)
        except OSError as exc:
            print(
                f"mlkube serve: server.{field}: cannot listen on "
                f"{config.server.host}:{port}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2

    metrics_dir, created = prepare_metrics_dir(env)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from mlkube.serving.server import run_master

    try:
        return run_master(config, workers, metrics_dir)
    finally:
        if created:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if model_dir is not None:
            shutil.rmtree(model_dir, ignore_errors=True)
