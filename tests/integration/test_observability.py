"""What operators see: metrics that match the traffic, decision logs that never
leak a credential, dry-run, readiness and gRPC health."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from testkit.paths import ACCEPTANCE
from testkit.procs import Authz
from testkit.requests import check_request_json
from testkit.tokens import claims, token

API_KEY = "ak_live_3f9c2b7e4d1a"


def _metrics(authz: Authz) -> dict[str, float]:
    _s, _h, body = authz.get("/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _headers(**extra: str) -> dict[str, str]:
    return {"x-tenant": "t1", **extra}


@pytest.mark.parametrize("server", ["sync", "aio"])
def test_metrics_count_exactly_what_was_sent(server: str) -> None:
    valid = token(claims())
    expired = token(claims(exp=1_000_000_000, iat=999_999_000))
    with Authz(ACCEPTANCE / "policy.yaml", workers=2, extra=["--server", server]) as authz:
        sent = {
            ("allowed", "corp"): 0, ("missing_credential", "none"): 0, ("invalid_token", "none"): 0,
            ("expired_token", "none"): 0, ("no_permission", "corp"): 0, ("allowed", "api_key"): 0,
            ("invalid_api_key", "none"): 0, ("invalid_path", "none"): 0,
        }
        def send(key: tuple[str, str], method: str, path: str, headers: dict[str, str], times: int) -> None:
            for _ in range(times):
                response = authz.check(check_request_json(method, path, headers=headers))
                assert (response.status.code == 0) is (key[0] == "allowed")
            sent[key] += times

        send(("allowed", "corp"), "GET", "/api/orders/1", _headers(authorization=f"Bearer {valid}"), 7)
        send(("missing_credential", "none"), "GET", "/api/orders", _headers(), 3)
        send(("invalid_token", "none"), "GET", "/api/orders", _headers(authorization="Bearer x.y.z"), 2)
        send(("expired_token", "none"), "GET", "/api/orders", _headers(authorization=f"Bearer {expired}"), 2)
        send(("no_permission", "corp"), "POST", "/api/orders", _headers(authorization=f"Bearer {valid}"), 4)
        send(("allowed", "api_key"), "GET", "/api/orders", _headers(**{"x-api-key": API_KEY}), 5)
        send(("invalid_api_key", "none"), "GET", "/api/orders", _headers(**{"x-api-key": "nope"}), 1)
        send(("invalid_path", "none"), "GET", "/api/%2F", _headers(), 1)
        metrics = _metrics(authz)

    for (reason, issuer), count in sent.items():
        series = f'authz_decisions_total{{door="grpc",issuer="{issuer}",reason="{reason}"}}'
        assert metrics.get(series) == count, (reason, issuer)
    decided = sum(v for k, v in metrics.items() if k.startswith("authz_decisions_total"))
    assert decided == sum(sent.values())
    assert metrics['authz_check_duration_seconds_count{door="grpc"}'] == sum(sent.values())
    # Per rule: the allows by the readers' role and by the API key's, the rest by no rule.
    by_rule = {k: v for k, v in metrics.items() if k.startswith("authz_rule_decisions_total")}
    assert sum(by_rule.values()) == sum(sent.values())
    assert by_rule['authz_rule_decisions_total{decision="deny",rule=""}'] == sum(
        n for (reason, _issuer), n in sent.items() if reason != "allowed")
    # Repeats of the same request hit the decision cache (one gRPC channel
    # means one connection, so one worker, for all of them).
    hits = metrics['authz_cache_requests_total{cache="decisions",outcome="hit"}']
    misses = metrics['authz_cache_requests_total{cache="decisions",outcome="miss"}']
    # Every repeat of a cacheable decision is a hit; credential failures are never cached.
    assert hits == (7 - 1) + (3 - 1) + (4 - 1) + (5 - 1)
    assert misses == 1 + 1 + 2 + 2 + 1 + 1 + 1 + 1
    assert metrics["authz_workers"] == 2
    assert metrics["authz_checks_in_flight"] == 0


def test_no_credential_ever_reaches_a_log_line(tmp_path: Path) -> None:
    valid = token(claims())
    other_tenant = token(claims(tenant="t9"))
    forged = valid.rsplit(".", 1)[0] + ".AAAA"
    secrets = {
        "valid token": valid, "signature": valid.rsplit(".", 1)[1], "payload": valid.split(".")[1],
        "forged": forged, "other": other_tenant, "api key": API_KEY, "bad api key": "sk_wrong_0123456789",
        "cookie": "session-cookie-s3cr3t", "basic": "dXNlcjpodW50ZXIy",
    }
    with Authz(ACCEPTANCE / "policy.yaml", workers=1, extra=["--decision-log", "all", "--log-level", "debug"]) as authz:
        requests = [
            _headers(authorization=f"Bearer {valid}"),
            _headers(authorization=f"Bearer {forged}"),
            _headers(authorization=f"Bearer {other_tenant}"),
            _headers(authorization=f"Bearer {valid},Bearer {forged}"),
            _headers(**{"x-api-key": API_KEY}),
            _headers(**{"x-api-key": secrets["bad api key"]}),
            _headers(cookie=f"access_token={forged}; other={secrets['cookie']}"),
            _headers(cookie=f"theme=dark; session={secrets['cookie']}"),
            _headers(authorization=f"Basic {secrets['basic']}"),
        ]
        for headers in requests:
            authz.check(check_request_json("GET", f"/api/orders/1?access_token={valid}", headers=headers))
            authz.check(check_request_json("DELETE", "/api/orders/1", headers=headers))
        authz.proc.stop()
        lines = authz.proc.lines
    decisions = [json.loads(line) for line in lines if line.startswith('{"time"')]
    assert len(decisions) == 2 * len(requests)
    assert {d["reason"] for d in decisions} >= {"allowed", "invalid_token", "denied_by_rule", "invalid_api_key",
                                                "no_permission"}
    assert all(d["path"] == "/api/orders/1" for d in decisions)  # never the query
    for line in lines:
        for name, secret in secrets.items():
            assert secret not in line, f"{name} leaked into: {line[:200]}"
        assert not re.search(r"authorization|Bearer ey", line, re.IGNORECASE), line[:200]


def test_dry_run_rule_and_global_dry_run(tmp_path: Path) -> None:
    for name in ("corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp_path / name)
    policy = (ACCEPTANCE / "policy.yaml").read_text().replace(
        "  - name: blocked-networks\n    effect: deny\n",
        "  - name: blocked-networks\n    effect: deny\n    dry_run: true\n")
    (tmp_path / "policy.yaml").write_text(policy)
    blocked = check_request_json("GET", "/api/orders/1", source="203.0.113.5",
                                 headers=_headers(authorization=f"Bearer {token(claims())}"))
    with Authz(tmp_path / "policy.yaml", workers=1) as authz:
        response = authz.check(blocked)
        assert response.status.code == 0  # the dry-run rule only reports
        assert _metrics(authz)['authz_dry_run_denials_total{rule="blocked-networks"}'] == 1
        authz.proc.wait_for(r'"dry_run_would_deny":\["blocked-networks"\]')

    anonymous = check_request_json("GET", "/api/orders", headers=_headers())
    with Authz(ACCEPTANCE / "policy.yaml", workers=1, extra=["--dry-run"]) as authz:
        response = authz.check(anonymous)
        assert response.status.code == 0
        assert {h.header.key for h in response.ok_response.headers} == set()  # no identity to pass on
        assert "x-identity-token" in response.ok_response.headers_to_remove  # nor a forged one
        assert _metrics(authz)['authz_dry_run_denials_total{rule="missing_credential:-"}'] == 1
        authz.proc.wait_for(r'"reason":"allowed".*"dry_run_would_deny":\["missing_credential:-"\]')


def test_readiness_and_grpc_health_follow_the_workers() -> None:
    with Authz(ACCEPTANCE / "policy.yaml", workers=2) as authz:
        health = health_pb2_grpc.HealthStub(authz.channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        service = "envoy.service.auth.v3.Authorization"
        assert health.Check(health_pb2.HealthCheckRequest(service=service),
                            timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(authz.channel)
        answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=5)
        services = {s.name for answer in answers for s in answer.list_services_response.service}
        assert {service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
        # The service's descriptors (authz._proto, in the default pool) are served too, as grpcurl asks for them.
        answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol=service)]), timeout=5)
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                 for answer in answers for raw in answer.file_descriptor_response.file_descriptor_proto]
        assert [s.name for f in files for s in f.service if f.package == "envoy.service.auth.v3"] == ["Authorization"]
        assert {f"{f.package}.{m.name}" for f in files for m in f.message_type} >= {
            "envoy.service.auth.v3.CheckRequest", "envoy.service.auth.v3.CheckResponse", "google.rpc.Status"}
        status, _h, body = authz.get("/readyz")
        state = json.loads(body)
        assert status == 200 and state["ready"] is True
        assert state["issuers"]["corp"]["state"] == "ok"
        assert state["last_reload_error"] is None

        stopped = state["workers"][1]["pid"]
        os.kill(stopped, signal.SIGSTOP)  # a worker that no longer answers
        try:
            status, _h, body = authz.get("/readyz")
            assert status == 503
            assert [w["ready"] for w in json.loads(body)["workers"]] == [True, False]
        finally:
            os.kill(stopped, signal.SIGCONT)
        status, _h, _b = authz.get("/readyz")
        assert status == 200
        assert authz.get("/healthz")[0] == 200
    try:
        grpc.channel_ready_future(grpc.insecure_channel(authz.grpc_address)).result(timeout=1)
        raise AssertionError("still serving after the stop")
    except grpc.FutureTimeoutError:
        pass
