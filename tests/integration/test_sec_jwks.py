"""docs/security.md D (JWKS) and E (faults), against the running server, with key
sets and discovery served by real HTTP servers on 127.0.0.1 that misbehave on
demand. One test (or parametrized set) per numbered line."""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import shutil
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from authz.tools.envoy_config import EnvoyOptions
from testkit.idp import FakeIdP
from testkit.paths import ACCEPTANCE
from testkit.procs import Authz, Echo, Envoy, free_port, http_get
from testkit.requests import check_request_json
from testkit.tokens import b64, claims, ec_key, jwks, public_jwk, rsa_key, token

OK, UNAUTHENTICATED = 0, 16


def _policy(tmp: Path, idp: FakeIdP, *, discovery: bool = False, algorithms: str = "[RS256, ES256]",
            jwks_settings: str = "{fetch_timeout: 1s}", extra_issuers: str = "") -> Path:
    source = "" if discovery else f"    jwks_uri: {idp.url}/jwks\n"
    path = tmp / "policy.yaml"
    path.write_text(f"""
version: 1
issuers:
  - name: remote
    issuer: {idp.issuer}
    audiences: [orders-api]
{source}    algorithms: {algorithms}
    roles_claim: groups
    jwks: {jwks_settings}
{extra_issuers}
roles:
  orders-reader: [{{methods: [GET], paths: ["/api/**"]}}]
""")
    return path


def _bearer(idp: FakeIdP, key: Any, kid: str | None, alg: str = "RS256", **overrides: Any) -> str:
    return token(claims(iss=idp.issuer, **overrides), key=key, kid=kid, alg=alg)


def _check(authz: Authz, bearer: str | None, timeout: float = 10.0) -> Any:
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    return authz.check(check_request_json("GET", "/api/orders", headers=headers), timeout=timeout)


def _status(authz: Authz) -> dict[str, Any]:
    return dict(json.loads(authz.get("/readyz")[2]))


def _wait_issuer(authz: Authz, state: str, name: str = "remote") -> dict[str, Any]:
    """Poll /readyz (each poll a real request) until the issuer reaches a state."""
    for _ in range(3000):
        issuer = _status(authz)["issuers"].get(name, {})
        if issuer.get("state") == state:
            return dict(issuer)
    raise AssertionError(f"issuer {name} never reached {state}: {_status(authz)}")


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with FakeIdP() as server:
        yield server


KEY = rsa_key("sec-jwks-main")
OTHER = rsa_key("sec-jwks-other")


# -- D. JWKS ---------------------------------------------------------------------

def test_sec_25_enc_keys_non_verify_ops_and_oct_keys_are_never_used(tmp_path: Path, idp: FakeIdP) -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    idp.jwks = jwks(
        public_jwk(KEY, kid="enc", use="enc"),
        public_jwk(KEY, kid="wrap", key_ops=["encrypt", "wrapKey"]),
        {"kty": "oct", "kid": "shared", "k": b64(secret), "alg": "HS256"},
        public_jwk(OTHER, kid="good"),
    )
    with Authz(_policy(tmp_path, idp), workers=1) as authz:
        _wait_issuer(authz, "ok")
        assert _check(authz, _bearer(idp, KEY, "enc")).status.code == UNAUTHENTICATED
        assert _check(authz, _bearer(idp, KEY, "wrap")).status.code == UNAUTHENTICATED
        assert _check(authz, _bearer(idp, secret, "shared", alg="HS256")).status.code == UNAUTHENTICATED
        assert _check(authz, _bearer(idp, OTHER, "good")).status.code == OK
        assert _status(authz)["issuers"]["remote"]["keys"] == 1


def test_sec_26_one_unusable_key_spoils_only_itself(tmp_path: Path, idp: FakeIdP) -> None:
    idp.jwks = jwks(
        {**public_jwk(OTHER, kid="none-alg"), "alg": "none"},
        {"kty": "XYZ", "kid": "alien"},
        {**public_jwk(OTHER, kid="bad-n"), "n": "!!not base64!!"},
        {"kty": "EC", "crv": "P-256", "kid": "off-curve", "x": b64(b"\x01" * 32), "y": b64(b"\x02" * 32)},
        "not even an object",
        public_jwk(KEY, kid="good"),
    )
    with Authz(_policy(tmp_path, idp), workers=1) as authz:
        _wait_issuer(authz, "ok")
        assert _check(authz, _bearer(idp, KEY, "good")).status.code == OK
        assert _check(authz, _bearer(idp, OTHER, "bad-n")).status.code == UNAUTHENTICATED


def test_sec_27_duplicate_kid_tries_only_keys_of_the_tokens_alg(tmp_path: Path, idp: FakeIdP) -> None:
    ec = ec_key("sec-27")
    idp.jwks = jwks(public_jwk(ec, kid="shared"), public_jwk(KEY, kid="shared"))
    with Authz(_policy(tmp_path, idp), workers=1) as authz:
        _wait_issuer(authz, "ok")
        assert _check(authz, _bearer(idp, KEY, "shared", alg="RS256")).status.code == OK
        assert _check(authz, _bearer(idp, ec, "shared", alg="ES256")).status.code == OK
        # A token whose alg fits no key under that kid is refused.
        assert _check(authz, _bearer(idp, OTHER, "shared", alg="RS256")).status.code == UNAUTHENTICATED


def test_sec_28_random_kids_cause_at_most_one_refetch_and_rotation_works_right_after(tmp_path: Path,
                                                                                     idp: FakeIdP) -> None:
    idp.jwks = jwks(public_jwk(KEY, kid="k1"))
    with Authz(_policy(tmp_path, idp), workers=1) as authz:
        _wait_issuer(authz, "ok")
        fetches = idp.jwks_fetches
        # The provider rotates: a new key appears. Then 1000 tokens with random kids arrive at once.
        new = rsa_key("sec-28-new")
        idp.jwks = jwks(public_jwk(KEY, kid="k1"), public_jwk(new, kid="k2"))
        kids = ["".join(random.choices(string.ascii_letters, k=12)) for _ in range(1000)]
        requests = [json_format.ParseDict(check_request_json("GET", "/api/orders", headers={
            "authorization": f"Bearer {_bearer(idp, OTHER, kid)}"}), external_auth_pb2.CheckRequest()) for kid in kids]
        futures = [authz.stub.Check.future(r, timeout=30) for r in requests]
        codes = [f.result().status.code for f in futures]
        assert codes == [UNAUTHENTICATED] * 1000
        assert idp.jwks_fetches == fetches + 1
        # The one refetch brought the new key: it verifies at once, with no further fetch.
        assert _check(authz, _bearer(idp, new, "k2")).status.code == OK
        assert idp.jwks_fetches == fetches + 1


def test_sec_29_rotation_new_kid_works_removed_key_stops_and_its_cached_decisions_go(tmp_path: Path,
                                                                                     idp: FakeIdP) -> None:
    idp.jwks = jwks(public_jwk(KEY, kid="old"))
    with Authz(_policy(tmp_path, idp), workers=1) as authz:
        _wait_issuer(authz, "ok")
        old_token = _bearer(idp, KEY, "old")
        assert _check(authz, old_token).status.code == OK
        assert _check(authz, old_token).status.code == OK  # now a cached decision
        new = rsa_key("sec-29-new")
        idp.jwks = jwks(public_jwk(new, kid="new"))
        assert _check(authz, _bearer(idp, new, "new")).status.code == OK  # unknown kid -> refetch -> works
        assert _check(authz, old_token).status.code == UNAUTHENTICATED  # the cached allow was dropped


def _decision_hits(authz: Authz) -> float:
    _status, _headers, body = authz.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith('authz_cache_requests_total{cache="decisions",outcome="hit"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sec_52_after_reloads_a_removed_keys_cached_tokens_are_refused_on_both_doors(tmp_path: Path,
                                                                                     idp: FakeIdP) -> None:
    idp.jwks = jwks(public_jwk(KEY, kid="old"))
    policy = _policy(tmp_path, idp)
    door = f"127.0.0.1:{free_port()}"
    extra = ["--http-authz-address", door, "--http-authz-prefix", "/authz"]
    with Echo() as echo, Authz(policy, workers=1, extra=extra) as authz:
        envoys = {}
        for protocol, target in (("grpc", authz.grpc_address), ("http", door)):
            (tmp_path / protocol).mkdir()
            envoys[protocol] = Envoy(tmp_path / protocol, EnvoyOptions(
                shape="edge", authz=[target], upstream=echo.address, protocol=protocol, path_prefix="/authz"))
        with envoys["grpc"] as via_grpc, envoys["http"] as via_http:
            def get(envoy: Envoy, bearer: str) -> tuple[int, str]:
                status, _headers, body = http_get(envoy.url + "/api/orders", {"authorization": f"Bearer {bearer}"})
                return status, "allowed" if status == 200 else json.loads(body)["reason"]

            old = _bearer(idp, KEY, "old")
            # Reloads that each replace the issuer's key set with a new one.
            for cycle in range(1, 7):
                mark = authz.proc.mark()
                staged = tmp_path / "policy.yaml.tmp"
                staged.write_text(policy.read_text().replace(f"fetch_timeout: {1 + (cycle - 1) % 2}s",
                                                             f"fetch_timeout: {1 + cycle % 2}s"))
                os.replace(staged, policy)
                authz.proc.wait_for("policy reloaded", since=mark)
                # The new set's first fetch is its own, not a check's refetch
                # (which would hold back the unknown-kid refetch below).
                _wait_issuer(authz, "ok")
                for envoy in (via_grpc, via_http):
                    assert get(envoy, old) == (200, "allowed")
            # Both doors now hold cached allows for the token.
            hits = _decision_hits(authz)
            assert get(via_grpc, old) == (200, "allowed") and get(via_http, old) == (200, "allowed")
            assert _decision_hits(authz) == hits + 2
            # The provider rotates: "old" leaves the set, which a token of the new key's unknown kid fetches.
            new = rsa_key("sec-52-new")
            idp.jwks = jwks(public_jwk(new, kid="new"))
            assert get(via_grpc, _bearer(idp, new, "new")) == (200, "allowed")
            assert get(via_grpc, old) == (401, "invalid_token")
            assert get(via_http, old) == (401, "invalid_token")
            assert get(via_http, _bearer(idp, new, "new", jti="http")) == (200, "allowed")


def test_sec_30_discovery_naming_another_issuer_is_refused(tmp_path: Path, idp: FakeIdP) -> None:
    idp.jwks = jwks(public_jwk(KEY, kid="k1"))
    idp.discovery_issuer = "https://evil.example.com"
    with Authz(_policy(tmp_path, idp, discovery=True), workers=1) as authz:
        issuer = _wait_issuer(authz, "failed")
        assert "different issuer" in issuer["last_error"]
        response = _check(authz, _bearer(idp, KEY, "k1"))
        assert response.status.code == UNAUTHENTICATED
        assert idp.jwks_fetches == 0  # the key set it points to is never fetched


def test_sec_30_discovery_naming_the_issuer_is_used(tmp_path: Path, idp: FakeIdP) -> None:
    idp.jwks = jwks(public_jwk(KEY, kid="k1"))
    with Authz(_policy(tmp_path, idp, discovery=True), workers=1) as authz:
        _wait_issuer(authz, "ok")
        assert _check(authz, _bearer(idp, KEY, "k1")).status.code == OK


def test_sec_44_a_key_set_redirect_is_followed_only_where_a_key_url_may_point(tmp_path: Path, idp: FakeIdP) -> None:
    idp.jwks = jwks(public_jwk(KEY, kid="k1"))
    policy = _policy(tmp_path, idp)
    policy.write_text(policy.read_text().replace(f"{idp.url}/jwks", f"{idp.url}/moved"))
    with Authz(policy, workers=1) as authz:  # a loopback test server: http may redirect to http
        _wait_issuer(authz, "ok")
        assert _check(authz, _bearer(idp, KEY, "k1")).status.code == OK
    idp.redirect_to = "http://keys.example.com/jwks"  # plain http off this machine: never fetched
    with Authz(policy, workers=1) as authz:
        issuer = _wait_issuer(authz, "failed")
        assert "must be an https URL" in issuer["last_error"]
        assert _check(authz, _bearer(idp, KEY, "k1"), timeout=5).status.code == UNAUTHENTICATED


# -- E. Faults --------------------------------------------------------------------

@pytest.mark.parametrize("mode, error", [
    ("500", "HTTP 500"), ("404", "HTTP 404"), ("html", "not JSON"), ("empty-object", "not a JWKS"),
    ("huge", "larger than"), ("hang", "longer than"),
])
def test_sec_31_a_broken_key_endpoint_never_allows_and_fetches_are_bounded(tmp_path: Path, idp: FakeIdP, mode: str,
                                                                           error: str) -> None:
    idp.jwks = jwks(public_jwk(KEY, kid="k1"))
    idp.mode = mode
    with Authz(_policy(tmp_path, idp), workers=1) as authz:
        issuer = _wait_issuer(authz, "failed")
        assert error in issuer["last_error"]
        assert _check(authz, _bearer(idp, KEY, "k1"), timeout=5).status.code == UNAUTHENTICATED


def test_sec_31_the_last_good_keys_keep_serving_while_fetches_fail(tmp_path: Path, idp: FakeIdP) -> None:
    idp.jwks = jwks(public_jwk(KEY, kid="k1"))
    with Authz(_policy(tmp_path, idp), workers=1) as authz:
        _wait_issuer(authz, "ok")
        idp.mode = "500"
        # triggers a failing refetch
        assert _check(authz, _bearer(idp, OTHER, "unknown")).status.code == UNAUTHENTICATED
        issuer = _wait_issuer(authz, "stale")
        assert "HTTP 500" in issuer["last_error"]
        assert _check(authz, _bearer(idp, KEY, "k1", jti="fresh")).status.code == OK


def test_sec_32_a_slow_issuer_never_delays_another_and_no_check_outlives_its_deadline(tmp_path: Path) -> None:
    for name in ("corp.jwks.json",):
        shutil.copy(ACCEPTANCE / name, tmp_path / name)
    with FakeIdP() as slow:
        slow.jwks = jwks(public_jwk(KEY, kid="k1"))
        slow.mode = "hang"
        local = ("  - name: local\n    issuer: https://idp.example.com\n    audiences: [orders-api]\n"
                 "    jwks_file: corp.jwks.json\n    algorithms: [RS256]\n    roles_claim: groups\n")
        policy = _policy(tmp_path, slow, jwks_settings="{fetch_timeout: 20s}", extra_issuers=local)
        with Authz(policy, workers=1) as authz:
            assert slow.wait_for_hits("/jwks", 1)
            pool = concurrent.futures.ThreadPoolExecutor(8)
            # Checks for the slow issuer are waiting on its key set...
            waiting = [pool.submit(_check, authz, _bearer(slow, KEY, "k1", jti=str(i)), 1.0) for i in range(4)]
            # ...while the local issuer's checks are answered well within a short deadline.
            for i in range(20):
                assert _check(authz, token(claims(jti=f"local-{i}")), timeout=0.5).status.code == OK
            # The slow ones are answered (denied) before their 1 s deadline, not abandoned.
            for future in waiting:
                assert future.result(timeout=10).status.code == UNAUTHENTICATED
            pool.shutdown()


def test_sec_33_a_bad_config_on_reload_keeps_the_last_good_one(tmp_path: Path) -> None:
    for name in ("policy.yaml", "corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, tmp_path / name)
    policy = tmp_path / "policy.yaml"
    good = policy.read_text()
    with Authz(policy, workers=2) as authz:
        for attempt in range(3):  # repeated bad edits: reported each time, never a crash loop
            mark = authz.proc.mark()
            broken = tmp_path / "broken.tmp"
            broken.write_text(good.replace("when: '", f"when: 'nonsense{attempt} && "))
            os.replace(broken, policy)
            authz.proc.wait_for("policy reload failed", since=mark)
        status, _h, body = authz.get("/readyz")
        state = json.loads(body)
        assert status == 200 and state["ready"]
        assert "undeclared reference" in state["last_reload_error"]
        assert all(w["alive"] for w in state["workers"])
        metrics = authz.get("/metrics")[2].decode()
        assert 'authz_config_reloads_total{outcome="failure"} 3.0' in metrics
        allowed = check_request_json("GET", "/api/orders",
                                     headers={"authorization": f"Bearer {token(claims())}", "x-tenant": "t1"})
        assert authz.check(allowed).status.code == OK


def test_sec_34_overload_is_refused_fast_and_late_checks_deny(tmp_path: Path, idp: FakeIdP) -> None:
    idp.jwks = jwks(public_jwk(KEY, kid="k1"))
    idp.mode = "hang"
    policy = _policy(tmp_path, idp, jwks_settings="{fetch_timeout: 20s}")
    with Authz(policy, workers=1, extra=["--max-concurrent-checks", "2"]) as authz:
        assert idp.wait_for_hits("/jwks", 1)
        busy = [authz.stub.Check.future(json_format.ParseDict(check_request_json("GET", "/api/orders", headers={
            "authorization": f"Bearer {_bearer(idp, KEY, 'k1', jti=str(i))}"}), external_auth_pb2.CheckRequest()),
            timeout=3) for i in range(2)]
        for _ in range(3000):  # until both are in flight
            if "authz_checks_in_flight 2.0" in authz.get("/metrics")[2].decode():
                break
        else:
            pytest.fail("the checks never got in flight")
        with pytest.raises(grpc.RpcError) as refused:
            _check(authz, None, timeout=3)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The waiting checks deny when their deadline nears, without waiting for the keys.
        assert [f.result(timeout=10).status.code for f in busy] == [UNAUTHENTICATED] * 2


def test_sec_34_only_some_threads_may_wait_for_a_slow_key_set(tmp_path: Path, idp: FakeIdP) -> None:
    idp.jwks = jwks(public_jwk(KEY, kid="k1"))
    idp.mode = "hang"
    policy = _policy(tmp_path, idp, jwks_settings="{fetch_timeout: 20s}")
    with Authz(policy, workers=1, extra=["--threads", "4"]) as authz:
        assert idp.wait_for_hits("/jwks", 1)
        waiting = [authz.stub.Check.future(json_format.ParseDict(check_request_json("GET", "/api/orders", headers={
            "authorization": f"Bearer {_bearer(idp, KEY, 'k1', jti=str(i))}"}), external_auth_pb2.CheckRequest()),
            timeout=20) for i in range(6)]
        # Half the pool may block on the fetch; the rest are answered at once (jwks_unavailable),
        # and a request needing no keys still gets a thread.
        assert _check(authz, None, timeout=2).status.code == UNAUTHENTICATED
        reasons = [json.loads(f.result(timeout=30).denied_response.body)["reason"] for f in waiting]
        assert reasons == ["jwks_unavailable"] * 6


def test_sec_35_invalid_utf8_and_huge_headers_get_a_clean_deny(tmp_path: Path) -> None:
    with Authz(ACCEPTANCE / "policy.yaml", workers=1) as authz:
        call = authz.channel.unary_unary("/envoy.service.auth.v3.Authorization/Check",
                                         request_serializer=None,
                                         response_deserializer=external_auth_pb2.CheckResponse.FromString)
        message = json_format.ParseDict(check_request_json("GET", "/api/orders"), external_auth_pb2.CheckRequest())
        raw = message.SerializeToString()
        marker = b"req-1"
        broken = raw.replace(marker, b"req-\xff")  # invalid UTF-8 inside a header value
        assert broken != raw
        response = call(broken, timeout=5)
        assert response.status.code == 7 and json.loads(response.denied_response.body)["reason"] == "invalid_request"
        response = call(b"\xff\xfe not protobuf", timeout=5)
        assert response.status.code == 7 and json.loads(response.denied_response.body)["reason"] == "invalid_request"
        huge = json_format.ParseDict(check_request_json("GET", "/api/orders", headers={
            "x-junk": "a" * (1024 * 1024),
            "authorization": "Bearer " + "b" * 100_000}), external_auth_pb2.CheckRequest())
        response = authz.stub.Check(huge, timeout=5)
        assert response.status.code == UNAUTHENTICATED
        assert json.loads(response.denied_response.body)["reason"] == "invalid_token"
