"""What ``kubectl mlkube`` shows, as pure functions of the objects it read.

Every view is built in two steps: the objects become plain data (``*_tree``,
:func:`status_view`), which ``-o json|yaml`` prints as is, and the data becomes lines of
text (``render_*``), with colour only when asked (a terminal). Nothing here does I/O or
reads the clock, so the tests feed objects and a ``now`` and compare lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlkube.api.rollout import human_duration, parse_duration
from mlkube.operator.builders import LABEL_MODELSERVICE, LABEL_REVISION, LABEL_TRACK
from mlkube.operator.pytorchjob.pods import LABEL_JOB_NAME, LABEL_REPLICA_INDEX, LABEL_REPLICA_TYPE

JsonDict = dict[str, Any]

MOVING = ("Progressing", "Promoting", "Failed")

_COLOURS = {"green": "32", "red": "31", "yellow": "33", "bold": "1", "dim": "2"}


@dataclass(frozen=True)
class Style:
    """ANSI colour, or nothing (a pipe, a file, ``NO_COLOR``)."""

    colour: bool = False

    def __call__(self, text: str, name: str) -> str:
        if not self.colour or not text:
            return text
        return f"\x1b[{_COLOURS[name]}m{text}\x1b[0m"

    def state(self, text: str) -> str:
        """Green for what is fine, red for what is not, yellow for what waits."""
        good = {"Ready", "Running", "Succeeded", "Healthy", "Promoted", "Deployed", "pass", "Done"}
        bad = {"RolledBack", "Failed", "fail", "Rejected", "CrashLoopBackOff", "Error", "NotReady"}
        if text in good:
            return self(text, "green")
        if text in bad or text.endswith("BackOff"):
            return self(text, "red")
        return self(text, "yellow")


PLAIN = Style(False)


# ------------------------------------------------------------------------------ time


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp of the API server (or None)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(value: Any, now: datetime) -> str:
    when = parse_time(value)
    return human_duration((now - when).total_seconds()) if when else "-"


def short(revision: str | None) -> str:
    return (revision or "")[:10]


# ---------------------------------------------------------------------------- pods


def pod_summary(pod: JsonDict, now: datetime) -> JsonDict:
    """One pod as the trees show it: state, readiness, restarts, exit code, age."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    wanted = len((pod.get("spec") or {}).get("containers") or []) or len(containers)
    ready = sum(1 for c in containers if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in containers)
    state = str(status.get("phase") or "Pending")
    exit_code: int | None = None
    for c in containers:
        current = c.get("state") or {}
        waiting = current.get("waiting") or {}
        terminated = current.get("terminated") or {}
        last = (c.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason"):
            state = str(waiting["reason"])
        elif terminated:
            state = str(terminated.get("reason") or "Terminated")
        if terminated.get("exitCode") is not None:
            exit_code = int(terminated["exitCode"])
        elif exit_code is None and last.get("exitCode") is not None:
            exit_code = int(last["exitCode"])
    if meta.get("deletionTimestamp"):
        state = "Terminating"
    out: JsonDict = {
        "name": meta.get("name", ""),
        "state": state,
        "ready": f"{ready}/{wanted}",
        "restarts": restarts,
        "age": age(meta.get("creationTimestamp"), now),
    }
    if exit_code is not None:
        out["exitCode"] = exit_code
    if status.get("podIP"):
        out["ip"] = status["podIP"]
    return out


def _owned_by(obj: JsonDict, uid: str | None) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(r.get("uid") == uid for r in refs)


def _labels(obj: JsonDict) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _template_revision(obj: JsonDict) -> str:
    template = (obj.get("spec") or {}).get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    return str(labels.get(LABEL_REVISION) or _labels(obj).get(LABEL_REVISION) or "")


# ---------------------------------------------------------------------- ModelService


def _condition(obj: JsonDict, kind: str) -> JsonDict:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def msvc_tree(
    ms: JsonDict,
    deployments: list[JsonDict],
    replicasets: list[JsonDict],
    pods: list[JsonDict],
    now: datetime,
) -> JsonDict:
    """A ModelService -> revisions -> Deployments -> ReplicaSets -> pods, as data.

    ``deployments``, ``replicasets`` and ``pods`` may hold other ModelServices' objects:
    only those labelled for this one are used. A revision's weight is its share of traffic
    as status says (the canary's target weight, the rest for stable).
    """
    meta = ms.get("metadata") or {}
    name = meta.get("name", "")
    status = ms.get("status") or {}
    rollout = status.get("rollout") or {}
    phase = rollout.get("phase") or ""
    canary_rev = rollout.get("canaryRevision") if phase in MOVING else None
    weight = int(rollout.get("canaryWeight") or 0) if canary_rev else 0
    stable_rev = rollout.get("stableRevision") or status.get("revision") or ""

    def mine(obj: JsonDict) -> bool:
        return bool(_labels(obj).get(LABEL_MODELSERVICE) == name)

    deps = [d for d in deployments if mine(d)]
    sets = [r for r in replicasets if mine(r)]
    model_pods = [p for p in pods if mine(p)]
    revisions: dict[str, JsonDict] = {}

    def revision_node(rev: str) -> JsonDict:
        if rev not in revisions:
            role = "stable" if rev == stable_rev else "canary" if rev == canary_rev else "old"
            share = 100 - weight if role == "stable" else weight if role == "canary" else 0
            model = (
                rollout.get("stableModelVersion")
                if role == "stable"
                else rollout.get("canaryModelVersion")
                if role == "canary"
                else ""
            )
            revisions[rev] = {
                "revision": rev,
                "role": role,
                "weight": share,
                "modelVersion": model or "",
                "deployments": [],
                "pods": [],
            }
        return revisions[rev]

    if stable_rev:
        revision_node(stable_rev)
    if canary_rev:
        revision_node(canary_rev)
    placed: set[str] = set()
    for dep in sorted(deps, key=lambda d: (d.get("metadata") or {}).get("name", "")):
        dmeta, dstatus = dep.get("metadata") or {}, dep.get("status") or {}
        node: JsonDict = {
            "name": dmeta.get("name", ""),
            "track": _labels(dep).get(LABEL_TRACK, ""),
            "replicas": int((dep.get("spec") or {}).get("replicas") or 0),
            "ready": int(dstatus.get("readyReplicas") or 0),
            "replicaSets": [],
        }
        for rs in sets:
            if not _owned_by(rs, dmeta.get("uid")):
                continue
            rmeta, rstatus = rs.get("metadata") or {}, rs.get("status") or {}
            rs_pods = [p for p in model_pods if _owned_by(p, rmeta.get("uid"))]
            if not rs_pods and not int((rs.get("spec") or {}).get("replicas") or 0):
                continue  # an old, scaled-down ReplicaSet: history, not state
            placed.update((p.get("metadata") or {}).get("name", "") for p in rs_pods)
            node["replicaSets"].append(
                {
                    "name": rmeta.get("name", ""),
                    "revision": _template_revision(rs),
                    "replicas": int((rs.get("spec") or {}).get("replicas") or 0),
                    "ready": int(rstatus.get("readyReplicas") or 0),
                    "pods": [pod_summary(p, now) for p in _by_name(rs_pods)],
                }
            )
        revision_node(_template_revision(dep))["deployments"].append(node)
    for pod in _by_name(model_pods):
        if (pod.get("metadata") or {}).get("name", "") in placed:
            continue
        revision_node(_labels(pod).get(LABEL_REVISION, ""))["pods"].append(pod_summary(pod, now))
    ready = _condition(ms, "Ready")
    order = {"stable": 0, "canary": 1, "old": 2}
    return {
        "kind": "ModelService",
        "name": name,
        "namespace": meta.get("namespace", ""),
        "ready": ready.get("status", "Unknown"),
        "readyReason": ready.get("reason", ""),
        "phase": phase,
        "url": status.get("url", ""),
        "trafficSplit": rollout.get("trafficSplit", ""),
        "message": rollout.get("message", ""),
        "age": age(meta.get("creationTimestamp"), now),
        "revisions": sorted(revisions.values(), key=lambda r: order[r["role"]]),
    }


def _by_name(objs: list[JsonDict]) -> list[JsonDict]:
    return sorted(objs, key=lambda o: (o.get("metadata") or {}).get("name", ""))


def _pod_line(pod: JsonDict, style: Style) -> str:
    extra = f"  exit {pod['exitCode']}" if "exitCode" in pod else ""
    return (
        f"Pod {pod['name']}  {style.state(pod['state'])}  ready {pod['ready']}  "
        f"restarts {pod['restarts']}{extra}  {pod['age']}"
    )


def _branch(lines: list[str], prefix: str, items: list[tuple[str, list[Any]]]) -> None:
    """Append ``items`` (label, children) as a tree under ``prefix``; children are either
    more (label, children) pairs or nothing."""
    for i, (label, children) in enumerate(items):
        last = i == len(items) - 1
        lines.append(f"{prefix}{'└─ ' if last else '├─ '}{label}")
        _branch(lines, prefix + ("   " if last else "│  "), children)


def render_msvc_tree(tree: JsonDict, style: Style = PLAIN) -> list[str]:
    ready = "Ready" if tree["ready"] == "True" else "NotReady"
    head = f"ModelService {style(tree['name'], 'bold')}  {style.state(ready)}"
    if tree["phase"]:
        head += f"  rollout {style.state(tree['phase'])}"
    lines = [head + f"  {tree['age']}"]
    if tree["trafficSplit"]:
        lines.append(f"  traffic: {tree['trafficSplit']}")
    if tree["message"]:
        lines.append(f"  {tree['message']}")
    items: list[tuple[str, list[Any]]] = []
    for rev in tree["revisions"]:
        model = f", model {rev['modelVersion']}" if rev["modelVersion"] else ""
        label = f"revision {short(rev['revision']) or '?'} ({rev['role']}{model}, weight {rev['weight']}%)"
        children: list[tuple[str, list[Any]]] = []
        for dep in rev["deployments"]:
            sets: list[tuple[str, list[Any]]] = [
                (
                    f"ReplicaSet {rs['name']}  {rs['ready']}/{rs['replicas']} ready",
                    [(_pod_line(p, style), []) for p in rs["pods"]],
                )
                for rs in dep["replicaSets"]
            ]
            children.append(
                (f"Deployment {dep['name']}  {dep['ready']}/{dep['replicas']} ready", sets)
            )
        children += [(_pod_line(p, style), []) for p in rev["pods"]]
        items.append((label, children))
    _branch(lines, "", items)
    return lines


# ------------------------------------------------------------------------ PyTorchJob


def _job_state(job: JsonDict) -> str:
    """The last condition that is True (Kubeflow's way to read a job's state)."""
    state = "Pending"
    conditions = (job.get("status") or {}).get("conditions") or []
    for cond in conditions:
        if cond.get("status") == "True":
            state = str(cond.get("type"))
    return state


def ptj_tree(job: JsonDict, pods: list[JsonDict], now: datetime) -> JsonDict:
    """A PyTorchJob -> replica types -> pods (state, exit code), as data."""
    meta = job.get("metadata") or {}
    name = meta.get("name", "")
    specs = (job.get("spec") or {}).get("pytorchReplicaSpecs") or {}
    counts = (job.get("status") or {}).get("replicaStatuses") or {}
    mine = [p for p in pods if _labels(p).get(LABEL_JOB_NAME) == name]
    replicas = []
    for rtype in sorted(specs, key=lambda t: (t != "Master", t)):
        typed = [p for p in mine if _labels(p).get(LABEL_REPLICA_TYPE, "").lower() == rtype.lower()]
        typed.sort(key=lambda p: int(_labels(p).get(LABEL_REPLICA_INDEX, "0") or 0))
        count = counts.get(rtype) or {}
        replicas.append(
            {
                "type": rtype,
                "replicas": int((specs[rtype] or {}).get("replicas") or 1),
                "active": int(count.get("active") or 0),
                "succeeded": int(count.get("succeeded") or 0),
                "failed": int(count.get("failed") or 0),
                "pods": [pod_summary(p, now) for p in typed],
            }
        )
    return {
        "kind": "PyTorchJob",
        "name": name,
        "namespace": meta.get("namespace", ""),
        "state": _job_state(job),
        "restarts": int((job.get("status") or {}).get("restartCount") or 0),
        "age": age(meta.get("creationTimestamp"), now),
        "replicas": replicas,
    }


def render_ptj_tree(tree: JsonDict, style: Style = PLAIN) -> list[str]:
    lines = [
        f"PyTorchJob {style(tree['name'], 'bold')}  {style.state(tree['state'])}  "
        f"restarts {tree['restarts']}  {tree['age']}"
    ]
    items: list[tuple[str, list[Any]]] = []
    for rep in tree["replicas"]:
        label = (
            f"{rep['type']} x{rep['replicas']}  active {rep['active']}, "
            f"succeeded {rep['succeeded']}, failed {rep['failed']}"
        )
        items.append((label, [(_pod_line(p, style), []) for p in rep["pods"]]))
    _branch(lines, "", items)
    return lines


# ------------------------------------------------------------------------- history


def history_rows(ms: JsonDict, now: datetime) -> list[JsonDict]:
    """``status.rollout.history`` numbered (1 = oldest kept), the stable one marked."""
    rollout = (ms.get("status") or {}).get("rollout") or {}
    stable = rollout.get("stableRevision")
    rows = []
    for number, entry in enumerate(rollout.get("history") or [], start=1):
        started, finished = parse_time(entry.get("started")), parse_time(entry.get("finished"))
        rows.append(
            {
                "number": number,
                "revision": entry.get("revision", ""),
                "modelVersion": entry.get("modelVersion", ""),
                "image": entry.get("image", ""),
                "outcome": entry.get("outcome", ""),
                "started": entry.get("started"),
                "finished": entry.get("finished"),
                "ago": age(entry.get("started"), now),
                "took": human_duration((finished - started).total_seconds())
                if started and finished
                else "-",
                "serving": entry.get("revision") == stable
                and number == _last_index(rollout, stable),
            }
        )
    return rows


def _last_index(rollout: JsonDict, revision: str | None) -> int:
    history = rollout.get("history") or []
    for i in range(len(history), 0, -1):
        if history[i - 1].get("revision") == revision:
            return i
    return 0


def render_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    out = []
    for row in [header, *rows]:
        out.append("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return out


def render_history(rows: list[JsonDict], style: Style = PLAIN) -> list[str]:
    table = render_table(
        ["#", "REVISION", "MODEL", "IMAGE", "OUTCOME", "STARTED", "TOOK"],
        [
            [
                f"{r['number']}{'*' if r['serving'] else ''}",
                short(r["revision"]),
                r["modelVersion"] or "-",
                r["image"] or "-",
                r["outcome"],
                f"{r['ago']} ago" if r["ago"] != "-" else "-",
                r["took"],
            ]
            for r in rows
        ],
    )
    if not rows:
        return table
    outcome_col = table[0].index("OUTCOME")
    coloured = [table[0]]
    for line, row in zip(table[1:], rows, strict=True):
        word = row["outcome"]
        coloured.append(line[:outcome_col] + style.state(word) + line[outcome_col + len(word) :])
    return [*coloured, "(* serves now; undo --to-revision takes the # or a revision)"]


# -------------------------------------------------------------------------- status


def _format_value(name: str, value: Any) -> str:
    if value is None:
        return "no data"
    if name == "successRate":
        return f"{float(value) * 100:.2f}%"
    if name == "latencyP99":
        return f"{float(value):.0f}ms"
    return f"{float(value):.4g}"


def _metric_bound(metric: JsonDict) -> str:
    parts = []
    if metric.get("min") is not None:
        parts.append(f">= {metric['min']}")
    if metric.get("max") is not None:
        parts.append(f"<= {metric['max']}")
    if metric.get("compare"):
        parts.append(f"vs stable ({metric['compare'].get('mode', 'ratio')})")
    return ", ".join(parts)


def status_view(ms: JsonDict, events: list[JsonDict], now: datetime) -> JsonDict:
    """Everything ``status`` shows, as data: steps, weight, checks, clocks, Events."""
    meta = ms.get("metadata") or {}
    spec = ms.get("spec") or {}
    status = ms.get("status") or {}
    rollout_spec = spec.get("rollout") or {}
    rollout = status.get("rollout") or {}
    analysis = rollout_spec.get("analysis") or {}
    phase = rollout.get("phase") or ""
    canary = rollout.get("canaryRevision") if phase in MOVING else None
    weight = int(rollout.get("canaryWeight") or 0) if canary else 0
    steps = _steps(rollout_spec)
    interval = parse_duration(rollout_spec.get("interval") or "60s")
    deadline_s = int(rollout_spec.get("progressDeadlineSeconds") or 600)
    min_samples = int(analysis.get("minSampleCount", 100))
    last_progress = parse_time(rollout.get("lastProgressTime"))
    last_check = parse_time(rollout.get("lastCheckTime"))
    paused = bool(rollout.get("paused"))

    next_check: float | None = None
    deadline: float | None = None
    if phase == "Progressing" and canary and not paused:
        due = [t.timestamp() + interval for t in (last_progress, last_check) if t is not None]
        if due:
            next_check = max(due) - now.timestamp()
        if last_progress is not None:
            deadline = last_progress.timestamp() + deadline_s - now.timestamp()
    elif phase == "Promoting" and last_progress is not None:
        deadline = last_progress.timestamp() + deadline_s - now.timestamp()

    results = {m.get("name"): m for m in rollout.get("metrics") or []}
    metrics = []
    for metric in analysis.get("metrics") or []:
        result = results.get(metric.get("name")) or {}
        metrics.append(
            {
                "name": metric.get("name", ""),
                "value": result.get("value"),
                "shown": _format_value(metric.get("name", ""), result.get("value"))
                if result
                else "not checked yet",
                "bound": result.get("threshold") or _metric_bound(metric),
                "verdict": result.get("verdict", ""),
                "samples": result.get("samples"),
                "message": result.get("message", ""),
            }
        )
    mine = [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("name") == meta.get("name")
        and (e.get("involvedObject") or {}).get("kind") == "ModelService"
    ]
    mine.sort(key=_event_time)
    ready = _condition(ms, "Ready")
    generation = meta.get("generation")
    return {
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
        "observed": status.get("observedGeneration") == generation,
        "ready": ready.get("status", "Unknown"),
        "phase": phase or "-",
        "strategy": rollout_spec.get("strategy", "canary") if rollout_spec else "rolling",
        "stableRevision": rollout.get("stableRevision") or status.get("revision") or "",
        "stableModelVersion": rollout.get("stableModelVersion", ""),
        "canaryRevision": canary or "",
        "canaryModelVersion": rollout.get("canaryModelVersion", "") if canary else "",
        "rolledBackRevision": rollout.get("rolledBackRevision") or "",
        "steps": steps,
        "weight": weight,
        "trafficSplit": rollout.get("trafficSplit", ""),
        "paused": paused,
        "pausedBy": "kubectl mlkube pause"
        if rollout.get("manualPause")
        else "spec.rollout.paused"
        if paused
        else "",
        "failedChecks": int(rollout.get("failedChecks") or 0),
        "failureThreshold": int(rollout_spec.get("failureThreshold") or 1),
        "interval": interval,
        "minSampleCount": min_samples,
        "metrics": metrics,
        "nextCheckSeconds": next_check,
        "deadlineSeconds": deadline,
        "message": rollout.get("message", ""),
        "lastAction": rollout.get("lastAction"),
        "events": [
            {
                "age": age(_event_time(e), now),
                "type": e.get("type", ""),
                "reason": e.get("reason", ""),
                "message": e.get("message", ""),
                "count": int(e.get("count") or 1),
            }
            for e in mine[-8:]
        ],
    }


def _event_time(event: JsonDict) -> str:
    when = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("series") or {}).get("lastObservedTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )
    parsed = parse_time(when)
    return parsed.isoformat() if parsed else ""


def _steps(rollout_spec: JsonDict) -> list[int]:
    if not rollout_spec:
        return []
    if rollout_spec.get("steps"):
        return [int(s) for s in rollout_spec["steps"]]
    step = int(rollout_spec.get("stepWeight") or 10)
    top = int(rollout_spec.get("maxWeight") or 50)
    return [*range(step, top, step), top]


def render_status(view: JsonDict, style: Style = PLAIN) -> list[str]:
    """The status view as a person reads it."""
    lines = [
        f"ModelService {style(view['name'], 'bold')} (namespace {view['namespace']})",
    ]
    phase = view["phase"]
    if not view["observed"]:
        lines.append("Status:     the operator has not acted on the latest spec yet")
    lines.append(f"Phase:      {style.state(phase)}  (strategy {view['strategy']})")
    stable = short(view["stableRevision"])
    model = f" (model {view['stableModelVersion']})" if view["stableModelVersion"] else ""
    lines.append(f"Stable:     {stable or '-'}{model}")
    if view["canaryRevision"]:
        cmodel = f" (model {view['canaryModelVersion']})" if view["canaryModelVersion"] else ""
        lines.append(f"Canary:     {short(view['canaryRevision'])}{cmodel}")
    if view["rolledBackRevision"]:
        lines.append(f"Rolled back: {short(view['rolledBackRevision'])}")
    if view["steps"]:
        marks = []
        for w in view["steps"]:
            text = f"{w}%"
            if view["canaryRevision"] and w == view["weight"]:
                text = style(f"[{w}%]", "bold")
            elif view["canaryRevision"] and w < view["weight"]:
                text = style(f"{w}%", "dim")
            marks.append(text)
        lines.append(f"Steps:      {' -> '.join(marks)} -> promote")
    if view["canaryRevision"]:
        lines.append(f"Weight:     {view['weight']}%  ({view['trafficSplit']})")
    if view["paused"]:
        lines.append(f"Paused:     {style('yes', 'yellow')}, by {view['pausedBy']}")
    if view["metrics"] or view["canaryRevision"]:
        lines.append(
            f"Analysis:   every {human_duration(view['interval'])}, "
            f"failed checks {view['failedChecks']}/{view['failureThreshold']}, "
            f"min samples {view['minSampleCount']}"
        )
    for m in view["metrics"]:
        samples = (
            f"  samples {m['samples']}/{view['minSampleCount']}" if m["samples"] is not None else ""
        )
        verdict = style.state(m["verdict"]) if m["verdict"] else "-"
        lines.append(
            f"  {m['name']:<14} {m['shown']:<16} bound {m['bound']:<18} {verdict}{samples}"
        )
    if view["nextCheckSeconds"] is not None:
        lines.append(f"Next check: {_clock(view['nextCheckSeconds'], 'when the canary is ready')}")
    if view["deadlineSeconds"] is not None:
        lines.append(f"Deadline:   {_clock(view['deadlineSeconds'], 'exceeded: rolling back')}")
    if view["message"]:
        lines.append(f"Message:    {view['message']}")
    action = view["lastAction"]
    if action:
        lines.append(
            f"Last action: {action.get('verb')} {style.state(action.get('outcome', ''))}: "
            f"{action.get('message', '')}"
        )
    if view["events"]:
        lines.append("Events:")
        for e in view["events"]:
            count = f" (x{e['count']})" if e["count"] > 1 else ""
            kind = style(e["type"], "red") if e["type"] == "Warning" else e["type"]
            lines.append(f"  {e['age']:>6}  {kind:<7}  {e['reason']:<24} {e['message']}{count}")
    return lines


def _clock(seconds: float, overdue: str) -> str:
    return f"in {human_duration(seconds)}" if seconds > 0 else overdue


def status_line(view: JsonDict) -> str:
    """One line for logs (``status --watch`` when not on a terminal): only changes print."""
    parts = [f"{view['name']}: {view['phase']}"]
    if not view["observed"]:
        parts.append("the operator has not acted on the latest spec yet")
    if view["canaryRevision"]:
        parts.append(f"canary {short(view['canaryRevision'])} at {view['weight']}%")
    if view["paused"]:
        parts.append("paused")
    checks = [
        f"{m['name']} {m['shown']} ({m['verdict'] or '-'})" for m in view["metrics"] if m["verdict"]
    ]
    if checks:
        parts.append(", ".join(checks))
    if view["message"]:
        parts.append(view["message"])
    return " | ".join(parts)


# --------------------------------------------------------------------- watch verdict

HEALTHY, ROLLED_BACK, WAITING = "Healthy", "RolledBack", "Waiting"


def rollout_verdict(ms: JsonDict) -> str:
    """Whether ``status --watch`` may stop: Healthy, RolledBack (or failed), or Waiting.

    Healthy means the operator has acted on the current spec, no canary is in flight and
    the stable Deployment is Ready at the spec's revision.
    """
    meta = ms.get("metadata") or {}
    status = ms.get("status") or {}
    if status.get("observedGeneration") != meta.get("generation"):
        return WAITING
    phase = (status.get("rollout") or {}).get("phase") or "Succeeded"
    if phase == "RolledBack" or _condition(ms, "Degraded").get("reason") == "PromotionFailed":
        return ROLLED_BACK
    if phase != "Succeeded":
        return WAITING
    return HEALTHY if _condition(ms, "Ready").get("status") == "True" else WAITING
