"""The soak script (benchmarks/soak.py) runs end to end in a few seconds:
real key-set server, authz workers and Envoy, the open-loop load with its
mix, the key rotation and the RSS samples. Its figures are printed, never
asserted on; this checks that it ran and reported."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from testkit.paths import REPO


@pytest.mark.integration
def test_soak_smoke_run() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--minutes", "0.15", "--rate", "40", "--interval", "3",
         "--warmup", "0.05", "--overlap", "2", "--rss-every", "1"],
        capture_output=True, text=True, timeout=300)
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    rows = re.findall(r"^\s+\d+\s+(\d+)\s+(\d+)\s", out, re.MULTILINE)
    assert len(rows) == 3 and all(int(answered) > 0 for _sent, answered in rows), out
    assert "rotation: key soak-2 published and signing" in out
    # Tokens of both keys were answered as expected: before and after the rotation.
    generations = re.search(r"expected answers by key generation: 0: (\d+), 1: (\d+)", out)
    assert generations and int(generations.group(1)) > 0 and int(generations.group(2)) > 0, out
    assert re.search(r"RSS after warm-up \(MB\): w0 [\d.]+ -> peak [\d.]+, last [\d.]+ .*; w1 ", out), out
    assert re.search(r"CPU during the soak, % of one core: load generator \d+, Envoy \d+, authz supervisor \d+, "
                     r"worker 0 \d+, worker 1 \d+", out), out
    # authz decided the mix: repeated tokens from its decision cache, new ones verified.
    found = re.search(r"^authz during the soak: .*; cache lookups (\{.*\})$", out, re.MULTILINE)
    assert found, out
    decisions = json.loads(found.group(1))["decisions"]
    assert decisions.get("hit", 0) > 0 and decisions.get("miss", 0) > 0, out
    assert re.search(r"^verdict: RSS growth after warm-up .*; unexpected outcomes \d+ of \d+", out, re.MULTILINE), out
