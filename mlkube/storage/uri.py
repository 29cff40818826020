"""Storage URIs: what ``spec.model.storageUri`` and ``mlkube serve --storage-uri`` accept.

Pure: strings in, a :class:`StorageURI` (or a :class:`StorageURIError` naming what is wrong)
out. The CRD's pattern (:data:`STORAGE_URI_PATTERN`) admits the same schemes, so that an
unknown scheme is refused at ``kubectl apply`` and the parser here only ever meets the
details the pattern cannot express.

Schemes:

* ``pvc://CLAIM/path``: a file (or directory) on a PersistentVolumeClaim in the
  ModelService's namespace, mounted read-only into the pod.
* ``http://...`` / ``https://...``: one file, downloaded at pod start.
* ``s3://bucket/key``: one object (or, for a key ending in ``/``, every object under that
  prefix), downloaded at pod start with SigV4-signed requests.
* a plain local path (or ``file:///path``): only for ``mlkube serve`` and ``mlkube fetch``
  run by hand; the operator never produces one from a spec.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

Scheme = Literal["pvc", "http", "https", "s3", "file"]
REMOTE_SCHEMES: tuple[Scheme, ...] = ("http", "https", "s3")
SPEC_SCHEMES = ("pvc", "http", "https", "s3")
"""What a ModelService may name (a path on the node is never one of them)."""

MODEL_MOUNT = "/mnt/models"
"""Where the model lands in the pod (KServe's path, so that users' custom models that read
``/mnt/models`` keep working)."""

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
S3_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
STORAGE_URI_PATTERN = (
    rf"^(pvc://{DNS1123_LABEL}(/[^/ ][^ ]*)?|https?://[^/?# ]+(/[^ ]*)?|s3://{S3_BUCKET}(/[^ ]*)?)$"
)
"""The CRD's pattern for ``storageUri``: a known scheme and the parts the schema can check
(no backslashes, so that it can sit in a CEL string literal as it is)."""
SHA256_PATTERN = r"^[0-9a-f]{64}$"
_SHA256 = re.compile(SHA256_PATTERN)
_CLAIM = re.compile(rf"^{DNS1123_LABEL}$")
_BUCKET = re.compile(rf"^{S3_BUCKET}$")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class StorageURIError(ValueError):
    """A storage URI that cannot be used; the message says why, in a sentence."""


@dataclass(frozen=True)
class StorageURI:
    """A parsed storage URI."""

    uri: str
    """As written."""
    scheme: Scheme
    authority: str = ""
    """The claim (pvc), host[:port] (http) or bucket (s3); empty for a local path."""
    path: str = ""
    """The path below the authority, without the leading ``/`` (percent-decoded for s3 and
    pvc; kept as written for http, whose URL is used verbatim); for a local path, the path."""

    @property
    def remote(self) -> bool:
        """Whether the model must be downloaded (http, https, s3)."""
        return self.scheme in REMOTE_SCHEMES

    @property
    def is_prefix(self) -> bool:
        """An S3 key prefix (a "directory" of objects): the key is empty or ends in ``/``."""
        return self.scheme == "s3" and (self.path == "" or self.path.endswith("/"))

    @property
    def file_name(self) -> str:
        """The name the download gets in the destination directory ("" for a prefix, whose
        objects keep their names below it)."""
        if self.is_prefix:
            return ""
        raw = urlsplit(self.uri).path if self.scheme in ("http", "https") else self.path
        base = posixpath.basename(unquote(raw).rstrip("/"))
        return base if base not in ("", ".", "..") else "model"


def parse(uri: str, *, allow_local: bool = True) -> StorageURI:
    """Parse ``uri``; ``allow_local=False`` for a ModelService (the pod has no such path)."""
    text = uri.strip()
    if not text:
        raise StorageURIError("the storage URI is empty")
    match = _SCHEME.match(text)
    if match is None:
        if not allow_local:
            raise StorageURIError(
                f"{uri!r} has no scheme: use pvc://CLAIM/path, https://..., or s3://bucket/key"
            )
        return StorageURI(uri=text, scheme="file", path=text)
    scheme = match.group(1).lower()
    rest = text[match.end() :]
    if scheme == "file":
        if not allow_local:
            raise StorageURIError("file:// names a path on the node: use pvc:// for a volume")
        if not rest.startswith("/"):
            raise StorageURIError(f"{uri!r}: a file URI needs an absolute path (file:///...)")
        return StorageURI(uri=text, scheme="file", path=unquote(rest))
    if scheme not in SPEC_SCHEMES:
        raise StorageURIError(
            f"unsupported storage URI scheme {scheme!r} in {uri!r}: use pvc://, http://, "
            "https:// or s3://"
        )
    authority, _, path = rest.partition("/")
    if scheme in ("http", "https"):
        parts = urlsplit(text)
        if not parts.hostname:
            raise StorageURIError(f"{uri!r} has no host")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise StorageURIError(f"{uri!r}: {exc}") from exc
        return StorageURI(uri=text, scheme=scheme, authority=parts.netloc, path=path)  # type: ignore[arg-type]
    decoded = unquote(path)
    if scheme == "pvc":
        if not _CLAIM.match(authority):
            raise StorageURIError(
                f"{uri!r}: {authority!r} is not a PersistentVolumeClaim name (a DNS-1123 label)"
            )
        clean = posixpath.normpath("/" + decoded).lstrip("/") if decoded else ""
        if ".." in decoded.split("/"):
            raise StorageURIError(f"{uri!r}: the path must stay inside the claim (no '..')")
        return StorageURI(uri=text, scheme="pvc", authority=authority, path=clean)
    if not _BUCKET.match(authority):
        raise StorageURIError(
            f"{uri!r}: {authority!r} is not an S3 bucket name (3-63 lower-case letters, "
            "digits, '.' and '-')"
        )
    if ".." in decoded.split("/"):
        raise StorageURIError(f"{uri!r}: the key must not contain '..' segments")
    return StorageURI(uri=text, scheme="s3", authority=authority, path=decoded)


def check_sha256(value: str) -> str:
    """A sha256 as 64 lower-case hex digits (upper case is accepted and folded)."""
    folded = value.strip().lower()
    if not _SHA256.match(folded):
        raise StorageURIError(f"sha256 must be 64 hexadecimal digits, not {value!r}")
    return folded


def pod_path(uri: StorageURI, mount: str = MODEL_MOUNT) -> str:
    """Where the model is in the pod: the download (or the claim's path) under ``mount``."""
    if uri.scheme == "pvc":
        return posixpath.join(mount, uri.path) if uri.path else mount
    if uri.scheme == "file":
        return uri.path
    name = uri.file_name
    return posixpath.join(mount, name) if name else mount
