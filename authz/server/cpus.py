"""Which CPUs this process may use, and which one each worker is pinned to.

Pinning worker *i* to a CPU of its own measured 1.5-1.7x faster for a bare
gRPC server on two cores (benchmarks/RESULTS.md): no worker migrates, and
caches stay warm. It is only right when the process owns as many CPUs as it
has workers, so ``--pin-workers auto`` (the default) pins exactly then,
reading the affinity mask and the cgroup's CPU quota, never the host's count.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: cgroup v2's CPU limit of this process ("max" or "QUOTA PERIOD").
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus() -> list[int]:
    """The CPUs of this process's affinity mask, in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> float | None:
    """The cgroup's CPU quota in CPUs (``quota / period``), or None when there is none."""
    try:
        quota, _, period = path.read_text().strip().partition(" ")
    except OSError:
        return None
    if quota == "max" or not period:
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def pinned_cpu(mode: str, index: int, workers: int, *, cpus: list[int] | None = None,
               limit: float | None = None) -> int | None:
    """The CPU worker ``index`` is pinned to, or None to leave it unpinned.
    ``mode``: "on" pins round-robin over the usable CPUs; "off" never pins;
    "auto" pins when the workers and the CPUs the process owns (its affinity,
    capped by the cgroup quota) are equal in number."""
    if mode == "off":
        return None
    cpus = usable_cpus() if cpus is None else cpus
    if mode == "auto":
        owned = len(cpus) if limit is None else min(len(cpus), math.floor(limit))
        if owned != workers or len(cpus) != workers:
            return None
    return cpus[index % len(cpus)]
