"""The Envoy configs of the benchmark's baselines (testkit.envoy_native: Envoy
alone, and Envoy's own jwt_authn + rbac filters) pass `envoy --mode validate`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from testkit import envoy_native
from testkit.paths import ACCEPTANCE
from testkit.procs import envoy_validate


@pytest.mark.parametrize("native", [False, True])
def test_benchmark_baseline_configs_validate(tmp_path: Path, native: bool) -> None:
    config = tmp_path / "native.yaml"
    jwks = (ACCEPTANCE / "corp.jwks.json").read_text()
    config.write_text(yaml.safe_dump(envoy_native.config(18080, 19901, native=native, jwks=jwks)))
    envoy_validate(config)
