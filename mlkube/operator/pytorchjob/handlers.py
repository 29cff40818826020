"""kopf wiring of the PyTorchJob controller: read, plan, apply, write status.

Every trigger runs the same level-based :func:`reconcile`: the job is read fresh, its pods
and services are listed, :func:`~mlkube.operator.pytorchjob.planner.plan` decides, and the
plan is applied (pods and headless services created with POST — a pod's spec is immutable,
so there is nothing to apply over —, deletions guarded by the child's uid), then the status
is written only if it changed, and one Event is recorded per transition.

Triggers: create/resume/spec update of a job; any event of a pod the operator created
(a phase change is what moves a job); a timer (drift check: deleted children come back);
and a one-shot wake-up at the time the plan names (activeDeadlineSeconds, TTL, a pod stuck
Terminating), so time-based transitions happen on time rather than on the next timer tick.
Handlers return nothing and never crash the operator: an invalid spec becomes a ``Failed``
condition, transient API errors are retried by kopf (``kopf.TemporaryError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import kopf
from pydantic import ValidationError

from mlkube.api.pytorchjob import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    PyTorchJob,
    PyTorchJobStatus,
    name_problem,
)
from mlkube.operator import metrics
from mlkube.operator.kube import ApiError, collection_path, object_path
from mlkube.operator.pytorchjob.planner import Plan, plan
from mlkube.operator.pytorchjob.pods import LABEL_JOB_NAME, LABEL_MANAGED_BY, MANAGED_BY
from mlkube.operator.pytorchjob.status import Event, invalid_spec_status

if TYPE_CHECKING:
    from mlkube.operator.app import OperatorContext
    from mlkube.operator.kube import KubeAPI

JsonDict = dict[str, Any]
log = logging.getLogger("mlkube.operator.pytorchjob")
API_VERSION = f"{GROUP}/{VERSION}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def owned(objs: Sequence[JsonDict], job_name: str, uid: str) -> list[JsonDict]:
    """The objects whose controller is this job (a same-named job's leftovers are not)."""
    out = []
    for obj in objs:
        meta = obj.get("metadata") or {}
        if (meta.get("labels") or {}).get(LABEL_JOB_NAME) != job_name:
            continue
        refs = meta.get("ownerReferences") or []
        if any(r.get("uid") == uid and r.get("controller") for r in refs):
            out.append(obj)
    return out


def controlling_job(meta: Mapping[str, Any]) -> str | None:
    """The name of the PyTorchJob that controls an object, from its owner references."""
    for ref in meta.get("ownerReferences") or []:
        if (
            ref.get("kind") == KIND
            and ref.get("apiVersion") == API_VERSION
            and ref.get("controller")
        ):
            return str(ref.get("name"))
    return None


def _problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


class _Client:
    """The handful of API calls a plan needs, over the operator's shared client."""

    def __init__(self, api: KubeAPI, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    def _job_path(self, name: str, subresource: str = "") -> str:
        return object_path(API_VERSION, PLURAL, self.namespace, name, subresource)

    async def job(self, name: str) -> JsonDict | None:
        try:
            return await self.api.request("GET", self._job_path(name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def children(self, plural: str, job_name: str, uid: str) -> list[JsonDict]:
        result = await self.api.request(
            "GET",
            collection_path("v1", plural, self.namespace),
            params={"labelSelector": f"{LABEL_JOB_NAME}={job_name}"},
        )
        return owned(result.get("items") or [], job_name, uid)

    async def create(self, plural: str, obj: JsonDict) -> None:
        try:
            await self.api.request("POST", collection_path("v1", plural, self.namespace), body=obj)
        except ApiError as exc:
            if exc.status != 409:  # already there: a previous pass made it
                raise

    async def delete(self, plural: str, obj: JsonDict, grace: int | None = None) -> None:
        meta = obj.get("metadata") or {}
        body: JsonDict = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if meta.get("uid"):
            body["preconditions"] = {"uid": meta["uid"]}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        try:
            await self.api.request(
                "DELETE", object_path("v1", plural, self.namespace, meta["name"]), body=body
            )
        except ApiError as exc:
            if exc.status not in (404, 409):  # gone already, or replaced by someone else
                raise

    async def delete_job(self, name: str, uid: str) -> None:
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
            "preconditions": {"uid": uid},
        }
        try:
            await self.api.request("DELETE", self._job_path(name), body=body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    async def write_status(self, name: str, status: JsonDict) -> None:
        try:
            await self.api.request(
                "PATCH",
                self._job_path(name, "status"),
                body={"status": status},
                content_type="application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise


#: API calls in flight at once while applying one plan: a 512-worker job is created in a few
#: round trips' time rather than 512 sequential ones, without flooding the API server.
CONCURRENCY = 16


async def _each(calls: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run the calls with bounded concurrency; every call runs, the first error is raised."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await call()

    results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def apply_plan(
    client: _Client, job: PyTorchJob, todo: Plan, pods: list[JsonDict], services: list[JsonDict]
) -> None:
    """Carry out the creations and deletions of one plan (status is written separately).

    Deletions go first, so that a name a deleted object held is free for its replacement.
    """
    by_name = {p["metadata"]["name"]: p for p in pods}
    svc_by_name = {s["metadata"]["name"]: s for s in services}
    if todo.delete_job:
        await client.delete_job(job.name, str(job.metadata.get("uid", "")))
        return
    await _each(
        [partial(client.delete, "pods", by_name[n], 0) for n in todo.force_delete_pods]
        + [partial(client.delete, "pods", by_name[n]) for n in todo.delete_pods]
        + [partial(client.delete, "services", svc_by_name[n]) for n in todo.delete_services]
    )
    await _each(
        [partial(client.create, "services", svc) for svc in todo.create_services]
        + [partial(client.create, "pods", pod) for pod in todo.create_pods]
    )


def _post_events(body: JsonDict, events: Sequence[Event]) -> None:
    for event in events:
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        meta = body.get("metadata") or {}
        log.log(level, "%s/%s: %s", meta.get("namespace"), meta.get("name"), event.message)
        with contextlib.suppress(LookupError):  # outside kopf's context (shutdown paths)
            kopf.event(
                kopf.Body(cast(kopf.RawBody, body)),
                type=event.type,
                reason=event.reason,
                message=event.message,
            )


async def reconcile(ctx: OperatorContext, namespace: str, name: str) -> float | None:
    """One level-based pass over one job; returns when to look again (seconds) if needed."""
    async with ctx.lock(KIND, namespace, name):
        return await _reconcile_locked(ctx, namespace, name)


async def _reconcile_locked(ctx: OperatorContext, namespace: str, name: str) -> float | None:
    """One pass, counted and timed (``mlkube_operator_reconciles_total{kind="PyTorchJob"}``)."""
    with ctx.metrics.reconcile(KIND) as outcome:
        return await _reconcile_pass(ctx, namespace, name, outcome)


async def _reconcile_pass(
    ctx: OperatorContext, namespace: str, name: str, outcome: metrics.Outcome
) -> float | None:
    client = _Client(ctx.api, namespace)
    try:
        body = await client.job(name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            # gone: garbage collection removes the children
            ctx.metrics.forget_pytorchjob(namespace, name)
            outcome.result = metrics.DELETED
            return None
        try:
            previous = PyTorchJobStatus.model_validate(body.get("status") or {})
        except ValidationError:
            # A status someone else mangled is rebuilt from the pods, not a reason to stop.
            previous = PyTorchJobStatus()
        problem = name_problem(str(body["metadata"].get("name", "")))
        try:
            job = PyTorchJob.model_validate({**body, "status": previous.to_kube()})
        except ValidationError as exc:
            problem = _problems(exc)
        if problem is not None:
            outcome.result = metrics.INVALID_SPEC
            status = invalid_spec_status(previous, name, problem, _now())
            ctx.metrics.observe_pytorchjob(namespace, name, status)
            if status != previous:
                await client.write_status(name, status.to_kube())
                _post_events(body, [Event("Warning", f"{KIND}InvalidSpec", problem)])
            return None
        uid = str(job.metadata.get("uid", ""))
        pods = await client.children("pods", name, uid)
        services = await client.children("services", name, uid)
        todo = plan(job, pods, services, _now())
        await apply_plan(client, job, todo, pods, services)
        if todo.delete_job:
            ctx.metrics.forget_pytorchjob(namespace, name)
            outcome.result = metrics.DELETED
            _post_events(body, todo.events)
            return None
        ctx.metrics.observe_pytorchjob(namespace, name, todo.status)
        if todo.status.to_kube() != previous.to_kube():
            await client.write_status(name, todo.status.to_kube())
        _post_events(body, todo.events)
        return todo.requeue_after
    except ApiError as exc:
        raise kopf.TemporaryError(f"{KIND} {namespace}/{name}: {exc}", delay=5) from exc


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    """Add the PyTorchJob handlers to ``registry``."""
    wakeups: dict[tuple[str, str], asyncio.TimerHandle] = {}
    tasks: set[asyncio.Task[None]] = set()
    waiting: set[tuple[str, str]] = set()
    stopping = asyncio.Event()

    async def run(namespace: str, name: str) -> None:
        key = (namespace, name)
        if stopping.is_set():
            return  # kopf may still deliver events while it shuts down; the client is closed
        if key in waiting:
            return  # a pass that has not started reading yet will see this change too
        waiting.add(key)
        try:
            async with ctx.lock(KIND, namespace, name):
                waiting.discard(key)
                delay = await _reconcile_locked(ctx, namespace, name)
        finally:
            waiting.discard(key)
        old = wakeups.pop(key, None)
        if old is not None:
            old.cancel()
        if delay is not None:
            loop = asyncio.get_running_loop()
            wakeups[key] = loop.call_later(delay, lambda: _spawn(namespace, name))

    def _spawn(namespace: str, name: str) -> None:
        wakeups.pop((namespace, name), None)
        task = asyncio.get_running_loop().create_task(_quiet(namespace, name))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _quiet(namespace: str, name: str) -> None:
        """For triggers kopf does not retry (pod events, wake-ups): log; the timer retries."""
        try:
            await run(namespace, name)
        except kopf.TemporaryError as exc:
            log.warning("%s; the timer will retry", exc)
        except Exception:  # a bug must not kill the wake-up machinery or the operator
            log.exception(
                "reconcile of PyTorchJob %s/%s failed; the timer will retry", namespace, name
            )

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def reconcile_pytorchjob(name: str, namespace: str | None, **_: Any) -> None:
        await run(namespace or "default", name)

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=ctx.config.reconcile_interval,
        initial_delay=ctx.config.reconcile_interval,
        registry=registry,
    )
    async def pytorchjob_drift_check(name: str, namespace: str | None, **_: Any) -> None:
        await run(namespace or "default", name)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def pytorchjob_event(type: str, name: str, namespace: str | None, **_: Any) -> None:
        if type == "DELETED":
            ctx.metrics.forget_pytorchjob(namespace or "default", name)

    @kopf.on.event(
        "v1",
        "pods",
        labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB_NAME: kopf.PRESENT},
        registry=registry,
    )
    async def training_pod_changed(
        meta: Mapping[str, Any], namespace: str | None, **_: Any
    ) -> None:
        job = controlling_job(meta)
        if job and namespace:
            await _quiet(namespace, job)

    @kopf.on.cleanup(registry=registry)
    async def stop_wakeups(**_: Any) -> None:
        stopping.set()
        for handle in wakeups.values():
            handle.cancel()
        wakeups.clear()
        for task in list(tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
