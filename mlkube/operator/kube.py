"""The one module of the ModelService operator that talks to the Kubernetes API.

A small asynchronous client over aiohttp that authenticates with the same credentials kopf
obtained at login (``kopf.ConnectionInfo``), so the operator has a single source of
identity. It does exactly what the reconcile needs: server-side apply of children (field
manager ``mlkube``, ``force=true`` because these fields are ours by definition), reads,
owner-checked deletes and merge patches of ``/status``.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from mlkube import __version__
from mlkube.operator.builders import FIELD_MANAGER

JsonDict = dict[str, Any]

# kind -> (apiVersion, plural) for everything the operator reads or writes.
RESOURCES: dict[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproutes"),
    "Pod": ("v1", "pods"),
    "Event": ("v1", "events"),
    "ModelService": ("mlkube.dev/v1alpha1", "modelservices"),
    "PyTorchJob": ("mlkube.dev/v1alpha1", "pytorchjobs"),
}


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


@dataclass
class KubeAPI:
    """Asynchronous access to the API server with kopf's login credentials."""

    info: kopf.ConnectionInfo
    timeout: float = 30.0
    _session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.info.server.startswith("https"):
            return False
        context: ssl.SSLContext = self.info.as_ssl_context()
        return context

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                base_url=self.info.server.rstrip("/") + "/",
                headers={
                    **self.info.as_http_headers(),
                    "User-Agent": f"mlkube-operator/{__version__}",
                },
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl()),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: JsonDict | list[JsonDict] | None = None,
        content_type: str = "application/json",
    ) -> JsonDict:
        session = await self.session()
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type, "Accept": "application/json"}
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

    async def apply(self, obj: JsonDict, field_manager: str = FIELD_MANAGER) -> JsonDict:
        """Server-side apply ``obj`` as field manager ``mlkube``, taking over conflicts.

        Another ``field_manager`` is used only to hand a field over (the replica count to
        an HPA), never for the children themselves.

        The API server creates the object if it does not exist. Some API emulators answer
        404 to an apply of a missing object instead; then the object is created, with the
        same field manager, which leaves it in the state an apply would have.
        """
        api_version, plural = RESOURCES[obj["kind"]]
        meta = obj["metadata"]
        path = object_path(api_version, plural, meta.get("namespace"), meta["name"])
        params = {"fieldManager": field_manager, "force": "true"}
        try:
            return await self.request(
                "PATCH", path, params=params, body=obj, content_type="application/apply-patch+yaml"
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
        return await self.request(
            "POST",
            collection_path(api_version, plural, meta.get("namespace")),
            params={"fieldManager": field_manager},
            body=obj,
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
