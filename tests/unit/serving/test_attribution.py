"""Reward attribution: answers carry the revision and a ticket, feedback is credited by it."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from mlkube.serving.attribution import (
    REVISION_HEADER,
    TICKET_HEADER,
    TicketIssuer,
    Unattributed,
    make_ticket,
    read_ticket,
)
from mlkube.serving.config import load_config
from mlkube.serving.store import MemoryStore

INFER = "/v2/models/bandit/infer"
PREDICT = "/v1/models/bandit:predict"
FEEDBACK = "/v1/models/bandit:feedback"
NOW = 1_800_000_000


def v2(items: list[str]) -> dict[str, Any]:
    return {
        "inputs": [{"name": "items", "datatype": "BYTES", "shape": [len(items)], "data": items}]
    }


# ------------------------------------------------------------------------------- pure


def test_a_ticket_credits_the_revision_that_issued_it() -> None:
    ticket = make_ticket("ranker", "abc123", NOW)
    assert read_ticket(ticket, "ranker", NOW + 5, 3600) == "abc123"


@pytest.mark.parametrize(
    ("ticket", "why"),
    [
        (None, Unattributed.MISSING),
        ("abc123", Unattributed.UNKNOWN),
        ("", Unattributed.UNKNOWN),
        ("abc123.notatime.0123456789ab", Unattributed.UNKNOWN),
        # another revision's name pasted over a real ticket: the check no longer matches
        (make_ticket("ranker", "abc123", NOW).replace("abc123", "def456"), Unattributed.UNKNOWN),
        # a ticket another model issued (the check is keyed by the model's name)
        (make_ticket("other-model", "abc123", NOW), Unattributed.UNKNOWN),
        (make_ticket("ranker", "abc123", NOW - 3601), Unattributed.EXPIRED),
        (make_ticket("ranker", "abc123", NOW + 3600), Unattributed.EXPIRED),
    ],
)
def test_other_tickets_credit_no_revision(ticket: str | None, why: Unattributed) -> None:
    assert read_ticket(ticket, "ranker", NOW, 3600) is why


def test_the_issuer_rebuilds_its_ticket_once_a_second() -> None:
    issuer = TicketIssuer("ranker", "abc123")
    first = issuer.stamp(NOW + 0.1)
    assert issuer.stamp(NOW + 0.9) is first
    later = issuer.stamp(NOW + 1.0)
    assert later.ticket != first.ticket
    assert later.headers == {REVISION_HEADER: "abc123", TICKET_HEADER: later.ticket}
    assert read_ticket(later.ticket, "ranker", NOW + 2, 3600) == "abc123"


# ---------------------------------------------------------------------------- the app


def _config(native_path: bool, revision: str) -> Any:
    return load_config(
        {"bandit": {"seed": 7, "native_path": native_path}, "revision": revision}, {}
    )


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in an exposition (0.0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_every_scoring_answer_carries_the_revision_and_a_ticket(
    make_client: Any, native_path: bool, binary: bool
) -> None:
    client = await make_client(_config(native_path, "canary-rev"))
    request = {**v2(["a", "b"]), "parameters": {"binary_data_output": binary}}
    resp = await client.post(INFER, data=orjson.dumps(request))
    assert resp.status == 200
    raw = await resp.read()
    if binary:  # the JSON part's length counts the spliced-in parameters
        head_length = int(resp.headers["Inference-Header-Content-Length"])
        body = orjson.loads(raw[:head_length])
        assert len(raw) - head_length == 2 * 8 + 2 * 5  # scores FP64, ranking BYTES
    else:
        body = orjson.loads(raw)
    ticket = resp.headers[TICKET_HEADER]
    assert resp.headers[REVISION_HEADER] == "canary-rev"
    assert body["parameters"] == {"mlkube_revision": "canary-rev", "mlkube_ticket": ticket}
    assert [o["name"] for o in body["outputs"]] == ["scores", "ranking"]
    v1 = await client.post(PREDICT, data=orjson.dumps({"instances": ["a", "b"]}))
    assert v1.status == 200
    assert v1.headers[REVISION_HEADER] == "canary-rev"
    assert read_ticket(v1.headers[TICKET_HEADER], "bandit", NOW, 1e12) == "canary-rev"


async def test_a_runtime_without_a_revision_hands_out_no_ticket(
    make_client: Any, native_path: bool
) -> None:
    """`mlkube serve` run by hand (`make run`) has no revision to credit: its answers carry
    neither an empty revision nor a ticket, and its feedback counts as having none."""
    assert TicketIssuer("ranker", "").stamp(NOW).ticket == ""
    client = await make_client(_config(native_path, ""))
    resp = await client.post(INFER, data=orjson.dumps(v2(["a", "b"])))
    assert resp.status == 200
    assert REVISION_HEADER not in resp.headers
    assert TICKET_HEADER not in resp.headers
    body = orjson.loads(await resp.read())
    assert "parameters" not in body
    assert [o["name"] for o in body["outputs"]] == ["scores", "ranking"]


async def test_feedback_is_credited_to_the_revision_that_scored_not_the_one_that_received_it(
    make_client: Any, native_path: bool
) -> None:
    store = MemoryStore()
    stable = await make_client(_config(native_path, "stable-rev"), store=store)
    canary = await make_client(_config(native_path, "canary-rev"), store=store)
    scored = await canary.post(INFER, data=orjson.dumps(v2(["a", "b", "c"])))
    ticket = (await scored.json())["parameters"]["mlkube_ticket"]

    # The canary's ticket, sent back to a stable pod (the Service picked it), in the body...
    feedback = {"feedback": [{"item": "a", "reward": 1.0}, {"item": "b", "reward": 0.0}]}
    resp = await stable.post(FEEDBACK, data=orjson.dumps({**feedback, "ticket": ticket}))
    assert resp.status == 200
    assert await resp.json() == {"accepted": 2, "duplicate": False, "revision": "canary-rev"}
    # ... and in the header; a replay of an idempotency key is not counted twice.
    for _ in range(2):
        resp = await stable.post(
            FEEDBACK,
            data=orjson.dumps({"feedback": [{"item": "c", "reward": 1.0}]}),
            headers={TICKET_HEADER: ticket, "Idempotency-Key": "k1"},
        )
        assert resp.status == 200
    # No ticket, a forged one, an old one: learned from, credited to nobody.
    for extra in (
        {},
        {"ticket": ticket.replace("canary-rev", "stable-rev")},
        {"ticket": make_ticket("bandit", "canary-rev", NOW - 10 * 86400)},
    ):
        resp = await stable.post(
            FEEDBACK, data=orjson.dumps({"feedback": [{"item": "a", "reward": 1.0}], **extra})
        )
        assert resp.status == 200
        assert "revision" not in await resp.json()

    text = await (await stable.get("/metrics")).text()
    assert _metric(text, "mlkube_reward_items_total", revision="canary-rev") == 3.0
    assert _metric(text, "mlkube_rewards_total", revision="canary-rev") == 2.0
    assert _metric(text, "mlkube_reward_items_total", revision="stable-rev") == 0.0
    for reason in ("missing", "unknown", "expired"):
        assert _metric(text, "mlkube_feedback_unattributed_items_total", reason=reason) == 1.0
    # Nothing is credited on the canary pod itself: the counters are summed over pods.
    canary_text = await (await canary.get("/metrics")).text()
    assert _metric(canary_text, "mlkube_reward_items_total", revision="canary-rev") == 0.0


@pytest.mark.parametrize(
    ("extra", "headers", "message"),
    [
        ({"ticket": 5}, {}, "ticket: expected a string of 1-256 characters"),
        ({"ticket": "a.1.b"}, {TICKET_HEADER: "c.1.d"}, "ticket: differs from the Mlkube-Ticket"),
    ],
)
async def test_a_bad_ticket_field_is_a_400_naming_it(
    client: Any, extra: dict[str, Any], headers: dict[str, str], message: str
) -> None:
    body = {"feedback": [{"item": "a", "reward": 1.0}], **extra}
    resp = await client.post(FEEDBACK, data=orjson.dumps(body), headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error"].startswith(message)
