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


class _Samples:
    """RSS samples as the soak's sampler keeps them: (seconds, {worker: MB})."""

    def __init__(self) -> None:
        self.samples = [(0.0, {0: 100.0}), (60.0, {0: 101.0})]
        self.restarts: list[str] = []

    def at(self, _seconds: float) -> dict[int, float]:
        return {0: 100.0}


def test_the_verdict_tells_requests_never_sent_from_wrong_answers(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.soak import Report

    report = Report(_Samples(), warmup=30.0, interval=60.0)  # type: ignore[arg-type]
    report.interval({"index": 0, "seconds": 60.0, "sent": 100, "answered": 90, "p50_ms": 1.0, "p99_ms": 2.0,
                     "max_ms": 3.0, "outcomes": {"ok:0": 90, "hit: not sent (client over 20 in flight)": 10}})
    report.finish({}, 1)
    out = capsys.readouterr().out
    assert "unexpected outcomes 10 of 100 requests (goal 0): NOT met" in out
    assert "note: 10 of the unexpected outcomes were never sent" in out

    report = Report(_Samples(), warmup=30.0, interval=60.0)  # type: ignore[arg-type]
    report.interval({"index": 0, "seconds": 60.0, "sent": 100, "answered": 100, "p50_ms": 1.0, "p99_ms": 2.0,
                     "max_ms": 3.0, "outcomes": {"ok:0": 99, "hit: 401 invalid_token": 1}})
    report.finish({}, 1)
    out = capsys.readouterr().out
    assert "unexpected outcomes 1 of 100 requests (goal 0): NOT met" in out and "never sent" not in out
