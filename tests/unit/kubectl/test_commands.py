"""The command shells over a client that answers from a script of object versions: what
``status --watch`` prints and returns, and how an action waits for the operator."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from typing import Any

import pytest

from mlkube.api.actions import ACTION_ANNOTATION
from mlkube.kubectl import cli
from mlkube.kubectl.errors import CliError


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def ms(phase: str, generation: int = 2, observed: int = 2, **rollout: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "recs", "namespace": "ml", "generation": generation},
        "spec": {"rollout": {"steps": [50]}},
        "status": {
            "observedGeneration": observed,
            "conditions": [{"type": "Ready", "status": "True"}],
            "rollout": {"phase": phase, "canaryRevision": "c" * 12, "canaryWeight": 50,
                        "stableRevision": "s" * 12, "message": f"now {phase}", **rollout},
        },
    }  # fmt: skip


class FakeClient:
    """Answers ``get`` from ``versions`` in turn (the last one repeats)."""

    namespace = "ml"

    def __init__(self, versions: list[dict[str, Any]]) -> None:
        self.versions = versions
        self.gets = 0
        self.annotations: dict[str, str] = {}

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        if name != "recs":
            raise CliError(f"{kind} {name} not found in namespace ml")
        version = self.versions[min(self.gets, len(self.versions) - 1)]
        self.gets += 1
        return version

    async def list(self, kind: str, namespace: str | None, **_: Any) -> list[dict[str, Any]]:
        return []

    async def annotate(self, kind: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        self.annotations.update(annotations)
        return {}


def status_args(**kw: Any) -> argparse.Namespace:
    base = {"name": "recs", "watch": True, "timeout": "30s", "interval": 0.0, "output": "text"}
    return argparse.Namespace(**{**base, **kw})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("last", "code", "end"),
    [
        (ms("Succeeded"), cli.OK, "ModelService recs: rollout Healthy"),
        (
            ms("RolledBack"),
            cli.REJECTED,
            "ModelService recs: rollout ended RolledBack: now RolledBack",
        ),
    ],
)
def test_watch_prints_changes_once_and_exits_by_the_outcome(
    last: dict[str, Any], code: int, end: str
) -> None:
    # a spec just applied (not observed yet), the canary, the canary again, the end
    client = FakeClient([ms("Succeeded", observed=1), ms("Progressing"), ms("Progressing"), last])
    out = io.StringIO()
    assert run(cli.cmd_status(client, status_args(), out)) == code  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines[:-1]] == [
        "recs: Succeeded | the operator has not acted on the latest spec yet | now Succeeded",
        "recs: Progressing | canary cccccccccc at 50% | now Progressing",
        f"recs: {last['status']['rollout']['phase']} | now {last['status']['rollout']['phase']}",
    ]
    assert lines[-1] == end
    assert "\x1b" not in out.getvalue()


def test_watch_redraws_in_place_on_a_terminal() -> None:
    client = FakeClient([ms("Progressing"), ms("Succeeded")])
    out = Terminal()
    assert run(cli.cmd_status(client, status_args(), out)) == cli.OK  # type: ignore[arg-type]
    text = out.getvalue()
    assert text.count("\x1b[H\x1b[2J") == 2  # one full redraw per look
    assert "Steps:" in text


def test_watch_times_out_with_exit_3() -> None:
    client = FakeClient([ms("Progressing")])
    with pytest.raises(CliError) as exc:
        run(cli.cmd_status(client, status_args(timeout="1s", interval=0.2), io.StringIO()))  # type: ignore[arg-type]
    assert exc.value.code == cli.TIMEOUT
    assert "still Progressing after --timeout 1s" in str(exc.value)


def action_args(verb: str, **kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"command": verb, "name": "recs", "wait": "5s", **kw})


def answered(client: FakeClient, outcome: str, message: str) -> None:
    """The operator's answer, to the action the client wrote, from the second read on."""

    original = client.get

    async def get(kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        body = await original(kind, name, namespace)
        raw = client.annotations.get(ACTION_ANNOTATION)
        if raw:
            body = json.loads(json.dumps(body))
            body["status"]["rollout"]["lastAction"] = {
                "id": json.loads(raw)["id"], "verb": "promote", "outcome": outcome, "message": message,
            }  # fmt: skip
        return body

    client.get = get  # type: ignore[method-assign]


def test_an_action_writes_the_annotation_and_prints_the_operators_answer() -> None:
    client = FakeClient([ms("Progressing")])
    answered(client, "Done", "canary advanced to 50%")
    out = io.StringIO()
    code = run(cli.cmd_action(client, action_args("promote", full=False), out))  # type: ignore[arg-type]
    assert code == cli.OK
    assert out.getvalue() == "ModelService recs: promote: canary advanced to 50%\n"
    written = json.loads(client.annotations[ACTION_ANNOTATION])
    assert written["verb"] == "promote"
    assert written["full"] is False
    assert len(written["id"]) == 16


def test_a_rejected_action_is_exit_1_with_the_reason_and_next_step() -> None:
    client = FakeClient([ms("Succeeded")])
    answered(client, "Rejected", "no rollout in progress (phase Succeeded)")
    with pytest.raises(CliError) as exc:
        run(cli.cmd_action(client, action_args("abort"), io.StringIO()))  # type: ignore[arg-type]
    assert exc.value.code == cli.REJECTED
    assert str(exc.value) == (
        "ModelService recs: abort rejected: no rollout in progress (phase Succeeded); "
        "see: kubectl mlkube status recs -n ml"
    )


def test_an_unanswered_action_times_out_naming_the_operator() -> None:
    client = FakeClient([ms("Progressing")])
    with pytest.raises(CliError) as exc:
        run(cli.cmd_action(client, action_args("pause", wait="1s"), io.StringIO()))  # type: ignore[arg-type]
    assert exc.value.code == cli.TIMEOUT
    assert "the operator did not answer the pause within 1s" in str(exc.value)


def test_an_unknown_name_writes_nothing() -> None:
    client = FakeClient([ms("Progressing")])
    with pytest.raises(CliError, match="ModelService nope not found"):
        run(cli.cmd_action(client, action_args("pause", name="nope"), io.StringIO()))  # type: ignore[arg-type]
    assert client.annotations == {}
