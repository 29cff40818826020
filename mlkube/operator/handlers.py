"""kopf wiring of the ModelService controller: one level-based reconcile.

Every trigger (create, resume after an operator restart, spec update, the drift timer)
runs the same ``reconcile``: read the object fresh, compute the whole desired state with
the pure builders, server-side apply it, read the children back, compute the status with
the pure status code, and write it only if it changed, with one Event per transition.
Changes of the children (a Deployment's status moving) only refresh the status; they never
re-apply, so the operator's own writes cannot feed back into an endless loop.

Handlers return nothing (kopf would otherwise litter ``status.<handler>``) and never let a
bad object crash the operator: an invalid spec becomes a ``Degraded`` condition and a
Warning Event, and only transient API failures are retried (``kopf.TemporaryError``).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import kopf
from pydantic import ValidationError

from mlkube.api.modelservice import (
    GROUP,
    PLURAL,
    VERSION,
    ModelService,
    ModelServiceStatus,
    ObjectMeta,
    spec_problems,
)
from mlkube.operator import metrics, progressive
from mlkube.operator.builders import (
    LABEL_MANAGED_BY,
    LABEL_MODELSERVICE,
    desired_state,
    pod_selector,
)
from mlkube.operator.kube import ApiError, KubeAPI
from mlkube.operator.repair import conflicting_ports_patch
from mlkube.operator.status import (
    APPLY_FAILED,
    Observed,
    compute_status,
    status_changed,
    status_patch,
    transitions,
    without_repeats,
)

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


def now_iso() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )


async def observe(api: KubeAPI, namespace: str, name: str) -> Observed:
    deployment = await api.get("Deployment", namespace, name)
    pods = await api.list("Pod", namespace, pod_selector(name))
    return Observed(deployment=deployment, pods=pods)


async def observe_after_refusal(api: KubeAPI, namespace: str, name: str) -> Observed:
    """The children after the API server refused part of an apply (nothing if unreadable)."""
    try:
        return await observe(api, namespace, name)
    except ApiError as exc:
        if exc.status >= 500 or exc.status == 429:
            raise kopf.TemporaryError(f"API server: {exc}", delay=10) from exc
        return Observed(deployment=None)


async def apply_child(api: KubeAPI, obj: JsonDict, logger: AnyLogger = log) -> None:
    """Server-side apply one child; repair a hand-edited Service the apply cannot fix.

    Only on the API server's refusal (422) of a Service, and only when the live ports
    explain it (see :mod:`mlkube.operator.repair`): the conflicting entries are swapped
    for ours in one guarded JSON patch, then the apply runs again. Any other refusal,
    or a patch the server rejects (the Service changed meanwhile), surfaces as before.
    """
    try:
        await api.apply(obj)
        return
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
    await api.apply(obj)


async def converge(
    ctx: OperatorContext, namespace: str, name: str, *, apply: bool, logger: AnyLogger = log
) -> None:
    """Reconcile one ModelService (``apply=False``: refresh its status only).

    Reconciles are counted and timed (``mlkube_operator_reconciles_total``); the status-only
    refreshes that every Deployment event triggers are not, so the rate means work done.
    """
    if not apply:
        await _converge(ctx, namespace, name, apply=False, logger=logger)
        return
    with ctx.metrics.reconcile("ModelService") as outcome:
        outcome.result = await _converge(ctx, namespace, name, apply=True, logger=logger)


async def _converge(
    ctx: OperatorContext, namespace: str, name: str, *, apply: bool, logger: AnyLogger
) -> str:
    """The reconcile itself; returns its result label for the metrics."""
    async with ctx.lock("ModelService", namespace, name):
        api = ctx.api
        try:
            body = await api.get("ModelService", namespace, name)
        except ApiError as exc:
            raise kopf.TemporaryError(f"cannot read ModelService: {exc}", delay=5) from exc
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            # gone: owner references let the garbage collector remove the children
            ctx.metrics.forget_modelservice(namespace, name)
            return metrics.DELETED
        parsed = parse(body)
        if not apply and not refresh_allowed(parsed):
            # A spec change no reconcile has applied yet (e.g. after a restart the
            # Deployment watch can deliver before the ModelService's resume handler runs):
            # a status stamped with the new generation would describe the old Deployment.
            # The apply that the spec change triggers writes the status.
            return metrics.SUCCESS
        problems = list(parsed.problems)
        problem_reason = "InvalidSpec"
        revision = (parsed.status.revision if parsed.status else None) or ""
        replicas = parsed.replicas
        rollout_plan: progressive.Plan | None = None
        child = "a child object"  # named in the message when the API server refuses it
        child_kind = ""
        try:
            if parsed.model is not None and not problems:
                desired = desired_state(parsed.model, ctx.build)
                # The rollout decides which revision the stable Deployment runs and with how
                # many pods (canary split, autoscaler); Ready is judged against that.
                revision, replicas = progressive.current_targets(
                    parsed.model, parsed.status, desired.revision
                )
                if apply:
                    rollout_plan = await progressive.plan(ctx, parsed.model, desired, parsed.status)
                    revision = rollout_plan.stable_revision
                    replicas = rollout_plan.stable_replicas
                    for obj in rollout_plan.handovers:
                        child_kind = obj["kind"]
                        child = f"{obj['kind']} {obj['metadata']['name']}"
                        await api.apply(obj, field_manager=progressive.HANDOVER_MANAGER)
                    for obj in rollout_plan.objects:
                        child_kind = obj["kind"]
                        child = f"{obj['kind']} {obj['metadata']['name']}"
                        await apply_child(api, obj, logger)
                    for kind, child_name in rollout_plan.deletions:
                        child_kind = kind
                        child = f"the deletion of {kind} {child_name}"
                        await api.delete_owned(kind, namespace, child_name, parsed.meta.uid)
                    child, child_kind = "a child object", ""
            observed = await observe(api, namespace, name)
        except ApiError as exc:
            if child_kind:
                ctx.metrics.apply_failed(child_kind, exc.status)
            if exc.status >= 500 or exc.status == 429:
                raise kopf.TemporaryError(f"API server: {exc}", delay=10) from exc
            # The server refused what we built (admission policy, quota, RBAC): say so.
            problems = [f"the API server refused {child}: {exc}"]
            problem_reason = APPLY_FAILED
            # What was applied before the refusal runs; Ready must say so exactly as the
            # status-only refreshes in between will, or it would flip at each of them.
            observed = await observe_after_refusal(api, namespace, name)
        now = now_iso()
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
            await api.patch_status("ModelService", namespace, name, status_patch(new))
        except ApiError as exc:
            if exc.status == 404:
                ctx.metrics.forget_modelservice(namespace, name)
                return metrics.DELETED
            raise kopf.TemporaryError(f"cannot write status: {exc}", delay=5) from exc
        events = without_repeats(
            rollout_plan.events if rollout_plan is not None else [],
            transitions(parsed.status, new),
        )
        for event in events:
            kopf.event(
                kopf.Body(cast(kopf.RawBody, body)),
                type=event.type,
                reason=event.reason,
                message=event.message,
            )
            level = logging.WARNING if event.type == "Warning" else logging.INFO
            logger.log(level, "%s/%s: %s", namespace, name, event.message)
        return result


def register(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    """Add the ModelService handlers to ``registry``."""

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def reconcile_modelservice(
        name: str, namespace: str | None, logger: AnyLogger, **_: Any
    ) -> None:
        await converge(ctx, namespace or "default", name, apply=True, logger=logger)

    @kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=ctx.config.reconcile_interval,
        initial_delay=ctx.config.reconcile_interval,
        registry=registry,
    )
    async def drift_check(name: str, namespace: str | None, logger: AnyLogger, **_: Any) -> None:
        await converge(ctx, namespace or "default", name, apply=True, logger=logger)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def modelservice_event(type: str, name: str, namespace: str | None, **_: Any) -> None:
        if type == "DELETED":
            ctx.metrics.forget_modelservice(namespace or "default", name)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={LABEL_MANAGED_BY: "mlkube", LABEL_MODELSERVICE: kopf.PRESENT},
        registry=registry,
    )
    async def deployment_changed(
        labels: Mapping[str, str], namespace: str | None, **_: Any
    ) -> None:
        owner = labels.get(LABEL_MODELSERVICE)
        if owner and namespace:
            try:
                await converge(ctx, namespace, owner, apply=False)
            except kopf.TemporaryError as exc:
                log.warning("status refresh of %s/%s postponed: %s", namespace, owner, exc)
