"""Opaque tokens by RFC 7662 introspection (authz.identity.introspected),
decided by the engine against a real local endpoint (testkit/endpoint.py):
what is sent, what each answer means, and the outage cases."""

from __future__ import annotations

import base64
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.config import load_policy
from authz.engine import Engine
from authz.errors import ConfigError, Reason
from authz.identity.introspected import IntrospectedSource
from testkit.endpoint import Endpoint, Seen
from testkit.paths import ACCEPTANCE
from testkit.requests import request
from testkit.tokens import claims, token

SECRET = "s3cret:with/odd chars"


def policy_text(endpoint: str, extra: str = "") -> str:
    return f"""\
version: 1
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [orders-api]
    jwks_file: corp.jwks.json
    algorithms: [RS256]
    roles_claim: groups
  - name: partners
    issuer: https://as.example.com
    audiences: [orders-api]
    roles_claim: roles
    introspection:
      endpoint: {endpoint}
      client_id: authz
      client_secret_file: introspection.secret
      cache: {{max_ttl: 5m, negative_ttl: 10s}}
      timeout: 500ms
{extra}
roles:
  orders-reader:
    - {{methods: [GET], paths: [/api/orders]}}
"""


class AS:
    """An introspection endpoint: ``tokens`` maps a token to its answer."""

    def __init__(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {}

    def __call__(self, seen: Seen) -> tuple[int, Any]:
        if seen.headers.get("authorization") != basic("authz", SECRET):
            return 401, {"error": "invalid_client"}
        return 200, self.tokens.get(seen.form.get("token", ""), {"active": False})


def basic(client: str, secret: str) -> str:
    from urllib.parse import quote

    return "Basic " + base64.b64encode(f"{quote(client, safe='')}:{quote(secret, safe='')}".encode()).decode()


def active(**overrides: Any) -> dict[str, Any]:
    answer = {"active": True, "iss": "https://as.example.com", "aud": "orders-api", "sub": "acme-batch",
              "exp": int(time.time()) + 600, "roles": ["orders-reader"], "scope": "orders:read",
              "token_type": "Bearer", "client_id": "acme"}
    answer.update(overrides)
    return {k: v for k, v in answer.items() if v is not None}


@pytest.fixture
def server() -> Iterator[tuple[Endpoint, AS]]:
    answers = AS()
    with Endpoint(answers) as endpoint:
        yield endpoint, answers


def engine_for(tmp_path: Path, endpoint: Endpoint, extra: str = "") -> Engine:
    shutil.copy(ACCEPTANCE / "corp.jwks.json", tmp_path / "corp.jwks.json")
    (tmp_path / "introspection.secret").write_text(SECRET + "\n")
    (tmp_path / "policy.yaml").write_text(policy_text(endpoint.url + "/introspect", extra))
    return Engine(load_policy(str(tmp_path / "policy.yaml")))


def decide(engine: Engine, bearer: str) -> Any:
    return engine.decide_blocking(request(bearer=bearer), timeout=5)


def test_an_active_opaque_token_is_an_identity_with_roles_and_scopes(tmp_path: Path, server: Any) -> None:
    endpoint, answers = server
    answers.tokens["opaque-1"] = active()
    decision = decide(engine_for(tmp_path, endpoint), "opaque-1")
    assert decision.allowed, decision
    identity = decision.identity
    assert (identity.kind, identity.subject, identity.source) == ("introspected", "acme-batch", "partners")
    assert identity.roles == {"orders-reader"} and identity.scopes == ("orders:read",)
    assert identity.claims["client_id"] == "acme"
    sent = endpoint.seen[0]
    assert sent.method == "POST" and sent.form == {"token": "opaque-1", "token_type_hint": "access_token"}
    assert sent.headers["content-type"].startswith("application/x-www-form-urlencoded")


def test_answers_are_cached_by_token_hash(tmp_path: Path, server: Any) -> None:
    endpoint, answers = server
    answers.tokens["opaque-1"] = active()
    engine = engine_for(tmp_path, endpoint)
    for _ in range(5):
        assert decide(engine, "opaque-1").allowed
    assert endpoint.count() == 1
    source = next(s for s in engine.policy.credential_sources if isinstance(s, IntrospectedSource))
    keys = list(source.opaque.calls._data.keys())
    assert keys and all(b"opaque-1" not in key for key in keys)


@pytest.mark.parametrize(("answer", "reason"), [
    (lambda: {"active": False}, Reason.INACTIVE_TOKEN),
    (lambda: active(aud="someone-else"), Reason.INVALID_TOKEN),
    (lambda: active(aud=["a", "orders-api"]), Reason.ALLOWED),
    (lambda: active(aud=None), Reason.ALLOWED),
    (lambda: active(iss="https://elsewhere.example.com"), Reason.INVALID_TOKEN),
    (lambda: active(exp=int(time.time()) - 5), Reason.EXPIRED_TOKEN),
    (lambda: active(exp="soon"), Reason.INVALID_TOKEN),
    (lambda: active(nbf=int(time.time()) + 600), Reason.INVALID_TOKEN),
    (lambda: active(token_type="refresh_token"), Reason.INVALID_TOKEN),
    (lambda: active(token_type="access_token"), Reason.ALLOWED),
    (lambda: active(roles=[]), Reason.NO_PERMISSION),
])
def test_each_answer_is_decided(
    tmp_path: Path, server: Any, answer: Callable[[], dict[str, Any]], reason: Reason,
) -> None:
    # Built when the test runs, not when it is collected: a suite longer than
    # the answers' ten minutes must not see them expire.
    endpoint, answers = server
    answers.tokens["opaque-1"] = answer()
    decision = decide(engine_for(tmp_path, endpoint), "opaque-1")
    assert decision.reason is reason, decision


def test_an_unknown_token_is_inactive_and_cached_briefly(tmp_path: Path, server: Any) -> None:
    endpoint, _answers = server
    engine = engine_for(tmp_path, endpoint)
    assert decide(engine, "never-issued").reason is Reason.INACTIVE_TOKEN
    assert decide(engine, "never-issued").reason is Reason.INACTIVE_TOKEN
    assert endpoint.count() == 1


@pytest.mark.parametrize("mode", ["500", "garbage", "huge", "hang", "drop"])
def test_a_new_token_fails_closed_when_the_endpoint_fails(tmp_path: Path, server: Any, mode: str) -> None:
    endpoint, answers = server
    answers.tokens["opaque-1"] = active()
    endpoint.mode = mode
    started = time.monotonic()
    decision = decide(engine_for(tmp_path, endpoint), "opaque-1")
    assert decision.reason is Reason.INTROSPECTION_UNAVAILABLE and not decision.allowed
    assert time.monotonic() - started < 5  # within the call's timeout (500ms), not the Check's


def test_wrong_client_credentials_fail_closed(tmp_path: Path, server: Any) -> None:
    endpoint, answers = server
    answers.tokens["opaque-1"] = answers.tokens["opaque-2"] = active()
    engine = engine_for(tmp_path, endpoint)
    (tmp_path / "introspection.secret").write_text("wrong")
    wrong = Engine(load_policy(str(tmp_path / "policy.yaml")))
    assert decide(wrong, "opaque-1").reason is Reason.INTROSPECTION_UNAVAILABLE
    assert decide(engine, "opaque-2").allowed


def test_the_secret_file_is_watched_by_the_reload(tmp_path: Path, server: Any) -> None:
    endpoint, _answers = server
    engine = engine_for(tmp_path, endpoint)
    assert str(tmp_path / "introspection.secret") in engine.policy.files


def test_jwt_issuer_and_introspection_share_the_header(tmp_path: Path, server: Any) -> None:
    endpoint, answers = server
    answers.tokens["opaque-1"] = active()
    engine = engine_for(tmp_path, endpoint)
    jwt = decide(engine, token(claims()))
    assert jwt.allowed and jwt.identity.kind == "jwt" and jwt.identity.source == "corp"
    assert decide(engine, "opaque-1").identity.kind == "introspected"
    assert endpoint.count() == 1  # the JWT was never sent


def test_sec_80_a_strangers_jwt_is_never_sent_to_introspection(tmp_path: Path, server: Any) -> None:
    endpoint, _answers = server
    engine = engine_for(tmp_path, endpoint)
    stranger = token(claims(iss="https://evil.example.com"))
    assert decide(engine, stranger).reason is Reason.UNKNOWN_ISSUER
    no_iss = token(claims(iss=None))
    assert decide(engine, no_iss).reason is Reason.INVALID_TOKEN
    assert endpoint.count() == 0


def test_sec_80_without_a_jwt_issuer_on_the_header_a_strangers_jwt_is_refused_too(tmp_path: Path,
                                                                                  server: Any) -> None:
    endpoint, _answers = server
    engine = engine_for(tmp_path, endpoint)
    text = (tmp_path / "policy.yaml").read_text().replace("    roles_claim: groups\n",
                                                         "    roles_claim: groups\n    from: [{header: x-corp}]\n")
    (tmp_path / "policy.yaml").write_text(text)
    engine = Engine(load_policy(str(tmp_path / "policy.yaml")))
    assert decide(engine, token(claims(iss="https://evil.example.com"))).reason is Reason.UNKNOWN_ISSUER
    assert decide(engine, token(claims())).reason is Reason.INVALID_TOKEN  # corp's, but not read here
    assert endpoint.count() == 0


def test_sec_80_a_jwt_naming_the_introspection_issuer_is_introspected(tmp_path: Path, server: Any) -> None:
    endpoint, answers = server
    own = token(claims(iss="https://as.example.com"))
    answers.tokens[own] = active()
    assert decide(engine_for(tmp_path, endpoint), own).allowed
    assert endpoint.count() == 1


def test_sec_81_a_known_token_survives_a_short_outage_a_new_one_does_not(tmp_path: Path, server: Any) -> None:
    endpoint, answers = server
    answers.tokens["known"] = active()
    answers.tokens["new"] = active()
    engine = engine_for(tmp_path, endpoint, extra="")
    assert decide(engine, "known").allowed
    source = next(s for s in engine.policy.credential_sources if isinstance(s, IntrospectedSource))
    calls = source.opaque.calls
    calls._monotonic = lambda: time.monotonic() + 301  # past max_ttl (5m): asked again
    endpoint.mode = "500"
    assert decide(engine, "known").allowed  # the endpoint fails: its active answer stands, within exp
    assert calls.stats.stale == 1
    assert decide(engine, "new").reason is Reason.INTROSPECTION_UNAVAILABLE


@pytest.mark.parametrize(("extra", "message"), [
    ("    introspection: {endpoint: http://as.example.com/i, client_id: a, client_secret_file: s}",
     "endpoint must be an https URL"),
])
def test_bad_introspection_config_is_refused_with_file_line(tmp_path: Path, extra: str, message: str) -> None:
    (tmp_path / "policy.yaml").write_text(f"""\
version: 1
issuers:
  - name: p
    issuer: https://as.example.com
    audiences: [a]
{extra}
""")
    with pytest.raises(ConfigError, match=message) as error:
        load_policy(str(tmp_path / "policy.yaml"))
    assert str(error.value).startswith(str(tmp_path / "policy.yaml") + ":")


def test_bad_secret_files_and_two_opaque_issuers_on_one_header_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.secret").write_text("\n")
    (tmp_path / "good.secret").write_text("x\n")
    (tmp_path / "policy.yaml").write_text("""\
version: 1
issuers:
  - name: p
    issuer: https://as.example.com
    audiences: [a]
    introspection: {endpoint: https://as.example.com/i, client_id: a, client_secret_file: missing.secret}
  - name: q
    issuer: https://as2.example.com
    audiences: [a]
    introspection: {endpoint: https://as2.example.com/i, client_id: a, client_secret_file: empty.secret}
  - name: s
    issuer: https://as3.example.com
    audiences: [a]
    introspection: {endpoint: https://as3.example.com/i, client_id: a, client_secret_file: good.secret}
  - name: t
    issuer: https://as4.example.com
    audiences: [a]
    jwks_uri: https://as4.example.com/jwks
    introspection: {endpoint: https://as4.example.com/i, client_id: a, client_secret_file: good.secret}
  - name: u
    issuer: https://as5.example.com
    audiences: [a]
    introspection: {endpoint: https://as5.example.com/i, client_id: a, client_secret_file: good.secret}
""")
    with pytest.raises(ConfigError) as error:
        load_policy(str(tmp_path / "policy.yaml"))
    text = str(error.value)
    for line, message in ((6, "cannot read secret file 'missing.secret'"),
                          (10, "secret file 'empty.secret' must hold one non-empty line"),
                          (18, "an introspection issuer has no key set: its JWTs are introspected too"),
                          (23, "issuers 's' and 'u' both introspect tokens from authorization")):
        assert re.search(rf"policy.yaml:{line}: [^\n]*{re.escape(message)}", text), (line, text)


def test_introspection_needs_one_client_authentication(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("""\
version: 1
issuers:
  - name: p
    issuer: https://as.example.com
    audiences: [a]
    introspection: {endpoint: https://as.example.com/i, client_id: a, client_secret_file: s,
                    private_key_jwt: {key_file: k.pem}}
""")
    with pytest.raises(ConfigError, match=r"policy.yaml:6: .*give one of 'client_secret_file' or 'private_key_jwt'"):
        load_policy(str(tmp_path / "policy.yaml"))


def test_sec_82_tokens_and_secrets_reach_no_metric_label_or_log(tmp_path: Path, server: Any,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from authz.server import metrics
    from authz.server.telemetry import Telemetry

    endpoint, answers = server
    marker = "opaque-zq" + "7" * 12
    answers.tokens[marker] = active()
    engine = engine_for(tmp_path, endpoint)
    assert decide(engine, marker).allowed
    endpoint.mode = "500"
    assert decide(engine, marker + "new").reason is Reason.INTROSPECTION_UNAVAILABLE
    telemetry = Telemetry(sources=lambda: {"outside": {c.name: c for c in engine.policy.outside_calls}})
    text = metrics.render(metrics.merge([telemetry.snapshot()])).decode()
    assert 'authz_outside_calls_total{kind="introspection",name="partners",outcome="failure"} 1.0' in text
    assert 'authz_outside_answers_total{kind="introspection",name="partners",outcome="miss"}' in text
    logged = caplog.text
    assert "partners: call failed: introspection answered HTTP 500" in logged
    for secret in (marker, SECRET, basic("authz", SECRET)):
        assert secret not in text and secret not in logged
    assert endpoint.url not in text


def test_a_reload_keeps_the_answers_while_their_meaning_stays(tmp_path: Path, server: Any) -> None:
    endpoint, answers = server
    answers.tokens["opaque-1"] = active()
    engine = engine_for(tmp_path, endpoint)
    assert decide(engine, "opaque-1").allowed
    (tmp_path / "introspection.secret").write_text("rotated\n")  # a secret rotated: the answers stay
    rotated = Engine(load_policy(str(tmp_path / "policy.yaml")))
    assert rotated.policy.outside_calls[0] is engine.policy.outside_calls[0]
    (tmp_path / "introspection.secret").write_text(SECRET)
    (tmp_path / "policy.yaml").write_text((tmp_path / "policy.yaml").read_text().replace(
        "audiences: [orders-api]\n    roles_claim: roles", "audiences: [billing-api]\n    roles_claim: roles"))
    changed = Engine(load_policy(str(tmp_path / "policy.yaml")))
    assert changed.policy.outside_calls[0] is not engine.policy.outside_calls[0]
    assert decide(changed, "opaque-1").reason is Reason.INVALID_TOKEN  # judged again with the new audiences
