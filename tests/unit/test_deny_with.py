"""``deny_with`` in the core: which denials a policy shapes, how its
templates are filled and encoded, the one renderer both doors encode, and
what the decision cache keys on so a cached denial is filled as its request
would be (docs/policy.md "deny_with", docs/security.md 66)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from authz.config import load_policy
from authz.denials import json_template, parse_template
from authz.engine import Engine
from authz.errors import Reason
from authz.reply import render
from authz.wire.grpc import GRPC, parse_json_request, to_response
from authz.wire.http import to_reply
from testkit.requests import check_request_json, request

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "deny_with" / "policy.yaml"
KEY = {"x-api-key": "password"}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_policy(str(FIXTURE)))


def test_unauthenticated_is_redirected_with_the_url_encoded_for_a_query_value(engine: Engine) -> None:
    decision = engine.decide(request(path="/api/orders?next=/a b&x=1"))
    assert decision.reason is Reason.MISSING_CREDENTIAL and decision.status == 302
    reply = render(decision, "r-1")
    assert dict(reply.client)["location"] == ("https://login.example.com/start?rd="
                                              "https%3A%2F%2Fapi.example.com%2Fapi%2Forders%3Fnext%3D%2Fa%20b%26x%3D1")
    assert "www-authenticate" not in dict(reply.client)  # no 401, no challenge
    assert json.loads(reply.body)["reason"] == "missing_credential"  # no body given: the default


@pytest.mark.parametrize("reason", [Reason.INVALID_API_KEY, Reason.MISSING_CREDENTIAL])
def test_a_missing_or_bad_credential_is_unauthenticated(engine: Engine, reason: Reason) -> None:
    headers = {"x-api-key": "wrong"} if reason is Reason.INVALID_API_KEY else {}
    decision = engine.decide(request(headers=headers))
    assert decision.reason is reason and decision.status == 302


def test_a_rule_denies_its_own_way_and_the_request_id_is_filled_per_reply(engine: Engine) -> None:
    decision = engine.decide(request(path="/admin/users?x=1", headers=KEY))
    assert decision.rule == "no-admin" and decision.status == 404
    assert render(decision, "r-1").body == b"nothing at /admin/users (r-1)"
    assert render(decision.slim(), "r-2").body == b"nothing at /admin/users (r-2)"  # a cache hit's
    assert render(decision, None).body == b"nothing at /admin/users ()"


def test_unauthorized_json_body_and_header(engine: Engine) -> None:
    decision = engine.decide(request("DELETE", headers=KEY))
    reply = render(decision, 'a"b')
    assert reply.status == 403 and json.loads(reply.body) == {
        "error": "forbidden", "code": "no_permission", "rule": "", "request_id": 'a"b'}
    assert dict(reply.client)["x-denied-by"] == "no_permission"
    assert dict(reply.client)["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/api/a%2Fb", "/api/%00"])
def test_what_authz_owns_keeps_the_default(engine: Engine, path: str) -> None:
    decision = engine.decide(request(path=path, headers=KEY))
    assert decision.reason is Reason.INVALID_PATH and decision.denial is None and decision.status == 403


def test_both_doors_encode_the_same_reply(engine: Engine) -> None:
    for decision in (engine.decide(request()), engine.decide(request(path="/admin/x", headers=KEY)),
                     engine.decide(request("DELETE", headers=KEY))):
        grpc = to_response(decision, "r-9").denied_response
        status, headers, body = to_reply(decision, "r-9")
        assert grpc.status.code == status and grpc.body.encode() == body
        sent = [(h.header.key, h.header.value) for h in grpc.headers]
        assert sent == [(k.decode(), v.decode()) for k, v in headers][:len(sent)]


def test_a_custom_401_keeps_the_challenge(tmp_path: Path) -> None:
    text = FIXTURE.read_text().replace("status: 302\n    location: \"https://login.example.com/start?rd={request.url}\"",
                                       "status: 401\n    body: {text: \"sign in\"}")
    (tmp_path / "policy.yaml").write_text(text)
    decision = Engine(load_policy(str(tmp_path / "policy.yaml"))).decide(request(headers={"x-api-key": "wrong"}))
    reply = render(decision, None)
    assert reply.status == 401 and reply.body == b"sign in"
    assert dict(reply.client)["www-authenticate"].startswith('Bearer realm="authz", error="invalid_token"')


def test_the_cache_key_covers_what_the_templates_read(tmp_path: Path) -> None:
    """request.url reads the scheme and query: two requests differing only
    there must not share a cached denial. Without it, the query is not keyed."""
    policy = load_policy(str(FIXTURE))
    assert policy.reads.query and policy.reads.scheme
    key = GRPC.make_cache_key(policy.reads, policy.credential_headers)
    a, b = (parse_json_request(json.dumps(check_request_json(path=f"/api/orders?{q}"))) for q in ("a=1", "a=2"))
    assert key(a) != key(b)
    plain = tmp_path / "policy.yaml"
    shutil.copy(FIXTURE, plain)
    plain.write_text(plain.read_text().replace("rd={request.url}", "rd={request.path}"))
    assert not load_policy(str(plain)).reads.query


def test_templates_encode_each_value_for_where_it_goes() -> None:
    assert parse_template("a {reason} b") == ("a ", parse_template("{reason}")[0], " b")
    with pytest.raises(ValueError, match="unknown template field"):
        parse_template("{identity.subject}")
    with pytest.raises(ValueError, match="brace outside"):
        parse_template("a } b")
    template = json_template({"k": ["{reason}", 1, None, True], "q": 'say "{rule}"'})
    assert "".join(p if isinstance(p, str) else "X" for p in template) == '{"k":["X",1,null,true],"q":"say \\"X\\""}'
