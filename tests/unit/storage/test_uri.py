"""Storage URIs: the schemes a ModelService may name, and where each lands in the pod."""

from __future__ import annotations

import re

import pytest

from mlkube.storage.uri import (
    STORAGE_URI_PATTERN,
    StorageURIError,
    check_sha256,
    parse,
    pod_path,
)


@pytest.mark.parametrize(
    ("uri", "scheme", "authority", "path", "in_pod"),
    [
        ("pvc://models/mlp/model.onnx", "pvc", "models", "mlp/model.onnx", "/mnt/models/mlp/model.onnx"),
        ("pvc://models", "pvc", "models", "", "/mnt/models"),
        ("pvc://models/a%20b/./m.onnx", "pvc", "models", "a b/m.onnx", "/mnt/models/a b/m.onnx"),
        ("https://example.com/m/model.onnx?sig=1", "https", "example.com", "m/model.onnx?sig=1", "/mnt/models/model.onnx"),
        ("http://10.0.0.1:8000/", "http", "10.0.0.1:8000", "", "/mnt/models/model"),
        ("s3://my-bucket/mlp/model.onnx", "s3", "my-bucket", "mlp/model.onnx", "/mnt/models/model.onnx"),
        ("s3://my-bucket/mlp/", "s3", "my-bucket", "mlp/", "/mnt/models"),
        ("s3://my-bucket/a%2Bb.onnx", "s3", "my-bucket", "a+b.onnx", "/mnt/models/a+b.onnx"),
    ],
)  # fmt: skip
def test_spec_uris_parse_and_land_under_mnt_models(
    uri: str, scheme: str, authority: str, path: str, in_pod: str
) -> None:
    parsed = parse(uri, allow_local=False)
    assert (parsed.scheme, parsed.authority, parsed.path) == (scheme, authority, path)
    assert pod_path(parsed) == in_pod
    assert re.match(STORAGE_URI_PATTERN, uri), "the CRD pattern must admit what parses"


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("gs://bucket/m", "unsupported storage URI scheme 'gs'"),
        ("/models/m.onnx", "has no scheme"),
        ("file:///models/m.onnx", "pvc://"),
        ("pvc://Models/m", "not a PersistentVolumeClaim name"),
        ("pvc://models/../etc/passwd", "inside the claim"),
        ("s3://B/m", "not an S3 bucket name"),
        ("s3://bucket/a/../b", "'..'"),
        ("https://", "has no host"),
        ("http://h:port/m", "port"),
        ("", "empty"),
    ],
)
def test_what_a_modelservice_may_not_name_is_refused_with_a_reason(uri: str, says: str) -> None:
    with pytest.raises(StorageURIError, match=re.escape(says)):
        parse(uri, allow_local=False)


@pytest.mark.parametrize("uri", ["gs://bucket/m", "pvc://Models/m", "s3://B/m", "ftp://h/m"])
def test_the_crd_pattern_refuses_what_the_parser_refuses(uri: str) -> None:
    assert not re.match(STORAGE_URI_PATTERN, uri)


def test_a_local_path_is_for_hand_runs_only() -> None:
    assert parse("/srv/m.onnx").scheme == "file"
    assert parse("./m.onnx").path == "./m.onnx"
    assert pod_path(parse("file:///srv/m%20x.onnx")) == "/srv/m x.onnx"
    assert not parse("/srv/m.onnx").remote
    assert parse("s3://bucket/k").remote
    assert parse("https://h/k").remote


def test_sha256_is_64_hex_digits_folded_to_lower_case() -> None:
    assert check_sha256("AB" * 32) == "ab" * 32
    with pytest.raises(StorageURIError, match="64 hexadecimal"):
        check_sha256("abc")
