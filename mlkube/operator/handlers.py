"""The ModelService controller's shell: one level-based reconcile, fed by the work queue.

A full pass (a spec the status has not observed, the drift check, a canary or autoscaler
tick, a child deleted or edited by someone else) reads the object and its children from
the watch-fed cache, computes the whole desired state with the pure builders, applies the
children that differ from what the last apply left, computes the status with the pure
status code, and writes it only if it changed, with one Event per transition. A status
refresh (a Deployment's or pod's status moving) only recomputes the status; it never
applies, so the operator's own writes cannot feed back into an endless loop.

An invalid spec becomes a ``Degraded`` condition and a Warning Event, never a crash; only
transient API failures are retried (``kopf.TemporaryError``, with the queue's backoff).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import kopf
from pydantic import ValidationError

from mlkube.api.actions import parse_action
from mlkube.api.modelservice import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ModelService,
    ModelServiceStatus,
    ObjectMeta,
    spec_problems,
)
from mlkube.operator import clock, metrics, progressive, release
from mlkube.operator.builders import FIELD_MANAGER, LABEL_MODELSERVICE, desired_state
from mlkube.operator.cache import AppliedMemory, digest
from mlkube.operator.events import record
from mlkube.operator.kube import ApiError, KubeAPI
from mlkube.operator.repair import conflicting_ports_patch
from mlkube.operator.status import (
    APPLY_FAILED,
    STORAGE_SECRET_MISSING,
    Observed,
    compute_status,
    status_changed,
    status_patch,
    transitions,
    without_repeats,
)
from mlkube.operator.storage import s3_secret_name, secret_problems

if TYPE_CHECKING:
    from mlkube.operator.app import OperatorContext

JsonDict = dict[str, Any]
AnyLogger = logging.Logger | logging.LoggerAdapter[Any]
log = logging.getLogger("mlkube.operator.modelservice")


@dataclass(frozen=True)
class Parsed:
    """A ModelService as read, or why it cannot be used."""

    meta: ObjectMeta
    status: ModelServiceStatus | None
    model: ModelService | None
    problems: list[str]
    replicas: int


def _format_error(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        out.append(f"{where}: {err['msg']}" if where else err["msg"])
    return out


def parse(body: JsonDict) -> Parsed:
    """Pure: a raw object -> the parsed model and the problems that block applying it."""
    meta = ObjectMeta.model_validate(body.get("metadata") or {})
    try:
        status = ModelServiceStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = None  # a status we cannot read is rewritten from scratch
    raw_replicas = (body.get("spec") or {}).get("replicas", 1)
    replicas = raw_replicas if isinstance(raw_replicas, int) and raw_replicas >= 0 else 0
    try:
        model = ModelService.model_validate(body)
    except ValidationError as exc:
        return Parsed(meta, status, None, _format_error(exc), replicas)
    return Parsed(meta, status, model, spec_problems(model.spec), model.spec.replicas)


def refresh_allowed(parsed: Parsed) -> bool:
    """Pure: may a status-only refresh (no apply) write this object's status?

    Only when the status already describes the current generation: ``observedGeneration``
    promises that the operator has acted on that spec, which a refresh does not do.
    """
    observed = parsed.status.observed_generation if parsed.status is not None else None
    return observed is not None and observed == parsed.meta.generation


def observe(ctx: OperatorContext, namespace: str, name: str) -> Observed:
    """The stable Deployment and the pods of a ModelService, from the watch-fed cache."""
    return Observed(
        deployment=ctx.cache.get("Deployment", namespace, name),
        pods=ctx.cache.owned("Pod", namespace, LABEL_MODELSERVICE, name),
    )


async def storage_secret_problems(ctx: OperatorContext, ms: ModelService) -> list[str]:
    """Whether the S3 Secret the pods would read exists and holds the credentials.

    Read by name on every full pass (never listed or watched: the operator keeps no copy
    of any Secret, and needs only ``get`` on them). An API server that refuses the read
    (RBAC without ``get secrets``) leaves the check to the kubelet, whose
    ``CreateContainerConfigError`` the pod status then reports.
    """
    name = s3_secret_name(ms.spec)
    if name is None:
        return []
    namespace = ms.metadata.namespace
    try:
        secret = await ctx.api.get("Secret", namespace, name)
    except ApiError as exc:
        if exc.status >= 500 or exc.status == 429:
            raise kopf.TemporaryError(f"API server: {exc}", delay=10) from exc
        log.debug("cannot read Secret %s/%s to check it: %s", namespace, name, exc)
        return []
    return secret_problems(name, namespace, secret)


async def _server_side_apply(api: KubeAPI, obj: JsonDict, logger: AnyLogger) -> JsonDict:
    """Server-side apply one child; repair a hand-edited Service the apply cannot fix.

    Only on the API server's refusal (422) of a Service, and only when the live ports
    explain it (see :mod:`mlkube.operator.repair`): the conflicting entries are swapped
    for ours in one guarded JSON patch, then the apply runs again. Any other refusal,
    or a patch the server rejects (the Service changed meanwhile), surfaces as before.
    """
    try:
        return await api.apply(obj)
    except ApiError as exc:
        if exc.status != 422 or obj.get("kind") != "Service":
            raise
        refusal = exc
    meta = obj["metadata"]
    live = await api.find("Service", meta["namespace"], meta["name"])
    ops = conflicting_ports_patch(live, obj) if live is not None else []
    if not ops:
        raise refusal
    try:
        await api.json_patch("Service", meta.get("namespace"), meta["name"], ops)
    except ApiError as exc:
        if exc.status >= 500 or exc.status == 429:
            raise
        raise refusal from exc
    logger.info(
        "Service %s/%s: replaced hand-edited ports the apply could not merge",
        meta.get("namespace"),
        meta["name"],
    )
    return await api.apply(obj)


async def apply_child(
    ctx: OperatorContext,
    obj: JsonDict,
    logger: AnyLogger = log,
    field_manager: str = FIELD_MANAGER,
) -> None:
    """Apply one child unless the cache shows it is already exactly what we applied.

    Children of kinds the operator watches (:data:`CACHED_CHILDREN`) are compared with
    :class:`~mlkube.operator.cache.AppliedMemory`; the others are always applied.
    """
    kind, meta = obj["kind"], obj["metadata"]
    key = (kind, meta.get("namespace") or "", meta["name"])
    manifest = digest(obj)
    cached = kind in CACHED_CHILDREN
    live = ctx.cache.get(*key) if cached else None
    if live is not None and ctx.applied.unchanged(key, field_manager, manifest, live):
        return
    if field_manager == FIELD_MANAGER:
        result = await _server_side_apply(ctx.api, obj, logger)
    else:
        result = await ctx.api.apply(obj, field_manager=field_manager)
    if cached and result:
        ctx.cache.wrote(kind, result)
        ctx.applied.remember(key, field_manager, manifest, result)


async def converge(
    ctx: OperatorContext, namespace: str, name: str, *, apply: bool, logger: AnyLogger = log
) -> float | None:
    """Reconcile one ModelService (``apply=False``: refresh its status only).

    Returns when the next full pass is due (None when the object is gone or for a
    refresh). Reconciles are counted and timed (``mlkube_operator_reconciles_total``); the
    status-only refreshes that every Deployment or pod event triggers are not, so the
    rate means work done.
    """
    async with ctx.lock("ModelService", namespace, name):
        if not apply:
            await _converge(ctx, namespace, name, apply=False, logger=logger)
            return None
        with ctx.metrics.reconcile("ModelService") as outcome:
            outcome.result = await _converge(ctx, namespace, name, apply=True, logger=logger)
        if outcome.result == metrics.DELETED:
            return None
        body = ctx.cache.get("ModelService", namespace, name) or {}
        return progressive.next_pass(
            body.get("spec"), body.get("status"), ctx.config.reconcile_interval
        )


async def _converge(
    ctx: OperatorContext, namespace: str, name: str, *, apply: bool, logger: AnyLogger
) -> str:
    """The reconcile itself; returns its result label for the metrics."""
    api = ctx.api
    body = ctx.cache.get("ModelService", namespace, name)
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        # gone: owner references let the garbage collector remove the children
        ctx.metrics.forget_modelservice(namespace, name)
        ctx.applied.forget(namespace, name)
        return metrics.DELETED
    parsed = parse(body)
    if not apply and not refresh_allowed(parsed):
        # A spec change no reconcile has applied yet (its full pass is queued): a status
        # stamped with the new generation would describe the old Deployment. The apply
        # that the spec change triggers writes the status.
        return metrics.SUCCESS
    problems = list(parsed.problems)
    problem_reason = "InvalidSpec"
    revision = (parsed.status.revision if parsed.status else None) or ""
    replicas = parsed.replicas
    rollout_plan: progressive.Plan | None = None
    child = "a child object"  # named in the message when the API server refuses it
    child_kind = ""
    if apply and parsed.model is not None and not problems:
        missing = await storage_secret_problems(ctx, parsed.model)
        if missing:
            problems, problem_reason = missing, STORAGE_SECRET_MISSING
    try:
        if parsed.model is not None and not problems:
            desired = desired_state(parsed.model, ctx.build)
            # The rollout decides which revision the stable Deployment runs and with how
            # many pods (canary split, autoscaler); Ready is judged against that.
            revision, replicas = progressive.current_targets(
                parsed.model, parsed.status, desired.revision
            )
            if apply:
                rollout_plan = await release.plan(ctx, parsed.model, desired, parsed.status)
                revision = rollout_plan.stable_revision
                replicas = rollout_plan.stable_replicas
                for obj in rollout_plan.handovers:
                    child_kind = obj["kind"]
                    child = f"{obj['kind']} {obj['metadata']['name']}"
                    await apply_child(ctx, obj, logger, progressive.HANDOVER_MANAGER)
                for obj in rollout_plan.objects:
                    child_kind = obj["kind"]
                    child = f"{obj['kind']} {obj['metadata']['name']}"
                    await apply_child(ctx, obj, logger)
                for kind, child_name in rollout_plan.deletions:
                    child_kind = kind
                    child = f"the deletion of {kind} {child_name}"
                    live = ctx.cache.get(kind, namespace, child_name)
                    if kind in CACHED_CHILDREN and live is None:
                        continue  # not there: nothing to delete
                    await api.delete_owned(kind, namespace, child_name, parsed.meta.uid, live)
                child, child_kind = "a child object", ""
    except ApiError as exc:
        if child_kind:
            ctx.metrics.apply_failed(child_kind, exc.status)
        if exc.status >= 500 or exc.status == 429:
            raise kopf.TemporaryError(f"API server: {exc}", delay=10) from exc
        # The server refused what we built (admission policy, quota, RBAC): say so.
        problems = [f"the API server refused {child}: {exc}"]
        problem_reason = APPLY_FAILED
    # What was applied before a refusal runs; Ready says so exactly as the status-only
    # refreshes in between will, or it would flip at each of them.
    observed = observe(ctx, namespace, name)
    now = clock.now_iso()
    new = compute_status(
        parsed.meta,
        parsed.status,
        observed,
        replicas=replicas,
        revision=revision,
        problems=problems,
        now=now,
        problem_reason=problem_reason,
        applied=apply,
    )
    if rollout_plan is not None or (parsed.model is not None and not problems):
        # A plan is kept even when applying failed half-way: its children are derived
        # from this status, so the next reconcile re-applies the same ones.
        new = progressive.with_rollout(
            new, parsed.status, rollout_plan, now=now, generation=parsed.meta.generation
        )
    ctx.metrics.observe_modelservice(namespace, name, new)
    result = (
        metrics.SUCCESS
        if not problems
        else metrics.APPLY_FAILED
        if problem_reason == APPLY_FAILED
        else metrics.INVALID_SPEC
    )
    if not status_changed(parsed.status, new):
        return result
    try:
        written = await api.patch_status("ModelService", namespace, name, status_patch(new))
    except ApiError as exc:
        if exc.status == 404:
            ctx.metrics.forget_modelservice(namespace, name)
            return metrics.DELETED
        raise kopf.TemporaryError(f"cannot write status: {exc}", delay=5) from exc
    if written:
        ctx.cache.wrote("ModelService", written)
    decided = rollout_plan.events if rollout_plan is not None else []
    await record(api, body, without_repeats(decided, transitions(parsed.status, new)), logger)
    return result


#: Children the operator watches (and so reads from the cache instead of the API server).
#: HPAs and HTTPRoutes exist only for some ModelServices and are applied on every full
#: pass instead.
CACHED_CHILDREN = ("Deployment", "Service", "PodDisruptionBudget")


def child_event_needs_apply(
    event_type: str | None, kind: str, body: JsonDict, applied: AppliedMemory
) -> bool:
    """Pure: does this event of a child call for a full pass (re-apply), or only a
    status refresh? A deleted child, or a spec someone else changed, is drift to undo at
    once; status movement (pods starting, a rollout progressing) only refreshes."""
    if kind not in CACHED_CHILDREN:
        return False
    if event_type == "DELETED":
        return True
    meta = body.get("metadata") or {}
    key = (kind, meta.get("namespace") or "", meta.get("name") or "")
    return not applied.matches(key, body)


def action_pending(body: JsonDict) -> bool:
    """Pure: does the object carry a ``mlkube.dev/action`` its status has not recorded?

    Annotations do not move ``generation``; this is what makes ``kubectl mlkube promote``
    (and the other actions) reach the rollout state machine at once.
    """
    action, _ = parse_action((body.get("metadata") or {}).get("annotations"))
    if action is None:
        return False
    last = (((body.get("status") or {}).get("rollout") or {}).get("lastAction")) or {}
    return bool(last.get("id") != action.id)


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    """The ModelService controller: its watch events and its children's feed the queue."""
    ctx.reconcilers[KIND] = lambda namespace, name, full: converge(ctx, namespace, name, apply=full)

    def child_changed(event_type: str | None, kind: str, body: JsonDict) -> None:
        meta = body.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(LABEL_MODELSERVICE)
        if owner and meta.get("namespace"):
            full = child_event_needs_apply(event_type, kind, body, ctx.applied)
            ctx.queue.add((KIND, meta["namespace"], owner), full=full)

    for kind in (*CACHED_CHILDREN, "Pod"):
        ctx.route_children(kind, LABEL_MODELSERVICE, child_changed)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def modelservice_event(
        type: str | None, body: kopf.Body, name: str, namespace: str | None, **_: Any
    ) -> None:
        raw = cast(JsonDict, dict(body))
        ns = namespace or "default"
        key = (KIND, ns, name)
        if type == "DELETED":
            ctx.cache.seen(KIND, type, raw)
            ctx.queue.forget(key)
            ctx.metrics.forget_modelservice(ns, name)
            ctx.applied.forget(ns, name)
            return
        if not ctx.cache.seen(KIND, type, raw):
            return  # our own status write, echoed by the watch: nothing new
        status = raw.get("status") or {}
        generation = (raw.get("metadata") or {}).get("generation")
        # A spec the operator has not acted on (new object, edit, operator restart: the
        # watch's first listing) or an action not handled yet gets a full pass; its own
        # status writes only a refresh.
        full = type is None or status.get("observedGeneration") != generation or action_pending(raw)
        ctx.queue.add(key, full=full)
