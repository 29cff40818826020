"""Kubernetes Events: the body written on an object, and recording that never fails a pass."""

from __future__ import annotations

import datetime
import logging
import socket
from typing import TYPE_CHECKING, Any, cast

import pytest

from mlkube.operator import clock
from mlkube.operator.events import Event, event_body, record

if TYPE_CHECKING:
    from mlkube.operator.kube import KubeAPI

INVOLVED: dict[str, Any] = {
    "apiVersion": "mlkube.dev/v1alpha1",
    "kind": "ModelService",
    "metadata": {
        "name": "recs",
        "namespace": "ml",
        "uid": "u-123",
        "resourceVersion": "42",
        "labels": {"team": "a"},
    },
    "spec": {"model": {"name": "ranker"}},
}
NOW = "2025-03-01T12:00:00Z"


def test_event_body_names_the_involved_object() -> None:
    body = event_body(INVOLVED, Event("Normal", "Promoted", "canary promoted"), NOW, "op-0")
    assert body["apiVersion"] == "v1"
    assert body["kind"] == "Event"
    assert body["metadata"] == {"generateName": "mlkube-", "namespace": "ml"}
    assert body["involvedObject"] == {
        "apiVersion": "mlkube.dev/v1alpha1",
        "kind": "ModelService",
        "name": "recs",
        "namespace": "ml",
        "uid": "u-123",
        "resourceVersion": "42",
    }


def test_event_body_carries_type_reason_message_and_source() -> None:
    body = event_body(INVOLVED, Event("Warning", "RolledBack", "error rate 9%"), NOW, "op-0")
    assert body["type"] == "Warning"
    assert body["reason"] == "RolledBack"
    assert body["message"] == "error rate 9%"
    assert body["source"] == {"component": "mlkube-operator"}
    assert body["reportingComponent"] == "mlkube-operator"
    assert body["reportingInstance"] == "op-0"
    assert body["firstTimestamp"] == body["lastTimestamp"] == NOW
    assert body["count"] == 1


def test_a_message_of_1024_characters_is_kept_whole() -> None:
    message = "x" * 1024
    assert event_body(INVOLVED, Event("Normal", "R", message), NOW, "i")["message"] == message


def test_a_longer_message_is_cut_to_1024_characters() -> None:
    message = "a" * 1000 + "b" * 1000
    cut = event_body(INVOLVED, Event("Normal", "R", message), NOW, "i")["message"]
    assert len(cut) == 1024
    assert cut == message[:1021] + "..."


def test_an_object_without_metadata_still_gives_a_body() -> None:
    body = event_body({"kind": "ModelService"}, Event("Normal", "R", "m"), NOW, "i")
    assert body["involvedObject"]["name"] is None
    assert body["metadata"]["namespace"] is None


class FakeAPI:
    """Stands in for KubeAPI.create: records what was created, or raises."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.created: list[tuple[str, str | None, dict[str, Any]]] = []

    async def create(
        self, kind: str, namespace: str | None, obj: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.created.append((kind, namespace, obj))
        if self.error is not None:
            raise self.error
        return obj


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    moment = datetime.datetime(2025, 3, 1, 12, 0, 0, 500000, tzinfo=datetime.UTC)
    monkeypatch.setattr(clock, "now", lambda: moment)
    monkeypatch.setattr(socket, "gethostname", lambda: "op-pod-7")


@pytest.mark.usefixtures("fixed_clock")
async def test_record_writes_each_event_on_the_object(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeAPI()
    caplog.set_level(logging.INFO, logger="mlkube.operator.events")
    await record(
        cast("KubeAPI", api),
        INVOLVED,
        [Event("Normal", "Progressing", "step 1"), Event("Warning", "Failed", "probe failed")],
    )
    assert [(k, ns, b["reason"]) for k, ns, b in api.created] == [
        ("Event", "ml", "Progressing"),
        ("Event", "ml", "Failed"),
    ]
    first = api.created[0][2]
    assert first["firstTimestamp"] == "2025-03-01T12:00:00Z"
    assert first["reportingInstance"] == "op-pod-7"
    assert first["involvedObject"]["uid"] == "u-123"
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.INFO, "ml/recs: step 1") in logged
    assert (logging.WARNING, "ml/recs: probe failed") in logged


@pytest.mark.usefixtures("fixed_clock")
async def test_record_never_raises_when_the_api_fails(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeAPI(RuntimeError("apiserver 503"))
    caplog.set_level(logging.INFO, logger="mlkube.operator.events")
    await record(
        cast("KubeAPI", api),
        INVOLVED,
        [Event("Normal", "First", "one"), Event("Normal", "Second", "two")],
    )
    assert len(api.created) == 2  # the first failure does not stop the second
    failures = [r.getMessage() for r in caplog.records if "not recorded" in r.getMessage()]
    assert len(failures) == 2
    assert "First" in failures[0]
    assert "apiserver 503" in failures[0]


async def test_record_of_no_events_writes_nothing() -> None:
    api = FakeAPI()
    await record(cast("KubeAPI", api), INVOLVED, [])
    assert api.created == []


@pytest.mark.usefixtures("fixed_clock")
async def test_record_logs_to_the_given_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    mine = logging.getLogger("test.events.mine")
    await record(cast("KubeAPI", FakeAPI()), INVOLVED, [Event("Normal", "R", "hello")], mine)
    assert [r.name for r in caplog.records if r.getMessage() == "ml/recs: hello"] == [mine.name]
