"""What Envoy learns back (docs/security.md 55): dynamic metadata and headers
for the client, decided by the engine with real policies and signed tokens."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from authz.config import load_policy
from authz.engine import Engine
from authz.errors import ConfigError, Reason
from authz.metadata import MAX_VALUE, Unrepresentable, as_text, carried
from testkit.requests import request
from tests.unit.test_engine import FixedClock, decide, mint, policy_text, write_policy

RESPONSE = """\
  metadata:
    sub: identity.subject
    tier: 'has(identity.claims.tier) ? identity.claims.tier : ""'
    roles: identity.roles
    level: 'has(identity.claims.level) ? identity.claims.level : null'
    tenant_id: identity.claims.tenant
  client_headers:
    set-cookie:
      - '"session=" + identity.subject + "; Path=/; HttpOnly"'
      - '"tier=" + identity.claims.tier'
    x-authz-groups: 'has(identity.claims.groups) ? identity.claims.groups : []'
"""


def engine_with(tmp_path: Path, response: str = RESPONSE) -> Engine:
    text = policy_text().replace("  remove: [authorization]\n", "  remove: [authorization]\n" + response)
    return Engine(load_policy(str(write_policy(tmp_path, text))), clock=FixedClock())


def test_sec_55_an_allow_carries_the_policys_metadata_and_client_headers(tmp_path: Path) -> None:
    engine = engine_with(tmp_path)
    decision = decide(engine, "GET", "/api/feed", bearer=mint(tier="gold", level=3, groups=["a", "b"]))
    assert decision.allowed and decision.rule == "partner-feed"
    assert decision.envoy_metadata() == {
        "reason": "allowed", "rule": "partner-feed", "issuer": "corp",
        "sub": "alice", "tier": "gold", "roles": [], "level": 3, "tenant_id": "t1",
    }
    assert decision.client_headers == (
        ("set-cookie", "session=alice; Path=/; HttpOnly"), ("set-cookie", "tier=gold"),
        ("x-authz-groups", "a"), ("x-authz-groups", "b"),
    )
    assert decision.omitted == ()
    # The upstream's headers are what they were.
    assert dict(decision.headers) == {"x-user-id": "alice"}


def test_sec_55_a_failing_expression_leaves_its_key_out_and_never_flips_the_decision(tmp_path: Path) -> None:
    engine = engine_with(tmp_path)
    # No tier claim: the second cookie's expression fails; no tenant claim:
    # tenant_id fails. Neither turns the allow into a denial.
    decision = decide(engine, "GET", "/api/feed", bearer=mint(tenant=None))
    assert decision.allowed
    metadata = decision.envoy_metadata()
    assert "tenant_id" not in metadata
    assert "tier" not in metadata and "level" not in metadata  # "" and null leave a key out, uncounted
    assert decision.client_headers == (("set-cookie", "session=alice; Path=/; HttpOnly"),)
    assert decision.omitted == (("client_header", "set-cookie"), ("metadata", "tenant_id"))
    # A value metadata cannot carry (bytes) and a header that is not a string are omitted too.
    engine = engine_with(tmp_path / "2", "  metadata:\n    raw: dyn(b'x')\n    ok: '1'\n"
                         "  client_headers:\n    x-n: identity.claims.n\n")
    decision = decide(engine, "GET", "/api/feed", bearer=mint(n=7))
    assert decision.allowed
    assert decision.envoy_metadata()["ok"] == 1 and "raw" not in decision.envoy_metadata()
    assert decision.client_headers == ()
    assert decision.omitted == (("client_header", "x-n"), ("metadata", "raw"))


def test_sec_55_a_denial_carries_reason_rule_and_issuer_only(tmp_path: Path) -> None:
    engine = engine_with(tmp_path)
    token = mint(tier="gold", tenant="t1")
    decision = decide(engine, "GET", "/api/orders/1", bearer=token, headers={"x-tenant": "t2"})
    assert decision.reason is Reason.DENIED_BY_RULE
    assert decision.envoy_metadata() == {"reason": "denied_by_rule", "rule": "tenant-isolation", "issuer": "corp"}
    assert decision.client_headers == () and decision.omitted == ()
    # A credential that fails: no identity, so no issuer either.
    decision = decide(engine, "GET", "/api/feed", bearer=mint(exp=1_000))
    assert decision.envoy_metadata() == {"reason": "expired_token"}
    # An anonymous denial.
    assert decide(engine, "GET", "/api/feed").envoy_metadata() == {"reason": "missing_credential"}


def test_sec_55_metadata_strings_are_sanitized_like_header_values(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, "  metadata:\n    name: identity.claims.name\n    map: identity.claims.m\n"
                         "  client_headers:\n    x-name: identity.claims.name\n")
    name = "Zo\u00eb\r\nx-injected: 1 100%"
    decision = decide(engine, "GET", "/api/feed", bearer=mint(name=name, m={"k\n": ["v\t", 1.5, True, None]}))
    metadata = decision.envoy_metadata()
    assert metadata["name"] == "Zo%C3%AB%0D%0Ax-injected: 1 100%25"
    assert metadata["map"] == {"k%0A": ["v%09", 1.5, True, None]}
    assert decision.client_headers == (("x-name", "Zo%C3%AB%0D%0Ax-injected: 1 100%25"),)
    for text in (as_text(metadata["name"]), as_text(metadata["map"])):
        assert re.fullmatch(r"[\x20-\x7e]*", text)


@pytest.mark.parametrize(("value", "expected"), [
    ("a", "a"), (3, 3), (-2.5, -2.5), (True, True), (None, None), ([1, "x"], [1, "x"]),
    ({"a": {"b": []}}, {"a": {"b": []}}),
    ((1, 2), [1, 2]), (2**53, 2**53),
])
def test_values_metadata_carries(value: Any, expected: Any) -> None:
    assert carried(value) == expected


@pytest.mark.parametrize("value", [
    b"bytes", math.nan, math.inf, 2**53 + 1, {1: "a"}, object(), "x" * (MAX_VALUE + 1),
    [[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]],
])
def test_values_metadata_cannot_carry(value: Any) -> None:
    with pytest.raises(Unrepresentable):
        carried(value)


def test_non_strings_travel_as_json_text() -> None:
    assert as_text("a b") == "a b"
    assert as_text(3) == "3" and as_text(True) == "true" and as_text(["a", 1]) == '["a",1]'
    assert as_text({"k": None}) == '{"k":null}'


@pytest.mark.parametrize(("response", "message"), [
    ("  metadata:\n    auth: request.headers['authorization']\n",
     "metadata may not read the credential header 'authorization'"),
    ("  metadata:\n    cookie: request.headers.cookie\n", "metadata may not read the credential header 'cookie'"),
    ("  metadata:\n    all: request.headers.size()\n", "metadata may not read every request header"),
    ("  metadata:\n    rule: '\"x\"'\n", "metadata key 'rule' is set by authz on every answer"),
    ("  metadata:\n    Tier: '\"x\"'\n", "invalid metadata key 'Tier'"),
    ("  metadata:\n    x-user-id: '\"x\"'\n", "metadata key 'x-user-id' is also a header authz sends"),
    ("  metadata:\n    at: now\n", "expression gives timestamp, expected a string, number, bool, list or map"),
    ("  client_headers:\n    x-user-id: '\"x\"'\n", "'x-user-id' is also an upstream header"),
    ("  client_headers:\n    x-envoy-auth-headers-to-remove: '\"x\"'\n", "not a header authz may send to the client"),
    ("  client_headers:\n    content-length: '\"1\"'\n", "not a header authz may send to the client"),
    ("  client_headers:\n    x-a: '1'\n", "expression gives int, expected a string or a list of strings"),
    ("  client_headers:\n    x-a: []\n", "an empty list sends nothing"),
])
def test_what_a_policy_may_not_send(tmp_path: Path, response: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        engine_with(tmp_path, response)
    assert message in str(caught.value), str(caught.value)


def test_the_cache_key_covers_what_metadata_and_client_headers_read(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, "  metadata:\n    plan: request.headers['x-plan']\n"
                         "  client_headers:\n    x-echo: context.echo\n")
    reads = engine.policy.reads
    assert reads.headers is not None and "x-plan" in reads.headers
    assert reads.context is not None and "echo" in reads.context


def test_what_the_door_did_not_carry_is_left_out_not_read_as_empty(tmp_path: Path) -> None:
    # The HTTP door cannot know the client's port, the destination or
    # context_extensions: an expression reading one
    # leaves its header or key out, as a failing one does, rather than
    # sending "" or 0 as if the door had carried it.
    engine = engine_with(tmp_path, "  metadata:\n    client: source.port\n    dest: destination.port\n"
                         "    tier: context.tier\n  client_headers:\n    x-from: string(source.port)\n")
    unknown = frozenset({"source_port", "destination_port", "context"})
    decision = engine.decide(request("GET", "/api/feed", bearer=mint(),
                                     context={"tier": "gold"})._replace(unknown=unknown))
    assert decision.allowed
    metadata = decision.envoy_metadata()
    assert not {"client", "dest", "tier"} & set(metadata)
    assert decision.client_headers == ()
    assert decision.omitted == (("client_header", "x-from"), ("metadata", "client"), ("metadata", "dest"),
                                ("metadata", "tier"))
    known = engine.decide(request("GET", "/api/feed", bearer=mint(), context={"tier": "gold"}))
    assert (known.envoy_metadata()["client"], known.envoy_metadata()["dest"], known.envoy_metadata()["tier"]) == (
        40000, 8080, "gold")
