"""The caches' byte bounds (``cache.decisions.max_bytes``, ``cache.tokens.max_bytes``):
whatever callers send (long tokens, many claims), what a worker's caches hold
stays under the bytes the policy allows (docs/security.md 67)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from authz.config import load_policy
from authz.engine import SystemClock
from authz.server.cache import ExpiringLRU
from authz.server.service import CheckService, PolicyState
from authz.server.sizes import deep_size
from authz.server.telemetry import Telemetry
from authz.wire.grpc import CheckRequest, CheckResponse
from testkit.paths import ACCEPTANCE
from testkit.tokens import b64, token

SECRET = b"cache-bytes-test-secret-0123456789abcdef"


def test_a_cache_bounded_by_bytes_evicts_by_bytes_and_by_entries() -> None:
    cache: ExpiringLRU[str] = ExpiringLRU(4, lambda: 0.0, max_bytes=100, sizeof=lambda entry: len(entry[1]))
    cache.put("a", "x" * 40, 30, epoch=0)
    cache.put("b", "x" * 40, 30, epoch=0)
    cache.put("c", "x" * 40, 30, epoch=0)  # 120 bytes: "a" goes
    assert cache.get("a") is None and cache.get("b") and cache.get("c")
    assert cache.estimated_bytes() == 80
    cache.put("huge", "x" * 101, 30, epoch=0)  # more than the whole budget: not kept
    assert cache.get("huge") is None and cache.get("b") and cache.get("c")
    for key in "defg":
        cache.put(key, "x", 30, epoch=0)
    assert len(cache) == 4  # the entry bound holds too
    assert cache.get("b") is None and cache.get("c") is None


def _policy(tmp_path: Path, decisions: int, tokens: int) -> Path:
    for item in ACCEPTANCE.iterdir():
        if item.is_file():
            (tmp_path / item.name).write_bytes(item.read_bytes())
    jwks = {"keys": [{"kty": "oct", "kid": "t", "alg": "HS256", "k": b64(SECRET)}]}
    (tmp_path / "t.jwks.json").write_text(json.dumps(jwks))
    text = (ACCEPTANCE / "policy.yaml").read_text().replace(
        "api_keys:",
        "  - name: t\n    issuer: https://t.example.com\n    audiences: [orders-api]\n"
        "    jwks_file: t.jwks.json\n    algorithms: [HS256]\n    roles_claim: groups\n\napi_keys:", 1)
    text = text.replace("cache:\n  decisions: {max_entries: 100000, ttl: 30s}",
                        f"cache:\n  decisions: {{max_entries: 100000, ttl: 30s, max_bytes: {decisions}}}\n"
                        f"  tokens: {{max_bytes: {tokens}}}")
    (tmp_path / "policy.yaml").write_text(text)
    return tmp_path / "policy.yaml"


def _check(tok: str, index: int) -> bytes:
    message = CheckRequest()
    message.attributes.source.address.socket_address.address = "198.51.100.7"
    http = message.attributes.request.http
    http.method, http.path, http.host = "GET", "/api/orders", "api.example.com"
    http.headers.update({"authorization": f"Bearer {tok}", "x-tenant": "t1", "x-request-id": f"r{index}"})
    return message.SerializeToString()


def test_sec_67_hostile_tokens_stay_within_the_byte_bounds(tmp_path: Path) -> None:
    decisions, tokens = 200_000, 150_000
    policy = load_policy(str(_policy(tmp_path, decisions, tokens)))
    assert (policy.decision_cache_bytes, policy.token_cache_bytes) == (decisions, tokens)
    state = PolicyState(policy, SystemClock())
    service = CheckService(state, Telemetry())
    now = int(time.time())
    for i in range(120):
        # Many small claims (the most Python objects per byte sent) and long values.
        extra = {f"c{n}": {"k": n, "v": [n, "x"]} for n in range(60)} if i % 2 else {"blob": "y" * 3000}
        claims = {"iss": "https://t.example.com", "aud": "orders-api", "sub": f"user-{i}", "iat": now,
                  "exp": now + 600, "groups": ["orders-reader"], "tenant": "t1", **extra}
        answer = CheckResponse.FromString(service.check_sync(_check(token(claims, key=SECRET, alg="HS256", kid="t"), i),
                                                             None))
        assert answer.status.code == 0
    for name, bound in (("decisions", decisions), ("tokens", tokens)):
        stats, _entries, estimated = state.cache_sources()[name]
        assert stats.evictions > 0, name
        assert 0 < estimated <= bound, name
    # The estimate as stored is not below what the entries really hold
    # (each object counted as unshared: an upper bound on their memory).
    lru = state.tokens._lru._data
    assert lru is not None
    real = sum(deep_size(lru[key][1].claims) for key in list(lru))
    assert real <= lru.currsize, (real, lru.currsize)
