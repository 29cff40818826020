"""Release actions a person asks for without touching ``spec`` (Git owns it).

``kubectl mlkube promote|abort|retry|pause|resume|undo`` writes one annotation,
:data:`ACTION_ANNOTATION`, on the ModelService: a small JSON object with the verb, its
argument and a fresh ``id``.  The operator reads it on its next full pass, acts through the
pure rollout state machine and records the outcome in ``status.rollout.lastAction`` (and an
Event). An action whose ``id`` is already recorded there is never acted on again, so the
annotation may stay: the operator never writes metadata of a ModelService, and an annotation
that is not in the Git manifest, written by another field manager, is no difference to Argo CD.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, ValidationError

from mlkube.api.schema import KubeModel

ACTION_ANNOTATION = "mlkube.dev/action"
#: Field manager of the command line's writes: its own, so ownership never mixes with Git's.
CLI_FIELD_MANAGER = "kubectl-mlkube"


class Verb(StrEnum):
    PROMOTE = "promote"
    ABORT = "abort"
    RETRY = "retry"
    PAUSE = "pause"
    RESUME = "resume"
    UNDO = "undo"


class Action(KubeModel):
    """The annotation's value: what was asked, and when (who asked is the API server's
    audit log's to say)."""

    verb: Verb
    id: Annotated[str, Field(min_length=1, max_length=64)]
    full: bool = False
    """promote: skip the remaining steps and promote now."""
    to_revision: Annotated[str | None, Field(max_length=64)] = None
    """undo: a history number (1 = oldest) or a revision (prefix) to return to."""
    requested_at: datetime | None = None


class ActionOutcome(StrEnum):
    DONE = "Done"
    REJECTED = "Rejected"


class ActionResult(KubeModel):
    """``status.rollout.lastAction``: the last action the operator handled, and how."""

    id: str
    verb: str
    outcome: ActionOutcome
    message: str = ""
    time: datetime | None = None


def parse_action(annotations: dict[str, str] | None) -> tuple[Action | None, str]:
    """Pure: the action an object's annotations ask for, or why the annotation is unusable.

    Returns ``(None, "")`` without the annotation, ``(None, problem)`` for a value that is
    not an action (written by hand, say), else ``(action, "")``.
    """
    raw = (annotations or {}).get(ACTION_ANNOTATION)
    if not raw:
        return None, ""
    try:
        data: Any = json.loads(raw)
        return Action.model_validate(data), ""
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"annotation {ACTION_ANNOTATION} is not an action ({first}); ignored"


def action_value(action: Action) -> str:
    """The annotation value for ``action`` (compact JSON, the CRD's camelCase names)."""
    return json.dumps(action.to_kube(), separators=(",", ":"), sort_keys=True)
