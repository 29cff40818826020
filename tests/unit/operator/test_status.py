"""Pure status computation: conditions, counts and Events from observed children."""

from __future__ import annotations

from typing import Any

import pytest

from mlkube.api.modelservice import Condition, ModelServiceStatus, ObjectMeta
from mlkube.operator.events import Event
from mlkube.operator.status import (
    Observed,
    compute_status,
    desired_conditions,
    merge_conditions,
    pod_troubles,
    status_changed,
    status_patch,
    transitions,
    without_repeats,
)

META = ObjectMeta(name="recs", namespace="ml", uid="u", generation=4)
REV = "abc1234567"


def deployment(
    *,
    replicas: int = 2,
    ready: int = 2,
    updated: int = 2,
    available: int | None = None,
    generation: int = 5,
    observed: int = 5,
    revision: str = REV,
    version: str = "v1",
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "recs", "generation": generation},
        "spec": {
            "template": {
                "metadata": {
                    "labels": {
                        "mlkube.dev/revision": revision,
                        "app.kubernetes.io/version": version,
                    }
                }
            }
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": ready if available is None else available,
            "conditions": conditions or [],
        },
    }


def pod(name: str, reason: str | None, restarts: int = 0, owner: str = "recs") -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": reason}} if reason else {"running": {}}
    return {
        "metadata": {"name": name, "labels": {"mlkube.dev/modelservice": owner}},
        "status": {
            "containerStatuses": [
                {
                    "name": "model-server",
                    "restartCount": restarts,
                    "state": state,
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ]
        },
    }


def conds(
    observed: Observed, replicas: int = 2, problems: list[str] | None = None
) -> dict[str, Condition]:
    out = desired_conditions(
        "recs", observed, replicas=replicas, revision=REV, problems=problems or []
    )
    return {c.type: c for c in out}


def test_all_pods_ready_on_the_current_revision_is_ready() -> None:
    c = conds(Observed(deployment()))
    assert (c["Ready"].status, c["Ready"].reason) == ("True", "Available")
    assert (c["Progressing"].status, c["Progressing"].reason) == ("False", "Complete")
    assert c["Degraded"].status == "False"


def test_missing_deployment() -> None:
    c = conds(Observed(None))
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "DeploymentMissing")
    assert c["Progressing"].status == "True"


@pytest.mark.parametrize(
    "dep",
    [
        deployment(observed=4),  # controller has not seen the new template yet
        deployment(revision="old0000000"),  # template still on the old revision
        deployment(updated=1, replicas=3),  # old pods still around
        deployment(ready=1),  # not every pod ready
    ],
    ids=["unobserved", "old-revision", "surge", "not-ready"],
)
def test_rollout_in_progress_is_not_ready(dep: dict[str, Any]) -> None:
    c = conds(Observed(dep))
    assert c["Ready"].status == "False"
    assert c["Progressing"].status == "True"
    assert c["Progressing"].reason == "RollingOut"
    assert c["Degraded"].status == "False"


def test_crash_loop_is_not_ready_and_says_why() -> None:
    pods = [pod("recs-a", None), pod("recs-b", "CrashLoopBackOff", restarts=6)]
    c = conds(Observed(deployment(ready=1), pods))
    assert c["Ready"].status == "False"
    assert c["Ready"].reason == "CrashLoopBackOff"
    assert c["Degraded"].status == "True"
    assert c["Degraded"].message == (
        "pod recs-b container model-server is in CrashLoopBackOff (restarted 6 times): "
        "last exit code 137 (OOMKilled)"
    )


def test_crash_loop_is_reported_even_when_counts_look_fine() -> None:
    c = conds(Observed(deployment(), [pod("recs-b", "CrashLoopBackOff", restarts=1)]))
    assert c["Ready"].status == "False"


def test_image_pull_errors_and_several_pods() -> None:
    pods = [
        pod("recs-b", "ImagePullBackOff"),
        pod("recs-a", "ErrImagePull"),
        pod("x", "CrashLoopBackOff", owner="other"),
    ]
    troubles = pod_troubles(pods, "recs")
    assert [t.pod for t in troubles] == ["recs-a", "recs-b"]
    c = conds(Observed(deployment(ready=0), pods))
    assert c["Degraded"].reason == "ErrImagePull"
    assert c["Degraded"].message.endswith("(and 1 more)")


def test_waiting_for_a_normal_reason_is_not_trouble() -> None:
    assert pod_troubles([pod("recs-a", "ContainerCreating")], "recs") == []


def test_progress_deadline_exceeded_is_degraded() -> None:
    dep = deployment(
        ready=1,
        updated=1,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet recs-x has timed out progressing.",
            }
        ],
    )
    c = conds(Observed(dep))
    assert c["Degraded"].reason == "ProgressDeadlineExceeded"
    assert c["Degraded"].message == "ReplicaSet recs-x has timed out progressing."
    assert c["Progressing"].status == "False"


def test_scaled_to_zero() -> None:
    c = conds(Observed(deployment(replicas=0, ready=0, updated=0)), replicas=0)
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "ScaledToZero")


def test_invalid_spec_is_degraded_and_keeps_the_old_revision_serving() -> None:
    c = conds(
        Observed(deployment()), problems=["featureStore: type redis needs redis.urlSecretRef"]
    )
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "InvalidSpec")
    assert (
        c["Degraded"].message == "invalid spec: featureStore: type redis needs redis.urlSecretRef"
    )
    assert c["Ready"].status == "True"  # the previous pods still serve
    assert c["Progressing"].status == "False"
    c = conds(Observed(None), problems=["x"])
    assert c["Ready"].status == "False"


def test_apply_failures_have_their_own_reason() -> None:
    out = desired_conditions(
        "recs",
        Observed(None),
        replicas=1,
        revision=REV,
        problems=["quota exceeded"],
        problem_reason="ApplyFailed",
    )
    degraded = next(c for c in out if c.type == "Degraded")
    assert (degraded.reason, degraded.message) == ("ApplyFailed", "quota exceeded")


def _degraded(status: ModelServiceStatus) -> Condition:
    return next(c for c in status.conditions if c.type == "Degraded")


def test_a_failed_apply_stays_degraded_until_an_apply_succeeds() -> None:
    """A status-only refresh (Deployment event, no apply) cannot know that the refusal is
    over: it keeps Degraded=True/ApplyFailed instead of judging the children alone, so the
    condition and its Events do not flip between reconciles."""
    ready = Observed(deployment())
    failed = compute_status(
        META,
        None,
        Observed(deployment()),
        replicas=2,
        revision=REV,
        problems=["HTTP 404 NotFound: the server could not find the requested resource"],
        problem_reason="ApplyFailed",
        now="t1",
        applied=True,
    )
    assert (_degraded(failed).status, _degraded(failed).reason) == ("True", "ApplyFailed")

    refreshed = compute_status(META, failed, ready, replicas=2, revision=REV, problems=[], now="t2")
    assert not status_changed(failed, refreshed)  # nothing to write, no Event
    assert transitions(failed, refreshed) == []
    assert _degraded(refreshed).message == _degraded(failed).message
    assert _degraded(refreshed).last_transition_time == "t1"
    # Ready says the same in both passes: the pods applied before the refusal serve.
    ready_cond = next(c for c in refreshed.conditions if c.type == "Ready")
    assert (ready_cond.status, ready_cond.reason) == ("True", "ApplyFailed")

    # Only an apply that succeeds clears it (with one Recovered Event).
    applied = compute_status(
        META, refreshed, ready, replicas=2, revision=REV, problems=[], now="t3", applied=True
    )
    assert (_degraded(applied).status, _degraded(applied).reason) == ("False", "AsExpected")
    assert [e.reason for e in transitions(refreshed, applied)] == ["Recovered"]


def test_a_refresh_keeps_only_an_apply_failure_of_the_current_generation() -> None:
    failed = compute_status(
        META,
        None,
        Observed(None),
        replicas=2,
        revision=REV,
        problems=["quota exceeded"],
        problem_reason="ApplyFailed",
        now="t1",
        applied=True,
    )
    newer = META.model_copy(update={"generation": META.generation + 1})
    refreshed = compute_status(
        newer, failed, Observed(deployment()), replicas=2, revision=REV, problems=[], now="t2"
    )
    assert _degraded(refreshed).status == "False"
    # Other causes are the children's to judge: a refresh re-reads them.
    crashed = compute_status(
        META,
        None,
        Observed(deployment(), [pod("recs-a", "CrashLoopBackOff", restarts=3)]),
        replicas=2,
        revision=REV,
        problems=[],
        now="t1",
    )
    healed = compute_status(
        META, crashed, Observed(deployment()), replicas=2, revision=REV, problems=[], now="t2"
    )
    assert (_degraded(crashed).status, _degraded(healed).status) == ("True", "False")


def test_transition_time_changes_only_when_status_flips() -> None:
    old = [
        Condition(type="Ready", status="False", reason="PodsNotReady", last_transition_time="t0"),
        Condition(type="Rollout", status="True", reason="Canary", last_transition_time="t0"),
    ]
    same = [Condition(type="Ready", status="False", reason="CrashLoopBackOff")]
    merged = merge_conditions(old, same, now="t1", generation=4)
    assert merged[0].last_transition_time == "t0"
    assert merged[0].reason == "CrashLoopBackOff"
    assert merged[0].observed_generation == 4
    assert merged[1].type == "Rollout"  # other writers' conditions survive
    flipped = merge_conditions(
        old, [Condition(type="Ready", status="True", reason="Available")], now="t1", generation=4
    )
    assert flipped[0].last_transition_time == "t1"


def test_compute_status_fields() -> None:
    status = compute_status(
        META,
        None,
        Observed(deployment(version="v3")),
        replicas=2,
        revision=REV,
        problems=[],
        now="t",
    )
    assert status.observed_generation == 4
    assert status.replicas == 2
    assert status.ready_replicas == 2
    assert status.updated_replicas == 2
    assert status.selector == "mlkube.dev/modelservice=recs"
    assert status.url == "http://recs.ml.svc.cluster.local"
    assert status.revision == REV
    assert status.model_version == "v3"
    assert [c.type for c in status.conditions] == ["Ready", "Progressing", "Degraded"]


def test_recomputing_the_same_observation_changes_nothing() -> None:
    observed = Observed(deployment())
    first = compute_status(META, None, observed, replicas=2, revision=REV, problems=[], now="t1")
    second = compute_status(META, first, observed, replicas=2, revision=REV, problems=[], now="t2")
    assert not status_changed(first, second)
    assert status_changed(None, first)
    third = compute_status(
        META, second, Observed(deployment(ready=1)), replicas=2, revision=REV, problems=[], now="t3"
    )
    assert status_changed(second, third)


def test_status_patch_has_only_our_fields_and_nulls_to_clear() -> None:
    status = ModelServiceStatus(observed_generation=1)
    patch = status_patch(status)
    assert patch["observedGeneration"] == 1
    assert patch["url"] is None  # merge patch: null removes a stale value
    assert patch["conditions"] == []
    assert set(patch) <= {
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


def _status(**conds_: tuple[str, str]) -> ModelServiceStatus:
    return ModelServiceStatus(
        conditions=[
            Condition(type=t, status=s, reason=r, message=f"{t} {r}")
            for t, (s, r) in conds_.items()
        ],  # type: ignore[arg-type]
        revision=REV,
        model_version="v1",
    )


def test_a_new_object_that_is_merely_not_ready_yet_has_no_transition_events() -> None:
    """Not ready and progressing is what a new object is; the rollout's Deployed says so."""
    new = _status(
        Ready=("False", "PodsNotReady"),
        Progressing=("True", "RollingOut"),
        Degraded=("False", "AsExpected"),
    )
    assert transitions(None, new) == []
    assert transitions(ModelServiceStatus(), new) == []


def test_a_new_object_that_is_broken_or_ready_at_once_says_so() -> None:
    broken = _status(
        Ready=("False", "InvalidSpec"),
        Progressing=("False", "InvalidSpec"),
        Degraded=("True", "InvalidSpec"),
    )
    assert [(e.type, e.reason) for e in transitions(None, broken)] == [("Warning", "InvalidSpec")]
    ready = _status(
        Ready=("True", "Available"),
        Progressing=("False", "Complete"),
        Degraded=("False", "AsExpected"),
    )
    assert [(e.type, e.reason) for e in transitions(None, ready)] == [("Normal", "Ready")]


def test_transition_to_ready_and_complete() -> None:
    old = _status(
        Ready=("False", "PodsNotReady"),
        Progressing=("True", "RollingOut"),
        Degraded=("False", "AsExpected"),
    )
    new = _status(
        Ready=("True", "Available"),
        Progressing=("False", "Complete"),
        Degraded=("False", "AsExpected"),
    )
    assert [(e.type, e.reason) for e in transitions(old, new)] == [
        ("Normal", "Ready"),
        ("Normal", "RolloutComplete"),
    ]
    assert transitions(new, new) == []


def test_degradation_is_a_warning_named_after_its_cause() -> None:
    old = _status(
        Ready=("True", "Available"),
        Progressing=("False", "Complete"),
        Degraded=("False", "AsExpected"),
    )
    new = _status(
        Ready=("False", "CrashLoopBackOff"),
        Progressing=("False", "Complete"),
        Degraded=("True", "CrashLoopBackOff"),
    )
    events = transitions(old, new)
    assert [(e.type, e.reason) for e in events] == [
        ("Warning", "CrashLoopBackOff"),
        ("Warning", "NotReady"),
    ]
    assert events[0].message == "Degraded CrashLoopBackOff"
    worse = _status(
        Ready=("False", "ErrImagePull"),
        Progressing=("False", "Complete"),
        Degraded=("True", "ErrImagePull"),
    )
    assert [(e.type, e.reason) for e in transitions(new, worse)] == [("Warning", "ErrImagePull")]
    healed = _status(
        Ready=("True", "Available"),
        Progressing=("False", "Complete"),
        Degraded=("False", "AsExpected"),
    )
    assert ("Normal", "Recovered") in [(e.type, e.reason) for e in transitions(worse, healed)]


def test_revision_change_event() -> None:
    old = _status(Ready=("True", "Available"))
    new = old.model_copy(update={"revision": "new0000000", "model_version": "v2"})
    events = transitions(old, new)
    assert [(e.reason, e.message) for e in events] == [
        ("RevisionChanged", f"revision {REV} -> new0000000 (model version v2)")
    ]


def test_a_rollback_is_one_event_not_two() -> None:
    """The reconcile that rolls back reports RolledBack itself; Degraded turning True with
    the same reason adds nothing (a real cluster showed two Events 16 ms apart)."""
    old = _status(Ready=("True", "Available"), Degraded=("False", "AsExpected"))
    new = _status(Ready=("True", "Available"), Degraded=("True", "RolledBack"))
    changed = transitions(old, new)
    assert [t.reason for t in changed] == ["RolledBack"]
    decided = [Event("Warning", "RolledBack", "rolled back to 5a1e: canary 9c2e failed")]
    events = without_repeats(decided, changed)
    assert [(e.reason, e.message) for e in events] == [
        ("RolledBack", "rolled back to 5a1e: canary 9c2e failed")
    ]
    # A transition with news of its own still goes out, after the rollout's Events.
    recovered = transitions(new, old)
    events = without_repeats([Event("Normal", "CanaryStarted", "canary")], recovered)
    assert [e.reason for e in events] == ["CanaryStarted", "Recovered"]


# ---------------------------------------------------------------- pods nobody can place

SCHEDULER_SAYS = (
    "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are "
    "available: 1 No preemption victims found for incoming pod."
)


def pending(name: str, owner: str = "recs", *, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"mlkube.dev/modelservice": owner}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": SCHEDULER_SAYS,
                }
            ],
        },
    }


def test_a_pod_the_scheduler_cannot_place_makes_ready_say_what_the_scheduler_said() -> None:
    c = conds(
        Observed(deployment(ready=0, available=0, replicas=1, updated=1), [pending("recs-x")])
    )
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "Unschedulable")
    assert c["Ready"].message == (
        f"0/2 pods ready; pod recs-x cannot be scheduled: {SCHEDULER_SAYS}"
    )
    # A node may still come (cluster autoscaler): waiting, not broken, until the
    # Deployment's progress deadline says otherwise.
    assert c["Degraded"].status == "False"
    assert (c["Progressing"].status, c["Progressing"].reason) == ("True", "RollingOut")


def test_unschedulable_counts_only_live_pods_of_this_modelservice() -> None:
    dep = deployment(ready=0, available=0)
    others = [pending("other-x", owner="other"), pending("recs-old", deleting=True)]
    assert conds(Observed(dep, others))["Ready"].reason == "PodsNotReady"
    two = conds(Observed(dep, [pending("recs-b"), pending("recs-a"), *others]))["Ready"]
    assert two.message.endswith(f"pod recs-a cannot be scheduled: {SCHEDULER_SAYS} (and 1 more)")


def test_a_ready_service_with_one_extra_unplaceable_pod_stays_ready() -> None:
    # A surge pod that fits nowhere does not take down a service whose pods all serve.
    c = conds(Observed(deployment(), [pending("recs-surge")]))
    assert (c["Ready"].status, c["Ready"].reason) == ("True", "Available")


def test_becoming_unschedulable_is_one_warning_even_for_a_new_object() -> None:
    new = _status(
        Ready=("False", "Unschedulable"),
        Progressing=("True", "RollingOut"),
        Degraded=("False", "AsExpected"),
    )
    assert [(e.type, e.reason, e.message) for e in transitions(None, new)] == [
        ("Warning", "Unschedulable", "Ready Unschedulable")
    ]
    waiting = _status(
        Ready=("False", "PodsNotReady"),
        Progressing=("True", "RollingOut"),
        Degraded=("False", "AsExpected"),
    )
    assert [e.reason for e in transitions(waiting, new)] == ["Unschedulable"]
    assert transitions(new, new) == []
    placed = _status(
        Ready=("True", "Available"),
        Progressing=("False", "Complete"),
        Degraded=("False", "AsExpected"),
    )
    assert [e.reason for e in transitions(new, placed)] == ["Ready", "RolloutComplete"]


# ------------------------------------------------------------ models from a storage URI


def fetching_pod(name: str, init_status: dict[str, Any]) -> dict[str, Any]:
    """A pod whose `fetch-model` init container is in ``init_status`` (the model server
    has not started: it waits in PodInitializing)."""
    return {
        "metadata": {"name": name, "labels": {"mlkube.dev/modelservice": "recs"}},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [{"name": "fetch-model", **init_status}],
            "containerStatuses": [
                {"name": "model-server", "state": {"waiting": {"reason": "PodInitializing"}}}
            ],
        },
    }


CHECKSUM = (
    "ChecksumMismatch: sha256 of https://models.example.com/m.onnx is "
    + "1" * 64
    + ", expected "
    + "0" * 64
    + " (storage.sha256)"
)


@pytest.mark.parametrize(
    "init_status",
    [
        # just failed: the message is in the current state
        {"restartCount": 0, "state": {"terminated": {"exitCode": 1, "message": CHECKSUM + "\n"}}},
        # waiting to try again: the message is in the last state
        {
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": CHECKSUM}},
        },
    ],
    ids=["terminated", "crash-loop"],
)
def test_a_failed_fetch_is_degraded_with_the_reason_it_wrote(init_status: dict[str, Any]) -> None:
    observed = Observed(deployment(ready=0, available=0), [fetching_pod("recs-a", init_status)])
    c = conds(observed, replicas=2)
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "ChecksumMismatch")
    restarted = ", restarted 3 times" if init_status["restartCount"] else ""
    assert c["Degraded"].message == (
        f"pod recs-a could not fetch the model (init container fetch-model{restarted}): "
        f"sha256 of https://models.example.com/m.onnx is {'1' * 64}, expected {'0' * 64} "
        "(storage.sha256)"
    )
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "ChecksumMismatch")


def test_a_fetch_failure_becomes_a_warning_event_named_for_its_reason() -> None:
    before = compute_status(
        META, None, Observed(deployment()), replicas=2, revision=REV, problems=[], now="t0"
    )
    failed = {
        "restartCount": 1,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {
            "terminated": {
                "exitCode": 1,
                "message": "ModelNotFound: s3://models/m.onnx does not exist: the server "
                "answered 404 Not Found (NoSuchKey: The specified key does not exist.)",
            }
        },
    }
    after = compute_status(
        META,
        before,
        Observed(deployment(), [fetching_pod("recs-b", failed)]),
        replicas=2,
        revision=REV,
        problems=[],
        now="t1",
    )
    warnings = [e for e in transitions(before, after) if e.type == "Warning"]
    assert [e.reason for e in warnings][:1] == ["ModelNotFound"]
    assert "s3://models/m.onnx does not exist" in warnings[0].message


def test_a_fetch_that_wrote_no_reason_still_says_what_it_can() -> None:
    traceback = "Traceback (most recent call last):\n  ...\nMemoryError\n"
    init = {"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": ""}}}
    (trouble,) = pod_troubles([fetching_pod("p", init)], "recs")
    assert (trouble.reason, trouble.detail) == ("ModelFetchFailed", "exit code 137 (OOMKilled)")
    init = {"state": {"terminated": {"exitCode": 1, "message": traceback}}}
    (trouble,) = pod_troubles([fetching_pod("p", init)], "recs")
    assert (trouble.reason, trouble.detail) == ("ModelFetchFailed", "MemoryError")


def test_a_fetch_container_that_cannot_start_is_reported_like_any_other() -> None:
    """A Secret key that is missing: the kubelet never starts the init container."""
    init = {
        "state": {
            "waiting": {
                "reason": "CreateContainerConfigError",
                "message": "couldn't find key AWS_SECRET_ACCESS_KEY in Secret ml/s3",
            }
        }
    }
    (trouble,) = pod_troubles([fetching_pod("p", init)], "recs")
    assert trouble.reason == "CreateContainerConfigError"
    assert "AWS_SECRET_ACCESS_KEY" in trouble.describe()


def test_a_fetch_that_succeeded_is_no_trouble() -> None:
    init = {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    assert pod_troubles([fetching_pod("p", init)], "recs") == []


def test_a_crash_looping_server_quotes_why_it_stopped() -> None:
    """`mlkube serve` ends with one line that says why; the condition shows it rather than
    the kubelet's back-off text."""
    crashing = pod("recs-c", "CrashLoopBackOff", restarts=2)
    status = crashing["status"]["containerStatuses"][0]
    status["state"]["waiting"]["message"] = "back-off 20s restarting failed container"
    status["lastState"] = {
        "terminated": {
            "exitCode": 2,
            "message": '{"level":"INFO","msg":"workers"}\nmlkube serve: model.storage_uri: '
            "NotAModel: /mnt/models/m.onnx is not an onnx model: no graph\n",
        }
    }
    (trouble,) = pod_troubles([crashing], "recs")
    assert trouble.detail == (
        "mlkube serve: model.storage_uri: NotAModel: /mnt/models/m.onnx is not an onnx "
        "model: no graph"
    )


def test_a_missing_storage_secret_stands_until_a_full_pass_clears_it() -> None:
    """A status-only refresh (a pod event) cannot know whether the Secret exists now; it
    keeps the finding of the last full pass instead of flipping Degraded at every event."""
    message = "model.storage.secretName: Secret s3 does not exist in namespace ml"
    failed = compute_status(
        META,
        None,
        Observed(deployment()),
        replicas=2,
        revision=REV,
        problems=[message],
        now="t0",
        problem_reason="StorageSecretMissing",
        applied=True,
    )
    refreshed = compute_status(
        META, failed, Observed(deployment()), replicas=2, revision=REV, problems=[], now="t1"
    )
    degraded = {c.type: c for c in refreshed.conditions}["Degraded"]
    assert (degraded.status, degraded.reason, degraded.message) == (
        "True",
        "StorageSecretMissing",
        message,
    )
    cleared = compute_status(
        META,
        failed,
        Observed(deployment()),
        replicas=2,
        revision=REV,
        problems=[],
        now="t2",
        applied=True,
    )
    assert {c.type: c for c in cleared.conditions}["Degraded"].status == "False"
