"""Decisions never depend on the cache (docs/security.md G): random request streams
give identical answers with the decision and token caches off and on, a
policy that reads request bodies included (docs/security.md 70)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import jwt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.config import load_policy
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import CheckRequest, CheckResponse
from testkit.paths import ACCEPTANCE
from testkit.tokens import contract_key, token

START = 1_900_000_000.0

POLICY = """
version: 1
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [orders-api]
    jwks_file: corp.jwks.json
    algorithms: [RS256]
    leeway: 5s
    roles_claim: groups
api_keys:
  keys:
    - {subject: partner-acme, sha256: "177578fe4330804b934c16b15ca7ffce257f191a164a354e6985f795c957aa5f", \
       roles: [orders-reader]}
peers:
  "spiffe://cluster.local/ns/shop/sa/billing": [orders-reader]
roles:
  orders-reader:
    - {methods: [GET, HEAD], paths: [/api/orders, /api/orders/*]}
  orders-admin:
    - {paths: ["/api/orders/**"], hosts: ["*.example.com"]}
rules:
  - {name: public, effect: allow, paths: [/healthz], anonymous: true}
  - name: tenant-isolation
    effect: deny
    paths: ["/api/orders/**"]
    when: 'identity.kind == "jwt" && request.headers["x-tenant"] != identity.claims.tenant'
  - {name: blocked, effect: deny, source_ips: [203.0.113.0/24]}
  - name: big-orders
    effect: deny
    methods: [POST]
    paths: ["/api/orders/**"]
    when: 'request.body_json.amount > 100'
  - {name: quotes, effect: allow, anonymous: true, paths: [/other], when: 'request.body_json.amount < 100'}
  - name: maintenance
    effect: deny
    when: '"mode" in context && context["mode"] == "maintenance" \
      && !("force" in request.query && request.query["force"] == "1")'
response:
  headers:
    x-user-id: identity.subject
    x-client: 'request.headers["x-client"] + "/" + identity.kind'
  remove: [authorization]
  identity_token: {header: x-identity-token, issuer: https://authz.internal, audience: internal, ttl: 60s,
                   signing_key: identity-es256.pem}
cache:
  decisions: {max_entries: MAX, ttl: 30s, deny_ttl: 2s}
  tokens: {max_entries: MAX}
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def _service(tmp: Path, max_entries: int, clock: FakeClock) -> CheckService:
    directory = tmp / f"cache-{max_entries}"
    directory.mkdir(exist_ok=True)
    for name in ("corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, directory / name)
    (directory / "policy.yaml").write_text(POLICY.replace("MAX", str(max_entries)))
    policy = load_policy(str(directory / "policy.yaml"))
    return CheckService(PolicyState(policy, clock), Telemetry())


def _token(sub: str, groups: list[str], tenant: str, lifetime: float) -> str:
    return token({"iss": "https://idp.example.com", "aud": "orders-api", "sub": sub, "iat": int(START),
                  "exp": int(START + lifetime), "groups": groups, "tenant": tenant}, key=contract_key())


TOKENS = [
    _token("alice", ["orders-reader"], "t1", 3600),
    _token("root", ["orders-admin"], "t1", 3600),
    _token("short", ["orders-reader"], "t1", 40),   # expires during the stream (exp + 5 s leeway)
    _token("bob", ["orders-reader"], "t2", 3600),
    _token("nobody", [], "t1", 3600),
]
CREDENTIALS = [
    {}, *({"authorization": f"Bearer {t}"} for t in TOKENS),
    {"authorization": "Bearer not.a.token"},
    {"x-api-key": "ak_live_3f9c2b7e4d1a"}, {"x-api-key": "wrong"},
    {"cookie": "a=b"},
]

requests = st.fixed_dictionaries({
    "credential": st.sampled_from(range(len(CREDENTIALS))),
    "method": st.sampled_from(["GET", "POST", "DELETE", "HEAD"]),
    "path": st.sampled_from(["/api/orders", "/api/orders/7", "/api/orders/7?force=1", "/api/orders/7?force=0",
                             "/api//orders/../orders/9", "/api/orders/%2F..", "/healthz", "/other"]),
    "host": st.sampled_from(["api.example.com", "api.other.com", "API.EXAMPLE.COM:443"]),
    "tenant": st.sampled_from([None, "t1", "t2"]),
    "client": st.sampled_from([None, "web", "cli"]),
    "noise": st.text(alphabet="abc", max_size=3),   # a header no rule reads
    "source": st.sampled_from(["198.51.100.7", "203.0.113.9", "not-an-ip"]),
    "principal": st.sampled_from(["", "spiffe://cluster.local/ns/shop/sa/billing", "spiffe://cluster.local/ns/x/sa/y"]),
    "mode": st.sampled_from([None, "maintenance", "normal"]),
    "body": st.sampled_from([None, b'{"amount": 5}', b'{"amount": 500}', b'{"amount": 5, "amount": 500}', b"{bad",
                             b"amount=500"]),
    "body_headers": st.fixed_dictionaries({}, optional={
        "content-type": st.sampled_from(["application/json", "application/x-www-form-urlencoded"]),
        "content-encoding": st.sampled_from(["gzip", "identity"]),
        "x-envoy-auth-partial-body": st.sampled_from(["true", "false"]),
    }),
})
steps = st.lists(st.one_of(requests, st.floats(min_value=0.5, max_value=25.0)), min_size=5, max_size=60)


def _message(spec: dict[str, Any], index: int) -> bytes:
    headers = {":authority": spec["host"], ":method": spec["method"], ":path": spec["path"],
               "x-request-id": f"req-{index}", "x-noise": spec["noise"], **CREDENTIALS[spec["credential"]]}
    if spec["tenant"] is not None:
        headers["x-tenant"] = spec["tenant"]
    if spec["client"] is not None:
        headers["x-client"] = spec["client"]
    headers.update(spec.get("body_headers", {}))
    message = CheckRequest()
    attributes = message.attributes
    http = attributes.request.http
    http.method, http.path, http.host, http.scheme = spec["method"], spec["path"], spec["host"], "https"
    http.headers.update(headers)
    attributes.source.address.socket_address.address = spec["source"]
    attributes.source.principal = spec["principal"]
    if spec["mode"] is not None:
        attributes.context_extensions["mode"] = spec["mode"]
    if spec.get("body") is not None:
        http.raw_body = spec["body"]
    return bytes(message.SerializeToString())


def _comparable(raw: bytes) -> dict[str, Any]:
    response = CheckResponse.FromString(raw)
    out: dict[str, Any] = {"code": response.status.code}
    if response.HasField("ok_response"):
        headers: dict[str, Any] = {h.header.key: h.header.value for h in response.ok_response.headers}
        identity = headers.pop("x-identity-token", None)
        if identity is not None:  # signed at different times; its meaning must agree
            claims = jwt.decode(identity, options={"verify_signature": False})
            headers["x-identity-token"] = (claims.get("sub"), tuple(claims["roles"]), claims.get("peer"))
        out["headers"] = headers
        out["remove"] = sorted(response.ok_response.headers_to_remove)
    else:
        out["status"] = response.denied_response.status.code
        out["body"] = json.loads(response.denied_response.body)
        out["denied_headers"] = sorted((h.header.key, h.header.value) for h in response.denied_response.headers)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=steps)
def test_cached_and_uncached_answers_are_identical(tmp_path: Path, stream: list[Any]) -> None:
    clock = FakeClock()
    uncached = _service(tmp_path, 0, clock)
    cached = _service(tmp_path, 1000, clock)
    loop = asyncio.new_event_loop()
    try:
        for index, step in enumerate(stream):
            if isinstance(step, float):
                clock.now += step
                continue
            raw = _message(step, index)
            expected = _comparable(loop.run_until_complete(uncached.check(raw, None)))
            got = _comparable(loop.run_until_complete(cached.check(raw, None)))
            assert got == expected, (step, clock.now - START)
    finally:
        loop.close()
    # The stream must have exercised the cache, or the comparison proves nothing.
    if len([s for s in stream if isinstance(s, dict)]) > 20:
        assert cached.state.decisions.stats.hits + cached.state.decisions.stats.misses > 0


def test_repeats_hit_the_cache_and_skip_the_engine(tmp_path: Path) -> None:
    clock = FakeClock()
    service = _service(tmp_path, 1000, clock)
    spec = {"credential": 1, "method": "GET", "path": "/api/orders/7", "host": "api.example.com", "tenant": "t1",
            "client": "web", "noise": "", "source": "198.51.100.7", "principal": "", "mode": None}
    loop = asyncio.new_event_loop()
    try:
        first = loop.run_until_complete(service.check(_message(spec, 1), None))
        # Another request id and an unread header: still the same cache entry.
        second = loop.run_until_complete(service.check(_message({**spec, "noise": "xyz"}, 2), None))
        stats = service.state.decisions.stats
        assert (stats.hits, stats.misses) == (1, 1)
        assert first is second  # the prepared bytes, not a new CheckResponse
        # A header a rule reads changes the key.
        loop.run_until_complete(service.check(_message({**spec, "tenant": "t2"}, 3), None))
        assert stats.misses == 2
        # Past the token's lifetime bound (the decision TTL, 30 s) the entry is gone.
        clock.now += 31
        loop.run_until_complete(service.check(_message(spec, 4), None))
        assert stats.misses == 3
    finally:
        loop.close()


def test_a_body_rule_is_keyed_on_the_body(tmp_path: Path) -> None:
    """The same request with another body is another entry (docs/security.md 70)."""
    clock = FakeClock()
    service = _service(tmp_path, 1000, clock)
    spec = {"credential": 0, "method": "POST", "path": "/other", "host": "api.example.com", "tenant": None,
            "client": None, "noise": "", "source": "198.51.100.7", "principal": "", "mode": None,
            "body_headers": {"content-type": "application/json"}}
    loop = asyncio.new_event_loop()
    try:
        answers = [_comparable(loop.run_until_complete(service.check(_message({**spec, "body": body}, i), None)))
                   for i, body in enumerate([b'{"amount": 5}', b'{"amount": 500}', b'{"amount": 5}', b"{bad"])]
    finally:
        loop.close()
    assert [a["code"] for a in answers] == [0, 16, 0, 3]
    assert answers[3]["body"]["reason"] == "body_invalid"
    assert service.state.decisions.stats.hits == 1
