"""`mlkube fetch` against a real HTTP server and a real S3 server (versitygw), and
`mlkube serve --storage-uri` serving what it fetched.

Each failure must end the way the init container's does in a pod: exit status 1, no
traceback, and one ``Reason: message`` line in the termination log that names the URI;
and no file in the destination that could pass for the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.serving.conftest import Serve, free_port
from tests.support.onnx_bytes import MINIMAL_ONNX

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
SHA = hashlib.sha256(MINIMAL_ONNX).hexdigest()


def failed(result: Any, reason: str) -> str:
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    line: str = result.termination_message.strip()
    assert "\n" not in line
    assert line.startswith(f"{reason}: "), line
    assert result.stderr.strip() == f"mlkube fetch: {line}"
    return line


def test_http_download_is_verified_and_lands_under_its_name(
    http_server: Any, run_fetch: Any, tmp_path: Path
) -> None:
    url = http_server.put("mlp/v3/model.onnx", MINIMAL_ONNX)
    result = run_fetch("--storage-uri", url, "--sha256", SHA.upper(), "--format", "onnx")
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "models" / "model.onnx")
    assert (tmp_path / "models" / "model.onnx").read_bytes() == MINIMAL_ONNX
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.onnx"]
    assert result.termination_message == ""


def test_http_failures_say_why_and_leave_no_model(
    http_server: Any, run_fetch: Any, tmp_path: Path
) -> None:
    missing = f"{http_server.base}/mlp/missing.onnx"
    line = failed(run_fetch("--storage-uri", missing), "ModelNotFound")
    assert line == (
        f"ModelNotFound: {missing} does not exist: the server answered 404 File not found"
    )

    url = http_server.put("mlp/model.onnx", MINIMAL_ONNX)
    line = failed(run_fetch("--storage-uri", url, "--sha256", "0" * 64), "ChecksumMismatch")
    assert (
        line == f"ChecksumMismatch: sha256 of {url} is {SHA}, expected {'0' * 64} (storage.sha256)"
    )

    page = http_server.put("login.onnx", b"<!DOCTYPE html><html>Please sign in</html>\n")
    line = failed(run_fetch("--storage-uri", page, "--format", "onnx"), "NotAModel")
    assert line.startswith(f"NotAModel: {page} is not an onnx model: ")

    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


def test_s3_object_and_prefix_with_sigv4(s3_server: Any, run_fetch: Any, tmp_path: Path) -> None:
    uri = s3_server.put("models", "mlp/v3/model.onnx", MINIMAL_ONNX)
    s3_server.put("models", "mlp/v3/labels/classes.txt", b"cat\ndog\n")
    result = run_fetch(
        "--storage-uri", uri, "--sha256", SHA, "--format", "onnx", env=s3_server.env()
    )
    assert result.code == 0, result.stderr
    assert (tmp_path / "models" / "model.onnx").read_bytes() == MINIMAL_ONNX

    # a prefix: every object below it, keeping their relative paths
    result = run_fetch(
        "--storage-uri", "s3://models/mlp/v3/", "--format", "onnx",
        env=s3_server.env(), dest=tmp_path / "dir",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert (tmp_path / "dir" / "model.onnx").read_bytes() == MINIMAL_ONNX
    assert (tmp_path / "dir" / "labels" / "classes.txt").read_text() == "cat\ndog\n"


def test_s3_failures_name_the_object_and_what_to_check(s3_server: Any, run_fetch: Any) -> None:
    uri = s3_server.put("models", "mlp/model.onnx", MINIMAL_ONNX)

    line = failed(
        run_fetch("--storage-uri", uri, env=s3_server.env(AWS_SECRET_ACCESS_KEY="wrong")),
        "StorageAccessDenied",
    )
    assert "SignatureDoesNotMatch" in line
    assert "AWS_SECRET_ACCESS_KEY" in line

    line = failed(
        run_fetch("--storage-uri", "s3://models/mlp/other.onnx", env=s3_server.env()),
        "ModelNotFound",
    )
    assert line.startswith("ModelNotFound: s3://models/mlp/other.onnx does not exist")
    assert "NoSuchKey" in line

    line = failed(
        run_fetch("--storage-uri", "s3://no-such-bucket/m.onnx", env=s3_server.env()),
        "ModelNotFound",
    )
    assert "NoSuchBucket" in line

    env = s3_server.env()
    del env["AWS_SECRET_ACCESS_KEY"]
    line = failed(run_fetch("--storage-uri", uri, env=env), "StorageCredentialsMissing")


def test_serve_loads_the_model_it_fetched_over_http(http_server: Any, tmp_path: Path) -> None:
    url = http_server.put("factor/model.txt", b"3\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(REPO),
    }
    args = [
        "--workers", "1",
        "--model-name", "fromfile",
        "--model-format", "custom",
        "--model-class", "tests.integration.storage.file_model:FileModel",
        "--storage-uri", url,
    ]  # fmt: skip
    port = free_port()
    grpc_port = next(p for p in iter(free_port, None) if p != port)
    server = Serve(port, grpc_port, env, args, tmp_path / "serve.log")
    try:
        server.wait_ready()
        answer = infer(server.base)
    finally:
        server.close()
    assert answer["outputs"][0]["data"] == [3.0, 7.5]


def infer(base: str) -> dict[str, Any]:
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1.0, 2.5]}]}
    request = urllib.request.Request(
        f"{base}/v2/models/fromfile/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer
