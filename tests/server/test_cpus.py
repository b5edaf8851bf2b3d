"""Which CPU each worker is pinned to."""

from __future__ import annotations

from pathlib import Path

from authz.server.cpus import cgroup_cpu_limit, pinned_cpu


def test_workers_are_pinned_only_when_the_process_owns_one_cpu_per_worker(tmp_path: Path) -> None:
    assert [pinned_cpu("auto", i, 2, cpus=[4, 7]) for i in range(2)] == [4, 7]
    assert pinned_cpu("auto", 0, 2, cpus=[0, 1, 2, 3]) is None  # more CPUs than workers
    assert pinned_cpu("auto", 0, 2, cpus=[0, 1, 2, 3], limit=2.0) is None  # a quota is not a mask
    assert pinned_cpu("auto", 0, 2, cpus=[0, 1], limit=1.5) is None  # quota below the workers
    assert pinned_cpu("off", 0, 2, cpus=[0, 1]) is None
    assert [pinned_cpu("on", i, 3, cpus=[0, 1]) for i in range(3)] == [0, 1, 0]
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path / "cpu.max") == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path / "cpu.max") is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None
