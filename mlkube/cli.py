"""The `mlkube` command: one entry point, one subcommand per part of the product.

Each subcommand lives in the package that implements it and exposes
``main(argv: list[str]) -> int``; this module only dispatches, so `mlkube --help` stays
fast and importing the operator never drags in the serving runtime (or the reverse).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from mlkube import __version__

# subcommand -> (module that implements it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("mlkube.serving.cli", "run the serving runtime (model server) in this process"),
    "operator": ("mlkube.operator.cli", "run the Kubernetes operator (kopf)"),
    "fetch": (
        "mlkube.storage.cli",
        "download and verify a model from a storage URI (init container)",
    ),
    "crds": ("mlkube.api.crdgen", "print or write the CustomResourceDefinitions"),
    "migrate": ("mlkube.migrate", "convert Kubeflow kubeflow.org/v1 PyTorchJobs into mlkube ones"),
}

RELEASE_COMMANDS: dict[str, str] = {
    "get": "show ModelServices or PyTorchJobs as trees",
    "status": "a canary's steps, weight, checks and Events (--watch: follow it)",
    "history": "a ModelService's revisions and their outcomes",
    "promote": "advance a canary now (--full: promote it now)",
    "abort": "roll a canary back",
    "retry": "start a rolled-back canary again",
    "pause": "hold a canary at its weight",
    "resume": "go on after pause",
    "undo": "stable back to an earlier revision",
    "logs": "logs of every model pod of a ModelService",
    "completion": "print a bash or zsh completion script",
}


def _load(module: str) -> Callable[[list[str]], int] | None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise
    entry: Callable[[list[str]], int] = mod.main
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlkube",
        description="Machine-learning model services and distributed training on Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for name, help_text in RELEASE_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    sub.add_parser("version", help="print the version and exit")

    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["__complete"] or (words[:1] and words[0] in RELEASE_COMMANDS):
        from mlkube.kubectl.cli import main as release_main

        return release_main(words, prog="mlkube")
    args, rest = parser.parse_known_args(words)
    if args.command == "version":
        print(f"mlkube {__version__}")
        return 0
    module, _ = COMMANDS[args.command]
    entry = _load(module)
    if entry is None:
        print(
            f"mlkube {args.command}: not available in this build ({module} has not landed yet)",
            file=sys.stderr,
        )
        return 2
    return entry(rest)
