"""What ``kubectl mlkube`` prints, from objects as the API server returns them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlkube.kubectl import render
from mlkube.kubectl.cli import candidates, main, options_after_command

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
STABLE, CANARY = "aaaaaaaaaa1111", "bbbbbbbbbb2222"


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def msvc(**rollout: Any) -> dict[str, Any]:
    status = {
        "phase": "Progressing",
        "stableRevision": STABLE,
        "stableModelVersion": "v1",
        "canaryRevision": CANARY,
        "canaryModelVersion": "v2",
        "canaryWeight": 20,
        "trafficSplit": "canary ~33% by pods (1/3; target 20%)",
        "lastProgressTime": ts(25),
        "lastCheckTime": ts(25),
        "message": "canary at 20%",
        "metrics": [
            {
                "name": "successRate",
                "verdict": "pass",
                "value": 0.9985,
                "threshold": ">= 99.00%",
                "samples": 420,
            },
            {"name": "latencyP99", "verdict": "wait", "threshold": "<= 200ms", "samples": 3},
        ],
        "history": [
            {"revision": STABLE, "modelVersion": "v1", "image": "img:1", "outcome": "Deployed",
             "started": ts(7200), "finished": ts(7200)},
            {"revision": CANARY, "modelVersion": "v2", "image": "img:2", "outcome": "Progressing",
             "started": ts(300)},
        ],
        **rollout,
    }  # fmt: skip
    return {
        "metadata": {
            "name": "recs",
            "namespace": "ml",
            "generation": 4,
            "creationTimestamp": ts(90000),
        },
        "spec": {
            "rollout": {
                "stepWeight": 20,
                "maxWeight": 60,
                "interval": "60s",
                "progressDeadlineSeconds": 600,
                "analysis": {
                    "minSampleCount": 100,
                    "metrics": [
                        {"name": "successRate", "min": 0.99},
                        {"name": "latencyP99", "max": 200},
                    ],
                },
            }
        },
        "status": {
            "observedGeneration": 4,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Available"}],
            "rollout": status,
        },
    }


def labelled(kind: str, name: str, uid: str, owner: str = "", **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ml",
        "uid": uid,
        "labels": {"mlkube.dev/modelservice": "recs", **labels},
        "creationTimestamp": ts(120),
    }
    if owner:
        meta["ownerReferences"] = [{"uid": owner, "controller": True}]
    return {"kind": kind, "metadata": meta}


def pod(
    name: str,
    owner: str,
    revision: str,
    *,
    ready: bool,
    restarts: int = 0,
    waiting: str = "",
    exit_code: int | None = None,
) -> dict[str, Any]:
    p = labelled("Pod", name, name, owner, **{"mlkube.dev/revision": revision})
    state: dict[str, Any] = {"running": {}} if not waiting else {"waiting": {"reason": waiting}}
    last = {"terminated": {"exitCode": exit_code}} if exit_code is not None else {}
    p["spec"] = {"containers": [{"name": "model-server"}]}
    p["status"] = {"phase": "Running", "containerStatuses": [
        {"name": "model-server", "ready": ready, "restartCount": restarts, "state": state, "lastState": last}
    ]}  # fmt: skip
    return p


def children() -> tuple[list[Any], list[Any], list[Any]]:
    stable = labelled("Deployment", "recs", "d1", **{"mlkube.dev/track": "stable"})
    stable["spec"] = {
        "replicas": 2,
        "template": {"metadata": {"labels": {"mlkube.dev/revision": STABLE}}},
    }
    stable["status"] = {"readyReplicas": 2}
    canary = labelled("Deployment", "recs-canary", "d2", **{"mlkube.dev/track": "canary"})
    canary["spec"] = {
        "replicas": 1,
        "template": {"metadata": {"labels": {"mlkube.dev/revision": CANARY}}},
    }
    canary["status"] = {"readyReplicas": 0}
    rs1 = labelled("ReplicaSet", "recs-5d8f", "r1", "d1", **{"mlkube.dev/revision": STABLE})
    rs1["spec"] = {"replicas": 2}
    rs1["status"] = {"readyReplicas": 2}
    rs2 = labelled("ReplicaSet", "recs-canary-77c", "r2", "d2", **{"mlkube.dev/revision": CANARY})
    rs2["spec"] = {"replicas": 1}
    old = labelled("ReplicaSet", "recs-old", "r0", "d1", **{"mlkube.dev/revision": "zz"})
    old["spec"] = {"replicas": 0}
    pods = [
        pod("recs-5d8f-a", "r1", STABLE, ready=True),
        pod("recs-5d8f-b", "r1", STABLE, ready=True, restarts=2, exit_code=137),
        pod("recs-canary-77c-x", "r2", CANARY, ready=False, restarts=4, waiting="CrashLoopBackOff"),
    ]
    other = labelled("Pod", "elsewhere", "p9", **{"mlkube.dev/revision": STABLE})
    other["metadata"]["labels"]["mlkube.dev/modelservice"] = "other"
    return [stable, canary], [rs1, rs2, old], [*pods, other]


def test_msvc_tree_shows_revisions_weights_replicasets_and_pods() -> None:
    tree = render.msvc_tree(msvc(), *children(), NOW)
    assert [(r["role"], r["weight"], r["modelVersion"]) for r in tree["revisions"]] == [
        ("stable", 80, "v1"),
        ("canary", 20, "v2"),
    ]
    lines = render.render_msvc_tree(tree)
    assert lines == [
        "ModelService recs  Ready  rollout Progressing  1d1h",
        "  traffic: canary ~33% by pods (1/3; target 20%)",
        "  canary at 20%",
        "├─ revision aaaaaaaaaa (stable, model v1, weight 80%)",
        "│  └─ Deployment recs  2/2 ready",
        "│     └─ ReplicaSet recs-5d8f  2/2 ready",
        "│        ├─ Pod recs-5d8f-a  Running  ready 1/1  restarts 0  2m",
        "│        └─ Pod recs-5d8f-b  Running  ready 1/1  restarts 2  exit 137  2m",
        "└─ revision bbbbbbbbbb (canary, model v2, weight 20%)",
        "   └─ Deployment recs-canary  0/1 ready",
        "      └─ ReplicaSet recs-canary-77c  0/1 ready",
        "         └─ Pod recs-canary-77c-x  CrashLoopBackOff  ready 0/1  restarts 4  exit 137  2m"[
            :0
        ]
        + "         └─ Pod recs-canary-77c-x  CrashLoopBackOff  ready 0/1  restarts 4  2m",
    ]


def test_after_a_rollback_only_stable_carries_traffic() -> None:
    ms = msvc(phase="RolledBack", canaryRevision=None, canaryWeight=0, rolledBackRevision=CANARY)
    tree = render.msvc_tree(ms, [], [], [], NOW)
    assert [(r["revision"], r["weight"]) for r in tree["revisions"]] == [(STABLE, 100)]
    coloured = render.render_msvc_tree(tree, render.Style(True))
    assert "\x1b[31mRolledBack\x1b[0m" in coloured[0]
    assert "\x1b[" not in "".join(render.render_msvc_tree(tree))


def test_ptj_tree_shows_replicas_pods_states_and_exit_codes() -> None:
    job = {
        "metadata": {"name": "ddp", "namespace": "ml", "creationTimestamp": ts(60)},
        "spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": 2}, "Master": {"replicas": 1}}},
        "status": {
            "conditions": [
                {"type": "Created", "status": "True"},
                {"type": "Running", "status": "False"},
                {"type": "Failed", "status": "True"},
            ],
            "replicaStatuses": {"Master": {"failed": 1}, "Worker": {"active": 1, "succeeded": 1}},
            "restartCount": 1,
        },
    }

    def jp(name: str, rtype: str, index: int, phase: str, code: int | None) -> dict[str, Any]:
        state = {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}}
        return {
            "metadata": {"name": name, "namespace": "ml", "creationTimestamp": ts(30), "labels": {
                "training.kubeflow.org/job-name": "ddp",
                "training.kubeflow.org/replica-type": rtype,
                "training.kubeflow.org/replica-index": str(index)}},
            "status": {"phase": phase, "containerStatuses": [
                {"name": "pytorch", "ready": False, "restartCount": 0,
                 **({"state": state} if code is not None else {"state": {"running": {}}})}]},
        }  # fmt: skip

    pods = [
        jp("ddp-worker-1", "worker", 1, "Running", None),
        jp("ddp-worker-0", "worker", 0, "Succeeded", 0),
        jp("ddp-master-0", "master", 0, "Failed", 3),
    ]
    lines = render.render_ptj_tree(render.ptj_tree(job, pods, NOW))
    assert lines == [
        "PyTorchJob ddp  Failed  restarts 1  1m",
        "├─ Master x1  active 0, succeeded 0, failed 1",
        "│  └─ Pod ddp-master-0  Error  ready 0/1  restarts 0  exit 3  30s",
        "└─ Worker x2  active 1, succeeded 1, failed 0",
        "   ├─ Pod ddp-worker-0  Completed  ready 0/1  restarts 0  exit 0  30s",
        "   └─ Pod ddp-worker-1  Running  ready 0/1  restarts 0  30s",
    ]


def test_status_shows_steps_metrics_samples_and_clocks() -> None:
    events = [
        {"involvedObject": {"kind": "ModelService", "name": "recs"}, "type": "Normal",
         "reason": "CanaryStarted", "message": "starting canary bbbbbbbbbb at 20%",
         "lastTimestamp": ts(300)},
        {"involvedObject": {"kind": "ModelService", "name": "recs"}, "type": "Warning",
         "reason": "AnalysisWaiting", "message": "canary served 3 requests", "count": 4,
         "lastTimestamp": ts(25)},
        {"involvedObject": {"kind": "Deployment", "name": "recs"}, "type": "Normal",
         "reason": "ScalingReplicaSet", "message": "not ours", "lastTimestamp": ts(1)},
    ]  # fmt: skip
    view = render.status_view(msvc(), events, NOW)
    assert view["steps"] == [20, 40, 60]
    assert view["nextCheckSeconds"] == 35
    assert view["deadlineSeconds"] == 575
    lines = render.render_status(view)
    assert lines == [
        "ModelService recs (namespace ml)",
        "Phase:      Progressing  (strategy canary)",
        "Stable:     aaaaaaaaaa (model v1)",
        "Canary:     bbbbbbbbbb (model v2)",
        "Steps:      [20%] -> 40% -> 60% -> promote",
        "Weight:     20%  (canary ~33% by pods (1/3; target 20%))",
        "Analysis:   every 1m, failed checks 0/1, min samples 100",
        "  successRate    99.85%           bound >= 99.00%          pass  samples 420/100",
        "  latencyP99     no data          bound <= 200ms           wait  samples 3/100",
        "Next check: in 35s",
        "Deadline:   in 9m35s",
        "Message:    canary at 20%",
        "Events:",
        "      5m  Normal   CanaryStarted            starting canary bbbbbbbbbb at 20%",
        "     25s  Warning  AnalysisWaiting          canary served 3 requests (x4)",
    ]
    assert render.status_line(view) == (
        "recs: Progressing | canary bbbbbbbbbb at 20% | successRate 99.85% (pass), "
        "latencyP99 no data (wait) | canary at 20%"
    )


def test_paused_status_names_who_paused_and_stops_the_clocks() -> None:
    view = render.status_view(msvc(paused=True, manualPause=True), [], NOW)
    lines = render.render_status(view)
    assert "Paused:     yes, by kubectl mlkube pause" in lines
    assert not any(line.startswith(("Next check", "Deadline")) for line in lines)
    overdue = render.status_view(msvc(lastProgressTime=ts(700), lastCheckTime=ts(61)), [], NOW)
    assert "Deadline:   exceeded: rolling back" in render.render_status(overdue)


@pytest.mark.parametrize(
    ("change", "verdict"),
    [
        ({}, render.WAITING),
        ({"phase": "Succeeded"}, render.HEALTHY),
        ({"phase": "RolledBack"}, render.ROLLED_BACK),
        ({"phase": "Promoting"}, render.WAITING),
    ],
)
def test_watch_verdict(change: dict[str, Any], verdict: str) -> None:
    assert render.rollout_verdict(msvc(**change)) == verdict


def test_watch_waits_for_the_operator_to_see_the_latest_spec() -> None:
    ms = msvc(phase="Succeeded")
    ms["metadata"]["generation"] = 5  # just applied; the operator has not acted yet
    assert render.rollout_verdict(ms) == render.WAITING
    ms = msvc(phase="Succeeded")
    ms["status"]["conditions"][0]["status"] = "False"
    assert render.rollout_verdict(ms) == render.WAITING


def test_history_numbers_and_marks_what_serves() -> None:
    ms = msvc(phase="Succeeded", stableRevision=CANARY)
    ms["status"]["rollout"]["history"][1].update(outcome="Promoted", finished=ts(100))
    lines = render.render_history(render.history_rows(ms, NOW))
    assert lines == [
        "#    REVISION     MODEL   IMAGE   OUTCOME    STARTED   TOOK",
        "1    aaaaaaaaaa   v1      img:1   Deployed   2h ago    0s",
        "2*   bbbbbbbbbb   v2      img:2   Promoted   5m ago    3m20s",
        "(* serves now; undo --to-revision takes the # or a revision)",
    ]


def test_human_durations() -> None:
    assert [render.human_duration(s) for s in (0, 59, 61, 600, 3600, 3660, 90000)] == [
        "0s", "59s", "1m1s", "10m", "1h", "1h1m", "1d1h",
    ]  # fmt: skip


def test_completion_candidates() -> None:
    async def names(kind: str) -> list[str]:
        return {"ModelService": ["recs", "rank"], "PyTorchJob": ["ddp"]}[kind]

    def run(*words: str) -> list[str]:
        return asyncio.run(candidates(list(words), names))

    assert run("pro") == ["promote"]
    assert run("get", "") == ["msvc", "ptj"]
    assert run("get", "ptj", "") == ["ddp"]
    assert run("status", "re") == ["recs"]
    assert run("status", "recs", "") == []
    assert run("status", "-n", "") == []
    assert run("promote", "--f") == ["--full"]
    assert run("completion", "") == ["bash", "zsh"]
    # option values are not the command's arguments, wherever the options stand
    assert run("status", "-n", "ml", "re") == ["recs"]
    assert run("-n", "ml", "st") == ["status"]
    assert run("logs", "--tail=5", "--revision", "r2", "") == ["recs", "rank"]
    assert run("get", "ptj", "-n", "ml", "") == ["ddp"]
    assert run("get", "msvc", "recs", "") == []
    assert run("get", "-o", "") == []
    assert run("--k") == ["--kubeconfig"]


def test_completion_scripts_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    assert "complete -F _kubectl_mlkube kubectl-mlkube mlkube" in capsys.readouterr().out
    assert main(["completion", "zsh"]) == 0
    assert "#compdef kubectl-mlkube mlkube" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--help"], prog="kubectl mlkube")
    assert exc.value.code == 0
    assert "kubectl mlkube promote recs [--full]" in capsys.readouterr().out


def test_no_kubeconfig_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["get", "msvc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: cannot read the kubeconfig")
    assert "missing" in err
    monkeypatch.delenv("KUBECONFIG")
    assert main(["status", "recs"]) == 2
    assert capsys.readouterr().err.startswith("error: no kubeconfig found")


def test_namespace_and_kubeconfig_may_come_before_the_command() -> None:
    assert options_after_command(["-n", "ml", "get", "msvc"]) == ["get", "-n", "ml", "msvc"]
    assert options_after_command(["--kubeconfig=k", "-n", "ml", "status", "recs"]) == [
        "status", "--kubeconfig=k", "-n", "ml", "recs",
    ]  # fmt: skip
    assert options_after_command(["status", "recs", "-n", "ml"]) == ["status", "recs", "-n", "ml"]
    assert options_after_command(["-n"]) == ["-n"]
