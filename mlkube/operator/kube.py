"""The one module of the ModelService operator that talks to the Kubernetes API.

A small asynchronous client over aiohttp that authenticates with the same credentials kopf
obtained at login (``kopf.ConnectionInfo``), so the operator has a single source of
identity. It does exactly what the reconcile needs: server-side apply of children (field
manager ``mlkube``, ``force=true`` because these fields are ours by definition), reads,
owner-checked deletes and merge patches of ``/status``.

Credentials rotate (projected ServiceAccount tokens, a kubeconfig's ``tokenFile``), so the
client never keeps a copy: it asks its credentials source for the current
``ConnectionInfo`` on every request (kopf's re-login after a 401 updates that source through
our login handler), and on a 401 of its own it logs in again once, with the very login
function kopf uses, and repeats the request once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
import yaml

from mlkube import __version__
from mlkube.operator.builders import FIELD_MANAGER

JsonDict = dict[str, Any]

#: The current credentials: called on every request, so a rotation is seen at once.
CredentialsSource = Callable[[], kopf.ConnectionInfo]
#: Logs in again (re-reading token files) and makes the result the source's current
#: credentials; None when no login method applies any more.
Relogin = Callable[[], Awaitable[kopf.ConnectionInfo | None]]

logger = logging.getLogger("mlkube.operator.kube")

# kind -> (apiVersion, plural) for everything the operator reads or writes.
RESOURCES: dict[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproutes"),
    "Pod": ("v1", "pods"),
    "Event": ("v1", "events"),
    "Secret": ("v1", "secrets"),
    "ModelService": ("mlkube.dev/v1alpha1", "modelservices"),
    "PyTorchJob": ("mlkube.dev/v1alpha1", "pytorchjobs"),
    # Gang schedulers' PodGroups (kind PodGroup in two groups: keyed by kind.group).
    "PodGroup.scheduling.x-k8s.io": ("scheduling.x-k8s.io/v1alpha1", "podgroups"),
    "PodGroup.scheduling.volcano.sh": ("scheduling.volcano.sh/v1beta1", "podgroups"),
}


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own login functions (in-cluster ServiceAccount first, then the kubeconfig),
    plus the kubeconfig's ``tokenFile``.

    Both functions re-read their files on every call, which is what makes a re-login pick
    up a rotated token. ``kopf.login_with_kubeconfig`` ignores ``tokenFile`` (the way
    kubeconfigs point at a token that something else rotates), so it is read here: as in
    client-go, the file's token takes precedence over an inline ``token``.
    """
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs)
    if info is not None:
        return info
    info = kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        return None
    token = kubeconfig_file_token()
    if token:
        info = dataclasses.replace(info, token=token)
    return info


def kubeconfig_file_token() -> str | None:
    """The token in the current kubeconfig user's ``tokenFile``, or None.

    The kubeconfig files are found and merged as ``kopf.login_with_kubeconfig`` does
    (``KUBECONFIG``, else ``~/.kube/config``; the first value wins); a relative
    ``tokenFile`` is relative to the kubeconfig file that names it.
    """
    paths = os.environ.get("KUBECONFIG") or "~/.kube/config"
    current_context: str | None = None
    contexts: dict[str, JsonDict] = {}
    users: dict[str, tuple[JsonDict, Path]] = {}
    for raw in paths.split(os.pathsep):
        path = Path(raw.strip()).expanduser()
        if not raw.strip() or not path.exists():
            continue
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        current_context = current_context or config.get("current-context")
        for item in config.get("contexts") or []:
            contexts.setdefault(item["name"], item.get("context") or {})
        for item in config.get("users") or []:
            users.setdefault(item["name"], (item.get("user") or {}, path.parent))
    context = contexts.get(current_context or "")
    if context is None or context.get("user") not in users:
        return None
    user, base = users[context["user"]]
    token_file = user.get("tokenFile")
    if not token_file:
        return None
    try:
        token = (base / Path(token_file).expanduser()).read_text(encoding="utf-8").strip()
    except OSError as exc:
        logger.warning("cannot read the kubeconfig's tokenFile %s: %s", token_file, exc)
        return None
    return token or None


def _transport(info: kopf.ConnectionInfo) -> tuple[Any, ...]:
    """What the HTTP session (base URL, TLS context) is built from; the rest of the
    credentials go into each request's headers."""
    return (
        info.server,
        info.ca_path,
        info.ca_data,
        info.insecure,
        info.certificate_path,
        info.certificate_data,
        info.private_key_path,
        info.private_key_data,
    )


class ApiError(Exception):
    """A non-2xx answer, with the Kubernetes Status message when there is one."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"HTTP {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message


def collection_path(api_version: str, plural: str, namespace: str | None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace is not None:
        base += f"/namespaces/{quote(namespace, safe='')}"
    return f"{base}/{plural}"


def object_path(
    api_version: str, plural: str, namespace: str | None, name: str, subresource: str = ""
) -> str:
    path = f"{collection_path(api_version, plural, namespace)}/{quote(name, safe='')}"
    return f"{path}/{subresource}" if subresource else path


class KubeAPI:
    """Asynchronous access to the API server with kopf's login credentials.

    ``credentials`` is the source of the current ``kopf.ConnectionInfo`` (a fixed one is
    accepted for tests and tools). ``relogin`` is what a 401 calls; without it a 401 is
    retried only if the source's credentials changed meanwhile.
    """

    def __init__(
        self,
        credentials: kopf.ConnectionInfo | CredentialsSource,
        timeout: float = 30.0,
        *,
        relogin: Relogin | None = None,
    ) -> None:
        if isinstance(credentials, kopf.ConnectionInfo):
            fixed = credentials
            self._credentials: CredentialsSource = lambda: fixed
        else:
            self._credentials = credentials
        self.timeout = timeout
        self._relogin = relogin
        self._session: aiohttp.ClientSession | None = None
        self._transport: tuple[Any, ...] | None = None
        self._retired: list[aiohttp.ClientSession] = []
        self._login_lock = asyncio.Lock()
        self._logins = 0  # completed re-logins: a 401 older than the last one needs none

    @property
    def info(self) -> kopf.ConnectionInfo:
        """The credentials the next request will use."""
        return self._credentials()

    @staticmethod
    def _ssl(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
        if not info.server.startswith("https"):
            return False
        context: ssl.SSLContext = info.as_ssl_context()
        return context

    async def session(self, info: kopf.ConnectionInfo | None = None) -> aiohttp.ClientSession:
        """The session for ``info`` (default: the current credentials).

        It is rebuilt only when the server or the TLS material changes; tokens and basic
        auth travel per request. A replaced session may still carry requests, so it is
        closed with the client, not at once.
        """
        info = info or self.info
        transport = _transport(info)
        if self._session is None or self._session.closed or transport != self._transport:
            if self._session is not None and not self._session.closed:
                self._retired.append(self._session)
            self._session = aiohttp.ClientSession(
                base_url=info.server.rstrip("/") + "/",
                headers={"User-Agent": f"mlkube-operator/{__version__}"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl(info)),
            )
            self._transport = transport
        return self._session

    async def close(self) -> None:
        sessions, self._retired = [*self._retired, self._session], []
        self._session = self._transport = None
        for session in sessions:
            if session is not None:
                await session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: JsonDict | list[JsonDict] | None = None,
        content_type: str = "application/json",
    ) -> JsonDict:
        data = json.dumps(body).encode() if body is not None else None
        logins = self._logins
        info = self.info
        try:
            return await self._send(info, method, path, params, data, content_type)
        except ApiError as exc:
            if exc.status != 401:
                raise
            fresh = await self._reauthenticate(info, logins)
            if fresh is None:
                raise
        return await self._send(fresh, method, path, params, data, content_type)

    async def _reauthenticate(
        self, rejected: kopf.ConnectionInfo, logins: int
    ) -> kopf.ConnectionInfo | None:
        """Credentials worth one more try after ``rejected`` got a 401, or None.

        One re-login at a time: requests refused meanwhile wait for it and reuse its
        result instead of logging in again (``logins`` tells whether one completed since
        the refused request started).
        """
        async with self._login_lock:
            if self._logins == logins and self._relogin is not None:
                logger.info("the API server answered 401 Unauthorized: logging in again")
                try:
                    await self._relogin()
                except Exception as exc:  # the 401 is the error to report, not this
                    logger.warning("logging in again failed: %s", exc)
                self._logins += 1
            current = self.info
        if current == rejected:
            logger.warning("no new credentials to retry with after 401 Unauthorized")
            return None
        logger.info("re-authenticated after 401 Unauthorized: retrying with the new credentials")
        return current

    async def _send(
        self,
        info: kopf.ConnectionInfo,
        method: str,
        path: str,
        params: dict[str, str] | None,
        data: bytes | None,
        content_type: str,
    ) -> JsonDict:
        session = await self.session(info)
        headers = {
            **info.as_http_headers(),
            "Content-Type": content_type,
            "Accept": "application/json",
        }
        async with session.request(
            method, path.lstrip("/"), params=params, data=data, headers=headers
        ) as response:
            text = await response.text()
            if response.status >= 400:
                message, reason = text[:500], ""
                try:
                    payload = json.loads(text)
                    message = payload.get("message", message)
                    reason = payload.get("reason", "")
                except (ValueError, AttributeError):
                    pass
                raise ApiError(response.status, message, reason)
            if not text:
                return {}
            result: JsonDict = json.loads(text)
            return result

    # ------------------------------------------------------------------ operations

    async def apply(
        self, obj: JsonDict, field_manager: str = FIELD_MANAGER, resource: str | None = None
    ) -> JsonDict:
        """Server-side apply ``obj`` as field manager ``mlkube``, taking over conflicts.

        Another ``field_manager`` is used only to hand a field over (the replica count to
        an HPA), never for the children themselves. The API server creates the object if
        it does not exist (201). ``resource`` is the :data:`RESOURCES` key where the kind
        alone is ambiguous (PodGroup).
        """
        api_version, plural = RESOURCES[resource or obj["kind"]]
        meta = obj["metadata"]
        return await self.request(
            "PATCH",
            object_path(api_version, plural, meta.get("namespace"), meta["name"]),
            params={"fieldManager": field_manager, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    async def json_patch(
        self, kind: str, namespace: str | None, name: str, ops: list[JsonDict]
    ) -> JsonDict:
        """JSON patch (RFC 6902) as field manager ``mlkube``; ``test`` ops make it atomic."""
        api_version, plural = RESOURCES[kind]
        return await self.request(
            "PATCH",
            object_path(api_version, plural, namespace, name),
            params={"fieldManager": FIELD_MANAGER},
            body=ops,
            content_type="application/json-patch+json",
        )

    async def serves(self, kind: str) -> bool:
        """Whether the API server serves ``kind`` (a :data:`RESOURCES` key): API discovery,
        which every authenticated client may read (a CRD that is not installed: False)."""
        api_version, plural = RESOURCES[kind]
        root = "api" if "/" not in api_version else "apis"
        try:
            found = await self.request("GET", f"/{root}/{api_version}")
        except ApiError as exc:
            if exc.status in (403, 404, 503):
                return False
            raise
        return any(r.get("name") == plural for r in found.get("resources") or [])

    async def get(self, kind: str, namespace: str | None, name: str) -> JsonDict | None:
        api_version, plural = RESOURCES[kind]
        try:
            return await self.request("GET", object_path(api_version, plural, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str | None, label_selector: str) -> list[JsonDict]:
        api_version, plural = RESOURCES[kind]
        result = await self.request(
            "GET",
            collection_path(api_version, plural, namespace),
            params={"labelSelector": label_selector},
        )
        items: list[JsonDict] = result.get("items") or []
        return items

    async def find(self, kind: str, namespace: str, name: str) -> JsonDict | None:
        """One object by name through ``list`` with a field selector.

        For kinds the operator may list but not get: the chart grants Services only
        ``list`` (RBAC derived from the calls the operator makes).
        """
        api_version, plural = RESOURCES[kind]
        result = await self.request(
            "GET",
            collection_path(api_version, plural, namespace),
            params={"fieldSelector": f"metadata.name={name}"},
        )
        items: list[JsonDict] = result.get("items") or []
        return items[0] if items else None

    async def create(self, kind: str, namespace: str | None, obj: JsonDict) -> JsonDict | None:
        """POST ``obj``; None if an object of that name exists already (409)."""
        api_version, plural = RESOURCES[kind]
        try:
            return await self.request(
                "POST",
                collection_path(api_version, plural, namespace),
                params={"fieldManager": FIELD_MANAGER},
                body=obj,
            )
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        grace_seconds: int | None = None,
        propagation: str | None = None,
    ) -> bool:
        """Delete ``name``; True if this call deleted it.

        With ``uid`` the delete is conditional on the object still being that one (a
        same-named successor someone created meanwhile is never removed). Gone already
        (404) or replaced (409) answer False.
        """
        api_version, plural = RESOURCES[kind]
        body: JsonDict = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        if propagation is not None:
            body["propagationPolicy"] = propagation
        try:
            await self.request(
                "DELETE", object_path(api_version, plural, namespace, name), body=body
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def delete_owned(
        self,
        kind: str,
        namespace: str,
        name: str,
        owner_uid: str,
        current: JsonDict | None = None,
    ) -> bool:
        """Delete ``name`` only if ``owner_uid`` is its controller; True if deleted.

        ``current`` is the object as the caller knows it (the watch-fed cache); without it
        the object is read first. The uid precondition makes the delete atomic with the
        ownership check: a same-named object someone else created in between is never
        removed.
        """
        if current is None:
            current = await self.get(kind, namespace, name)
        if current is None:
            return False
        owners = current.get("metadata", {}).get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid and o.get("controller") for o in owners):
            return False
        uid = current.get("metadata", {}).get("uid")
        return await self.delete(kind, namespace, name, uid=uid or None)

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: JsonDict
    ) -> JsonDict:
        """Merge-patch ``/status``: only the keys given change (others' fields survive)."""
        api_version, plural = RESOURCES[kind]
        return await self.request(
            "PATCH",
            object_path(api_version, plural, namespace, name, "status"),
            params={"fieldManager": FIELD_MANAGER},
            body={"status": status},
            content_type="application/merge-patch+json",
        )
