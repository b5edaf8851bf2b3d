"""The benchmark's smoke mode runs every section end to end (real servers,
Envoy, h2load, wrk, the Node load generator) and verifies each really decided;
figures are printed, never asserted on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.paths import REPO


@pytest.mark.integration
def test_benchmark_smoke_run(tmp_path: Path) -> None:
    missing = [tool for tool in ("h2load", "wrk", "node") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the benchmark needs {missing}: Debian packages nghttp2-client and wrk, and Node.js "
                    "(scripts/setup bench and scripts/setup test install them)")
    out = tmp_path / "results.md"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = out.read_text()
    for scenario in ("bare Python server", "authz cache hit, 1 worker", "authz cache miss, unique RS256",
                     "authz cache miss, unique ES256", "Envoy alone", "native jwt_authn",
                     "Envoy + bare Python ext_authz",
                     "Envoy + authz", "at 300 req/s", "unique tokens", "cached Check", "every cache missed",
                     "Envoy + authz gRPC door", "Envoy + authz HTTP door", "Envoy + bare granian",
                     "direct: bare grpcio server", "direct: authz gRPC door"):
        assert scenario in table, scenario
    assert "## Targets" in table
    for target in ("the gRPC door", "bare granian", "the bare grpcio server pinned", "within 2 ms of bare granian"):
        assert target in table, target
