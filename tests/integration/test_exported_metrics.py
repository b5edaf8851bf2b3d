"""What a running authz and Envoy export is what the monitoring queries: a
real authz behind a real Envoy (both doors) serves only metrics defined in
authz/server/telemetry.py, each with its description, with the door, worker
and build labels; and Envoy's Prometheus endpoint names the ext_authz series
the alerts read."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz import __version__
from authz.server.telemetry import METRICS
from authz.tools.envoy_config import EnvoyOptions
from testkit.paths import ACCEPTANCE
from testkit.procs import Authz, Echo, Envoy, free_port, http_get
from testkit.requests import check_request_json
from testkit.tokens import claims, token
from tests.deploy.test_monitoring import (
    ENVOY_SERIES,
    dashboard_exprs,
    exported,
    rules,
    series_names,
)

pytestmark = pytest.mark.integration

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def _families(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(HELP text by family, sample label sets by sample name)."""
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.MULTILINE))
    samples: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples.setdefault(match.group(1), []).append(match.group(2) or "")
    return helps, samples


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Authz, Envoy, str]]:
    tmp: Path = tmp_path_factory.mktemp("exported")
    door = f"127.0.0.1:{free_port()}"
    extra = ["--http-authz-address", door, "--http-authz-prefix", "/authz", "--trusted-forwarded-hops", "1"]
    with Echo() as echo, Authz(ACCEPTANCE / "policy.yaml", workers=2, extra=extra) as authz, \
            Envoy(tmp, EnvoyOptions(shape="edge", authz=[door], upstream=echo.address, protocol="http",
                                    path_prefix="/authz")) as envoy:
        bearer = token(claims())
        for _ in range(3):
            status, _h, _b = http_get(f"{envoy.url}/api/orders/1",
                                      {"authorization": f"Bearer {bearer}", "x-tenant": "t1"})
            assert status == 200
            assert http_get(f"{envoy.url}/api/orders/1")[0] == 401
        response = authz.check(check_request_json("GET", "/api/orders/1", headers={
            "authorization": f"Bearer {bearer}", "x-tenant": "t1"}))
        assert response.status.code == 0  # and one through the gRPC door
        yield authz, envoy, bearer


def test_authz_exports_only_defined_metrics_each_described(running: tuple[Authz, Envoy, str]) -> None:
    authz, _envoy, _bearer = running
    status, _headers, body = authz.get("/metrics")
    assert status == 200
    helps, samples = _families(body.decode())
    authz_families = {name for name in helps if name.startswith("authz_")}
    assert authz_families <= set(METRICS), authz_families - set(METRICS)
    for name in authz_families:
        assert helps[name].strip(), f"{name} has no description"
    assert all(exported(name) for name in samples if name.startswith("authz_"))
    decisions = samples["authz_decisions_total"]
    assert any('door="http"' in labels for labels in decisions) and any('door="grpc"' in labels for labels in decisions)
    assert any('door="http"' in labels for labels in samples["authz_check_duration_seconds_count"])
    assert {labels for labels in samples["authz_worker_checks_in_flight"]} >= {
        '{door="grpc",worker="0"}', '{door="grpc",worker="1"}'}
    (build,) = samples["authz_build_info"]
    assert f'version="{__version__}"' in build and re.search(r'policy_hash="[0-9a-f]{16}"', build)
    assert any('rule="orders-reader"' in labels for labels in samples["authz_rule_decisions_total"])
    assert all(float(line.rsplit(" ", 1)[1]) > 0 for line in body.decode().splitlines()
               if line.startswith("authz_cache_bytes{"))
    # Everything the dashboard and the rules read from authz is among what it can export.
    queried = {name for expr in [*dashboard_exprs(), *(r["expr"] for r in rules())] for name in series_names(expr)}
    assert {name for name in queried if name.startswith("authz_")} <= {
        name for name in queried if exported(name)}


def test_envoy_names_the_ext_authz_series_the_alerts_read(running: tuple[Authz, Envoy, str]) -> None:
    _authz, envoy, _bearer = running
    status, _headers, body = http_get(envoy.admin + "/stats/prometheus")
    assert status == 200
    _helps, samples = _families(body.decode())
    assert set(samples) >= ENVOY_SERIES, ENVOY_SERIES - set(samples)
    ok = [labels for labels in samples["envoy_http_ext_authz_ok"] if "ingress_http" in labels]
    assert ok, samples["envoy_http_ext_authz_ok"]


def _build_info(authz: Authz) -> str:
    _helps, samples = _families(authz.get("/metrics")[2].decode())
    (build,) = samples["authz_build_info"]
    return build


def _sample(authz: Authz, name: str) -> float:
    lines = authz.get("/metrics")[2].decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))


def test_build_info_follows_the_policy_in_force_and_restarts_are_counted(tmp_path: Path) -> None:
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp_path / name)
    policy = tmp_path / "policy.yaml"
    original = policy.read_text()
    with Authz(policy, workers=2) as authz:
        first = _build_info(authz)
        assert _sample(authz, "authz_worker_restarts_total") == 0
        # A worker killed and started again is counted, under its index.
        victim = json.loads(authz.get("/readyz")[2])["workers"][1]
        mark = authz.proc.mark()
        os.kill(victim["pid"], signal.SIGKILL)
        authz.proc.wait_for(r"worker 1 \(pid \d+\) serving", since=mark, timeout=60)
        assert _sample(authz, 'authz_worker_restarts_total{worker="1"}') == 1
        assert _sample(authz, 'authz_worker_restarts_total{worker="0"}') == 0
        assert _build_info(authz) == first
        # A valid change: a new generation and hash.
        mark = authz.proc.mark()
        policy.write_text(original.replace("{methods: [GET, HEAD], paths", "{methods: [GET, HEAD, POST], paths"))
        authz.proc.wait_for("policy reloaded", since=mark)
        second = _build_info(authz)
        generation = re.search(r'policy_generation="(\d+)"', second)
        assert generation and second != first
        hashes = [re.findall(r'policy_hash="(\w+)"', line) for line in (first, second)]
        assert hashes[0] != hashes[1] and all(len(h) == 1 for h in hashes)
        assert int(generation.group(1)) == json.loads(authz.get("/readyz")[2])["policy_generation"]
        # An invalid change leaves the policy in force, and its build line.
        mark = authz.proc.mark()
        policy.write_text(original.replace("version: 1", "version: 2"))
        authz.proc.wait_for("policy reload failed", since=mark)
        assert _build_info(authz) == second
