"""The container image: hadolint, the Dockerfile's promises, and its build path run for real.

This machine has no container engine, so the image itself is not built here. What can be
checked is checked: hadolint (what platform pipelines run), the runtime stage's shape
(non-root numeric user, no compiler, no HEALTHCHECK, OCI labels, `mlkube` entry point),
and the build stage's own commands, run against the exact build context .dockerignore lets
through, so that what `make test` exercises is what the image build runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"


# ------------------------------------------------------------------------ Dockerfile parse


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions grouped per build stage (everything from one FROM to the next)."""
    out: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            out.append([])
        if out:
            out[-1].append((keyword, args))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def test_hadolint_passes(hadolint: str) -> None:
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_hadolint_catches_a_bad_dockerfile(hadolint: str, tmp_path: Path) -> None:
    """The lint step can fail: an unpinned base image and apt cache left behind are refused."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nUSER root\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # latest tag
    assert "DL3009" in proc.stdout or "DL3015" in proc.stdout  # apt lists / recommends


def test_two_stages_and_a_slim_runtime(dockerfile: str) -> None:
    build, runtime = stages(dockerfile)
    assert build[0][1].endswith(" AS build")
    assert "python:${PYTHON_VERSION}-${DEBIAN_RELEASE}" in build[0][1]
    assert runtime[0][1].startswith("python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}")
    args = dict(a.split("=", 1) for k, a in instructions(dockerfile) if k == "ARG" and "=" in a)
    assert args["PYTHON_VERSION"] == "3.11"


def test_runtime_stage_has_no_compiler_and_runs_as_a_numeric_non_root_user(
    dockerfile: str,
) -> None:
    _, runtime = stages(dockerfile)
    keywords = [k for k, _ in runtime]
    # nothing is installed or compiled in the runtime stage: it only copies the venv
    assert "RUN" not in keywords
    copies = [a for k, a in runtime if k == "COPY"]
    assert copies == ["--from=build /opt/mlkube /opt/mlkube"]
    (user,) = [a for k, a in runtime if k == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    # the last USER wins: nothing after it switches back
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k in ("COPY", "ENV"))


def test_entrypoint_labels_and_no_healthcheck(dockerfile: str, package_version: str) -> None:
    _, runtime = stages(dockerfile)
    assert all(k != "HEALTHCHECK" for k, _ in instructions(dockerfile))
    (entrypoint,) = [a for k, a in runtime if k == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["mlkube"]
    (cmd,) = [a for k, a in runtime if k == "CMD"]
    assert json.loads(cmd) in (["serve"], ["operator"])
    labels = " ".join(a for k, a in runtime if k == "LABEL")
    found = dict(re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', labels))
    for key in ("title", "description", "source", "licenses", "version", "revision", "created"):
        assert f"org.opencontainers.image.{key}" in found, key
    assert found["org.opencontainers.image.version"] == "${VERSION}"
    assert found["org.opencontainers.image.licenses"] == "Apache-2.0"


# ----------------------------------------------------------------------- build context


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob (Go filepath.Match plus `**`) as a regular expression."""
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out += "/?"
                i += 1
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    # a pattern that names a directory also covers everything below it
    return re.compile(f"^{out}(/.*)?$")


def build_context(repo: Path) -> list[str]:
    """The files (relative paths) Docker would send for `docker build .` from this repo."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in (repo / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _dockerignore_regex(line.lstrip("!"))))
    kept = []
    for dirpath, dirnames, filenames in os.walk(repo):
        rel_dir = Path(dirpath).relative_to(repo).as_posix()
        # .git and the virtual environment are excluded by `*` with no exception under them
        dirnames[:] = [d for d in dirnames if not (rel_dir == "." and d in (".git", ".venv"))]
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            excluded = False
            for negate, regex in rules:
                if regex.match(rel):
                    excluded = not negate
            if not excluded:
                kept.append(rel)
    return sorted(kept)


def test_build_context_is_only_what_pip_needs() -> None:
    context = build_context(REPO)
    tops = {p.split("/", 1)[0] for p in context}
    assert tops <= {"pyproject.toml", "setup.py", "README.md", "native", "mlkube"}
    assert {"pyproject.toml", "setup.py", "README.md", "mlkube/__init__.py"} <= set(context)
    assert any(p.startswith("native/") and p.endswith(".c") for p in context)
    # a libbetadist.so built on the host never reaches the image: build_ext must compile it
    assert not [p for p in context if p.endswith((".so", ".o", ".pyc"))]
    # nor gRPC modules generated on the host: build_py generates them from the .proto
    assert "mlkube/serving/grpc/inference.proto" in context
    assert not [p for p in context if "_pb2" in p]


def _build_run(dockerfile: str) -> str:
    build, _ = stages(dockerfile)
    runs = [a for k, a in build if k == "RUN"]
    (install,) = [r for r in runs if "pip install" in r]
    return install


def test_build_stage_installs_the_project_the_way_make_does(dockerfile: str) -> None:
    """Both go through `pip install` of the project root, hence setup.py's build_ext."""
    install = _build_run(dockerfile)
    assert re.search(r'pip install --no-cache-dir "\.\[fast\]"', install)
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"pip install -q -e '\.\[test\]'", makefile)
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    assert '"build_ext": BuildSharedLibrary' in setup


def test_build_stage_commands_produce_a_working_image_payload(
    dockerfile: str, tmp_path: Path
) -> None:
    """Run the build stage's recipe on the real build context, then its own smoke test.

    The context is copied as Docker would send it; the wheel is built by the same PEP 517
    path `pip install .` takes (without build isolation, so no network is needed); the
    smoke command is taken verbatim from the Dockerfile and run against the built wheel.
    """
    context = tmp_path / "context"
    for rel in build_context(REPO):
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--wheel-dir", str(wheels), str(context)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = wheels.glob("mlkube-*.whl")
    # a compiled library makes the wheel platform-specific, as the image's must be
    assert wheel.name.endswith("-linux_x86_64.whl")
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(unpacked)
    assert "mlkube/libbetadist.so" in names
    # the gRPC modules generated at build time, and the .proto they come from
    grpc_dir = "mlkube/serving/grpc/"
    for generated in ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py"):
        assert grpc_dir + generated in names
    assert grpc_dir + "inference.proto" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mlkube = mlkube.cli:main" in (unpacked / entry_points).read_text(encoding="utf-8")

    smoke = re.search(r'python (?:-P )?-c "([^"]+)"', _build_run(dockerfile))
    assert smoke is not None, "the build stage smoke-tests the native sampler"
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    run = subprocess.run(
        [sys.executable, "-c", f"import mlkube; print(mlkube.__file__); {smoke.group(1)}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    first, _, rest = run.stdout.partition("\n")
    assert first.startswith(str(unpacked)), "the smoke test must load the built wheel"
    values = [float(v) for v in shlex.split(rest.strip().strip("[]"))]
    assert len(values) == 4
    assert all(0.0 < v < 1.0 for v in values)
