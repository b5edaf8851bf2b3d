"""Request bodies in the core: ``request.body``, ``body_json`` and ``form``,
read only by the rules that ask, and every body that cannot be read as a
rule asks refused with its reason, never an allow (docs/security.md 70-74).
Each security test has a positive control: the same request with a good
body is decided on the body."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.body import BodyError, BodyLimits, RequestVars, parse_form, parse_json
from authz.config import load_policy
from authz.engine import Engine
from authz.errors import OUTCOMES, ConfigError, Reason
from authz.identity.base import ANONYMOUS
from authz.request import View
from testkit.requests import request

POLICY = """\
version: 1
body: {max_bytes: 4KiB, max_depth: 8, max_elements: 64}
rules:
  - {name: big-orders, effect: deny, methods: [POST], paths: [/api/orders], when: 'request.body_json.amount > 1000'}
  - {name: orders, effect: allow, anonymous: true, methods: [POST], paths: [/api/orders],
     when: 'request.body_json.item != ""'}
  - {name: login, effect: allow, anonymous: true, methods: [POST], paths: [/login],
     when: 'request.form.user == "alice"'}
  - {name: small, effect: allow, anonymous: true, methods: [PUT], paths: [/blob], when: 'size(request.body) < 16'}
  - {name: tenants, effect: allow, anonymous: true, paths: [/tenants], when: 'request.headers["x-tenant"] == "t1"'}
"""
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
GOOD = b'{"amount": 5, "item": "book"}'


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    path = tmp_path_factory.mktemp("body") / "policy.yaml"
    path.write_text(POLICY)
    return Engine(load_policy(str(path)))


def post(engine: Engine, body: bytes, headers: dict[str, str] | None = None, path: str = "/api/orders",
         method: str = "POST") -> tuple[bool, str, int]:
    decision = engine.decide(request(method, path, headers=JSON if headers is None else headers, body=body))
    return decision.allowed, decision.reason.value, decision.status


def test_a_json_rule_allows_and_denies_on_a_field(engine: Engine) -> None:
    assert post(engine, GOOD) == (True, "allowed", 200)
    assert post(engine, b'{"amount": 5000, "item": "book"}') == (False, "denied_by_rule", 403)
    assert post(engine, b'{"amount": 5, "item": ""}') == (False, "missing_credential", 401)
    # application/*+json and a utf-8 charset are JSON too
    assert post(engine, GOOD, {"content-type": "application/merge-patch+json; charset=UTF-8"})[0]


def test_a_form_rule_and_a_bytes_rule(engine: Engine) -> None:
    assert post(engine, b"user=alice&remember=", FORM, "/login") == (True, "allowed", 200)
    assert post(engine, b"user=bob", FORM, "/login") == (False, "missing_credential", 401)
    assert post(engine, b"0123456789", {}, "/blob", "PUT") == (True, "allowed", 200)
    assert post(engine, b"0123456789abcdefXYZ", {}, "/blob", "PUT") == (False, "missing_credential", 401)


def test_sec_70_a_body_over_the_limit_or_cut_by_the_proxy_is_refused(engine: Engine) -> None:
    assert post(engine, GOOD)[0]  # the control
    padded = GOOD[:-1] + b', "pad": "' + b"x" * 5000 + b'"}'
    assert post(engine, padded) == (False, "body_too_large", 413)
    # Envoy marks a body it cut at max_request_bytes (allow_partial_message: true)
    assert post(engine, GOOD, {**JSON, "x-envoy-auth-partial-body": "true"}) == (False, "body_too_large", 413)
    assert post(engine, GOOD, {**JSON, "x-envoy-auth-partial-body": "false"})[0]
    # declared longer than the limit, or longer than what was passed on (no buffering)
    assert post(engine, GOOD, {**JSON, "content-length": "999999"}) == (False, "body_too_large", 413)
    assert post(engine, b"", {**JSON, "content-length": str(len(GOOD))}) == (False, "body_unavailable", 403)
    assert post(engine, b"", {**JSON, "transfer-encoding": "chunked"}) == (False, "body_unavailable", 403)
    assert post(engine, GOOD, {**JSON, "content-length": str(len(GOOD))})[0]
    # a body the door did not read (the HTTP door, the policy reloaded meanwhile)
    decision = engine.decide(request("POST", "/api/orders", headers=JSON)._replace(body=None))
    assert decision.reason is Reason.BODY_UNAVAILABLE


def test_sec_70_a_deny_rule_that_cannot_see_the_body_never_lets_an_allow_through(engine: Engine) -> None:
    """The deny rule fails closed on a body it cannot read; the allow rule
    would match the bytes that were read: the reason is the body's."""
    cut = {**JSON, "x-envoy-auth-partial-body": "true"}
    decision = engine.decide(request("POST", "/api/orders", headers=cut, body=GOOD))
    assert not decision.allowed and decision.reason is Reason.BODY_TOO_LARGE and decision.rule is None


@pytest.mark.parametrize("body", [b'{"amount": 5,', b"", b"not json", b'{"amount": NaN, "item": "x"}',
                                  b'{"amount": 5, "item": "\xff"}'])
def test_sec_71_a_malformed_json_body_is_refused(engine: Engine, body: bytes) -> None:
    assert post(engine, GOOD)[0]
    assert post(engine, body) == (False, "body_invalid", 400)


def test_sec_71_an_integer_too_long_to_convert_is_malformed_not_a_crash() -> None:
    limits = BodyLimits(max_bytes=64 * 1024)
    assert parse_json(b'{"a": ' + b"9" * 100 + b"}", JSON, limits)["a"] > 0
    with pytest.raises(BodyError) as caught:
        parse_json(b'{"a": ' + b"9" * 5000 + b"}", JSON, limits)
    assert caught.value.reason is Reason.BODY_INVALID


def test_sec_71_a_malformed_form_body_is_refused(engine: Engine) -> None:
    assert post(engine, b"user=alice", FORM, "/login")[0]
    for body in (b"user=alice&&", b"\xffuser=alice", b"user"):
        assert post(engine, body, FORM, "/login") == (False, "body_invalid", 400), body


def test_sec_72_a_key_twice_is_refused(engine: Engine) -> None:
    """A server that keeps the last value would act on another request."""
    assert post(engine, b'{"amount": 5, "item": "x", "nested": {"a": 1, "b": 1}}')[0]
    assert post(engine, b'{"amount": 5, "amount": 9000, "item": "x"}') == (False, "body_duplicate_key", 400)
    assert post(engine, b'{"amount": 5, "item": "x", "n": {"a": 1, "a": 2}}') == (False, "body_duplicate_key", 400)
    assert post(engine, b"user=alice&user=mallory", FORM, "/login") == (False, "body_duplicate_key", 400)


def test_sec_73_depth_and_size_bombs_are_refused(engine: Engine) -> None:
    deep_ok = b'{"amount": 5, "item": "x", "d": ' + b"[" * 6 + b"]" * 6 + b"}"
    assert post(engine, deep_ok)[0]
    deep = b'{"amount": 5, "item": "x", "d": ' + b"[" * 9 + b"]" * 9 + b"}"
    assert post(engine, deep) == (False, "body_too_complex", 400)
    wide = b'{"amount": 5, "item": "x", "w": [' + b",".join([b"1"] * 80) + b"]}"
    assert post(engine, wide) == (False, "body_too_complex", 400)
    fields = b"user=alice&" + b"&".join(b"f%d=1" % i for i in range(80))
    assert post(engine, fields, FORM, "/login") == (False, "body_too_complex", 400)


def test_sec_73_a_bomb_deeper_than_python_recursion_is_refused() -> None:
    limits = BodyLimits(max_bytes=64 * 1024, max_depth=32, max_elements=100_000)
    assert len(parse_json(b"[" * 32 + b"]" * 32, JSON, limits)) == 1
    with pytest.raises(BodyError) as caught:
        parse_json(b"[" * 30_000 + b"]" * 30_000, JSON, limits)
    assert caught.value.reason is Reason.BODY_TOO_COMPLEX


def test_sec_74_a_body_of_another_media_type_is_refused(engine: Engine) -> None:
    assert post(engine, GOOD)[0]
    for headers in ({"content-type": "text/plain"}, {}, {"content-type": "application/json; charset=latin-1"},
                    {"content-type": "application/x-www-form-urlencoded"}):
        assert post(engine, GOOD, headers) == (False, "body_content_type", 415), headers
    assert post(engine, b"user=alice", JSON, "/login") == (False, "body_content_type", 415)


def test_sec_74_a_compressed_body_is_refused_never_guessed(engine: Engine) -> None:
    assert post(engine, GOOD, {**JSON, "content-encoding": "identity"})[0]
    for coding in ("gzip", "br", "deflate", "gzip, identity"):
        assert post(engine, GOOD, {**JSON, "content-encoding": coding}) == (False, "body_encoding", 415), coding
    assert post(engine, b"0123", {"content-encoding": "gzip"}, "/blob", "PUT") == (False, "body_encoding", 415)


def test_the_body_reasons_are_4xx_denials_with_their_own_error() -> None:
    body_reasons = [reason for reason in Reason if reason.value.startswith("body_")]
    assert len(body_reasons) == 7
    for reason in body_reasons:
        outcome = OUTCOMES[reason]
        assert outcome.grpc_code != 0 and 400 <= outcome.http_status < 500 and outcome.challenge is None


def test_a_rule_that_reads_no_body_never_parses_one(engine: Engine) -> None:
    """Lazy: a malformed body on a route whose rules read only headers decides as before."""
    decision = engine.decide(request("GET", "/tenants", headers={**JSON, "x-tenant": "t1"}, body=b"{broken"))
    assert decision.allowed


def test_a_policy_that_reads_no_body_builds_no_body_fields(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nrules:\n"
                    "  - {name: a, effect: allow, anonymous: true, when: 'request.method == \"GET\"'}\n")
    policy = load_policy(str(path))
    assert not policy.reads.body and "content-type" not in (policy.reads.headers or ())
    assert Engine(policy).body_limits is None
    view = View(request(body=b"{}"), "/", "", ANONYMOUS, 0.0)
    assert type(view.variables(("request",))["request"]) is dict  # a plain map, as before


def test_body_fields_are_computed_once_and_only_when_read() -> None:
    built = RequestVars({"method": "POST"}, GOOD, JSON, BodyLimits())
    assert dict.__len__(built) == 1
    assert "body_json" in built and built["body_json"]["amount"] == 5
    assert "form" not in built and built.problem is not None and built.problem.reason is Reason.BODY_CONTENT_TYPE
    assert built["body"] == GOOD and "nothing" not in built


def test_the_form_parser_keeps_blank_values_and_decodes() -> None:
    assert parse_form(b"a=1&b=&c=x+y%21", FORM, BodyLimits()) == {"a": "1", "b": "", "c": "x y!"}
    assert parse_form(b"", FORM, BodyLimits()) == {}


def test_body_limits_are_a_policy_setting_with_bounds(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nbody: {max_bytes: 64KiB}\n")
    assert load_policy(str(path)).body == BodyLimits(max_bytes=65536)
    path.write_text("version: 1\n")
    assert load_policy(str(path)).body == BodyLimits(max_bytes=8192, max_depth=32, max_elements=4096)
    path.write_text("version: 1\nbody:\n  max_bytes: 2MiB\n  max_depth: lots\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(str(path))
    text = str(caught.value)
    assert f"{path}:3: body.max_bytes" in text and f"{path}:4: body.max_depth" in text


def test_body_limits_belong_to_the_root_of_a_policy_directory_and_team_rules_read_bodies(tmp_path: Path) -> None:
    (tmp_path / "teams").mkdir()
    (tmp_path / "policy.yaml").write_text("version: 1\nbody: {max_bytes: 1KiB}\n")
    team = tmp_path / "teams" / "orders.yaml"
    team.write_text("version: 1\nowns: {paths: [/api/orders]}\nrules:\n"
                    "  - {name: big, effect: deny, paths: [/api/orders], when: 'request.body_json.amount > 10'}\n")
    policy = load_policy(str(tmp_path))
    assert policy.reads.body and policy.body.max_bytes == 1024
    decision = Engine(policy).decide(request("POST", "/api/orders", headers=JSON, body=b'{"amount": 50}'))
    assert decision.reason is Reason.DENIED_BY_RULE
    team.write_text(team.read_text() + "body: {max_bytes: 1MiB}\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(str(tmp_path))
    assert f"{team}:5: body: a team file may not define body" in str(caught.value)
