"""The CheckResponse a decision becomes, and what a cached decision keeps."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format

from authz._proto.envoy.config.core.v3 import base_pb2
from authz.decision import Decision
from authz.errors import Reason
from authz.identity.base import Identity
from authz.policy import Reads
from authz.request import ATTRIBUTES
from authz.wire.grpc import (
    FIELDS,
    CheckRequest,
    CheckResponse,
    make_cache_key,
    to_request,
    to_response,
)

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def _wire(decision: Decision, request_id: str | None = None) -> CheckResponse:
    """Through bytes, as Envoy receives it."""
    return CheckResponse.FromString(to_response(decision, request_id).SerializeToString())


def test_an_allow_sets_overwriting_headers_and_removes_others() -> None:
    decision = Decision(allowed=True, reason=Reason.ALLOWED,
                        headers=(("x-user-id", "alice"), ("x-identity-token", "t")),
                        remove=("authorization", "x-api-key"))
    response = _wire(decision)
    assert response.HasField("status") and response.status.code == 0
    ok = response.ok_response
    assert [(h.header.key, h.header.value) for h in ok.headers] == [("x-user-id", "alice"), ("x-identity-token", "t")]
    assert all(h.append_action == _OVERWRITE and h.HasField("append") and not h.append.value for h in ok.headers)
    assert list(ok.headers_to_remove) == ["authorization", "x-api-key"]


def test_an_allow_with_nothing_to_add_still_says_ok_explicitly() -> None:
    response = _wire(Decision(allowed=True, reason=Reason.ALLOWED))
    assert response.HasField("status") and response.HasField("ok_response")
    assert response.status.code == 0


def test_a_denial_carries_status_challenge_and_a_body_without_the_credential() -> None:
    decision = Decision(allowed=False, reason=Reason.INVALID_TOKEN, detail="secret")
    response = _wire(decision, "req-7")
    assert response.status.code == 16 and response.status.message == "invalid_token"
    denied = response.denied_response
    assert denied.status.code == 401
    headers = {h.header.key: h.header.value for h in denied.headers}
    assert headers == {"content-type": "application/json", "cache-control": "no-store",
                       "www-authenticate": 'Bearer realm="authz", error="invalid_token", '
                                           'error_description="invalid_token"'}
    assert json.loads(denied.body) == {"error": "unauthenticated", "reason": "invalid_token", "request_id": "req-7"}


def test_sec_55_an_allow_carries_client_headers_added_and_metadata() -> None:
    identity = Identity(kind="jwt", subject="alice", source="corp")
    decision = Decision(allowed=True, reason=Reason.ALLOWED, rule="orders-reader", identity=identity,
                        client_headers=(("set-cookie", "a=1"), ("set-cookie", "b=2")),
                        metadata=(("sub", "alice"), ("level", 3), ("roles", ["r"]), ("m", {"k": None})))
    response = _wire(decision)
    added = response.ok_response.response_headers_to_add
    assert [(h.header.key, h.header.value) for h in added] == [("set-cookie", "a=1"), ("set-cookie", "b=2")]
    # Added beside the upstream's own Set-Cookie, never replacing it.
    assert all(h.append_action == _APPEND and not h.HasField("append") for h in added)
    assert json_format.MessageToDict(response.dynamic_metadata) == {
        "reason": "allowed", "rule": "orders-reader", "issuer": "corp",
        "sub": "alice", "level": 3.0, "roles": ["r"], "m": {"k": None}}


def test_sec_55_a_denial_carries_reason_rule_and_issuer_as_metadata() -> None:
    identity = Identity(kind="jwt", subject="alice", source="corp", claims={"secret": "s"})
    decision = Decision(allowed=False, reason=Reason.DENIED_BY_RULE, rule="tenant-isolation", identity=identity,
                        metadata=(("sub", "alice"),))  # the engine sets none on a denial; none is sent if it did
    response = _wire(decision)
    assert response.HasField("denied_response")
    assert json_format.MessageToDict(response.dynamic_metadata) == {
        "reason": "denied_by_rule", "rule": "tenant-isolation", "issuer": "corp"}
    response = _wire(Decision(allowed=False, reason=Reason.INVALID_TOKEN))
    assert json_format.MessageToDict(response.dynamic_metadata) == {"reason": "invalid_token"}


def test_a_cached_decision_keeps_who_and_why_but_no_claims_headers_or_detail() -> None:
    identity = Identity(kind="jwt", subject="alice", issuer="https://idp", source="corp", roles=frozenset({"r"}),
                        scopes=("s",), claims={"tenant": "t1"}, expires_at=99.0)
    decision = Decision(allowed=True, reason=Reason.ALLOWED, rule="r", identity=identity, headers=(("x", "y"),),
                        remove=("authorization",), detail="d", valid_until=50.0, cacheable=True,
                        dry_run_denials=("no_permission:-",), client_headers=(("set-cookie", "s=1"),),
                        metadata=(("tenant", "t1"),), omitted=(("metadata", "tier"),))
    slim = decision.slim()
    assert (slim.allowed, slim.reason, slim.rule, slim.valid_until, slim.cacheable, slim.dry_run_denials) == (
        True, Reason.ALLOWED, "r", 50.0, True, ("no_permission:-",))
    assert (slim.headers, slim.remove, slim.detail, slim.client_headers, slim.metadata) == ((), (), None, (), ())
    # What was left out is counted on every answer, cached ones too.
    assert slim.omitted == (("metadata", "tier"),)
    who = slim.identity
    assert (who.kind, who.subject, who.issuer, who.source, who.expires_at) == ("jwt", "alice", "https://idp", "corp",
                                                                               99.0)
    assert dict(who.claims) == {}
    # A cached denial keeps its challenge, which the wire answer repeats.
    denial = Decision(allowed=False, reason=Reason.EXPIRED_TOKEN, detail="token expired",
                      valid_until=50.0).slim()
    assert (denial.allowed, denial.reason, denial.challenge, denial.detail, denial.valid_until) == (
        False, Reason.EXPIRED_TOKEN, 'Bearer realm="authz", error="invalid_token", error_description="expired_token"',
        None, 50.0)


# -- the request side: one table, read the same way by the Request builder and the cache key


def _check(**overrides: Any) -> Any:
    """A CheckRequest with every attribute set; ``overrides`` change one
    field (by its FIELDS path) or header."""
    check = CheckRequest()
    attributes = check.attributes
    http = attributes.request.http
    http.method, http.path, http.host, http.scheme = "GET", "/a/b?q=1", "api.example.com", "https"
    http.headers.update({":method": "GET", ":path": "/a/b?q=1", ":authority": "api.example.com", ":scheme": "https",
                         "authorization": "Bearer t", "x-tenant": "t1", "x-other": "o"})
    for side, address, port, principal in (("source", "10.0.0.1", 4000, "spiffe://a"),
                                           ("destination", "10.0.0.2", 8080, "spiffe://b")):
        peer = getattr(attributes, side)
        peer.address.socket_address.address = address
        peer.address.socket_address.port_value = port
        peer.principal = principal
    attributes.context_extensions["k"] = "v"
    for name, value in overrides.items():
        if name.startswith("header:"):
            http.headers[name.removeprefix("header:")] = value
            continue
        field = FIELDS[name]
        message = http if field.message == "http" else getattr(attributes, field.message)
        *parents, leaf = field.path.split(".")
        for part in parents:
            message = getattr(message, part)
        setattr(message, leaf, value)
    return check


_CHANGED = {"method": "POST", "path": "/a/c?q=1", "host": "admin.example.com", "scheme": "http",
            "source_address": "10.9.9.9", "source_port": 4001, "source_principal": "spiffe://x",
            "destination_address": "10.9.9.8", "destination_port": 9090, "destination_principal": "spiffe://y"}


def test_the_table_reads_every_attribute_of_a_request() -> None:
    assert tuple(FIELDS) == ATTRIBUTES
    request = to_request(_check())
    assert (request.method, request.path, request.host, request.scheme) == ("GET", "/a/b?q=1", "api.example.com",
                                                                            "https")
    assert (request.source_address, request.source_port, request.source_principal) == ("10.0.0.1", 4000, "spiffe://a")
    assert request.destination_principal == "spiffe://b" and dict(request.context) == {"k": "v"}
    for name, value in _CHANGED.items():
        assert getattr(to_request(_check(**{name: value})), name) == value, name


def test_an_empty_field_is_read_from_its_pseudo_header() -> None:
    request = to_request(_check(method="", path="", host="", scheme=""))
    assert (request.method, request.path, request.host, request.scheme) == ("GET", "/a/b?q=1", "api.example.com",
                                                                            "https")


@pytest.mark.parametrize("read", sorted(_CHANGED))
def test_the_cache_key_changes_with_exactly_the_attributes_the_policy_reads(read: str) -> None:
    flags: dict[str, Any] = {read: True} if read != "path" else {}
    reads = Reads(**flags)
    key = make_cache_key(reads, ("authorization",))
    base = key(_check())
    assert base is not None and key(_check()) == base
    for name, value in _CHANGED.items():
        changed = key(_check(**{name: value}))
        assert (changed != base) == (name in (read, "path", "host")), (read, name)
    # An attribute read from its pseudo-header when the field is empty keys on both.
    if FIELDS[read].pseudo_header is not None and read != "path":
        assert key(_check(**{read: "",
                             f"header:{FIELDS[read].pseudo_header}": str(_CHANGED[read])})) != key(_check(**{read: ""}))


def test_the_cache_key_reads_the_query_credential_and_named_headers_only_when_asked() -> None:
    plain = make_cache_key(Reads(), ("authorization",))
    assert plain(_check(path="/a/b?q=2")) == plain(_check())
    assert plain(_check(**{"header:x-tenant": "t2"})) == plain(_check())
    assert plain(_check(**{"header:authorization": "Bearer u"})) != plain(_check())
    query = make_cache_key(Reads(query=True), ())
    assert query(_check(path="/a/b?q=2")) != query(_check())
    tenant = make_cache_key(Reads(headers=frozenset({"x-tenant"})), ())
    assert tenant(_check(**{"header:x-tenant": "t2"})) != tenant(_check())
    assert tenant(_check(**{"header:x-other": "p"})) == tenant(_check())
    every = make_cache_key(Reads(headers=None), ())
    assert every(_check(**{"header:x-other": "p"})) != every(_check())
    assert make_cache_key(Reads(now=True), ())(_check()) is None
