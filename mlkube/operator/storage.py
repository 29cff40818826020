"""Pure checks of what a ModelService's model storage needs from its namespace.

A Secret that is missing (or lacks the credential keys) would otherwise surface only as a
pod stuck in ``CreateContainerConfigError``; checked before anything is applied, it is a
``Degraded`` condition and a Warning Event on the ModelService that name the Secret and the
keys, and the revision already serving keeps serving.
"""

from __future__ import annotations

from typing import Any

from mlkube.api.modelservice import ModelServiceSpec
from mlkube.operator.builders import S3_SECRET_KEYS, storage_uri

JsonDict = dict[str, Any]


def s3_secret_name(spec: ModelServiceSpec) -> str | None:
    """The Secret the pods' `fetch-model` init container reads, if any."""
    uri = storage_uri(spec)
    storage = spec.model.storage
    if uri is None or uri.scheme != "s3" or storage is None:
        return None
    return storage.secret_name


def secret_problems(name: str, namespace: str, secret: JsonDict | None) -> list[str]:
    """What is wrong with the S3 Secret as read (None: it does not exist)."""
    required = [key for key, optional in S3_SECRET_KEYS if not optional]
    if secret is None:
        return [
            f"model.storage.secretName: Secret {name} does not exist in namespace {namespace}; "
            f"create it with the keys {' and '.join(required)} (and optionally "
            "AWS_ENDPOINT_URL, AWS_REGION, AWS_SESSION_TOKEN), see docs/storage.md"
        ]
    data = {**(secret.get("data") or {}), **(secret.get("stringData") or {})}
    missing = [key for key in required if not data.get(key)]
    if missing:
        return [
            f"model.storage.secretName: Secret {name} in namespace {namespace} has no "
            f"{' or '.join(missing)}"
        ]
    return []
