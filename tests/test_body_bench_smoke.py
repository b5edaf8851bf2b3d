"""benchmarks/body_bench.py runs (a few iterations): its decisions are the
ones expected and it prints its table."""

from __future__ import annotations

import subprocess
import sys

from testkit.paths import REPO


def test_the_body_benchmark_runs() -> None:
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "body_bench.py"), "--iterations", "20"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| 64 KiB, body rule |" in run.stdout and "| 1 KiB, no body rule |" in run.stdout
