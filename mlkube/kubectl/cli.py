"""``kubectl mlkube``: see and steer releases of ModelServices (and look at PyTorchJobs).

Installed as ``kubectl-mlkube`` (a kubectl plugin: ``kubectl mlkube ...``) and reachable as
``mlkube get|status|history|promote|...``. Read-only views render what the operator writes
into status; actions write one annotation (:mod:`mlkube.api.actions`) and wait for the
operator's answer in ``status.rollout.lastAction``. ``spec`` is never written: Git owns it.

Exit codes: 0 done (``status --watch``: the rollout ended Healthy), 1 the rollout was rolled
back or the operator rejected the action, 2 an error (unknown name, no permission, no API
server), 3 a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from mlkube.api.actions import ACTION_ANNOTATION, Action, Verb, action_value
from mlkube.kubectl import render
from mlkube.kubectl.errors import CliError
from mlkube.operator.builders import CONTAINER_NAME, LABEL_MODELSERVICE, LABEL_REVISION
from mlkube.operator.pytorchjob.pods import LABEL_JOB_NAME

if TYPE_CHECKING:
    from mlkube.kubectl.client import Client

JsonDict = dict[str, Any]

OK, REJECTED, ERROR, TIMEOUT = 0, 1, 2, 3
RELEASE_COMMANDS = (
    "get",
    "status",
    "history",
    "promote",
    "abort",
    "retry",
    "pause",
    "resume",
    "undo",
    "logs",
    "completion",
)
KIND_NAMES = {
    "msvc": "ModelService",
    "modelservice": "ModelService",
    "modelservices": "ModelService",
    "ptj": "PyTorchJob",
    "pytorchjob": "PyTorchJob",
    "pytorchjobs": "PyTorchJob",
}

EXAMPLES = """\
examples:
  kubectl mlkube get msvc                      ModelServices of the namespace, as trees
  kubectl mlkube get msvc recs -o yaml         one tree as data
  kubectl mlkube get ptj -A -l team=search     PyTorchJobs of every namespace, by label
  kubectl mlkube status recs --watch           follow a canary; exit 0 Healthy, 1 rolled back
  kubectl mlkube history recs                  revisions, images, model versions, outcomes
  kubectl mlkube promote recs [--full]         next step now (--full: promote now)
  kubectl mlkube pause recs / resume recs      hold the canary at its weight / go on
  kubectl mlkube abort recs / retry recs       roll the canary back / try it again
  kubectl mlkube undo recs --to-revision 2     stable back to history entry 2
  kubectl mlkube logs recs -f                  every model pod's log, new pods too
  source <(kubectl mlkube completion bash)     shell completion (bash or zsh)

exit codes: 0 done or Healthy, 1 rolled back or action rejected, 2 error, 3 timeout
"""


# --------------------------------------------------------------------------- parsing


def _parser(prog: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    common.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    common.add_argument(
        "--request-timeout", type=float, default=30.0, metavar="S", help="seconds per API request"
    )
    parser = argparse.ArgumentParser(
        prog=prog,
        description="See and steer releases of mlkube ModelServices; look at PyTorchJobs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    get = add("get", "show ModelServices or PyTorchJobs as trees", "kubectl mlkube get msvc recs")
    get.add_argument("kind", choices=sorted(KIND_NAMES), metavar="msvc|ptj")
    get.add_argument("name", nargs="?")
    get.add_argument("-o", "--output", choices=("tree", "json", "yaml"), default="tree")
    get.add_argument("-A", "--all-namespaces", action="store_true")
    get.add_argument("-l", "--selector", default="", help="label selector, as kubectl's")

    status = add(
        "status",
        "a canary's steps, weight, checks, clocks and Events",
        "kubectl mlkube status recs --watch --timeout 20m",
    )
    status.add_argument("name")
    status.add_argument("-w", "--watch", action="store_true", help="follow until the end")
    status.add_argument("--timeout", default="30m", help="give up watching after (e.g. 10m)")
    status.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    status.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")

    history = add(
        "history",
        "revisions with images, model versions, outcomes, times",
        "kubectl mlkube history recs",
    )
    history.add_argument("name")
    history.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")

    for verb, help_text in (
        (Verb.PROMOTE, "advance the canary one step now (--full: promote it now)"),
        (Verb.ABORT, "roll the canary back; the spec's revision waits for retry or a new spec"),
        (Verb.RETRY, "start the rolled-back revision's canary again"),
        (Verb.PAUSE, "hold the canary at its weight: no checks, no deadline"),
        (Verb.RESUME, "go on after kubectl mlkube pause"),
        (Verb.UNDO, "stable back to an earlier revision (during a canary: abort)"),
    ):
        action = add(verb.value, help_text, f"kubectl mlkube {verb.value} recs")
        action.add_argument("name")
        if verb is Verb.PROMOTE:
            action.add_argument("--full", action="store_true", help="skip the remaining steps")
        if verb is Verb.UNDO:
            action.add_argument(
                "--to-revision", metavar="N", help="history number (see history) or revision"
            )
        action.add_argument(
            "--wait", default="30s", help="how long to wait for the operator's answer (0s: don't)"
        )

    logs = add("logs", "logs of every model pod, prefixed by pod", "kubectl mlkube logs recs -f")
    logs.add_argument("name")
    logs.add_argument("--revision", default="", help="only pods of this revision (prefix)")
    logs.add_argument("-f", "--follow", action="store_true", help="stream, and follow new pods")
    logs.add_argument(
        "--tail", type=int, default=None, help="lines of each pod's log to start with"
    )

    completion = add(
        "completion",
        "print a bash or zsh completion script",
        "source <(kubectl mlkube completion bash)",
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    return parser


# --------------------------------------------------------------------------- output


def _style(stream: TextIO) -> render.Style:
    return render.Style(stream.isatty() and not os.environ.get("NO_COLOR"))


def _dump(data: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        out.write(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False))


def _seconds(text: str, flag: str) -> float:
    from mlkube.api.rollout import parse_duration

    try:
        return float(parse_duration(text)) if not text.isdigit() else float(text)
    except ValueError as exc:
        raise CliError(f"{flag} {text!r}: use a duration such as 30s, 10m, 1h") from exc


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- commands


async def cmd_get(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    kind = KIND_NAMES[args.kind]
    namespace = None if args.all_namespaces else client.namespace
    if args.name:
        objs = [await client.get(kind, args.name, namespace)]
        if args.selector:
            raise CliError("a NAME and --selector (-l) do not go together")
    else:
        objs = await client.list(kind, namespace, labels=args.selector)
    if kind == "ModelService":
        owner = LABEL_MODELSERVICE if not args.name else f"{LABEL_MODELSERVICE}={args.name}"
        deps, sets, pods = await asyncio.gather(
            client.list("Deployment", namespace, labels=owner),
            client.list("ReplicaSet", namespace, labels=owner),
            client.list("Pod", namespace, labels=owner),
        )
        trees = [
            render.msvc_tree(o, _same_ns(o, deps), _same_ns(o, sets), _same_ns(o, pods), _now())
            for o in objs
        ]
    else:
        owner = LABEL_JOB_NAME if not args.name else f"{LABEL_JOB_NAME}={args.name}"
        pods = await client.list("Pod", namespace, labels=owner)
        trees = [render.ptj_tree(o, _same_ns(o, pods), _now()) for o in objs]
    if args.output != "tree":
        _dump(trees[0] if args.name else {"items": trees}, args.output, out)
        return OK
    if not trees:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        out.write(f"No {kind}s found in {where}.\n")
        return OK
    style = _style(out)
    for i, tree in enumerate(trees):
        if i:
            out.write("\n")
        lines = (
            render.render_msvc_tree(tree, style)
            if kind == "ModelService"
            else render.render_ptj_tree(tree, style)
        )
        if namespace is None:
            lines[0] += f"  (namespace {tree['namespace']})"
        out.write("\n".join(lines) + "\n")
    return OK


def _same_ns(owner: JsonDict, objs: list[JsonDict]) -> list[JsonDict]:
    ns = (owner.get("metadata") or {}).get("namespace")
    return [o for o in objs if (o.get("metadata") or {}).get("namespace") == ns]


async def _status_view(client: Client, name: str) -> tuple[JsonDict, JsonDict]:
    ms = await client.get("ModelService", name)
    events = await client.list(
        "Event",
        client.namespace,
        fields=f"involvedObject.name={name},involvedObject.kind=ModelService",
    )
    return ms, render.status_view(ms, events, _now())


async def cmd_status(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    ms, view = await _status_view(client, args.name)
    if not args.watch:
        if args.output != "text":
            _dump(view, args.output, out)
        else:
            out.write("\n".join(render.render_status(view, _style(out))) + "\n")
        return OK
    tty = out.isatty() and args.output == "text"
    style = _style(out)
    limit = _seconds(args.timeout, "--timeout")
    deadline = time.monotonic() + limit
    last = ""
    while True:
        verdict = render.rollout_verdict(ms)
        if tty:
            out.write("\x1b[H\x1b[2J" + "\n".join(render.render_status(view, style)) + "\n")
            out.write(style(f"watching: {verdict} (Ctrl-C to stop)", "dim") + "\n")
        elif args.output != "text":
            if json.dumps(view, default=str) != last:
                last = json.dumps(view, default=str)
                out.write(last + "\n")
        else:
            line = render.status_line(view)
            if line != last:
                last = line
                out.write(f"{_now().strftime('%H:%M:%S')} {line}\n")
        out.flush()
        if verdict == render.HEALTHY:
            out.write(f"ModelService {args.name}: rollout Healthy\n")
            return OK
        if verdict == render.ROLLED_BACK:
            out.write(
                f"ModelService {args.name}: rollout ended {view['phase']}: {view['message']}\n"
            )
            return REJECTED
        if time.monotonic() >= deadline:
            raise CliError(
                f"ModelService {args.name}: still {view['phase']} after --timeout {args.timeout}; "
                f"look at: kubectl mlkube status {args.name} -n {client.namespace}",
                TIMEOUT,
            )
        await asyncio.sleep(min(args.interval, max(0.1, deadline - time.monotonic())))
        ms, view = await _status_view(client, args.name)


async def cmd_history(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    ms = await client.get("ModelService", args.name)
    rows = render.history_rows(ms, _now())
    if args.output != "table":
        _dump({"name": args.name, "history": rows}, args.output, out)
        return OK
    if not rows:
        out.write(
            f"ModelService {args.name} has no rollout history yet (the operator has not acted on it).\n"
        )
        return OK
    out.write("\n".join(render.render_history(rows, _style(out))) + "\n")
    return OK


async def cmd_action(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    verb = Verb(args.command)
    name = args.name
    wait = _seconds(args.wait, "--wait")
    await client.get("ModelService", name)  # a clear "not found" before writing anything
    action = Action(
        verb=verb,
        id=uuid.uuid4().hex[:16],
        full=bool(getattr(args, "full", False)),
        to_revision=getattr(args, "to_revision", None),
        requested_at=_now(),
    )
    await client.annotate("ModelService", name, {ACTION_ANNOTATION: action_value(action)})
    if wait <= 0:
        out.write(
            f"ModelService {name}: {verb.value} requested (the operator acts on its next pass)\n"
        )
        return OK
    deadline = time.monotonic() + wait
    while True:
        ms = await client.get("ModelService", name)
        last = ((ms.get("status") or {}).get("rollout") or {}).get("lastAction") or {}
        if last.get("id") == action.id:
            break
        if time.monotonic() >= deadline:
            raise CliError(
                f"ModelService {name}: the operator did not answer the {verb.value} within "
                f"{args.wait}; is it running and watching namespace {client.namespace}? The "
                f"request stays in annotation {ACTION_ANNOTATION} and runs when it does",
                TIMEOUT,
            )
        await asyncio.sleep(0.25)
    if last.get("outcome") == "Done":
        out.write(f"ModelService {name}: {verb.value}: {last.get('message', 'done')}\n")
        return OK
    raise CliError(
        f"ModelService {name}: {verb.value} rejected: {last.get('message', '')}; "
        f"see: kubectl mlkube status {name} -n {client.namespace}",
        REJECTED,
    )


def _running(pod: JsonDict) -> bool:
    """Whether the model container has started (the log endpoint answers 400 before)."""
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        if c.get("name") == CONTAINER_NAME:
            state = c.get("state") or {}
            return bool(state.get("running") or state.get("terminated"))
    return False


async def cmd_logs(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    await client.get("ModelService", args.name)
    selector = f"{LABEL_MODELSERVICE}={args.name}"
    started: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def follow(pod: str) -> None:
        prefix = f"[pod/{pod}]"
        try:
            async for line in client.log_lines(
                pod, CONTAINER_NAME, follow=args.follow, tail=args.tail
            ):
                out.write(f"{prefix} {line}\n")
                out.flush()
        except CliError as exc:
            sys.stderr.write(f"{exc}\n")

    def wanted(pods: list[JsonDict]) -> list[str]:
        names = []
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            labels = pod["metadata"].get("labels") or {}
            if not labels.get(LABEL_REVISION, "").startswith(args.revision):
                continue
            if pod["metadata"]["name"] not in started and _running(pod):
                names.append(pod["metadata"]["name"])
        return names

    pods = await client.list("Pod", client.namespace, labels=selector)
    if not args.follow:
        names = wanted(pods)
        if not names:
            raise CliError(
                f"ModelService {args.name} has no running model pods"
                + (f" of revision {args.revision}" if args.revision else "")
                + f"; see: kubectl mlkube get msvc {args.name} -n {client.namespace}"
            )
        for pod in names:
            await follow(pod)
        return OK
    try:
        while True:
            for pod in wanted(pods):
                started.add(pod)
                task = asyncio.create_task(follow(pod))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(2.0)
            pods = await client.list("Pod", client.namespace, labels=selector)
            started &= {p["metadata"]["name"] for p in pods}
    finally:  # stopped (Ctrl-C, a timeout): the streams end with it, quietly
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ------------------------------------------------------------------------ completion

_FLAGS = {
    "get": ["-n", "-A", "-l", "-o"],
    "status": ["-n", "--watch", "--timeout", "-o"],
    "history": ["-n", "-o"],
    "promote": ["-n", "--full", "--wait"],
    "undo": ["-n", "--to-revision", "--wait"],
    "logs": ["-n", "-f", "--revision", "--tail"],
}


# Options that take a value (the next word), for every command.
_VALUED = frozenset(
    {"-n", "--namespace", "--kubeconfig", "--request-timeout", "-o", "--output", "-l",
     "--selector", "--timeout", "--to-revision", "--revision", "--tail"}
)  # fmt: skip


def _positionals(words: list[str]) -> list[str]:
    """The words that are neither options nor an option's value."""
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in _VALUED and "=" not in word
        else:
            out.append(word)
    return out


async def candidates(words: list[str], names: Callable[[str], Awaitable[list[str]]]) -> list[str]:
    """Completions for the last of ``words`` (the words after the command's own name)."""
    if not words:
        words = [""]
    current, before = words[-1], words[:-1]
    if before and before[-1] in _VALUED:
        return []  # a namespace, an output format, a selector: nothing to offer
    args = _positionals(before)
    if not args:
        options = list(_GLOBAL_OPTIONS) if current.startswith("-") else list(RELEASE_COMMANDS)
    elif current.startswith("-"):
        options = _FLAGS.get(args[0], ["-n", "--wait"])
    elif args[0] == "completion":
        options = ["bash", "zsh"] if len(args) == 1 else []
    elif args[0] == "get":
        if len(args) == 1:
            options = ["msvc", "ptj"]
        else:
            kind = KIND_NAMES.get(args[1], "ModelService")
            options = await names(kind) if len(args) == 2 else []
    else:
        options = await names("ModelService") if len(args) == 1 else []
    return [o for o in options if o.startswith(current)]


BASH = """\
# bash completion for kubectl-mlkube and mlkube: source <(kubectl mlkube completion bash)
_kubectl_mlkube() {
    local IFS=$'\\n'
    COMPREPLY=($("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -F _kubectl_mlkube kubectl-mlkube mlkube
"""

ZSH = """\
#compdef kubectl-mlkube mlkube
# zsh completion for kubectl-mlkube and mlkube: source <(kubectl mlkube completion zsh)
_kubectl_mlkube() {
    local -a found
    found=(${(f)"$("${words[1]}" __complete "${(@)words[2,CURRENT]}" 2>/dev/null)"})
    compadd -a found
}
compdef _kubectl_mlkube kubectl-mlkube mlkube
"""


async def _complete(words: list[str], namespace: str | None) -> list[str]:
    from mlkube.kubectl.client import Client

    async def names(kind: str) -> list[str]:
        try:
            client = Client.from_kubeconfig(namespace, timeout=5.0)
        except CliError:
            return []
        try:
            return [o["metadata"]["name"] for o in await client.list(kind, client.namespace)]
        except CliError:
            return []
        finally:
            await client.close()

    return await candidates(words, names)


def _namespace_in(words: list[str]) -> str | None:
    for flag, value in itertools.pairwise(words):
        if flag in ("-n", "--namespace"):
            return value
    return None


def complete_main(argv: Sequence[str] | None = None) -> int:
    """``kubectl_complete-mlkube``: what kubectl (>= 1.26) runs to complete a plugin."""
    words = list(sys.argv[1:] if argv is None else argv)
    for word in asyncio.run(_complete(words, _namespace_in(words))):
        print(word)
    print(":4")  # cobra's ShellCompDirectiveNoFileComp
    return OK


# ------------------------------------------------------------------------------ main

COMMANDS: dict[str, Callable[[Client, argparse.Namespace, TextIO], Awaitable[int]]] = {
    "get": cmd_get,
    "status": cmd_status,
    "history": cmd_history,
    "logs": cmd_logs,
    **{verb.value: cmd_action for verb in Verb},
}


def parse(words: Sequence[str], prog: str = "kubectl mlkube") -> argparse.Namespace:
    """The parsed command line (argparse exits on bad arguments, with its usage)."""
    return _parser(prog).parse_args(list(words))


async def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run one parsed command, writing to ``out``; errors raise :class:`CliError`."""
    from mlkube.kubectl.client import Client

    client = Client.from_kubeconfig(
        args.namespace, timeout=args.request_timeout, kubeconfig=args.kubeconfig
    )
    try:
        return await COMMANDS[args.command](client, args, out)
    finally:
        await client.close()


_GLOBAL_OPTIONS = ("-n", "--namespace", "--kubeconfig", "--request-timeout")


def options_after_command(words: list[str]) -> list[str]:
    """``kubectl mlkube -n ml get msvc`` as ``get msvc -n ml``: kubectl users put the
    namespace first; argparse reads these options after the command."""
    moved: list[str] = []
    rest = list(words)
    while rest and (
        rest[0] in _GLOBAL_OPTIONS or rest[0].startswith(tuple(f"{o}=" for o in _GLOBAL_OPTIONS))
    ):
        option = rest.pop(0)
        moved.append(option)
        if "=" not in option and rest:
            moved.append(rest.pop(0))
    if not moved or not rest:
        return words
    return [rest[0], *moved, *rest[1:]]


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["__complete"]:
        for word in asyncio.run(_complete(words[1:], _namespace_in(words))):
            print(word)
        return OK
    words = options_after_command(words)
    name = prog or (
        "kubectl mlkube" if os.path.basename(sys.argv[0]) == "kubectl-mlkube" else "mlkube"
    )
    args = parse(words, name)
    if args.command == "completion":
        sys.stdout.write(BASH if args.shell == "bash" else ZSH)
        return OK
    try:
        return asyncio.run(run(args, sys.stdout))
    except CliError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"error: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
