"""SigV4 signing, checked against AWS's own worked example.

The example is "Example: GET Object" in the S3 API reference, "Signature Calculations for
the Authorization Header: Transferring Payload in a Single Chunk (AWS Signature Version
4)": GET /test.txt from examplebucket with `Range: bytes=0-9` on 2013-05-24, whose
published signature is f0e8bdb8...bdb41. A signer that differs in any step (canonical
headers, scope, key derivation) produces another signature; the real S3 server in
tests/integration/storage checks the rest.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mlkube.storage.sigv4 import Credentials, canonical_query, encode_key, sign

EXAMPLE = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def test_the_aws_get_object_example_signs_to_the_published_signature() -> None:
    headers = sign(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        credentials=EXAMPLE,
        region="us-east-1",
        now=datetime(2013, 5, 24, tzinfo=UTC),
        headers={"Range": "bytes=0-9"},
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert headers["X-Amz-Date"] == "20130524T000000Z"
    assert headers["Host"] == "examplebucket.s3.amazonaws.com"


def test_a_session_token_is_sent_and_signed() -> None:
    headers = sign(
        "GET",
        "http://127.0.0.1:7070/b/k",
        credentials=Credentials("id", "secret", "token"),
        region="eu-west-1",
        now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert headers["X-Amz-Security-Token"] == "token"
    assert "x-amz-security-token" in headers["Authorization"]
    assert headers["Host"] == "127.0.0.1:7070"


def test_query_and_key_encoding() -> None:
    assert canonical_query("prefix=a%2Fb&list-type=2") == "list-type=2&prefix=a%2Fb"
    assert encode_key("dir/a b+c.onnx") == "dir/a%20b%2Bc.onnx"
