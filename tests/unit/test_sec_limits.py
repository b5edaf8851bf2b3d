"""The bounds docs/security.md listed as untested: the per-value and
per-answer limits on upstream header values (entry 37), a non-ASCII or
non-printable API key (entry 43), and the decision cache's LRU bound with
the least recently used entry evicted (entry 42)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format

from authz.config import load_policy
from authz.engine import SystemClock
from authz.errors import Reason
from authz.response_plan import MAX_ADDED_BYTES, MAX_HEADER_VALUE
from authz.server.service import CheckService, PolicyState
from authz.server.telemetry import Telemetry
from authz.wire.grpc import CheckRequest, CheckResponse
from testkit.paths import ACCEPTANCE
from testkit.requests import check_request_json
from testkit.tokens import claims as acceptance_claims
from testkit.tokens import token
from tests.unit.test_engine import (
    API_KEY,
    assert_decision,
    decide,
    make_engine,
    mint,
    policy_text,
)

#: A header value four times a claim: long values from a token that stays
#: within the issuer's token size limit.
FOUR_TIMES = "identity.claims.p + identity.claims.p + identity.claims.p + identity.claims.p"


@pytest.mark.parametrize(("quarter", "kept"), [(MAX_HEADER_VALUE // 4, True), (MAX_HEADER_VALUE // 4 + 1, False)])
def test_sec_37_a_header_value_over_the_limit_is_dropped_and_the_clients_copy_removed(
        tmp_path: Path, quarter: int, kept: bool) -> None:
    text = policy_text().replace("    x-user-id: identity.subject\n", f"    x-user-id: {FOUR_TIMES}\n")
    engine = make_engine(tmp_path, text)
    decision = decide(engine, "GET", "/api/feed", bearer=mint(p="a" * quarter), headers={"x-user-id": "root"})
    assert decision.allowed, decision.detail
    assert (dict(decision.headers).get("x-user-id") == "a" * quarter * 4) is kept
    assert ("x-user-id" in decision.remove) is not kept


def test_sec_37_headers_beyond_what_one_answer_may_add_are_dropped(tmp_path: Path) -> None:
    # Eight headers of 7,800 characters: the eighth would take what the answer
    # adds past 60 KiB, so it is dropped (and the client's copy removed); the
    # request still fits Envoy's limits, so it is allowed.
    names = [f"x-part-{i}" for i in range(8)]
    lines = "".join(f"    {name}: {FOUR_TIMES}\n" for name in names)
    engine = make_engine(tmp_path, policy_text().replace("    x-user-id: identity.subject\n", lines))
    size = 7800 + len(names[0])
    assert 7 * size <= MAX_ADDED_BYTES < 8 * size
    decision = decide(engine, "GET", "/api/feed", bearer=mint(p="b" * 1950), headers={names[-1]: "forged"})
    assert decision.allowed, decision.detail
    added = dict(decision.headers)
    assert [name for name in names if name in added] == names[:7]
    assert all(len(added[name]) == 7800 for name in names[:7])
    assert names[-1] in decision.remove


@pytest.mark.parametrize("key", [API_KEY[:-1] + "é", API_KEY[:-1] + "\x7f", API_KEY[:-1] + "\x01", "ключ-1234567890"])
def test_sec_43_a_non_ascii_or_unprintable_api_key_is_refused(tmp_path: Path, key: str) -> None:
    engine = make_engine(tmp_path)
    assert_decision(decide(engine, "GET", "/api/orders/7", headers={"x-api-key": key}), 401, Reason.INVALID_API_KEY)
    # The control: the configured key itself is accepted.
    assert decide(engine, "GET", "/api/orders/7", headers={"x-api-key": API_KEY}).allowed


def test_sec_42_the_decision_cache_evicts_the_least_recently_used_entry(tmp_path: Path) -> None:
    text = (ACCEPTANCE / "policy.yaml").read_text().replace(
        "decisions: {max_entries: 100000, ttl: 30s}", "decisions: {max_entries: 2, ttl: 30s}")
    assert "max_entries: 2," in text
    directory = tmp_path / "policy"
    directory.mkdir()
    for name in ("corp.jwks.json", "identity-es256.pem"):
        (directory / name).write_bytes((ACCEPTANCE / name).read_bytes())
    (directory / "policy.yaml").write_text(text)
    state = PolicyState(load_policy(str(directory / "policy.yaml")), SystemClock())
    service = CheckService(state, Telemetry())
    stats = state.decisions.stats

    def ask(subject: str) -> None:
        message = json_format.ParseDict(check_request_json("GET", "/api/orders/1", headers={
            "authorization": f"Bearer {token(acceptance_claims(sub=subject))}", "x-tenant": "t1"}), CheckRequest())
        response = CheckResponse.FromString(service.check_sync(message.SerializeToString(), None))
        assert response.HasField("ok_response"), response

    ask("a")
    ask("b")
    assert (stats.misses, stats.hits, stats.evictions) == (2, 0, 0)
    ask("a")  # a hit: "a" is now the most recently used, "b" the least
    assert (stats.hits, stats.evictions) == (1, 0)
    ask("c")  # a third entry evicts "b"
    assert stats.evictions == 1 and len(state.decisions) == 2
    ask("a")
    assert stats.hits == 2
    misses = stats.misses
    ask("b")  # evicted: decided again
    assert stats.misses == misses + 1


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_sec_36_an_exception_while_deciding_is_an_internal_error_denial_never_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, door: str) -> None:
    import asyncio
    import json

    import authz.identity.signing
    from authz.wire.grpc import GRPC
    from authz.wire.http import HttpDoor, HttpDoorSettings

    http_door = HttpDoor(HttpDoorSettings("/authz", forwarded_hops=1, trust_xfcc=False))
    state = PolicyState(load_policy(str(ACCEPTANCE / "policy.yaml")), SystemClock(), doors=(GRPC, http_door))
    service = CheckService(state, Telemetry())
    bearer = token(acceptance_claims(sub="fault"))

    def ask() -> tuple[int, str]:
        headers = {"authorization": f"Bearer {bearer}", "x-tenant": "t1"}
        if door == "grpc":
            message = json_format.ParseDict(check_request_json("GET", "/api/orders/1", headers=headers),
                                            CheckRequest())
            response = CheckResponse.FromString(service.check_sync(message.SerializeToString(), None))
            if response.HasField("ok_response"):
                return 200, "allowed"
            return response.denied_response.status.code, json.loads(response.denied_response.body)["reason"]
        scope = {"type": "http", "method": "GET", "raw_path": b"/authz/api/orders/1", "query_string": b"",
                 "headers": [(b"host", b"api.example.com"), (b"x-forwarded-for", b"198.51.100.7"),
                             *((name.encode(), value.encode()) for name, value in headers.items())]}
        status, _headers, body = asyncio.run(service.check_async(http_door, scope, 5.0))
        return status, "allowed" if status == 200 else json.loads(body)["reason"]

    def broken(*_args: object, **_kwargs: object) -> tuple[int, int]:
        raise RuntimeError("a fault inside the signing library")

    # A library call authz makes while deciding (cryptography's signature
    # decoding, for the identity token) fails in a way nobody planned for.
    monkeypatch.setattr(authz.identity.signing, "decode_dss_signature", broken)
    assert ask() == (403, "internal_error")
    assert ask() == (403, "internal_error")  # decided again, not served from a cache
    monkeypatch.undo()
    assert ask() == (200, "allowed")  # the denial was not cached either
