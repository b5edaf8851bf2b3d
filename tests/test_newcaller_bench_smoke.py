"""benchmarks/newcaller_bench.py runs end to end on both doors (a real
``authz serve`` per door, a few callers): every Check it sends is allowed
(the benchmark exits non-zero otherwise) and it prints a median per door.
Figures are printed, never asserted on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testkit.paths import REPO


@pytest.mark.integration
def test_the_new_caller_benchmark_runs_on_both_doors() -> None:
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "newcaller_bench.py"), "--callers", "40",
                          "--runs", "1", "--doors", "grpc", "http", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    doors = {name.split("/")[1] for name in figures["median"]}
    assert doors == {"grpc", "http"}, figures["median"]
    for median in figures["median"].values():  # CPU ticks are 10 ms: a few callers may read as 0 µs
        assert {"miss_us", "hit_us", "above_hit_us", "ratio"} <= median.keys() and median["floor_us"] > 0, median
