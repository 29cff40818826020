"""Reward attribution: which revision scored the items a feedback request rewards.

During a canary both revisions sit behind one Service, so the pod that receives a feedback
request is not, in general, the pod that scored the items: counting feedback under the
receiving pod's revision would credit the stable revision with the canary's clicks and the
other way round. Instead every scoring answer carries a *ticket* (the ``Mlkube-Ticket``
header, and ``parameters.mlkube_ticket`` in OIP v2 answers) naming the revision that scored
it and when; the client sends it back with the feedback, and whichever pod receives that
feedback counts the rewards under the ticket's revision.

A ticket is ``<revision>.<unix seconds>.<check>``. The check is a short keyed hash over the
first two parts with the model's name as the key: it is not a secret (the ticket is a label,
not a credential), but it makes a mangled, made-up or other model's ticket *unknown* instead
of a new revision label, so a typo can neither be credited to a revision nor grow the
metrics' cardinality. A ticket older than the feedback window (or dated in the future) is
*expired*. Feedback without a ticket is *missing*. All three are still learned from (the
feature store takes every reward) but are counted apart, never under a revision.

Everything here is pure apart from :class:`TicketIssuer`'s once-a-second cache.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from enum import StrEnum

import orjson

TICKET_HEADER = "Mlkube-Ticket"
REVISION_HEADER = "Mlkube-Revision"
#: Response parameters of OIP v2 answers (JSON part).
TICKET_PARAMETER = "mlkube_ticket"
REVISION_PARAMETER = "mlkube_revision"
#: Clocks of pods may differ a little: a ticket this far in the future is still accepted.
CLOCK_SKEW_SECONDS = 60
_CHECK_BYTES = 6  # 12 hex characters
#: The clock tickets are dated by (tests pin it so that two apps' answers compare equal).
clock = time.time


class Unattributed(StrEnum):
    """Why a feedback request's rewards are not credited to any revision."""

    MISSING = "missing"  # no ticket
    UNKNOWN = "unknown"  # not a ticket this model issued (malformed, bad check)
    EXPIRED = "expired"  # older than the feedback window, or dated in the future


def _check(model: str, revision: str, issued: int) -> str:
    digest = hashlib.blake2s(
        f"{revision}.{issued}".encode(), key=model.encode()[:32], digest_size=_CHECK_BYTES
    )
    return digest.hexdigest()


def make_ticket(model: str, revision: str, issued: int) -> str:
    """The ticket a pod of ``revision`` hands out at ``issued`` (unix seconds)."""
    return f"{revision}.{issued}.{_check(model, revision, issued)}"


def read_ticket(
    ticket: str | None, model: str, now: float, window_seconds: float
) -> str | Unattributed:
    """The revision a ticket credits, or why it credits none (pure)."""
    if ticket is None:
        return Unattributed.MISSING
    parts = ticket.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12:
        return Unattributed.UNKNOWN
    revision, issued_text, check = parts
    issued = int(issued_text)
    if check != _check(model, revision, issued):
        return Unattributed.UNKNOWN
    if issued > now + CLOCK_SKEW_SECONDS or now - issued > window_seconds:
        return Unattributed.EXPIRED
    return revision


@dataclass(slots=True)
class Stamp:
    """What a scoring answer carries this second."""

    ticket: str
    headers: dict[str, str]
    # ``"parameters":{...},``: spliced in after the opening brace of a raw OIP v2 answer
    # (the C path's answers have no top-level parameters of their own).
    json_prefix: bytes


class TicketIssuer:
    """The current :class:`Stamp`, rebuilt once a second (one hash per second, not per request)."""

    __slots__ = ("_model", "_revision", "_second", "_stamp")

    def __init__(self, model: str, revision: str) -> None:
        self._model = model
        self._revision = revision
        self._second = -1
        self._stamp = Stamp("", {}, b"")

    def stamp(self, now: float | None = None) -> Stamp:
        """This second's stamp; an empty one (no ticket, no headers, nothing spliced) for a
        runtime without a revision (`mlkube serve` run by hand): nothing to credit."""
        if not self._revision:
            return self._stamp
        second = int(clock() if now is None else now)
        if second != self._second:
            ticket = make_ticket(self._model, self._revision, second)
            params = orjson.dumps({REVISION_PARAMETER: self._revision, TICKET_PARAMETER: ticket})
            self._stamp = Stamp(
                ticket,
                {REVISION_HEADER: self._revision, TICKET_HEADER: ticket},
                b'"parameters":' + params + b",",
            )
            self._second = second
        return self._stamp
