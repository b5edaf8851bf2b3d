"""The CheckResponse a decision becomes, and what a cached decision keeps."""

from __future__ import annotations

import json

from authz._proto.envoy.config.core.v3 import base_pb2
from authz.decision import Decision
from authz.errors import Reason
from authz.identity.base import Identity
from authz.wire.grpc import CheckResponse, to_response

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _wire(decision: Decision, request_id: str | None = None) -> CheckResponse:
    """Through bytes, as Envoy receives it."""
    return CheckResponse.FromString(to_response(decision, request_id).SerializeToString())


def test_an_allow_sets_overwriting_headers_and_removes_others() -> None:
    decision = Decision(allowed=True, reason=Reason.ALLOWED, headers=(("x-user-id", "alice"), ("x-identity-token", "t")),
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
                       "www-authenticate": 'Bearer realm="authz", error="invalid_token", error_description="invalid_token"'}
    assert json.loads(denied.body) == {"error": "unauthenticated", "reason": "invalid_token", "request_id": "req-7"}


def test_a_cached_decision_keeps_who_and_why_but_no_claims_headers_or_detail() -> None:
    identity = Identity(kind="jwt", subject="alice", issuer="https://idp", source="corp", roles=frozenset({"r"}),
                        scopes=("s",), claims={"tenant": "t1"}, expires_at=99.0)
    decision = Decision(allowed=True, reason=Reason.ALLOWED, rule="r", identity=identity, headers=(("x", "y"),),
                        remove=("authorization",), detail="d", valid_until=50.0, cacheable=True,
                        dry_run_denials=("no_permission:-",))
    slim = decision.slim()
    assert (slim.allowed, slim.reason, slim.rule, slim.valid_until, slim.cacheable, slim.dry_run_denials) == (
        True, Reason.ALLOWED, "r", 50.0, True, ("no_permission:-",))
    assert (slim.headers, slim.remove, slim.detail) == ((), (), None)
    who = slim.identity
    assert (who.kind, who.subject, who.issuer, who.source, who.expires_at) == ("jwt", "alice", "https://idp", "corp", 99.0)
    assert dict(who.claims) == {}
    # A cached denial keeps its challenge, which the wire answer repeats.
    denial = Decision(allowed=False, reason=Reason.EXPIRED_TOKEN, detail="token expired",
                      valid_until=50.0).slim()
    assert (denial.allowed, denial.reason, denial.challenge, denial.detail, denial.valid_until) == (
        False, Reason.EXPIRED_TOKEN, 'Bearer realm="authz", error="invalid_token", error_description="expired_token"',
        None, 50.0)
