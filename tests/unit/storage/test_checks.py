"""What `mlkube fetch` refuses before a pod ever loads it: files that are not models,
checksums that differ, S3 settings that cannot work. Plain files; no network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlkube.storage.fetch import FetchError, S3Settings, check_model, fetch
from tests.support.onnx_bytes import MINIMAL_ONNX

ONNX = MINIMAL_ONNX


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def reason(exc: pytest.ExceptionInfo[FetchError]) -> str:
    return exc.value.reason


def test_an_onnx_model_passes_the_onnx_check(tmp_path: Path) -> None:
    check_model(write(tmp_path, "m.onnx", ONNX), "onnx", "s3://b/m.onnx")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "wire type"),
        (ONNX[:-2], "past the end"),
        (bytes([0x08, 0x09]), "no graph"),
        (bytes([0x3A, 0x00]), "no ir_version"),
        (b"PK\x03\x04" + b"\x00" * 40, "is not an onnx model"),
    ],
    ids=["html-error-page", "truncated", "no-graph", "no-ir-version", "zip"],
)
def test_a_file_that_is_not_an_onnx_model_is_refused_at_fetch(
    tmp_path: Path, data: bytes, says: str
) -> None:
    with pytest.raises(FetchError) as exc:
        check_model(write(tmp_path, "m.onnx", data), "onnx", "https://h/m.onnx")
    assert reason(exc) == "NotAModel"
    assert says in exc.value.message
    assert "https://h/m.onnx" in exc.value.message


def test_formats_without_a_check_take_any_non_empty_file(tmp_path: Path) -> None:
    check_model(write(tmp_path, "weights.bin", b"\x00\x01"), "custom", "pvc://c/weights.bin")
    with pytest.raises(FetchError) as exc:
        check_model(write(tmp_path, "empty.bin", b""), "custom", "pvc://c/empty.bin")
    assert (reason(exc), exc.value.message) == ("NotAModel", "pvc://c/empty.bin is an empty file")


def test_a_directory_holds_exactly_one_model_of_the_format(tmp_path: Path) -> None:
    write(tmp_path / "one", "m.onnx", ONNX)
    write(tmp_path / "one", "labels.txt", b"a\nb\n")
    check_model(tmp_path / "one", "onnx", "s3://b/one/")
    write(tmp_path / "two", "a.onnx", ONNX)
    write(tmp_path / "two", "b.onnx", ONNX)
    with pytest.raises(FetchError, match=r"2 \.onnx files"):
        check_model(tmp_path / "two", "onnx", "s3://b/two/")


def test_a_local_path_is_verified_in_place(tmp_path: Path) -> None:
    model = write(tmp_path, "m.onnx", ONNX)
    digest = hashlib.sha256(ONNX).hexdigest()
    assert fetch(str(model), tmp_path / "dest", sha256=digest, fmt="onnx") == model
    with pytest.raises(FetchError) as exc:
        fetch(str(model), tmp_path / "dest", sha256="0" * 64, fmt="onnx")
    assert reason(exc) == "ChecksumMismatch"
    assert f"is {digest}, expected {'0' * 64}" in exc.value.message
    assert model.exists(), "a local model is never removed"


def test_a_pvc_uri_is_read_from_where_the_claim_is_mounted(tmp_path: Path) -> None:
    model = write(tmp_path / "claim", "mlp/m.onnx", ONNX)
    found = fetch("pvc://models/mlp/m.onnx", tmp_path, fmt="onnx", pvc_root=tmp_path / "claim")
    assert found == model
    with pytest.raises(FetchError) as exc:
        fetch("pvc://models/mlp/gone.onnx", tmp_path, pvc_root=tmp_path / "claim")
    assert reason(exc) == "ModelNotFound"
    assert "pvc://models/mlp/gone.onnx" in exc.value.message
    assert "on claim models" in exc.value.message


def test_an_unknown_scheme_is_an_invalid_storage_uri(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as exc:
        fetch("gs://bucket/m", tmp_path)
    assert reason(exc) == "InvalidStorageURI"


def test_s3_settings_come_from_the_aws_variables() -> None:
    s3 = S3Settings.from_env(
        {
            "AWS_ACCESS_KEY_ID": "id",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:7070/",
            "AWS_REGION": "eu-west-1",
        }
    )
    assert s3.region == "eu-west-1"
    assert s3.credentials is not None
    assert s3.credentials.access_key_id == "id"
    assert s3.object_url("b", "a b/m.onnx") == "http://127.0.0.1:7070/b/a%20b/m.onnx"
    aws = S3Settings.from_env({"AWS_DEFAULT_REGION": "us-west-2"})
    assert aws.credentials is None  # unsigned: a public bucket
    assert aws.object_url("b", "m") == "https://b.s3.us-west-2.amazonaws.com/m"


@pytest.mark.parametrize(
    ("env", "reason_", "says"),
    [
        ({"AWS_ACCESS_KEY_ID": "id"}, "StorageCredentialsMissing", "AWS_SECRET_ACCESS_KEY"),
        ({"AWS_SECRET_ACCESS_KEY": "s"}, "StorageCredentialsMissing", "AWS_ACCESS_KEY_ID"),
        ({"AWS_ENDPOINT_URL": "127.0.0.1:7070"}, "InvalidStorageURI", "http:// or https://"),
    ],
)
def test_s3_settings_that_cannot_work_say_which_key(
    env: dict[str, str], reason_: str, says: str
) -> None:
    with pytest.raises(FetchError) as exc:
        S3Settings.from_env(env)
    assert exc.value.reason == reason_
    assert says in exc.value.message


def test_connection_failures_and_5xx_are_retried_then_reported() -> None:
    """Three tries with a growing pause; a 4xx is final at once."""
    import io
    import urllib.error
    import urllib.request
    from email.message import Message

    from mlkube.storage.fetch import _request

    calls: list[str] = []
    pauses: list[float] = []

    def flaky(request: urllib.request.Request, timeout: float) -> io.BytesIO:
        calls.append(request.full_url)
        if len(calls) == 1:
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        if len(calls) == 2:
            raise urllib.error.HTTPError(request.full_url, 503, "Slow Down", Message(), None)
        return io.BytesIO(b"ok")

    def make() -> urllib.request.Request:
        return urllib.request.Request("http://h/m")

    assert _request(make, "http://h/m", flaky, pauses.append).read() == b"ok"
    assert (len(calls), pauses) == (3, [2.0, 4.0])

    def down(request: urllib.request.Request, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    with pytest.raises(FetchError) as exc:
        _request(make, "http://h/m", down, pauses.append)
    assert (
        exc.value.line()
        == "StorageUnreachable: cannot reach http://h/m: [Errno 111] Connection refused"
    )

    calls.clear()

    def forbidden(request: urllib.request.Request, timeout: float) -> io.BytesIO:
        calls.append(request.full_url)
        raise urllib.error.HTTPError(request.full_url, 403, "Forbidden", Message(), None)

    with pytest.raises(FetchError) as exc:
        _request(make, "http://h/m", forbidden, pauses.append)
    assert (exc.value.reason, len(calls)) == ("StorageAccessDenied", 1)
