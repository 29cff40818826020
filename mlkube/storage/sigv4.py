"""AWS Signature Version 4 for S3 requests, with the standard library only.

Pure: a request (method, URL, headers, payload hash) and credentials in, the headers to
send out. Written here rather than taken from boto3 because `mlkube fetch` needs two kinds
of request (GetObject, ListObjectsV2) and the whole SDK would double the image's size.

The algorithm is AWS's, as documented in "Signature Version 4 signing process" and
"Authenticating Requests: Using the Authorization Header" (S3 API reference); the unit
tests check it against the worked example on that page.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _encode(text: str, safe: str) -> str:
    """RFC 3986 encoding: everything but unreserved characters (and ``safe``)."""
    return quote(text, safe=safe + "-_.~")


def canonical_query(query: str) -> str:
    """Parameters sorted by name then value, each part encoded once."""
    pairs: list[tuple[str, str]] = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        pairs.append((_encode(unquote(name), ""), _encode(unquote(value), "")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def sign(
    method: str,
    url: str,
    *,
    credentials: Credentials,
    region: str,
    now: datetime,
    headers: Mapping[str, str] | None = None,
    payload_sha256: str = EMPTY_SHA256,
    service: str = "s3",
) -> dict[str, str]:
    """The headers of a signed request: ``headers`` plus Host, X-Amz-Date,
    X-Amz-Content-Sha256, X-Amz-Security-Token (with a session token) and Authorization.

    ``url``'s path must already be percent-encoded as it will be sent (S3 signs the path
    as sent, without encoding it a second time); ``now`` is UTC.
    """
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    out: dict[str, str] = dict(headers or {})
    host = parts.netloc
    if (parts.scheme == "https" and host.endswith(":443")) or (
        parts.scheme == "http" and host.endswith(":80")
    ):
        host = host.rsplit(":", 1)[0]
    out["Host"] = host
    out["X-Amz-Date"] = amz_date
    out["X-Amz-Content-Sha256"] = payload_sha256
    if credentials.session_token:
        out["X-Amz-Security-Token"] = credentials.session_token
    canonical = {name.lower(): " ".join(value.strip().split()) for name, value in out.items()}
    signed_headers = ";".join(sorted(canonical))
    canonical_request = "\n".join(
        [
            method.upper(),
            parts.path or "/",
            canonical_query(parts.query),
            "".join(f"{name}:{canonical[name]}\n" for name in sorted(canonical)),
            signed_headers,
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    signature = hmac.new(
        signing_key(credentials.secret_access_key, day, region, service),
        string_to_sign.encode(),
        hashlib.sha256,
    ).hexdigest()
    out["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return out


def encode_key(key: str) -> str:
    """An S3 object key as a URL path (``/`` kept, everything else RFC 3986-encoded)."""
    return _encode(key, "/")
