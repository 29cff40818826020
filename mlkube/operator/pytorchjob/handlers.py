"""The PyTorchJob controller's shell: read (from the cache), plan (pure), apply, write status.

Every pass is the same level-based :func:`reconcile`: the job and the pods and services it
owns come from the watch-fed cache, :func:`~mlkube.operator.pytorchjob.planner.plan`
decides, and the plan is applied through the operator's one client (pods and headless
services created with POST — a pod's spec is immutable, so there is nothing to apply
over —, deletions guarded by the child's uid), then the status is written only if it
changed, and one Event is recorded per transition.

Passes are queued (:mod:`mlkube.operator.workqueue`) by any watch event of the job or of
a pod or service it controls (a phase change is what moves a job), and by the pass itself:
at the time the plan names (activeDeadlineSeconds, TTL, a pod stuck Terminating), so
time-based transitions happen on time, and at the drift interval at the latest (deleted
children come back). An invalid spec becomes a ``Failed`` condition; transient API errors
are retried with backoff. A job whose ``runPolicy.managedBy`` names another controller
(Kueue's MultiKueue) is left alone: no children, no status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
    managed_elsewhere,
    name_problem,
)
from mlkube.operator import clock, metrics
from mlkube.operator.events import Event, record
from mlkube.operator.kube import ApiError
from mlkube.operator.pytorchjob.gang import PodGroupAPI, gang_requested
from mlkube.operator.pytorchjob.planner import HPA, Plan, plan
from mlkube.operator.pytorchjob.pods import LABEL_JOB_NAME
from mlkube.operator.pytorchjob.status import invalid_spec_status

if TYPE_CHECKING:
    from mlkube.operator.app import OperatorContext

JsonDict = dict[str, Any]
log = logging.getLogger("mlkube.operator.pytorchjob")
API_VERSION = f"{GROUP}/{VERSION}"


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
    ctx: OperatorContext,
    job: PyTorchJob,
    todo: Plan,
    pods: list[JsonDict],
    services: list[JsonDict],
) -> None:
    """Carry out the creations and deletions of one plan (status is written separately).

    Deletions go first, so that a name a deleted object held is free for its replacement.
    Created objects go into the cache at once, so the next pass does not create them again
    before the watch reports them.
    """
    api, namespace = ctx.api, job.namespace
    by_name = {p["metadata"]["name"]: p for p in pods}
    svc_by_name = {s["metadata"]["name"]: s for s in services}
    if todo.delete_job:
        uid = str(job.metadata.get("uid", ""))
        await api.delete(KIND, namespace, job.name, uid=uid, propagation="Background")
        return

    def delete(kind: str, obj: JsonDict, grace: int | None = None) -> Callable[[], Awaitable[None]]:
        meta = obj["metadata"]

        async def call() -> None:
            await api.delete(
                kind, namespace, meta["name"], uid=meta.get("uid"), grace_seconds=grace
            )
            ctx.cache.deleting(kind, obj, clock.now_iso())

        return call

    def create(kind: str, obj: JsonDict) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            created = await api.create(kind, namespace, obj)  # None: a previous pass made it
            if created is not None:
                ctx.cache.wrote(kind, created)

        return call

    await _each(
        [delete("Pod", by_name[n], 0) for n in todo.force_delete_pods]
        + [delete("Pod", by_name[n]) for n in todo.delete_pods]
        + [delete("Service", svc_by_name[n]) for n in todo.delete_services]
    )
    await _each(
        [create("Service", svc) for svc in todo.create_services]
        + [create("Pod", pod) for pod in todo.create_pods]
    )


#: Seconds an answer of API discovery (is a PodGroup API served?) is trusted: a gang
#: scheduler installed while jobs wait for it is seen this soon.
DISCOVERY_TTL = 5.0


async def served_pod_group_apis(ctx: OperatorContext) -> frozenset[PodGroupAPI]:
    """The PodGroup APIs the cluster serves, from API discovery, asked at most every
    :data:`DISCOVERY_TTL` seconds."""
    served = set()
    for api in PodGroupAPI:
        known = ctx.served.get(api.resource)
        now = time.monotonic()
        if known is None or now - known[1] >= DISCOVERY_TTL:
            known = (await ctx.api.serves(api.resource), now)
            ctx.served[api.resource] = known
        if known[0]:
            served.add(api)
    return frozenset(served)


async def apply_extras(ctx: OperatorContext, job: PyTorchJob, todo: Plan) -> list[Event]:
    """Apply or delete the job's optional children (PodGroup, HPA) where due (see
    :class:`~mlkube.operator.cache.UnwatchedChildren`), before any pod is created.

    An HPA the API server refuses (its ``metrics`` are passed through as the user wrote
    them) becomes a Warning Event naming the problem; the job runs on without it.
    """
    api, memo, now = ctx.api, ctx.unwatched, clock.now()
    uid = str(job.metadata.get("uid", ""))
    events: list[Event] = []
    planned = set()
    for extra in todo.extras:
        key = (extra.resource, job.namespace, extra.name)
        planned.add(key)
        if extra.manifest is None:
            if memo.delete_due(key, probe_unknown=True):
                await api.delete_owned(extra.resource, job.namespace, extra.name, uid)
                memo.absent(key, now)
            continue
        if not memo.apply_due(key, extra.manifest, now, ctx.config.reconcile_interval):
            continue
        try:
            await api.apply(extra.manifest, resource=extra.resource)
        except ApiError as exc:
            if extra.resource != HPA or exc.status not in (400, 422):
                raise
            events.append(
                Event(
                    "Warning",
                    f"{KIND}InvalidAutoscaler",
                    f"elasticPolicy.metrics: the HorizontalPodAutoscaler was refused: {exc}",
                )
            )
        memo.applied(key, extra.manifest, now)
    for key in memo.present(job.namespace, job.name):
        if key not in planned:  # no longer wanted at all (elasticPolicy or gang removed)
            await api.delete_owned(key[0], job.namespace, job.name, uid)
            memo.absent(key, now)
    return events


async def reconcile(ctx: OperatorContext, namespace: str, name: str) -> float | None:
    """One level-based pass over one job; returns when to look again (seconds)."""
    async with ctx.lock(KIND, namespace, name):
        with ctx.metrics.reconcile(KIND) as outcome:
            after = await _reconcile_pass(ctx, namespace, name, outcome)
    if outcome.result == metrics.DELETED:
        return None
    drift = ctx.config.reconcile_interval
    return drift if after is None else min(after, drift)


async def _reconcile_pass(
    ctx: OperatorContext, namespace: str, name: str, outcome: metrics.Outcome
) -> float | None:
    api = ctx.api
    try:
        body = ctx.cache.get(KIND, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            # gone: garbage collection removes the children
            ctx.metrics.forget_pytorchjob(namespace, name)
            ctx.unwatched.forget(namespace, name)
            outcome.result = metrics.DELETED
            return None
        manager = managed_elsewhere(body)
        if manager is not None:
            # Kueue's MultiKueue (or another controller) runs it: no pods, no status here.
            log.debug("%s/%s: managed by %s, not reconciled", namespace, name, manager)
            ctx.metrics.forget_pytorchjob(namespace, name)
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
            status = invalid_spec_status(previous, name, problem, clock.now())
            ctx.metrics.observe_pytorchjob(namespace, name, status)
            if status != previous:
                await _write_status(ctx, namespace, name, status.to_kube())
                await record(api, body, [Event("Warning", f"{KIND}InvalidSpec", problem)], log)
            return None
        uid = str(job.metadata.get("uid", ""))
        pods = owned(ctx.cache.owned("Pod", namespace, LABEL_JOB_NAME, name), name, uid)
        services = owned(ctx.cache.owned("Service", namespace, LABEL_JOB_NAME, name), name, uid)
        apis = await served_pod_group_apis(ctx) if gang_requested(job) else frozenset()
        todo = plan(job, pods, services, clock.now(), apis)
        if log.isEnabledFor(logging.DEBUG):  # the pod list is built only when it is logged
            log.debug(
                "%s/%s: pass over pods %s: create %s, delete %s, requeue %s",
                namespace,
                name,
                [
                    (
                        p["metadata"]["name"],
                        (p.get("status") or {}).get("phase"),
                        bool(p["metadata"].get("deletionTimestamp")),
                    )
                    for p in pods
                ],
                [p["metadata"]["name"] for p in todo.create_pods],
                todo.delete_pods + todo.force_delete_pods,
                todo.requeue_after,
            )
        if not todo.delete_job:
            todo.events += await apply_extras(ctx, job, todo)
        await apply_plan(ctx, job, todo, pods, services)
        if todo.delete_job:
            ctx.metrics.forget_pytorchjob(namespace, name)
            outcome.result = metrics.DELETED
            await record(api, body, todo.events, log)
            return None
        ctx.metrics.observe_pytorchjob(namespace, name, todo.status)
        if todo.status.to_kube() != previous.to_kube():
            await _write_status(ctx, namespace, name, todo.status.to_kube())
        await record(api, body, todo.events, log)
        return todo.requeue_after
    except ApiError as exc:
        raise kopf.TemporaryError(f"{KIND} {namespace}/{name}: {exc}", delay=5) from exc


async def _write_status(ctx: OperatorContext, namespace: str, name: str, status: JsonDict) -> None:
    try:
        written = await ctx.api.patch_status(KIND, namespace, name, status)
    except ApiError as exc:
        if exc.status == 404:  # deleted meanwhile: nothing to report on
            return
        raise
    if written:
        ctx.cache.wrote(KIND, written)


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    """The PyTorchJob controller: its watch events and its pods' and services' feed the queue."""
    ctx.reconcilers[KIND] = lambda namespace, name, full: reconcile(ctx, namespace, name)

    def child_changed(event_type: str | None, kind: str, body: JsonDict) -> None:
        meta = body.get("metadata") or {}
        job = controlling_job(meta)
        if job and meta.get("namespace"):
            ctx.queue.add((KIND, meta["namespace"], job), full=True)

    ctx.route_children("Pod", LABEL_JOB_NAME, child_changed)
    ctx.route_children("Service", LABEL_JOB_NAME, child_changed)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def pytorchjob_event(
        type: str | None, body: kopf.Body, name: str, namespace: str | None, **_: Any
    ) -> None:
        raw = cast(JsonDict, dict(body))
        ns = namespace or "default"
        if type == "DELETED":
            ctx.cache.seen(KIND, type, raw)
            ctx.queue.forget((KIND, ns, name))
            ctx.metrics.forget_pytorchjob(ns, name)
            return
        if ctx.cache.seen(KIND, type, raw):
            ctx.queue.add((KIND, ns, name), full=True)
