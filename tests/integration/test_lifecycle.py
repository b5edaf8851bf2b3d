"""Hot reload of the policy and the files it names, and a clean drain on SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from authz._proto.envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from testkit.idp import FakeIdP, slow_issuer_policy
from testkit.paths import ACCEPTANCE
from testkit.procs import Authz, free_port, http_get, wait_listening
from testkit.requests import check_request_json
from testkit.tokens import claims, jwks, public_jwk, rsa_key, token


def _write(path: Path, text: str) -> None:
    """Atomic replace, as editors and Kubernetes volume updates do."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _policy_dir(tmp_path: Path) -> Path:
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp_path / name)
    return tmp_path / "policy.yaml"


def _post(authz: Authz, bearer: str) -> tuple[int, str]:
    response = authz.check(check_request_json("POST", "/api/orders",
                                              headers={"authorization": f"Bearer {bearer}", "x-tenant": "t1"}))
    return response.status.code, response.denied_response.body


def _metric(authz: Authz, line_prefix: str) -> float:
    _s, _h, body = authz.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_in_flight(authz: Authz) -> None:
    """Until a check is in flight in the worker (it counts it on entry)."""
    for _ in range(2000):
        if _metric(authz, "authz_checks_in_flight") >= 1:
            return
    pytest.fail("the check never reached the worker")


def test_reload_applies_valid_changes_and_keeps_the_last_good_policy(tmp_path: Path) -> None:
    policy = _policy_dir(tmp_path)
    original = policy.read_text()
    bearer = token(claims())
    with Authz(policy, workers=2) as authz:
        code, body = _post(authz, bearer)
        assert code == 7 and json.loads(body)["reason"] == "no_permission"

        # A valid change: readers may now POST.
        mark = authz.proc.mark()
        _write(policy, original.replace("{methods: [GET, HEAD], paths", "{methods: [GET, HEAD, POST], paths"))
        authz.proc.wait_for("policy reloaded", since=mark)
        assert _post(authz, bearer)[0] == 0
        _s, _h, ready = authz.get("/readyz")
        state = json.loads(ready)
        assert {w["generation"] for w in state["workers"]} == {state["policy_generation"]}
        assert _metric(authz, 'authz_config_reloads_total{outcome="success"}') == 1

        # An invalid change is reported and ignored.
        mark = authz.proc.mark()
        _write(policy, original.replace("version: 1", "version: 2"))
        authz.proc.wait_for("policy reload failed", since=mark)
        authz.proc.wait_for(r"policy\.yaml:\d+: version: ", since=mark)
        status, _h, ready = authz.get("/readyz")
        assert status == 200
        assert "version" in json.loads(ready)["last_reload_error"]
        assert _metric(authz, 'authz_config_reloads_total{outcome="failure"}') == 1
        assert _post(authz, bearer)[0] == 0  # the last good policy stays in force

        # A key file the policy names: rotating the issuer's key set.
        mark = authz.proc.mark()
        _write(tmp_path / "corp.jwks.json",
               json.dumps(jwks(public_jwk(rsa_key("rotated"), kid="corp-2027", alg="RS256"))))
        authz.proc.wait_for("reload", since=mark)  # the policy is still invalid: the change is reported, not applied
        mark = authz.proc.mark()
        _write(policy, original)
        authz.proc.wait_for("policy reloaded", since=mark)
        response = authz.check(check_request_json("GET", "/api/orders",
                                                  headers={"authorization": f"Bearer {bearer}", "x-tenant": "t1"}))
        assert response.status.code == 16  # the old key left the set
        rotated = token(claims(), key=rsa_key("rotated"), kid="corp-2027")
        response = authz.check(check_request_json("GET", "/api/orders",
                                                  headers={"authorization": f"Bearer {rotated}", "x-tenant": "t1"}))
        assert response.status.code == 0


def test_a_starting_worker_serves_once_its_key_sets_are_fetched(tmp_path: Path) -> None:
    """A worker (at start, or back after a crash) waits for its remote key
    sets' first fetch before it listens and reports ready, so its first
    checks are not denied for want of keys the other workers hold."""
    key = rsa_key("start")
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(key, kid="k1", alg="RS256"))
        idp.mode = "gate"
        policy = tmp_path / "policy.yaml"
        policy.write_text(slow_issuer_policy(idp))
        bearer = token(claims(iss=idp.issuer, groups=None, roles=["reader"]), key=key, kid="k1")
        authz = Authz(policy, workers=1)
        try:
            _not_ready_before_its_keys(authz, idp)
        except BaseException:
            authz.proc.stop()
            raise
        with authz:
            response = authz.check(check_request_json("GET", "/api/orders",
                                                      headers={"authorization": f"Bearer {bearer}"}))
            assert response.status.code == 0
            assert idp.jwks_fetches == 1


def _not_ready_before_its_keys(authz: Authz, idp: FakeIdP) -> None:
    """While ``idp`` holds the first key-set fetch: /readyz says 503 and the
    gRPC port takes no check; then the fetch is let through."""
    try:
        assert idp.wait_for_hits("/jwks", 1)
        wait_listening(authz.http_port, authz.proc)
        assert http_get(authz.http + "/readyz")[0] == 503  # the key set is on its way: not ready
        with grpc.insecure_channel(authz.grpc_address) as channel:  # and not listening for checks
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Check(json_format.ParseDict(check_request_json(), external_auth_pb2.CheckRequest()), timeout=2)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        idp.gate.set()


def test_sigterm_answers_in_flight_checks_and_exits_0(tmp_path: Path) -> None:
    key = rsa_key("drain")
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(key, kid="k1", alg="RS256"))
        idp.mode = "gate"  # the key set arrives only when the test opens the gate
        policy = tmp_path / "policy.yaml"
        policy.write_text(slow_issuer_policy(idp))
        bearer = token(claims(iss=idp.issuer, groups=None, roles=["reader"]), key=key, kid="k1")
        authz = Authz(policy, workers=1)
        with authz:
            assert idp.wait_for_hits("/jwks", 1)
            request = check_request_json("GET", "/api/orders", headers={"authorization": f"Bearer {bearer}"})
            future = authz.stub.Check.future(json_format.ParseDict(request, external_auth_pb2.CheckRequest()),
                                             timeout=20)
            # The check is in flight once the worker counts it.
            _wait_in_flight(authz)
            mark = authz.proc.mark()
            authz.proc.popen.send_signal(signal.SIGTERM)
            authz.proc.wait_for("stopping: draining", since=mark)
            idp.gate.set()
            response = future.result(timeout=20)
            assert response.status.code == 0  # answered, and allowed, during the drain
            assert authz.proc.popen.wait(30) == 0
            with pytest.raises(grpc.RpcError):  # no longer accepting
                authz.stub.Check(json_format.ParseDict(request, external_auth_pb2.CheckRequest()), timeout=2)


def test_the_http_door_follows_reloads_and_drains_on_sigterm(tmp_path: Path) -> None:
    """The HTTP door shares the worker's policy (a reload reaches it) and its
    drain: a call in flight at SIGTERM, waiting for a key set, is answered."""
    key = rsa_key("drain-http")
    with FakeIdP() as idp:
        idp.jwks = jwks(public_jwk(key, kid="k1", alg="RS256"))
        idp.mode = "gate"
        policy = tmp_path / "policy.yaml"
        text = slow_issuer_policy(idp, "  - {name: open, effect: allow, paths: [/open], anonymous: true}\n")
        policy.write_text(text)
        bearer = token(claims(iss=idp.issuer, groups=None, roles=["reader"]), key=key, kid="k1")
        door = f"127.0.0.1:{free_port()}"
        authz = Authz(policy, workers=1, extra=["--http-authz-address", door])
        with authz, concurrent.futures.ThreadPoolExecutor(1) as pool:
            assert idp.wait_for_hits("/jwks", 1)
            assert http_get(f"http://{door}/open")[0] == 200
            mark = authz.proc.mark()
            _write(policy, text.replace("paths: [/open]", "paths: [/elsewhere]"))
            authz.proc.wait_for("policy reloaded", since=mark)
            assert http_get(f"http://{door}/open")[0] == 401  # the reload reached the HTTP door

            call = pool.submit(http_get, f"http://{door}/api/orders", {"authorization": f"Bearer {bearer}"})
            _wait_in_flight(authz)
            mark = authz.proc.mark()
            authz.proc.popen.send_signal(signal.SIGTERM)
            authz.proc.wait_for("stopping: draining", since=mark)
            idp.gate.set()
            status, _headers, body = call.result(timeout=20)
            assert status == 200, body  # answered, and allowed, during the drain
            assert authz.proc.popen.wait(30) == 0
            with pytest.raises(OSError):  # no longer accepting
                http_get(f"http://{door}/open")
