"""Download (or find) a model named by a storage URI, verify it, and say clearly why not.

Every failure is a :class:`FetchError` with a CamelCase ``reason`` a person can filter on
(``ModelNotFound``, ``ChecksumMismatch``...) and a one-line message that names the URI; the
`mlkube fetch` command writes ``Reason: message`` to the container's termination log, which
the operator reads back into the ModelService's conditions.

Downloads go to ``NAME.part`` beside the destination and are renamed only once complete and
verified, so a killed or failed fetch never leaves a file that looks like a model.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlsplit

from mlkube.storage import sigv4
from mlkube.storage.uri import StorageURI, StorageURIError, parse

CHUNK = 1 << 20
ATTEMPTS = 3
"""Tries per request on a connection failure or a 5xx answer (then the pod restarts the
init container with the kubelet's back-off, which is the longer retry)."""
TIMEOUT = 30.0
"""Seconds without a byte before a request is given up."""
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class FetchError(Exception):
    """Why a model could not be fetched; ``reason`` is CamelCase, the message one line."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = " ".join(message.split())

    def line(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True)
class S3Settings:
    """Where S3 is and who we are: from the standard AWS variables (the Secret's keys)."""

    endpoint: str | None = None
    region: str = "us-east-1"
    credentials: sigv4.Credentials | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings:
        def get(*names: str) -> str:
            return next((env[n].strip() for n in names if env.get(n, "").strip()), "")

        key_id, secret = get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
        if bool(key_id) != bool(secret):
            missing = "AWS_SECRET_ACCESS_KEY" if key_id else "AWS_ACCESS_KEY_ID"
            raise FetchError(
                "StorageCredentialsMissing",
                f"{missing} is not set (the S3 Secret needs both AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY)",
            )
        credentials = (
            sigv4.Credentials(key_id, secret, get("AWS_SESSION_TOKEN") or None) if key_id else None
        )
        endpoint = get("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") or None
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise FetchError(
                "InvalidStorageURI",
                f"AWS_ENDPOINT_URL {endpoint!r} must start with http:// or https://",
            )
        return cls(
            endpoint=endpoint.rstrip("/") if endpoint else None,
            region=get("AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1",
            credentials=credentials,
        )

    def object_url(self, bucket: str, key: str, query: str = "") -> str:
        """Path-style on a custom endpoint (what S3-compatible servers expect), virtual-host
        style on AWS itself."""
        path = sigv4.encode_key(key)
        if self.endpoint:
            url = f"{self.endpoint}/{bucket}/{path}"
        else:
            url = f"https://{bucket}.s3.{self.region}.amazonaws.com/{path}"
        return f"{url}?{query}" if query else url


# ----------------------------------------------------------------------- model checks


def _varint(stream: IO[bytes]) -> int | None:
    """One protobuf varint, None at a clean end of the stream."""
    shift = result = 0
    for i in range(10):
        byte = stream.read(1)
        if not byte:
            if i == 0:
                return None
            raise ValueError("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def check_onnx(path: Path) -> None:
    """Walk the top level of an ONNX ``ModelProto`` (protobuf wire format): every field
    must be well-formed up to the end of the file, and ``ir_version`` (1) and ``graph`` (7)
    must be there. An HTML error page, a tarball or a truncated download fails here, at
    fetch, instead of in every serving worker."""
    size = path.stat().st_size
    seen: set[int] = set()
    with path.open("rb") as stream:
        while True:
            tag = _varint(stream)
            if tag is None:
                break
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise ValueError("field number 0")
            if wire == 0:
                if _varint(stream) is None:
                    raise ValueError("truncated varint")
            elif wire == 1 or wire == 5:
                stream.seek(8 if wire == 1 else 4, os.SEEK_CUR)
            elif wire == 2:
                length = _varint(stream)
                if length is None:
                    raise ValueError("truncated length")
                stream.seek(length, os.SEEK_CUR)
            else:
                raise ValueError(f"wire type {wire} of field {number} is not used by ONNX")
            if stream.tell() > size:
                raise ValueError(f"field {number} runs past the end of the file")
            seen.add(number)
    missing = [name for number, name in ((1, "ir_version"), (7, "graph")) if number not in seen]
    if missing:
        raise ValueError(f"no {' or '.join(missing)}")


#: Per model format, a check that a file is a model of that format (formats that are not
#: listed load whatever they are given: a custom model's files are its own business).
FORMAT_CHECKS: dict[str, Callable[[Path], None]] = {"onnx": check_onnx}


def check_model(path: Path, fmt: str | None, uri: str) -> None:
    """A model file (or directory) that the runtime can at least try to load."""
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        if not files:
            raise FetchError("NotAModel", f"{uri} is an empty directory")
        if fmt in FORMAT_CHECKS:
            candidates = [p for p in files if p.suffix == f".{fmt}"]
            if len(candidates) != 1:
                raise FetchError(
                    "NotAModel",
                    f"{uri} is a directory with {len(candidates)} .{fmt} files; name the "
                    "model file itself",
                )
            check_model(candidates[0], fmt, uri + "/" + candidates[0].relative_to(path).as_posix())
        return
    if path.stat().st_size == 0:
        raise FetchError("NotAModel", f"{uri} is an empty file")
    check = FORMAT_CHECKS.get(fmt or "")
    if check is not None:
        try:
            check(path)
        except (ValueError, OSError) as exc:
            raise FetchError("NotAModel", f"{uri} is not an {fmt} model: {exc}") from exc


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, uri: str) -> None:
    if path.is_dir():
        raise FetchError("ChecksumMismatch", f"{uri} is a directory: sha256 applies to one file")
    actual = file_sha256(path)
    if actual != expected:
        raise FetchError(
            "ChecksumMismatch", f"sha256 of {uri} is {actual}, expected {expected} (storage.sha256)"
        )


# -------------------------------------------------------------------------- transfers

Opener = Callable[[urllib.request.Request, float], IO[bytes]]


def _open(request: urllib.request.Request, timeout: float) -> IO[bytes]:
    response: IO[bytes] = urllib.request.urlopen(request, timeout=timeout)
    return response


def _s3_error(body: bytes) -> tuple[str, str]:
    """(Code, Message) of an S3 error document; empty strings when there is none."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", ""
    return (root.findtext("Code") or "", root.findtext("Message") or "")


def _http_failure(exc: urllib.error.HTTPError, uri: str) -> FetchError:
    body = b""
    with contextlib.suppress(OSError):
        body = exc.read(4096)
    code, detail = _s3_error(body)
    said = f"{exc.code} {exc.reason}" + (f" ({code}: {detail})" if code else "")
    if exc.code == 404:
        return FetchError("ModelNotFound", f"{uri} does not exist: the server answered {said}")
    if exc.code in (401, 403):
        hint = (
            " check the S3 Secret's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION"
            if uri.startswith("s3://")
            else ""
        )
        return FetchError(
            "StorageAccessDenied", f"{uri}: access denied, the server answered {said};{hint}"
        )
    return FetchError("StorageUnreachable", f"{uri}: the server answered {said}")


def _request(
    make: Callable[[], urllib.request.Request],
    uri: str,
    opener: Opener,
    sleep: Callable[[float], None] = time.sleep,
) -> IO[bytes]:
    """Open a request, retrying connection failures and 5xx answers a few times."""
    last: FetchError | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            sleep(min(2.0**attempt, 8.0))
        try:
            return opener(make(), TIMEOUT)
        except urllib.error.HTTPError as exc:
            last = _http_failure(exc, uri)
            if exc.code < 500:
                raise last from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            why = getattr(exc, "reason", None) or exc
            last = FetchError("StorageUnreachable", f"cannot reach {uri}: {why}")
    assert last is not None
    raise last


def _stream_to(response: IO[bytes], target: Path, uri: str) -> None:
    """Write a response to ``target`` via ``target.part``; the rename only when complete."""
    part = target.with_name(target.name + ".part")
    headers = getattr(response, "headers", None)
    expected = headers.get("Content-Length") if headers is not None else None
    written = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with response, part.open("wb") as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise FetchError(
                        "StorageUnreachable",
                        f"{uri}: the download broke off after {written} bytes: {exc}",
                    ) from exc
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
        if expected is not None and expected.isdigit() and written != int(expected):
            raise FetchError(
                "StorageUnreachable",
                f"{uri}: the download stopped after {written} of {expected} bytes",
            )
        part.replace(target)
    except OSError as exc:  # the destination: a full emptyDir, a read-only mount
        raise FetchError(
            "FetchFailed", f"cannot write {target}: {exc.strerror or exc} ({uri})"
        ) from exc
    finally:
        part.unlink(missing_ok=True)


def download_http(uri: StorageURI, dest: Path, opener: Opener = _open) -> Path:
    target = dest / uri.file_name
    headers = {"User-Agent": "mlkube-fetch"}
    response = _request(lambda: urllib.request.Request(uri.uri, headers=headers), uri.uri, opener)
    _stream_to(response, target, uri.uri)
    return target


def _signed(
    method: str, url: str, s3: S3Settings, now: Callable[[], datetime]
) -> urllib.request.Request:
    headers = {"User-Agent": "mlkube-fetch"}
    if s3.credentials is not None:
        headers = sigv4.sign(
            method, url, credentials=s3.credentials, region=s3.region, now=now(), headers=headers
        )
    return urllib.request.Request(url, headers=headers, method=method)


def _list_keys(
    uri: StorageURI, s3: S3Settings, opener: Opener, now: Callable[[], datetime]
) -> Iterator[str]:
    """Every key under the prefix (ListObjectsV2, following continuation tokens)."""
    token: str | None = None
    for _ in range(10_000):  # 10 million keys: far past any model
        query = "list-type=2&prefix=" + quote(uri.path, safe="-_.~")
        if token:
            query += "&continuation-token=" + quote(token, safe="-_.~")
        url = s3.object_url(uri.authority, "", query)
        response = _request(functools.partial(_signed, "GET", url, s3, now), uri.uri, opener)
        with response:
            body = response.read()
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise FetchError("StorageUnreachable", f"{uri.uri}: not an S3 listing: {exc}") from exc
        for item in root.iter(f"{_S3_NS}Contents"):
            key = item.findtext(f"{_S3_NS}Key") or ""
            if key and not key.endswith("/"):
                yield key
        token = root.findtext(f"{_S3_NS}NextContinuationToken")
        if root.findtext(f"{_S3_NS}IsTruncated") != "true" or not token:
            return


def download_s3(
    uri: StorageURI,
    dest: Path,
    s3: S3Settings,
    opener: Opener = _open,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Path:
    def get(key: str, target: Path) -> None:
        url = s3.object_url(uri.authority, key)
        shown = f"s3://{uri.authority}/{key}"
        response = _request(lambda: _signed("GET", url, s3, now), shown, opener)
        _stream_to(response, target, shown)

    if not uri.is_prefix:
        target = dest / uri.file_name
        get(uri.path, target)
        return target
    count = 0
    for key in _list_keys(uri, s3, opener, now):
        relative = key[len(uri.path) :]
        if not relative or ".." in relative.split("/") or relative.startswith("/"):
            continue
        get(key, dest / relative)
        count += 1
    if not count:
        raise FetchError("ModelNotFound", f"{uri.uri}: no objects under this prefix")
    return dest


# ------------------------------------------------------------------------------ entry


def local_path(uri: StorageURI, pvc_root: Path) -> Path:
    if uri.scheme == "pvc":
        return pvc_root / uri.path if uri.path else pvc_root
    return Path(uri.path)


def fetch(
    uri_text: str,
    dest: Path,
    *,
    sha256: str | None = None,
    fmt: str | None = None,
    env: Mapping[str, str] | None = None,
    pvc_root: Path = Path("/mnt/models"),
    opener: Opener = _open,
) -> Path:
    """Make the model named by ``uri_text`` available locally and verify it; returns its
    path (the download, or the file on the volume / the local path)."""
    try:
        uri = parse(uri_text)
    except StorageURIError as exc:
        raise FetchError("InvalidStorageURI", str(exc)) from exc
    if uri.remote:
        if uri.scheme == "s3":
            path = download_s3(uri, dest, S3Settings.from_env(env or {}), opener)
        else:
            path = download_http(uri, dest, opener)
    else:
        path = local_path(uri, pvc_root)
        if not path.exists():
            if uri.scheme == "pvc":
                said = f"{uri.uri}: {path} does not exist on claim {uri.authority}"
            else:
                said = f"{uri.uri} does not exist on this machine"
            raise FetchError("ModelNotFound", said)
    try:
        if sha256:
            check_sha256(path, sha256, uri.uri)
        check_model(path, fmt, uri.uri)
    except FetchError:
        if uri.remote and path.is_file():
            path.unlink(missing_ok=True)  # a file that failed its check is no model to keep
        raise
    return path
