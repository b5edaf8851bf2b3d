"""The HTTP door: reading Envoy's HTTP ext_authz call, and the answer it gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from authz.decision import Decision
from authz.errors import Reason
from authz.identity.base import Identity
from authz.policy import Reads
from authz.request import ATTRIBUTES
from authz.wire.forwarded import client_cert_uri, forwarded_for
from authz.wire.http import FIELDS, HttpDoor, HttpDoorSettings, to_reply
from authz.wire.http_call import InvalidCall
from authz.wire.http_headers import CALL_HEADERS

DOOR = HttpDoor(HttpDoorSettings("/authz", forwarded_hops=1, trust_xfcc=True))


def scope(path: bytes = b"/authz/a/b", query: bytes = b"", **headers: str) -> dict[str, Any]:
    pairs = [(b"host", b"api.example.com"), (b"x-forwarded-proto", b"https"),
             (b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-client-cert", b"By=spiffe://me;URI=spiffe://a")]
    pairs += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": "GET", "raw_path": path, "query_string": query, "headers": pairs}


def test_the_table_covers_every_attribute() -> None:
    assert tuple(FIELDS) == ATTRIBUTES


def test_a_call_becomes_the_request_the_client_sent() -> None:
    request = DOOR.to_request(DOOR.parse(scope(b"/authz/a%2Fb", b"q=1", authorization="Bearer t")))
    assert (request.method, request.path, request.host, request.scheme) == ("GET", "/a%2Fb?q=1", "api.example.com",
                                                                            "https")
    assert (request.source_address, request.source_principal) == ("10.0.0.1", "spiffe://a")
    assert request.headers["authorization"] == "Bearer t"
    assert request.unknown == {"source_port", "destination_address", "destination_port", "destination_principal",
                               "source_certificate", "context"}


def test_a_body_is_read_bounded_and_passed_on_never_decided_unread() -> None:
    """Envoy's with_request_body: the call carries the client's body (docs/security.md 70)."""
    import asyncio

    from authz.wire.http_call import read_body

    def chunks(*parts: bytes) -> Any:
        messages = iter([{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                         for i, p in enumerate(parts)])

        async def receive() -> dict[str, Any]:
            return next(messages)
        return receive

    call = DOOR.parse(scope(content_length="11", content_type="application/json"))
    assert call.body is None
    assert DOOR.to_request(call).body is None  # not read: never decided as no body (body_unavailable)
    asyncio.run(read_body(call, chunks(b'{"a":', b" 1}", b""), 64))
    request = DOOR.to_request(call)
    assert request.body == b'{"a": 1}' and request.headers["content-type"] == "application/json"
    assert "content-length" not in request.headers  # Envoy's framing, not the client's
    assert DOOR.to_request(DOOR.parse(scope())).body == b""
    big = DOOR.parse(scope(content_length="100"))
    asyncio.run(read_body(big, chunks(b"x" * 40, b"y" * 40, b"z" * 20), 50))
    assert big.body is not None and len(big.body) == 51  # over the limit: refused when a rule reads it


def test_untrusted_forwarding_headers_are_unknown_not_empty() -> None:
    door = HttpDoor(HttpDoorSettings("/authz"))
    request = door.to_request(door.parse(scope()))
    assert (request.source_address, request.source_principal) == ("", "")
    assert {"source_address", "source_principal"} <= request.unknown


@pytest.mark.parametrize(("value", "hops", "expected"), [
    ("1.1.1.1", 1, "1.1.1.1"), ("6.6.6.6, 1.1.1.1", 1, "1.1.1.1"), ("6.6.6.6, 1.1.1.1, 2.2.2.2", 2, "1.1.1.1"),
    ("1.1.1.1", 2, ""), (None, 1, ""), ("1.1.1.1", 0, ""),
])
def test_the_client_address_is_the_trusted_hop_from_the_right(value: str | None, hops: int, expected: str) -> None:
    assert forwarded_for(value, hops) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ('By=spiffe://me;Hash=ab;URI=spiffe://cluster.local/ns/a/sa/b', "spiffe://cluster.local/ns/a/sa/b"),
    ('URI=spiffe://forged,By=spiffe://me;URI="spiffe://real"', "spiffe://real"),  # the element Envoy set is last
    ("By=spiffe://me;Hash=ab", ""), (None, ""), ("", ""),
    # A certificate subject the client chose cannot smuggle a URI in, quoted or escaped.
    ('By=spiffe://me;Subject="CN=x\\;URI=spiffe://cluster.local/ns/shop/sa/billing";URI=spiffe://example.com/c7',
     "spiffe://example.com/c7"),
    ('By=spiffe://me;Subject="CN=x,URI=spiffe://forged";URI=spiffe://real', "spiffe://real"),
    ('By=spiffe://me;Subject="CN=\\"x\\";URI=spiffe://real"', ""),  # escaped quotes keep it inside the subject
    ('Subject="CN=x;URI=spiffe://a', ""),  # an unbalanced quote
    ("URI=spiffe://a;URI=spiffe://b", ""),  # two URIs: ambiguous
])
def test_the_peer_is_the_uri_of_the_last_client_cert_element(value: str | None, expected: str) -> None:
    assert client_cert_uri(value) == expected


@pytest.mark.parametrize("bad", [
    scope(b"/other/a"),  # outside the prefix
    scope(b"/authz/\xc3\xa9"),  # not ASCII
    {**scope(), "headers": [(b"x-a", b"\xff\xfe")]},  # not UTF-8
    scope(content_length="five"),  # a body not framed by its length
    scope(transfer_encoding="chunked"),
    scope(x_big="a" * 70_000),  # over the header limit
    {**scope(), "method": ""},
])
def test_a_call_that_cannot_be_read_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidCall):
        DOOR.parse(bad)


def test_repeated_headers_are_joined_as_envoy_joins_them() -> None:
    call = DOOR.parse({**scope(), "headers": [(b"x-a", b"1"), (b"X-A", b"2")]})
    assert call.headers["x-a"] == "1,2"


@pytest.mark.parametrize("variant", ["upper-case name", "repeated header", "UTF-8 value"])
def test_every_reading_of_the_headers_gives_the_same_call_and_key(variant: str) -> None:
    # The common call is read by C-level steps; any other header by header.
    # Both must give the same headers, text and decision-cache key.
    base = scope(authorization="Bearer t", x_name="caf\u00e9" if variant == "UTF-8 value" else "cafe")
    pairs = list(base["headers"])
    if variant == "upper-case name":
        pairs = [(name.upper() if name == b"authorization" else name, value) for name, value in pairs]
    elif variant == "repeated header":
        pairs = [p for p in pairs if p[0] != b"x-name"] + [(b"x-name", b"ca"), (b"x-name", b"fe")]
        base["headers"] = [p for p in pairs if p[0] != b"x-name"] + [(b"x-name", b"ca,fe")]
    other = DOOR.parse({**base, "headers": pairs})
    common = DOOR.parse(base)
    assert other.raw == common.raw and other.headers == common.headers
    key = DOOR.make_cache_key(Reads(headers=None), ("authorization",))
    assert key(other) == key(common)
    assert common.headers["authorization"] == "Bearer t"


def test_an_allow_is_a_200_with_upstream_headers_and_removals() -> None:
    status, headers, body = to_reply(Decision(True, Reason.ALLOWED, headers=(("x-user-id", "alice"),),
                                               remove=("authorization", "cookie")), "r")
    assert (status, body) == (200, b"")
    assert headers == [(b"x-user-id", b"alice"), (b"x-envoy-auth-headers-to-remove", b"authorization,cookie"),
                       (b"reason", b"allowed")]


def test_sec_55_client_headers_and_one_header_per_metadata_key() -> None:
    identity = Identity(kind="jwt", subject="alice", source="corp")
    decision = Decision(True, Reason.ALLOWED, rule="orders-reader", identity=identity,
                        client_headers=(("set-cookie", "a=1"), ("set-cookie", "b=2")),
                        metadata=(("sub", "alice"), ("level", 3), ("roles", ["r", "s"])))
    status, headers, _body = to_reply(decision, None)
    assert status == 200
    assert headers == [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"reason", b"allowed"),
                       (b"rule", b"orders-reader"), (b"issuer", b"corp"), (b"sub", b"alice"), (b"level", b"3"),
                       (b"roles", b'["r","s"]')]
    # A denial: reason, rule and issuer beside the denial's own headers, nothing else.
    denied = decision._replace(allowed=False, reason=Reason.DENIED_BY_RULE, rule="tenant-isolation")
    status, headers, _body = to_reply(denied, None)
    assert status == 403
    assert headers[-3:] == [(b"reason", b"denied_by_rule"), (b"rule", b"tenant-isolation"), (b"issuer", b"corp")]
    assert b"set-cookie" not in dict(headers) and b"sub" not in dict(headers)


def test_a_denial_has_the_reason_status_challenge_and_body() -> None:
    status, headers, body = to_reply(Decision(False, Reason.EXPIRED_TOKEN), "r-1")
    assert status == 401
    assert dict(headers)[b"www-authenticate"] == (
        b'Bearer realm="authz", error="invalid_token", error_description="expired_token"')
    assert body == b'{"error":"unauthenticated","reason":"expired_token","request_id":"r-1"}'
    assert to_reply(Decision(False, Reason.DENIED_BY_RULE), None)[0] == 403


_CHANGED: dict[str, tuple[str, Any]] = {"method": ("method", "POST"), "path": ("raw_path", b"/authz/a/c"),
                                        "host": ("host", "b.example.com"),
            "scheme": ("x-forwarded-proto", "http"), "source_address": ("x-forwarded-for", "10.9.9.9"),
            "source_principal": ("x-forwarded-client-cert", "URI=spiffe://x")}


def _changed(name: str) -> dict[str, Any]:
    field, value = _CHANGED[name]
    base = scope()
    if field in ("method", "raw_path"):
        return {**base, field: value}
    return {**base, "headers": [(k, v) for k, v in base["headers"] if k != field.encode()]
            + [(field.encode(), value.encode())]}


@pytest.mark.parametrize("read", sorted(_CHANGED))
def test_the_cache_key_changes_with_exactly_the_attributes_the_policy_reads(read: str) -> None:
    flags: dict[str, Any] = {read: True} if read != "path" else {}
    key = DOOR.make_cache_key(Reads(**flags), ("authorization",))
    base = key(DOOR.parse(scope()))
    for name in _CHANGED:
        changed = key(DOOR.parse(_changed(name)))
        assert (changed != base) == (name in (read, "path", "host")), (read, name)


def test_keys_of_the_two_doors_never_collide() -> None:
    key = DOOR.make_cache_key(Reads(), ())
    assert key(DOOR.parse(scope()))  # a digest; the gRPC door's digests start from "grpc", these from "http"


def test_validate_names_each_rule_that_reads_what_the_http_door_cannot_know(tmp_path: Path) -> None:
    from authz.config import load_policy
    from authz.wire.http_advice import unknowable

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "peers:\n"
        "  'spiffe://cluster.local/ns/a/sa/b': [reader]\n"
        "roles:\n"
        "  reader: [{paths: ['/r/**'], when: 'context.tier == \"gold\"'}]\n"
        "rules:\n"
        "  - {name: nets, effect: deny, source_ips: [10.0.0.0/8]}\n"
        "  - {name: mesh, effect: allow, paths: ['/m'], when: 'destination.principal != \"\"'}\n"
        "  - {name: plain, effect: allow, paths: ['/p'], methods: [GET]}\n"
        "response:\n"
        "  headers:\n"
        "    x-user-id: identity.subject\n"
        "    x-client-ip: source.address\n"
        "  metadata:\n"
        "    tier: context.tier\n"
    )
    loaded = load_policy(str(policy))
    warnings = unknowable(loaded, HttpDoorSettings())
    assert [w.split(":", 1)[0] for w in warnings] == ["2", "5", "7", "8", "13", "15"]
    assert "peers reads source.principal (known only with --trust-xfcc)" in warnings[0]
    assert "context" in warnings[1] and "never allows" in warnings[1]
    assert "'nets' reads source.address" in warnings[2] and "matches every request" in warnings[2]
    assert "destination.principal (never sent by this protocol)" in warnings[3]
    assert "response header 'x-client-ip' reads source.address" in warnings[4] and "is left out" in warnings[4]
    assert "metadata key 'tier' reads context" in warnings[5]
    trusted = unknowable(loaded, HttpDoorSettings(forwarded_hops=1, trust_xfcc=True))
    assert [w.split(":", 1)[0] for w in trusted] == ["5", "8", "15"]


@pytest.mark.parametrize(("value", "expected"), [
    ("250", 0.25), ("2000", 2.0), (None, None), ("", None), ("-5", None), ("1e3", None), ("12 ", None),
    ("9" * 10, None), ("²", None), ("٣", None),
])
def test_the_call_timeout_is_what_envoy_states_or_unknown(value: str | None, expected: float | None) -> None:
    pairs = scope()["headers"] + ([] if value is None else [(b"x-envoy-expected-rq-timeout-ms", value.encode())])
    assert DOOR.call_timeout(DOOR.parse({**scope(), "headers": pairs})) == expected


def test_sec_57_request_headers_are_the_clients_named_as_through_the_grpc_door() -> None:
    call = scope(b"/authz/a/b", b"q=1", x_custom="a", content_length="0", x_envoy_internal="true",
                 x_envoy_expected_rq_timeout_ms="1000", x_envoy_attempt_count="1",
                 traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    request = DOOR.to_request(DOOR.parse(call))
    headers = request.headers
    assert {k: headers[k] for k in (":authority", ":method", ":path", ":scheme")} == {
        ":authority": "api.example.com", ":method": "GET", ":path": "/a/b?q=1", ":scheme": "https"}
    assert headers["x-custom"] == "a" and "host" not in headers
    assert not set(CALL_HEADERS) - {"host"} & set(headers)  # Envoy's own, for its call
    assert DOOR.call_timeout(DOOR.parse(call)) == 1.0  # still read by the door itself
    assert DOOR.trace_headers(DOOR.parse(call))["traceparent"].startswith("00-")  # the call's own trace


@pytest.mark.parametrize(("name", "changed"), [
    (":method", {"method": "POST"}), (":path", {"query_string": b"q=2"}),
    (":authority", {"headers": [(b"host", b"other.example.com")]}),
    (":scheme", {"headers": [(b"x-forwarded-proto", b"http")]}),
])
def test_sec_57_the_cache_key_finds_a_pseudo_header_where_the_call_carries_it(name: str,
                                                                              changed: dict[str, Any]) -> None:
    key = DOOR.make_cache_key(Reads(headers=frozenset({name})), ())
    base = scope()
    other = {**base, **changed}
    if "headers" in changed:
        replaced = {k for k, _ in changed["headers"]}
        other["headers"] = [(k, v) for k, v in base["headers"] if k not in replaced] + changed["headers"]
    assert key(DOOR.parse(other)) != key(DOOR.parse(base))
    # Envoy's own headers are no part of what a policy reads.
    timeout = DOOR.make_cache_key(Reads(headers=frozenset({"x-envoy-expected-rq-timeout-ms"})), ())
    assert timeout(DOOR.parse(scope(x_envoy_expected_rq_timeout_ms="5"))) == timeout(DOOR.parse(base))


def test_sec_57_validate_names_a_rule_that_reads_a_header_envoy_sets_on_its_own_call(tmp_path: Path) -> None:
    from authz.config import load_policy
    from authz.wire.http_advice import unknowable

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        "rules:\n"
        "  - {name: bodies, effect: deny, when: 'request.headers[\"content-length\"] != \"0\"'}\n"
        "  - {name: internal, effect: allow, when: 'request.headers[\"x-envoy-internal\"] == \"true\"'}\n"
        "  - {name: fine, effect: allow, when: 'request.headers[\":authority\"] == \"a\"'}\n"
    )
    warnings = unknowable(load_policy(str(policy)), HttpDoorSettings(forwarded_hops=1, trust_xfcc=True))
    assert [w.split(":", 1)[0] for w in warnings] == ["3", "4"]
    assert "'content-length'" in warnings[0] and "matches every request" in warnings[0]
    assert "'x-envoy-internal'" in warnings[1] and "never allows" in warnings[1]
