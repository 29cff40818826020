"""The command line's access to the API server: the operator's client, a kubeconfig login.

:class:`~mlkube.operator.kube.KubeAPI` already speaks to the API server with a kopf
``ConnectionInfo``; here it is fed from the user's kubeconfig (``KUBECONFIG`` or
``~/.kube/config``, its current context and namespace), the way kubectl is. Errors become
:class:`CliError`: one line naming the object and what to do next, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import kopf

from mlkube.api.actions import CLI_FIELD_MANAGER
from mlkube.kubectl.errors import CliError
from mlkube.operator.kube import ApiError, KubeAPI, collection_path, login, object_path

JsonDict = dict[str, Any]

#: kind -> (apiVersion, plural, how a person names it on the command line)
KINDS: dict[str, tuple[str, str, str]] = {
    "ModelService": ("mlkube.dev/v1alpha1", "modelservices", "msvc"),
    "PyTorchJob": ("mlkube.dev/v1alpha1", "pytorchjobs", "ptj"),
    "Deployment": ("apps/v1", "deployments", "deployments"),
    "ReplicaSet": ("apps/v1", "replicasets", "replicasets"),
    "Pod": ("v1", "pods", "pods"),
    "Event": ("v1", "events", "events"),
}

RELEASE_MANAGER_ROLE = "mlkube-release-manager"


def explain(exc: ApiError, what: str, namespace: str | None, verb: str = "read") -> CliError:
    """One line for an API error: the object, the cause, the next step."""
    where = f" in namespace {namespace}" if namespace else ""
    if exc.status == 404:
        return CliError(
            f"{what} not found{where}; list what there is with: kubectl mlkube get "
            f"{'ptj' if what.startswith('PyTorchJob') else 'msvc'}"
            + (f" -n {namespace}" if namespace else " -A")
        )
    if exc.status == 403:
        return CliError(
            f"not allowed to {verb} {what}{where}: {exc.message}; ask for the "
            f"{RELEASE_MANAGER_ROLE} ClusterRole (bound in this namespace with a RoleBinding)"
        )
    if exc.status == 401:
        return CliError(f"the API server refused the credentials ({exc.message}); log in again")
    return CliError(f"cannot {verb} {what}{where}: {exc}")


class Client:
    """A few read and patch calls, with the user's credentials."""

    def __init__(self, api: KubeAPI, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    @classmethod
    def from_kubeconfig(
        cls, namespace: str | None, timeout: float = 30.0, kubeconfig: str | None = None
    ) -> Client:
        """Log in as kubectl would; ``kubeconfig`` (``--kubeconfig``) wins over
        ``KUBECONFIG`` for this login only (the process environment is left as it was)."""
        try:
            with _kubeconfig_env(kubeconfig):
                info = login(settings=kopf.OperatorSettings())
        except kopf.LoginError as exc:
            raise CliError(f"cannot log in with the kubeconfig: {exc}") from exc
        except (OSError, ValueError, KeyError) as exc:  # a missing or malformed file
            raise CliError(
                f"cannot read the kubeconfig ({exc}); check KUBECONFIG or --kubeconfig"
            ) from exc
        if info is None:
            raise CliError(
                "no kubeconfig found: set KUBECONFIG or create ~/.kube/config "
                "(kubectl config view shows what kubectl uses)"
            )
        return cls(KubeAPI(info, timeout=timeout), namespace or info.default_namespace or "default")

    async def close(self) -> None:
        await self.api.close()

    async def call(
        self,
        method: str,
        path: str,
        what: str,
        namespace: str | None,
        *,
        verb: str = "read",
        **kwargs: Any,
    ) -> JsonDict:
        try:
            return await self.api.request(method, path, **kwargs)
        except ApiError as exc:
            raise explain(exc, what, namespace, verb) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise CliError(
                f"cannot reach the API server at {self.api.info.server}: {exc or type(exc).__name__}"
            ) from exc

    async def get(self, kind: str, name: str, namespace: str | None = None) -> JsonDict:
        api_version, plural, _ = KINDS[kind]
        ns = namespace or self.namespace
        path = object_path(api_version, plural, ns, name)
        return await self.call("GET", path, f"{kind} {name}", ns)

    async def list(
        self,
        kind: str,
        namespace: str | None,
        *,
        labels: str = "",
        fields: str = "",
    ) -> list[JsonDict]:
        """``namespace`` None lists every namespace (``-A``)."""
        api_version, plural, _ = KINDS[kind]
        params = {}
        if labels:
            params["labelSelector"] = labels
        if fields:
            params["fieldSelector"] = fields
        path = collection_path(api_version, plural, namespace)
        what = f"{plural}" if namespace else f"{plural} in all namespaces"
        result = await self.call("GET", path, what, namespace, verb="list", params=params or None)
        items: list[JsonDict] = result.get("items") or []
        return items

    async def annotate(self, kind: str, name: str, annotations: dict[str, str]) -> JsonDict:
        """Merge-patch annotations only, as field manager ``kubectl-mlkube``: ``spec`` is
        never part of the request."""
        api_version, plural, _ = KINDS[kind]
        path = object_path(api_version, plural, self.namespace, name)
        return await self.call(
            "PATCH",
            path,
            f"{kind} {name}",
            self.namespace,
            verb="patch",
            params={"fieldManager": CLI_FIELD_MANAGER},
            body={"metadata": {"annotations": annotations}},
            content_type="application/merge-patch+json",
        )

    async def log_lines(
        self, pod: str, container: str, *, follow: bool, tail: int | None
    ) -> AsyncIterator[str]:
        """Lines of one container's log (the pod log endpoint, streamed when following)."""
        path = object_path("v1", "pods", self.namespace, pod, "log")
        params = {"container": container}
        if follow:
            params["follow"] = "true"
        if tail is not None:
            params["tailLines"] = str(tail)
        info = self.api.info
        session = await self.api.session(info)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None) if follow else None
        try:
            async with session.get(
                path.lstrip("/"),
                params=params,
                headers=info.as_http_headers(),
                timeout=timeout or aiohttp.ClientTimeout(total=self.api.timeout),
            ) as response:
                if response.status >= 400:
                    text = await response.text()
                    try:
                        message = json.loads(text).get("message", text)
                    except ValueError:
                        message = text
                    raise explain(
                        ApiError(response.status, str(message)[:300]),
                        f"the log of pod {pod}",
                        self.namespace,
                    )
                async for raw in response.content:
                    yield raw.decode(errors="replace").rstrip("\n")
        except (aiohttp.ClientError, OSError) as exc:
            raise CliError(f"the log of pod {pod} stopped: {exc or type(exc).__name__}") from exc


@contextlib.contextmanager
def _kubeconfig_env(path: str | None) -> Iterator[None]:
    """``KUBECONFIG`` set to ``path`` while kopf's login reads it (its only input)."""
    if path is None:
        yield
        return
    before = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = before
