"""The default worker count follows the pod's CPU limit (cgroup quota), not the node's cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlkube.serving.config import effective_workers, load_config
from mlkube.serving.cpulimit import (
    CpuBudget,
    ancestors,
    cgroup_limit,
    cgroup_paths,
    quota_v1,
    quota_v2,
    workers_for,
)


def test_quota_files_parse_to_cpus() -> None:
    assert quota_v2("max 100000\n") is None
    assert quota_v2("150000 100000\n") == 1.5
    assert quota_v2("50000 100000") == 0.5
    assert quota_v2("garbage") is None
    assert quota_v1("-1\n", "100000\n") is None
    assert quota_v1("200000\n", "100000\n") == 2.0
    assert quota_v1("x", "100000") is None


def test_workers_are_whole_cpus_of_the_limit_within_the_cores() -> None:
    assert workers_for(64, 1.0) == 1  # the pod: 1 CPU on a 64-core node
    assert workers_for(64, 1.5) == 1  # rounded down, as automaxprocs does
    assert workers_for(64, 0.2) == 1  # never 0
    assert workers_for(2, 8.0) == 2  # never more than the cores it can run on
    assert workers_for(8, None) == 8
    assert workers_for(64, 3.0) == 3


def test_proc_self_cgroup_names_the_v2_and_v1_cpu_paths() -> None:
    v1 = "12:memory:/kubepods/pod1/c1\n4:cpu,cpuacct:/kubepods/pod1/c1\n1:name=systemd:/x\n"
    assert cgroup_paths(v1) == (None, "/kubepods/pod1/c1")
    assert cgroup_paths("0::/kubepods.slice/pod2/c2\n") == ("/kubepods.slice/pod2/c2", None)
    assert ancestors("/a/b") == ["/a/b", "/a", "/"]
    assert ancestors("/") == ["/"]


def _fake(files: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda path: files.get(path)


def test_the_tightest_limit_on_the_way_up_wins() -> None:
    v2 = {
        "/proc/self/cgroup": "0::/pods/p1/c1\n",
        "/cg/pods/p1/c1/cpu.max": "max 100000\n",
        "/cg/pods/p1/cpu.max": "100000 100000\n",  # the pod's limit, one level up
        "/cg/pods/cpu.max": "400000 100000\n",
    }
    assert cgroup_limit(_fake(v2), "/cg") == 1.0
    v1_in_container = {  # the container's own cgroup is mounted at the controller's root
        "/proc/self/cgroup": "3:cpu,cpuacct:/kubepods/burstable/pod9/c9\n",
        "/cg/cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
        "/cg/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    }
    assert cgroup_limit(_fake(v1_in_container), "/cg") == 0.5
    unlimited = {
        "/proc/self/cgroup": "3:cpu,cpuacct:/user.slice\n",
        "/cg/cpu/cpu.cfs_quota_us": "-1\n",
        "/cg/cpu/cpu.cfs_period_us": "100000\n",
    }
    assert cgroup_limit(_fake(unlimited), "/cg") is None
    assert cgroup_limit(_fake({}), "/cg") is None


def test_effective_workers_says_why() -> None:
    cfg = load_config({}, {})
    assert effective_workers(cfg, CpuBudget(64, 1.0)) == (
        1,
        "CPU limit 1 (cgroup quota; 64 cores)",
    )
    assert effective_workers(cfg, CpuBudget(4, None)) == (4, "4 cores")
    assert effective_workers(cfg, CpuBudget(2, 4.0)) == (2, "2 cores")
    pinned = load_config({"server": {"workers": 3}}, {})
    assert effective_workers(pinned, CpuBudget(64, 1.0)) == (3, "server.workers")


@pytest.mark.skipif(os.geteuid() != 0, reason="making a cgroup needs root")
def test_a_process_in_a_cgroup_with_a_one_cpu_quota_defaults_to_one_worker(tmp_path: Path) -> None:
    """A real cgroup (v1 cpu controller or v2) with a quota of one CPU: a process moved into
    it reads its own limit from /proc/self/cgroup and the cgroup files, and the default worker
    count follows."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    base = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/cpu")
    if not (base / ("cgroup.procs" if v2 else "cpu.cfs_quota_us")).exists():
        pytest.skip("no writable cpu cgroup controller here")
    group = base / f"mlkube-test-{os.getpid()}"
    group.mkdir()
    try:
        if v2:
            (group / "cpu.max").write_text("100000 100000")
        else:
            (group / "cpu.cfs_period_us").write_text("100000")
            (group / "cpu.cfs_quota_us").write_text("100000")
        repo = Path(__file__).resolve().parents[3]
        code = (
            "import os, sys\n"
            f"open({str(group / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
            "from mlkube.serving.config import effective_workers, load_config\n"
            "print(effective_workers(load_config({}, {}))[1])\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        cores = len(os.sched_getaffinity(0))
        if cores > 1:
            assert out == f"CPU limit 1 (cgroup quota; {cores} cores)"
        else:
            assert out == "1 cores"
    finally:
        group.rmdir()
