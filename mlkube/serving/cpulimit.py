"""How many CPUs this process may use: its cores, capped by its cgroup's CPU quota.

A pod limited to 1 CPU on a 64-core node sees 64 cores (``os.sched_getaffinity``), but the
kernel lets its processes run for only one CPU's worth of time per period (CFS quota), so a
worker per visible core means 64 workers throttled to one CPU between them -- and, with the
in-process feature store, 64 separate bandit states. The default worker count therefore
comes from the quota, as Go's automaxprocs does for GOMAXPROCS: the quota in whole CPUs,
rounded down, at least 1, at most the visible cores.

The quota is read from cgroup v2 (``cpu.max``: "<quota> <period>" or "max <period>") or v1
(``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``; -1 = none), for this process's cgroup and
each of its ancestors (a limit set higher up binds too); the smallest wins. The parsing is
pure; :func:`detect` does the file reading.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

CGROUP_ROOT = "/sys/fs/cgroup"


def quota_v2(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max``, or None for no limit (or unreadable)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def quota_v1(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, or None."""
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_paths(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and v1 ``cpu`` controller path, from /proc/self/cgroup."""
    v2: str | None = None
    v1: str | None = None
    for line in proc_self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def ancestors(path: str) -> list[str]:
    """``/a/b`` -> ``["/a/b", "/a", "/"]`` (a cgroup and every cgroup above it)."""
    p = PurePosixPath(path if path.startswith("/") else "/" + path)
    return [str(p), *(str(a) for a in p.parents)]


def smallest(limits: Iterable[float | None]) -> float | None:
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def workers_for(cores: int, cpu_limit: float | None) -> int:
    """Pure: the default worker count for ``cores`` visible cores under ``cpu_limit`` CPUs."""
    if cpu_limit is None:
        return max(1, cores)
    return max(1, min(cores, math.floor(cpu_limit + 1e-9)))


@dataclass(frozen=True, slots=True)
class CpuBudget:
    cores: int
    limit: float | None  # CPUs, from the cgroup quota; None when there is none

    @property
    def workers(self) -> int:
        return workers_for(self.cores, self.limit)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_limit(
    read: Callable[[str], str | None] = _read, root: str = CGROUP_ROOT
) -> float | None:
    """The CPU quota of this process's cgroup (and its ancestors), in CPUs, or None."""
    v2_path, v1_path = cgroup_paths(read("/proc/self/cgroup") or "")
    limits: list[float | None] = []
    if v2_path is not None:
        for cg in ancestors(v2_path):
            text = read(f"{root}{cg.rstrip('/')}/cpu.max")
            if text is not None:
                limits.append(quota_v2(text))
    if v1_path is not None:
        for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            for cg in ancestors(v1_path):
                base = f"{root}/{mount}{cg.rstrip('/')}"
                quota, period = read(f"{base}/cpu.cfs_quota_us"), read(f"{base}/cpu.cfs_period_us")
                if quota is not None and period is not None:
                    limits.append(quota_v1(quota, period))
    return smallest(limits)


def detect() -> CpuBudget:
    """This process's cores and CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    return CpuBudget(max(1, cores), cgroup_limit())
