"""Workers' telemetry snapshots are plain data, merged per metric kind and
written as Prometheus text; the serve options reach every worker whole."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from authz.cli import build_parser
from authz.config import load_policy
from authz.engine import SystemClock
from authz.server import metrics
from authz.server.cache import Stats
from authz.server.options import ServeOptions
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import METRICS, Snapshot, Telemetry, labels
from authz.wire.grpc import CheckRequest, CheckResponse
from testkit.paths import ACCEPTANCE
from testkit.requests import check_request_json
from testkit.tokens import claims, token


def _worker(decided: int, *, in_flight: int, generation: int, age: float, latency: float, worker: int = 0) -> Snapshot:
    stats = Stats()
    stats.hits, stats.misses = decided - 1, 1
    key_sets = {"remote": {"source": "remote", "successes": 2, "failures_total": 1, "age_seconds": age,
                           "fetch_seconds": 0.25, "keys": 2 + worker},
                "corp": {"source": "file"}}
    telemetry = Telemetry(sources=lambda: {"caches": {"decisions": (stats, 1, 500)}, "jwks": key_sets}, worker=worker)
    telemetry.decisions[("allowed", "corp", "grpc", "readers", "allow")] += decided
    telemetry.decisions[("allowed", "corp", "http", "readers", "allow")] += 1
    telemetry.dry_run_denials["blocked-networks"] += 1
    telemetry.omissions[("metadata", "tier")] += 1
    telemetry.door("grpc").in_flight, telemetry.generation = in_flight, generation
    telemetry.door("grpc").latency.record(latency)
    snapshot = telemetry.snapshot()
    assert pickle.loads(pickle.dumps(snapshot)) == snapshot  # it crosses the control pipe
    return snapshot


def _samples(text: bytes) -> dict[str, float]:
    lines = [line for line in text.decode().splitlines() if line and not line.startswith("#")]
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines)}


def test_snapshots_merge_as_each_metric_says() -> None:
    merged = metrics.merge([
        _worker(3, in_flight=1, generation=4, age=10.0, latency=0.0002, worker=0),
        _worker(5, in_flight=2, generation=3, age=30.0, latency=0.003, worker=1),
    ])
    merged.update(metrics.supervisor_series(generation=3, policy_hash="0123abcd", reloads={"success": 1},
                                            alive=2, indexes=[0, 1], restarted={1: 2}, in_flight_limit=500))
    samples = _samples(metrics.render(merged))
    assert samples['authz_decisions_total{door="grpc",issuer="corp",reason="allowed"}'] == 8
    assert samples['authz_decisions_total{door="http",issuer="corp",reason="allowed"}'] == 2
    assert samples['authz_rule_decisions_total{decision="allow",rule="readers"}'] == 10
    assert samples['authz_worker_checks_in_flight{door="grpc",worker="1"}'] == 2
    assert samples["authz_checks_in_flight_limit"] == 500
    assert samples['authz_worker_restarts_total{worker="0"}'] == 0
    assert samples['authz_worker_restarts_total{worker="1"}'] == 2
    assert samples['authz_cache_bytes{cache="decisions"}'] == 1000
    assert samples['authz_config_reloads_total{outcome="failure"}'] == 0
    (build,) = [name for name in samples if name.startswith("authz_build_info")]
    assert 'policy_generation="3"' in build and 'policy_hash="0123abcd"' in build and samples[build] == 1
    assert samples['authz_dry_run_denials_total{rule="blocked-networks"}'] == 2
    assert samples['authz_response_omissions_total{kind="metadata",name="tier"}'] == 2
    assert samples['authz_cache_requests_total{cache="decisions",outcome="hit"}'] == 2 + 4
    assert samples['authz_cache_entries{cache="decisions"}'] == 2
    assert samples['authz_jwks_fetches_total{issuer="remote",outcome="failure"}'] == 2
    assert samples['authz_jwks_fetch_seconds_total{issuer="remote"}'] == 0.5
    assert samples['authz_jwks_keys{issuer="remote"}'] == 3  # the largest set among workers
    assert samples['authz_jwks_key_set_age_seconds{issuer="remote"}'] == 30.0  # the oldest worker's
    assert samples["authz_policy_generation"] == 3  # the lowest
    assert samples["authz_checks_in_flight"] == 3
    assert samples['authz_check_duration_seconds_bucket{door="grpc",le="0.00025"}'] == 1
    assert samples['authz_check_duration_seconds_bucket{door="grpc",le="0.005"}'] == 2
    assert samples['authz_check_duration_seconds_count{door="grpc"}'] == 2
    assert samples["authz_workers"] == 2


def test_a_metric_without_series_is_left_out() -> None:
    snapshot = Telemetry().snapshot()
    assert set(snapshot) == {"authz_check_duration_seconds", "authz_checks_in_flight", "authz_worker_checks_in_flight",
                             "authz_policy_generation"}
    text = metrics.render(metrics.merge([snapshot])).decode()
    assert "authz_decisions_total" not in text and "authz_dry_run_denials_total" not in text
    assert "# TYPE authz_check_duration_seconds histogram" in text


def test_every_snapshot_name_is_a_defined_metric() -> None:
    snapshot = _worker(1, in_flight=0, generation=1, age=1.0, latency=0.001)
    assert set(snapshot) <= set(METRICS)
    for name, series in snapshot.items():
        for key in series:
            assert [label for label, _ in key] == sorted(METRICS[name].labels), name
    assert labels(rule="r", a="b") == (("a", "b"), ("rule", "r"))


def test_serve_options_are_the_flags_and_pickle() -> None:
    args = build_parser().parse_args(["serve", "--config", "p.yaml", "--max-streams-per-connection", "7",
                                      "--worker-ports", "9000", "--log-level", "debug"])
    options = ServeOptions.from_args(args)
    flags: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    assert vars(options) == flags  # every flag is a field of the same name, and nothing else
    assert pickle.loads(pickle.dumps(options)) == options  # handed as is to every worker process
    assert (options.max_streams_per_connection, options.worker_port(2)) == (7, 9002)
    assert ServeOptions.from_args(build_parser().parse_args(["serve", "--config", "p.yaml"])).worker_port(0) is None


def test_sec_55_a_key_left_out_is_counted_on_every_answer_cached_or_not(tmp_path: Path) -> None:
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp_path / name)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy.read_text().replace(
        "  remove: [authorization]\n", "  remove: [authorization]\n  metadata:\n    tier: identity.claims.tier\n"))
    state = PolicyState(load_policy(str(policy)), SystemClock())
    service = CheckService(state, Telemetry(sources=lambda: {"caches": state.cache_sources()}))
    raw = json_format.ParseDict(check_request_json("GET", "/api/orders/1", headers={
        "authorization": f"Bearer {token(claims())}", "x-tenant": "t1"}), CheckRequest()).SerializeToString()
    for _ in range(2):  # a miss, then a hit
        response = CheckResponse.FromString(service.check_sync(raw, None))
        assert response.HasField("ok_response") and "tier" not in response.dynamic_metadata
    snapshot = service.telemetry.snapshot()
    assert snapshot["authz_response_omissions_total"] == {labels(kind="metadata", name="tier"): 2}
    assert snapshot["authz_cache_requests_total"][labels(cache="decisions", outcome="hit")] == 1
