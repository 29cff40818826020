"""The package's shape (DESIGN.md): no import cycles, and pure decision modules that do no I/O.

The imports are read from the source (``ast``), including imports inside functions, but not
those under ``if TYPE_CHECKING:`` (annotations only, never executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mlkube"

#: Modules that decide (manifests, status, rollout steps, job plans, cache bookkeeping):
#: data in, data out. They must not reach kopf, an HTTP client or the operator's shell.
PURE = (
    "mlkube.operator.builders",
    "mlkube.operator.status",
    "mlkube.operator.rollout",
    "mlkube.operator.progressive",
    "mlkube.operator.autoscaler",
    "mlkube.operator.cache",
    "mlkube.operator.peering",
    "mlkube.operator.clock",
    "mlkube.operator.repair",
    "mlkube.operator.storage",
    "mlkube.storage.uri",
    "mlkube.storage.sigv4",
    "mlkube.operator.pytorchjob.planner",
    "mlkube.operator.pytorchjob.status",
    "mlkube.operator.pytorchjob.pods",
)
SHELL = ("kopf", "aiohttp", "mlkube.operator.kube", "mlkube.operator.app")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, here: str | None = None) -> set[str]:
    """Every module ``path`` (module ``here``) imports when it runs (absolute names)."""
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from mlkube.operator import clock` imports the submodule clock
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules} for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once (Tarjan's strongly connected components of size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_are_read_as_they_run(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import kopf\n"
        "from . import clock\n"
        "def later() -> None:\n    import aiohttp\n"
    )
    found = imports(probe, "mlkube.operator.probe")
    assert "kopf" not in found  # annotations only
    assert "aiohttp" in found  # a function's import runs when it is called
    assert "mlkube.operator.clock" in found


def test_no_module_of_the_package_imports_itself_through_others() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_do_no_io(name: str) -> None:
    path = PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")
    reached = {m for m in imports(path) if any(m == s or m.startswith(s + ".") for s in SHELL)}
    assert reached == set(), f"{name} imports {sorted(reached)}"
