"""Pure status computation: what the children really look like -> ModelService status.

The reconcile reads the stable Deployment and the pods, and this module decides the
conditions, counts and messages. Rules:

* ``Ready`` is True only when the Deployment has observed its latest spec, every desired
  pod runs the current revision and passes readiness, and no pod crash-loops.
* ``Progressing`` is True while a rollout or scale is under way.
* ``Degraded`` is True for an invalid spec, crash-looping or unpullable pods, or a
  Deployment that exceeded its progress deadline; the message says which pod and why.
* A pod the scheduler cannot place (``PodScheduled=False``, reason ``Unschedulable``: a
  GPU on a cluster without one, a node selector nothing matches) makes ``Ready`` False
  with reason ``Unschedulable`` and the scheduler's own words, while the service is not
  ready anyway. It is not ``Degraded``: a node may still come (a cluster autoscaler),
  and the Deployment's progress deadline turns it into ``Degraded`` when none does.
  A child the API server refused (``ApplyFailed``) keeps it True until an apply succeeds.
* ``lastTransitionTime`` changes only when a condition's status flips, so writing the same
  observation twice changes nothing and the reconcile can skip the status write.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mlkube.api.modelservice import Condition, ModelServiceStatus, ObjectMeta
from mlkube.operator.builders import (
    FETCH_CONTAINER,
    LABEL_MODELSERVICE,
    LABEL_REVISION,
    LABEL_VERSION,
    pod_selector,
    service_url,
)
from mlkube.operator.events import Event

JsonDict = dict[str, Any]
CONDITION_TYPES = ("Ready", "Progressing", "Degraded")
APPLY_FAILED = "ApplyFailed"
STORAGE_SECRET_MISSING = "StorageSecretMissing"
STANDING_REASONS = (APPLY_FAILED, STORAGE_SECRET_MISSING)
"""Failures a full pass finds and only a full pass can clear (an apply that succeeds, a
Secret that is there at last): status-only refreshes keep them (:func:`standing_failure`)."""

# Waiting reasons that do not fix themselves: the pod needs a person (or a new spec).
STUCK_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class Observed:
    """The children as last read from the API server."""

    deployment: JsonDict | None
    pods: list[JsonDict] = field(default_factory=list)


FETCH_FAILED = "ModelFetchFailed"
"""The reason of a failed `fetch-model` init container whose message names none."""
_REASON = re.compile(r"^([A-Z][A-Za-z0-9]{2,63}): (.+)$", re.S)
MESSAGE_LIMIT = 1000
"""Characters of a container's termination message a condition quotes."""


@dataclass(frozen=True)
class PodTrouble:
    pod: str
    container: str
    reason: str
    restarts: int
    detail: str
    fetch: bool = False
    """The model could not be fetched (the `fetch-model` init container failed)."""

    def describe(self) -> str:
        if self.fetch:
            restarted = f", restarted {self.restarts} times" if self.restarts else ""
            return (
                f"pod {self.pod} could not fetch the model (init container {self.container}"
                f"{restarted}): {self.detail}"
            )
        text = f"pod {self.pod} container {self.container} is in {self.reason}"
        if self.restarts:
            text += f" (restarted {self.restarts} times)"
        if self.detail:
            text += f": {self.detail}"
        return text


def _labels_match(obj: JsonDict, selector: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def termination_message(terminated: JsonDict) -> str:
    """The last non-empty line of a container's termination message (what `mlkube fetch`
    and `mlkube serve` write last is why they stopped), bounded for a condition."""
    lines = [line.strip() for line in str(terminated.get("message") or "").splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    return last if len(last) <= MESSAGE_LIMIT else last[: MESSAGE_LIMIT - 3] + "..."


def fetch_trouble(pod_name: str, cs: JsonDict) -> PodTrouble | None:
    """The `fetch-model` init container's failure, from its state (just failed) or last
    state (waiting in back-off to try again): the reason and message it wrote."""
    state = cs.get("state") or {}
    terminated = state.get("terminated") or {}
    if not terminated and (state.get("waiting") or {}).get("reason") in STUCK_WAITING_REASONS:
        terminated = (cs.get("lastState") or {}).get("terminated") or {}
    if not terminated or int(terminated.get("exitCode", 0) or 0) == 0:
        return None
    message = termination_message(terminated)
    match = _REASON.match(message)
    if match:
        reason, detail = match.group(1), match.group(2)
    else:
        reason = FETCH_FAILED
        detail = message or f"exit code {terminated.get('exitCode')}" + (
            f" ({terminated['reason']})" if terminated.get("reason") else ""
        )
    return PodTrouble(
        pod=pod_name,
        container=cs.get("name", FETCH_CONTAINER),
        reason=reason,
        restarts=int(cs.get("restartCount", 0) or 0),
        detail=detail,
        fetch=True,
    )


def pod_troubles(pods: list[JsonDict], name: str) -> list[PodTrouble]:
    """Containers stuck in a state that will not resolve by waiting, sorted by pod name."""
    found: list[PodTrouble] = []
    for pod in pods:
        if not _labels_match(pod, {LABEL_MODELSERVICE: name}):
            continue
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        pod_name = pod.get("metadata", {}).get("name", "?")
        for cs in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
            if cs.get("name") == FETCH_CONTAINER:
                trouble = fetch_trouble(pod_name, cs)
                if trouble is not None:
                    found.append(trouble)
                    continue
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in STUCK_WAITING_REASONS:
                last = (cs.get("lastState") or {}).get("terminated") or {}
                said = termination_message(last) if reason == "CrashLoopBackOff" else ""
                detail = (
                    said
                    or waiting.get("message")
                    or (
                        f"last exit code {last['exitCode']}"
                        + (f" ({last['reason']})" if last.get("reason") else "")
                        if "exitCode" in last
                        else ""
                    )
                )
                found.append(
                    PodTrouble(
                        pod=pod_name,
                        container=cs.get("name", "?"),
                        reason=reason,
                        restarts=int(cs.get("restartCount", 0)),
                        detail=detail,
                    )
                )
    return sorted(found, key=lambda t: (t.pod, t.container))


@dataclass(frozen=True)
class Unschedulable:
    pod: str
    message: str

    def describe(self) -> str:
        return f"pod {self.pod} cannot be scheduled: {self.message}"


def unschedulable_pods(pods: list[JsonDict], name: str) -> list[Unschedulable]:
    """Pods of ``name`` the scheduler could not place, with what it said; sorted by pod."""
    found: list[Unschedulable] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if not _labels_match(pod, {LABEL_MODELSERVICE: name}) or meta.get("deletionTimestamp"):
            continue
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                message = " ".join(str(cond.get("message") or "no node fits").split())
                found.append(Unschedulable(str(meta.get("name", "?")), message))
    return sorted(found, key=lambda u: u.pod)


def _deployment_condition(deployment: JsonDict, kind: str) -> JsonDict | None:
    for cond in (deployment.get("status") or {}).get("conditions", []) or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _cond(
    kind: str, status: Literal["True", "False", "Unknown"], reason: str, message: str
) -> Condition:
    return Condition(type=kind, status=status, reason=reason, message=message)


def desired_conditions(
    name: str,
    observed: Observed,
    *,
    replicas: int,
    revision: str,
    problems: list[str],
    problem_reason: str = "InvalidSpec",
) -> list[Condition]:
    """Ready / Progressing / Degraded for what was observed (no timestamps yet).

    ``problems`` are reasons the desired state could not be applied (``problem_reason``:
    ``InvalidSpec`` for a spec the schema let through, ``ApplyFailed`` for a child the API
    server refused); they make the object Degraded whatever the children look like.
    """
    desired = replicas
    dep = observed.deployment
    troubles = pod_troubles(observed.pods, name)

    if problems:
        prefix = "invalid spec: " if problem_reason == "InvalidSpec" else ""
        message = prefix + "; ".join(problems)
        ready = _cond("Ready", "False", problem_reason, message)
        if dep is not None and (dep.get("status") or {}).get("readyReplicas", 0):
            ready = _cond(
                "Ready",
                "True",
                problem_reason,
                "the previous revision keeps serving; " + message,
            )
        return [
            ready,
            _cond(
                "Progressing", "False", problem_reason, "nothing is rolled out until this is fixed"
            ),
            _cond("Degraded", "True", problem_reason, message),
        ]

    if dep is None:
        return [
            _cond("Ready", "False", "DeploymentMissing", f"Deployment {name} does not exist yet"),
            _cond("Progressing", "True", "Creating", f"creating Deployment {name}"),
            _cond("Degraded", "False", "AsExpected", ""),
        ]

    status = dep.get("status") or {}
    dep_generation = dep.get("metadata", {}).get("generation", 0)
    seen = status.get("observedGeneration", 0) >= dep_generation
    dep_revision = (
        dep.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}
    ).get(LABEL_REVISION)
    updated = int(status.get("updatedReplicas", 0) or 0)
    ready_count = int(status.get("readyReplicas", 0) or 0)
    available = int(status.get("availableReplicas", 0) or 0)
    total = int(status.get("replicas", 0) or 0)
    progress = _deployment_condition(dep, "Progressing") or {}
    deadline = progress.get("reason") == "ProgressDeadlineExceeded"

    settled = (
        seen
        and dep_revision == revision
        and updated >= desired
        and available >= desired
        and total == updated
    )

    if troubles:
        first = troubles[0]
        more = f" (and {len(troubles) - 1} more)" if len(troubles) > 1 else ""
        message = first.describe() + more
        degraded = _cond("Degraded", "True", first.reason, message)
    elif deadline:
        degraded = _cond(
            "Degraded",
            "True",
            "ProgressDeadlineExceeded",
            progress.get("message") or f"Deployment {name} exceeded its progress deadline",
        )
    else:
        degraded = _cond("Degraded", "False", "AsExpected", "")

    if desired == 0:
        ready = _cond("Ready", "False", "ScaledToZero", "replicas is 0: nothing serves requests")
    elif troubles:
        ready = _cond("Ready", "False", troubles[0].reason, degraded.message)
    elif settled and ready_count >= desired:
        ready = _cond("Ready", "True", "Available", f"{ready_count}/{desired} pods ready")
    elif unplaced := unschedulable_pods(observed.pods, name):
        more = f" (and {len(unplaced) - 1} more)" if len(unplaced) > 1 else ""
        ready = _cond(
            "Ready",
            "False",
            "Unschedulable",
            f"{ready_count}/{desired} pods ready; {unplaced[0].describe()}{more}",
        )
    else:
        ready = _cond(
            "Ready",
            "False",
            "PodsNotReady",
            f"{ready_count}/{desired} pods ready, {updated}/{desired} on revision {revision}",
        )

    if settled:
        progressing = _cond(
            "Progressing", "False", "Complete", f"revision {revision} is rolled out"
        )
    elif deadline:
        progressing = _cond("Progressing", "False", "ProgressDeadlineExceeded", degraded.message)
    else:
        progressing = _cond(
            "Progressing",
            "True",
            "RollingOut",
            f"rolling out revision {revision}: {updated}/{desired} updated, {available} available",
        )
    return [ready, progressing, degraded]


def merge_conditions(
    old: list[Condition], new: list[Condition], *, now: str, generation: int
) -> list[Condition]:
    """Stamp ``lastTransitionTime`` (kept unless the status flipped) and the generation.

    Conditions of other types (written by the rollout code) are kept untouched.
    """
    previous = {c.type: c for c in old}
    merged: list[Condition] = []
    for cond in new:
        before = previous.get(cond.type)
        stamp = (
            before.last_transition_time
            if before is not None and before.status == cond.status and before.last_transition_time
            else now
        )
        merged.append(
            cond.model_copy(
                update={"last_transition_time": stamp, "observed_generation": generation}
            )
        )
    ours = {c.type for c in new}
    merged += [c for c in old if c.type not in ours]
    return merged


def standing_failure(old: ModelServiceStatus | None, generation: int) -> tuple[str, str] | None:
    """``(message, reason)`` of the failure ``old`` records for ``generation``, or None.

    The ``Degraded`` condition is the record of the last full pass's outcome: an apply the
    API server refused (``ApplyFailed``) or a missing S3 Secret (``StorageSecretMissing``)
    writes ``Degraded=True`` with that reason (the message says why), and only a full pass
    that gets past it replaces it. A failure recorded for an older generation concerned
    another spec, which the next pass judges afresh.
    """
    for cond in old.conditions if old is not None else []:
        if (
            cond.type == "Degraded"
            and cond.status == "True"
            and cond.reason in STANDING_REASONS
            and cond.observed_generation == generation
        ):
            return cond.message or "", cond.reason
    return None


def compute_status(
    meta: ObjectMeta,
    old: ModelServiceStatus | None,
    observed: Observed,
    *,
    replicas: int,
    revision: str,
    problems: list[str],
    now: str,
    problem_reason: str = "InvalidSpec",
    applied: bool = False,
) -> ModelServiceStatus:
    """The whole status block the operator owns, from the observation.

    Takes the metadata and the previous status rather than a parsed ModelService so that
    an object whose spec does not even parse still gets a truthful status.

    ``applied`` says that this pass applied the desired state, so ``problems`` holds the
    apply's outcome (none: it succeeded). A status-only refresh (``applied=False``) cannot
    know whether a refusal recorded in ``old`` is over, so it keeps it (see
    :func:`standing_failure`); judging the children alone would clear ``Degraded``
    at every Deployment event and the next failed apply would set it again, with a
    Warning Event each time.
    """
    if not applied and not problems:
        standing = standing_failure(old, meta.generation)
        if standing is not None:
            problems, problem_reason = [standing[0]], standing[1]
    old = old or ModelServiceStatus()
    generation = meta.generation
    conditions = merge_conditions(
        old.conditions,
        desired_conditions(
            meta.name,
            observed,
            replicas=replicas,
            revision=revision,
            problems=problems,
            problem_reason=problem_reason,
        ),
        now=now,
        generation=generation,
    )
    dep = observed.deployment
    dep_status = (dep or {}).get("status") or {}
    template_labels = (dep or {}).get("spec", {}).get("template", {}).get("metadata", {}).get(
        "labels"
    ) or {}
    return old.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conditions,
            "replicas": int(dep_status.get("replicas", 0) or 0),
            "ready_replicas": int(dep_status.get("readyReplicas", 0) or 0),
            "updated_replicas": int(dep_status.get("updatedReplicas", 0) or 0),
            "selector": pod_selector(meta.name),
            "url": service_url(meta.name, meta.namespace),
            "revision": template_labels.get(LABEL_REVISION) or old.revision,
            "model_version": template_labels.get(LABEL_VERSION) or old.model_version,
        }
    )


def status_patch(status: ModelServiceStatus) -> JsonDict:
    """A merge patch for ``/status`` that sets every field we own (null removes it)."""
    body = status.model_dump(mode="json", by_alias=True)
    body["conditions"] = [c.to_kube() for c in status.conditions]
    owned = {
        "observedGeneration",
        "conditions",
        "replicas",
        "readyReplicas",
        "updatedReplicas",
        "selector",
        "url",
        "revision",
        "modelVersion",
        "rollout",
        "autoscaling",
    }
    return {key: value for key, value in body.items() if key in owned}


def without_repeats(decided: Sequence[Event], changed: Sequence[Event]) -> list[Event]:
    """The Events of one reconcile: what the rollout decided, then the condition
    transitions that say something new. A transition whose reason the rollout already
    reported (``Degraded`` turning True with reason ``RolledBack`` in the same reconcile
    that rolled back) is the same news twice, and would be two Events for one rollback."""
    said = {event.reason for event in decided}
    return [*decided, *(t for t in changed if t.reason not in said)]


def transitions(old: ModelServiceStatus | None, new: ModelServiceStatus) -> list[Event]:
    """One Event per state change a person cares about, with a reason they can filter on.

    * ``Degraded`` turning True (or changing its cause) is a Warning named after the cause
      (``InvalidSpec``, ``CrashLoopBackOff``, ``ProgressDeadlineExceeded``...); turning
      False is ``Recovered``.
    * ``Ready`` turning True is ``Ready``; turning False is the Warning ``NotReady``, or
      ``Unschedulable`` (also for a new object) when a pod cannot be placed.
    * ``Progressing`` turning True is ``Progressing``; finishing is ``RolloutComplete``.
    * A new stable revision is ``RevisionChanged``.

    A new object (no conditions yet) is not ready and progressing by definition: that is
    not news, and the rollout's own ``Deployed`` Event already announces it, so its first
    status adds only what is (a Degraded cause, or Ready at once). Creating a thousand
    ModelServices then costs one Event each, not three.
    """
    before = {c.type: c for c in (old.conditions if old else [])}
    after = {c.type: c for c in new.conditions}
    events: list[Event] = []

    def changed(kind: str) -> bool:
        prev, cur = before.get(kind), after.get(kind)
        return cur is not None and (prev is None or prev.status != cur.status)

    degraded = after.get("Degraded")
    prev_degraded = before.get("Degraded")
    if degraded is not None and degraded.status == "True":
        if changed("Degraded") or (
            prev_degraded is not None and prev_degraded.reason != degraded.reason
        ):
            events.append(Event("Warning", degraded.reason, degraded.message))
    elif degraded is not None and prev_degraded is not None and changed("Degraded"):
        events.append(Event("Normal", "Recovered", "no longer degraded"))

    new_object = not before
    ready = after.get("Ready")
    prev_ready = before.get("Ready")
    if ready is not None and ready.reason == "Unschedulable":
        if prev_ready is None or prev_ready.reason != "Unschedulable":
            events.append(Event("Warning", "Unschedulable", ready.message))
    elif ready is not None and changed("Ready"):
        if ready.status == "True":
            events.append(Event("Normal", "Ready", ready.message or "ready"))
        elif not new_object:
            events.append(Event("Warning", "NotReady", ready.message or ready.reason))

    progressing = after.get("Progressing")
    if progressing is not None and changed("Progressing") and not new_object:
        if progressing.status == "True":
            events.append(Event("Normal", "Progressing", progressing.message))
        elif progressing.reason == "Complete":
            events.append(Event("Normal", "RolloutComplete", progressing.message))

    if new.revision and old is not None and old.revision and old.revision != new.revision:
        events.append(
            Event(
                "Normal",
                "RevisionChanged",
                f"revision {old.revision} -> {new.revision} (model version {new.model_version})",
            )
        )
    return events


def status_changed(old: ModelServiceStatus | None, new: ModelServiceStatus) -> bool:
    if old is None:
        return True
    return status_patch(old) != status_patch(new)
