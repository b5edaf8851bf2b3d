"""The decision pipeline (authz.engine.Engine.decide) with plain requests:
real policies written to tmp_path, real signed tokens, a fixed clock."""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from authz.config import load_policy
from authz.decision import Decision
from authz.engine import Engine
from authz.errors import Reason
from testkit import tokens
from testkit.paths import ACCEPTANCE, EXAMPLES
from testkit.requests import request

NOW = 1_800_000_000.0
ISSUER = "https://idp.example.com"
API_KEY = "ak_test_0123456789abcdef"
BILLING = "spiffe://cluster.local/ns/shop/sa/billing"


class FixedClock:
    def time(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return 1000.0


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


ISSUER_BLOCK = f"""\
issuers:
  - name: corp
    issuer: {ISSUER}
    audiences: [orders-api]
    jwks_file: corp.jwks.json
    algorithms: [RS256]
    from:
      - {{header: authorization, prefix: "Bearer "}}
      - {{cookie: access_token}}
"""

# A policy shaped like the contract's, with the knobs the tests turn.
POLICY = f"""\
version: 1
{ISSUER_BLOCK}{{issuer_extra}}
api_keys:
  keys:
    - {{subject: partner-acme, sha256: "{_sha256(API_KEY)}", roles: [orders-reader]}}
    - {{subject: monitor, sha256: "{_sha256('ak_monitor')}", roles: []}}
peers:
  "{BILLING}": [orders-reader]
  "spiffe://cluster.local/ns/ops/sa/*": [orders-admin]
roles:
  orders-reader:
    - {{methods: [GET, HEAD], paths: [/api/orders, /api/orders/*]}}
  orders-admin:
    - {{paths: ["/api/orders/**"]}}
rules:
  - name: public-health
    effect: allow
    paths: [/healthz]
    anonymous: true
  - name: partner-feed
    effect: allow
    methods: [GET]
    paths: [/api/feed]
  - name: tenant-isolation
    effect: deny
    paths: ["/api/orders/**"]
    when: 'identity.kind == "jwt" && request.headers["x-tenant"] != identity.claims.tenant'
  - name: blocked-networks
    effect: deny
    source_ips: [203.0.113.0/24]
response:
  headers:
    x-user-id: identity.subject
  remove: [authorization]
"""


def write_policy(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    keys = tokens.jwks(tokens.public_jwk(tokens.contract_key(), kid=tokens.ACCEPTANCE_KID))
    (directory / "corp.jwks.json").write_text(json.dumps(keys))
    policy = directory / "policy.yaml"
    policy.write_text(text)
    return policy


def policy_text(issuer_extra: str = "") -> str:
    """POLICY with more fields for the issuer (YAML lines at its indentation)."""
    return POLICY.replace("{issuer_extra}", textwrap.indent(textwrap.dedent(issuer_extra), "    "))


def make_engine(directory: Path, text: str | None = None, *, issuer_extra: str = "") -> Engine:
    if text is None:
        text = policy_text(issuer_extra)
    return Engine(load_policy(str(write_policy(directory, text))), clock=FixedClock())


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(tmp_path)


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims at NOW; an override of None deletes the claim."""
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": "orders-api", "sub": "alice", "iat": int(NOW) - 10, "exp": int(NOW) + 600,
        "tenant": "t1",
    }
    for name, value in overrides.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def mint(**overrides: Any) -> str:
    return tokens.token(claims(**overrides))


def decide(engine: Engine, method: str = "GET", path: str = "/api/orders", **kwargs: Any) -> Decision:
    return engine.decide(request(method, path, **kwargs))


def assert_decision(decision: Decision, status: int, reason: Reason, rule: str | None = None) -> None:
    assert (decision.status, decision.reason, decision.rule) == (status, reason, rule), decision.detail
    assert decision.allowed is (status == 200)


# -- anonymous callers and allow rules ---------------------------------------------


def test_anonymous_allow_rule(engine: Engine) -> None:
    decision = decide(engine, "GET", "/healthz")
    assert_decision(decision, 200, Reason.ALLOWED, "public-health")
    assert decision.identity.kind == "anonymous"
    # Headers computed from the identity have no value for an anonymous
    # caller: removed, so that a client-sent copy never passes.
    assert decision.headers == ()
    # and its underscore twin, and authz's metadata keys (the HTTP door answers them as headers)
    assert set(decision.remove) == {"authorization", "x-user-id", "x_user_id", "reason", "rule", "issuer"}


def test_anonymous_caller_without_permission_gets_401_with_challenge(engine: Engine) -> None:
    decision = decide(engine, "GET", "/api/orders")
    assert_decision(decision, 401, Reason.MISSING_CREDENTIAL)
    assert decision.challenge == 'Bearer realm="authz"'


def test_authenticated_caller_without_permission_gets_403(engine: Engine) -> None:
    decision = decide(engine, "GET", "/api/admin", bearer=mint())
    assert_decision(decision, 403, Reason.NO_PERMISSION)
    assert decision.challenge is None
    # The same for an API key and for a peer.
    assert_decision(decide(engine, "GET", "/api/admin", headers={"x-api-key": API_KEY}), 403, Reason.NO_PERMISSION)
    assert_decision(decide(engine, "GET", "/api/admin", principal=BILLING), 403, Reason.NO_PERMISSION)


def test_allow_rule_without_anonymous_needs_an_authenticated_caller(engine: Engine) -> None:
    assert_decision(decide(engine, "GET", "/api/feed"), 401, Reason.MISSING_CREDENTIAL)
    assert_decision(decide(engine, "GET", "/api/feed", bearer=mint()), 200, Reason.ALLOWED, "partner-feed")
    # Any authenticated kind will do: an API key without roles, a peer.
    assert_decision(decide(engine, "GET", "/api/feed", headers={"x-api-key": "ak_monitor"}), 200, Reason.ALLOWED,
                    "partner-feed")
    assert_decision(decide(engine, "GET", "/api/feed", principal=BILLING), 200, Reason.ALLOWED, "partner-feed")
    # The rule's other fields still apply.
    assert_decision(decide(engine, "POST", "/api/feed", bearer=mint()), 403, Reason.NO_PERMISSION)


# -- credentials ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("credential", "reason"),
    [
        ({"bearer": "not-a-token"}, Reason.INVALID_TOKEN),
        ({"bearer": tokens.token(claims(exp=int(NOW) - 3600))}, Reason.EXPIRED_TOKEN),
        ({"bearer": tokens.token(claims(aud="other-api"))}, Reason.INVALID_TOKEN),
        ({"bearer": tokens.token(claims(iss="https://evil.example.com"))}, Reason.UNKNOWN_ISSUER),
        ({"bearer": tokens.token(claims(), key=tokens.rsa_key("other"))}, Reason.INVALID_TOKEN),
        ({"headers": {"authorization": "Bearer "}}, Reason.INVALID_TOKEN),
        ({"headers": {"cookie": "access_token=junk"}}, Reason.INVALID_TOKEN),
        ({"headers": {"x-api-key": "ak_wrong"}}, Reason.INVALID_API_KEY),
    ],
    ids=["garbage", "expired", "wrong-audience", "unknown-issuer", "wrong-key", "empty-bearer", "bad-cookie",
         "bad-api-key"],
)
def test_credential_failure_is_401_even_where_an_anonymous_rule_allows(
    engine: Engine, credential: dict[str, Any], reason: Reason
) -> None:
    decision = decide(engine, "GET", "/healthz", **credential)
    assert_decision(decision, 401, reason)
    assert decision.challenge is not None and 'error="invalid_token"' in decision.challenge
    # Time and key sets change these outcomes: never cached.
    assert decision.cacheable is False


def test_the_first_credential_present_decides(engine: Engine) -> None:
    # A bad token is not rescued by a good API key ...
    decision = decide(engine, "GET", "/api/orders", bearer="bad", headers={"x-api-key": API_KEY})
    assert_decision(decision, 401, Reason.INVALID_TOKEN)
    # ... and a good token is not spoiled by a bad API key.
    decision = decide(engine, "GET", "/api/orders", bearer=mint(roles=["orders-reader"]),
                      headers={"x-api-key": "ak_wrong", "x-tenant": "t1"})
    assert decision.allowed and decision.identity.kind == "jwt"


def test_token_in_a_cookie(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, issuer_extra="roles_claim: groups\n")
    token = mint(groups=["orders-reader"])
    decision = decide(engine, headers={"cookie": f"theme=dark; access_token={token}", "x-tenant": "t1"})
    assert_decision(decision, 200, Reason.ALLOWED, "orders-reader")


def test_api_key_identity(engine: Engine) -> None:
    decision = decide(engine, "GET", "/api/orders/7", headers={"x-api-key": API_KEY})
    assert_decision(decision, 200, Reason.ALLOWED, "orders-reader")
    assert (decision.identity.kind, decision.identity.subject) == ("api_key", "partner-acme")
    # tenant-isolation reads identity.claims only for JWTs.
    assert dict(decision.headers) == {"x-user-id": "partner-acme"}


# -- deny rules ------------------------------------------------------------------


def test_deny_rule_wins_over_role_permissions(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, issuer_extra="roles_claim: groups\n")
    admin = mint(groups=["orders-admin"])
    assert_decision(decide(engine, "DELETE", "/api/orders/7", bearer=admin, headers={"x-tenant": "t1"}),
                    200, Reason.ALLOWED, "orders-admin")
    assert_decision(decide(engine, "DELETE", "/api/orders/7", bearer=admin, headers={"x-tenant": "t2"}),
                    403, Reason.DENIED_BY_RULE, "tenant-isolation")
    assert_decision(decide(engine, "DELETE", "/api/orders/7", bearer=admin, headers={"x-tenant": "t1"},
                           source="203.0.113.9"),
                    403, Reason.DENIED_BY_RULE, "blocked-networks")


def test_deny_rule_wins_over_anonymous_allow_rule(engine: Engine) -> None:
    assert_decision(decide(engine, "GET", "/healthz", source="203.0.113.9"), 403, Reason.DENIED_BY_RULE,
                    "blocked-networks")
    # Deny rules match anonymous callers too: 403, not 401.
    assert_decision(decide(engine, "GET", "/api/orders", source="203.0.113.9"), 403, Reason.DENIED_BY_RULE,
                    "blocked-networks")


def test_ipv4_mapped_source_address(engine: Engine) -> None:
    assert_decision(decide(engine, "GET", "/healthz", source="::ffff:203.0.113.9"), 403, Reason.DENIED_BY_RULE,
                    "blocked-networks")
    assert_decision(decide(engine, "GET", "/healthz", source="::ffff:198.51.100.7"), 200, Reason.ALLOWED,
                    "public-health")


def test_source_address_that_is_not_an_ip_fails_closed(engine: Engine) -> None:
    # A deny rule on source_ips cannot tell: it counts as matched.
    assert_decision(decide(engine, "GET", "/healthz", source=""), 403, Reason.DENIED_BY_RULE, "blocked-networks")


def test_deny_rule_whose_when_fails_counts_as_matched(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, issuer_extra="roles_claim: groups\n")
    reader = mint(groups=["orders-reader"])
    # No x-tenant header: the condition cannot be evaluated.
    assert_decision(decide(engine, "GET", "/api/orders", bearer=reader), 403, Reason.DENIED_BY_RULE, "tenant-isolation")
    # No tenant claim: the same.
    assert_decision(decide(engine, "GET", "/api/orders", bearer=mint(groups=["orders-reader"], tenant=None),
                           headers={"x-tenant": "t1"}), 403, Reason.DENIED_BY_RULE, "tenant-isolation")
    # A NUL hidden in the claim cannot be compared: the same (never "t1" == "t1\0x").
    assert_decision(decide(engine, "GET", "/api/orders", bearer=mint(groups=["orders-reader"], tenant="t1\x00x"),
                           headers={"x-tenant": "t1"}), 403, Reason.DENIED_BY_RULE, "tenant-isolation")


def test_allow_rule_whose_when_fails_counts_as_not_matched(tmp_path: Path) -> None:
    text = policy_text().replace("rules:\n", textwrap.dedent("""\
        rules:
          - name: department-reports
            effect: allow
            paths: [/api/reports]
            when: 'identity.claims.department == "sales"'
        """), 1)
    engine = make_engine(tmp_path, text)
    assert_decision(decide(engine, "GET", "/api/reports", bearer=mint(department="sales")), 200, Reason.ALLOWED,
                    "department-reports")
    assert_decision(decide(engine, "GET", "/api/reports", bearer=mint(department="hr")), 403, Reason.NO_PERMISSION)
    assert_decision(decide(engine, "GET", "/api/reports", bearer=mint()), 403, Reason.NO_PERMISSION)
    assert_decision(decide(engine, "GET", "/api/reports", bearer=mint(department=["sales"])), 403, Reason.NO_PERMISSION)


def test_dry_run_deny_rule_only_records(tmp_path: Path) -> None:
    text = policy_text().replace(
        "  - name: blocked-networks\n    effect: deny\n",
        "  - name: blocked-networks\n    effect: deny\n    dry_run: true\n",
    )
    engine = make_engine(tmp_path, text)
    decision = decide(engine, "GET", "/healthz", source="203.0.113.9")
    assert_decision(decision, 200, Reason.ALLOWED, "public-health")
    assert decision.dry_run_denials == ("blocked-networks",)


# -- identities and roles -----------------------------------------------------------


def test_peer_identity(engine: Engine) -> None:
    decision = decide(engine, "GET", "/api/orders/7", principal=BILLING)
    assert_decision(decision, 200, Reason.ALLOWED, "orders-reader")
    assert (decision.identity.kind, decision.identity.subject) == ("peer", BILLING)
    assert decision.identity.roles == frozenset({"orders-reader"})
    # A principal that peers does not list is anonymous.
    assert_decision(decide(engine, "GET", "/api/orders", principal="spiffe://cluster.local/ns/shop/sa/web"),
                    401, Reason.MISSING_CREDENTIAL)
    # Globs: '*' is one path segment.
    ops = decide(engine, "DELETE", "/api/orders/7", principal="spiffe://cluster.local/ns/ops/sa/cleanup")
    assert_decision(ops, 200, Reason.ALLOWED, "orders-admin")
    assert_decision(decide(engine, "DELETE", "/api/orders/7", principal="spiffe://cluster.local/ns/ops/sa/a/b"),
                    401, Reason.MISSING_CREDENTIAL)


def test_peer_roles_are_added_to_a_jwt_identity(engine: Engine) -> None:
    # The token carries no roles (default roles_claim "roles" is absent).
    token = mint()
    assert_decision(decide(engine, "GET", "/api/orders", bearer=token, headers={"x-tenant": "t1"}), 403,
                    Reason.NO_PERMISSION)
    decision = decide(engine, "GET", "/api/orders", bearer=token, headers={"x-tenant": "t1"}, principal=BILLING)
    assert_decision(decision, 200, Reason.ALLOWED, "orders-reader")
    assert (decision.identity.kind, decision.identity.subject) == ("jwt", "alice")
    assert decision.identity.roles == frozenset({"orders-reader"})
    # The JWT's own rules still apply to it: tenant-isolation denies.
    assert_decision(decide(engine, "GET", "/api/orders", bearer=token, headers={"x-tenant": "t2"}, principal=BILLING),
                    403, Reason.DENIED_BY_RULE, "tenant-isolation")


def test_peer_roles_are_added_to_an_api_key_identity(engine: Engine) -> None:
    decision = decide(engine, "DELETE", "/api/orders/7", headers={"x-api-key": "ak_monitor"},
                      principal="spiffe://cluster.local/ns/ops/sa/cleanup")
    assert_decision(decision, 200, Reason.ALLOWED, "orders-admin")
    assert decision.identity.kind == "api_key"


@pytest.mark.parametrize(
    ("roles_claim", "extra_claims", "roles"),
    [
        ("groups", {"groups": ["orders-reader", "staff"]}, {"orders-reader", "staff"}),
        ("groups", {"groups": "orders-reader staff"}, {"orders-reader", "staff"}),
        # Keycloak realm roles and client roles (a client id with a dash).
        ("realm_access.roles", {"realm_access": {"roles": ["orders-reader"]}}, {"orders-reader"}),
        ("resource_access.orders-api.roles", {"resource_access": {"orders-api": {"roles": ["orders-reader"]}}},
         {"orders-reader"}),
        # Auth0 namespaced claims: the claim name itself holds dots.
        ("https://example.com/roles", {"https://example.com/roles": ["orders-reader"]}, {"orders-reader"}),
        ("https://example.com/authz.roles", {"https://example.com/authz": {"roles": ["orders-reader"]}},
         {"orders-reader"}),
        # Anything else carries no roles.
        ("groups", {"groups": 7}, set()),
        ("groups", {"groups": [7, {"a": 1}, "orders-reader"]}, {"orders-reader"}),
        ("groups", {}, set()),
        ("realm_access.roles", {"realm_access": "orders-reader"}, set()),
        ("realm_access.roles", {"realm_access": {"roles": {"orders-reader": True}}}, set()),
    ],
)
def test_roles_claim(tmp_path: Path, roles_claim: str, extra_claims: dict[str, Any], roles: set[str]) -> None:
    engine = make_engine(tmp_path, issuer_extra=f"roles_claim: {json.dumps(roles_claim)}\n")
    decision = decide(engine, "GET", "/api/orders", bearer=mint(**extra_claims), headers={"x-tenant": "t1"})
    assert decision.identity.roles == frozenset(roles)
    if "orders-reader" in roles:
        assert_decision(decision, 200, Reason.ALLOWED, "orders-reader")
    else:
        assert_decision(decision, 403, Reason.NO_PERMISSION)


@pytest.mark.parametrize(
    ("scopes_claim", "extra_claims", "scopes"),
    [
        ("scope", {"scope": "orders:read orders:write"}, ("orders:read", "orders:write")),
        ("scope", {"scope": "  orders:write   "}, ("orders:write",)),
        ("scp", {"scp": ["orders:read", "orders:write"]}, ("orders:read", "orders:write")),
        ("scp", {"scp": "orders:write"}, ("orders:write",)),
        ("permissions", {"permissions": ["orders:write"], "scope": "openid"}, ("orders:write",)),
        ("scope", {"scp": ["orders:write"]}, ()),
        ("scope", {"scope": 1}, ()),
    ],
)
def test_scopes_claim(tmp_path: Path, scopes_claim: str, extra_claims: dict[str, Any], scopes: tuple[str, ...]) -> None:
    text = policy_text(f"scopes_claim: {scopes_claim}\n").replace("rules:\n", textwrap.dedent("""\
        rules:
          - name: writers-by-scope
            effect: allow
            methods: [POST]
            paths: [/api/orders]
            when: '"orders:write" in identity.scopes'
        """), 1)
    engine = make_engine(tmp_path, text)
    decision = decide(engine, "POST", "/api/orders", bearer=mint(**extra_claims), headers={"x-tenant": "t1"})
    assert decision.identity.scopes == scopes
    if "orders:write" in scopes:
        assert_decision(decision, 200, Reason.ALLOWED, "writers-by-scope")
    else:
        assert_decision(decision, 403, Reason.NO_PERMISSION)


# -- request shape -------------------------------------------------------------------


@pytest.mark.parametrize("path",
                         ["/api/orders%2F7", "/healthz%00", "/api\\orders", "/healthz/..;/api/orders", "/caf\u00e9"])
def test_invalid_path_is_403_whatever_the_credential(engine: Engine, path: str) -> None:
    assert_decision(decide(engine, "GET", path), 403, Reason.INVALID_PATH)
    assert_decision(decide(engine, "GET", path, bearer=mint(), headers={"x-tenant": "t1"}), 403, Reason.INVALID_PATH)


def test_paths_are_matched_normalized_and_without_query(engine: Engine) -> None:
    assert_decision(decide(engine, "GET", "/healthz?verbose=1#x"), 200, Reason.ALLOWED, "public-health")
    assert_decision(decide(engine, "GET", "/api/orders/../../healthz"), 200, Reason.ALLOWED, "public-health")
    assert_decision(decide(engine, "GET", "//healthz"), 200, Reason.ALLOWED, "public-health")
    assert_decision(decide(engine, "GET", "/%68ealthz"), 200, Reason.ALLOWED, "public-health")
    # Dot segments cannot walk out of a deny rule's reach.
    assert_decision(decide(engine, "GET", "/healthz/../api/orders"), 401, Reason.MISSING_CREDENTIAL)


def test_a_path_over_the_limit_is_invalid_whatever_the_credential(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, policy_text() + "paths:\n  max_length: 1024\n")
    near = "/healthz" + "/" * (1024 - len("/healthz"))  # 1024 characters: merged to /healthz/
    assert decide(engine, "GET", "/healthz" + "?q=" + "x" * 5000).allowed  # the query does not count
    assert_decision(decide(engine, "GET", near), 401, Reason.MISSING_CREDENTIAL)
    assert_decision(decide(engine, "GET", near + "/"), 403, Reason.INVALID_PATH)
    long = "/api/orders/" + "7" * 2000
    assert_decision(decide(engine, "GET", long, bearer=mint(), headers={"x-tenant": "t1"}), 403, Reason.INVALID_PATH)


MATRIX_POLICY = """\
version: 1
rules:
  - {name: no-admin, effect: deny, paths: ["/api/admin/**"]}
  - {name: no-secret, effect: deny, when: 'request.path.startsWith("/api/secret")'}
  - {name: open, effect: allow, anonymous: true, paths: ["/api/**"]}
"""


@pytest.mark.parametrize("path", ["/api/admin;x/users", "/api;x/admin/users", "/api/admin/users;x", "/;x/api/admin",
                                  "/api/public;x/../admin", "/api/other;v=1", "/api/admin%3Bx/users"])
def test_path_parameters_are_invalid_by_default(tmp_path: Path, path: str) -> None:
    engine = make_engine(tmp_path, MATRIX_POLICY)
    assert_decision(decide(engine, "GET", "/api/other"), 200, Reason.ALLOWED, "open")  # the control
    assert_decision(decide(engine, "GET", path), 403, Reason.INVALID_PATH)
    assert_decision(decide(engine, "GET", path, bearer=mint()), 403, Reason.INVALID_PATH)


def test_with_matrix_parameters_stripped_every_rule_sees_the_path_without_them(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, MATRIX_POLICY + "paths:\n  matrix_parameters: strip\n")
    for path in ("/api/admin;x/users", "/api;x/admin/users", "/api/admin;x", "/;x/api/admin/users",
                 "/api/public;x/../admin/users", "/api/admin/users;jsessionid=1"):
        assert_decision(decide(engine, "GET", path), 403, Reason.DENIED_BY_RULE, "no-admin")
    # CEL's request.path is the stripped path too.
    assert_decision(decide(engine, "GET", "/api/sec;x/../secret;y/z"), 403, Reason.DENIED_BY_RULE, "no-secret")
    # Allow rules match on the stripped path as well.
    assert_decision(decide(engine, "GET", "/api/other;v=1"), 200, Reason.ALLOWED, "open")
    assert_decision(decide(engine, "GET", "/other;x/../api/x"), 200, Reason.ALLOWED, "open")
    assert_decision(decide(engine, "GET", "/api;x/../other"), 401, Reason.MISSING_CREDENTIAL)
    # An encoded ';' and '..;' stay refused.
    assert_decision(decide(engine, "GET", "/api/admin%3Bx/users"), 403, Reason.INVALID_PATH)
    assert_decision(decide(engine, "GET", "/api/public/..;/admin"), 403, Reason.INVALID_PATH)


def test_case_matters_unless_the_policy_says_the_upstream_ignores_it(tmp_path: Path) -> None:
    sensitive = make_engine(tmp_path / "sensitive", MATRIX_POLICY)
    # As written: /api/ADMIN is another path, which the allow rule covers.
    assert_decision(decide(sensitive, "GET", "/api/ADMIN/users"), 200, Reason.ALLOWED, "open")
    assert_decision(decide(sensitive, "GET", "/API/admin/users"), 401, Reason.MISSING_CREDENTIAL)
    folded = make_engine(tmp_path / "folded", MATRIX_POLICY.replace('"/api/admin/**"', '"/API/Admin/**"')
                         + "paths:\n  case_sensitive: false\n")
    for path in ("/api/ADMIN/users", "/API/admin/users", "/Api/Admin", "/api/admin/"):
        assert_decision(decide(folded, "GET", path), 403, Reason.DENIED_BY_RULE, "no-admin")
    # CEL sees the lower-cased path too.
    assert_decision(decide(folded, "GET", "/API/Secret"), 403, Reason.DENIED_BY_RULE, "no-secret")
    assert_decision(decide(folded, "GET", "/API/Other"), 200, Reason.ALLOWED, "open")


def test_hosts_and_methods(tmp_path: Path) -> None:
    text = policy_text().replace("rules:\n", textwrap.dedent("""\
        rules:
          - name: docs
            effect: allow
            anonymous: true
            hosts: ["docs.example.com", "*.docs.example.com:8443"]
            methods: [get]
        """), 1)
    engine = make_engine(tmp_path, text)
    assert_decision(decide(engine, "GET", "/x", host="DOCS.example.com:443"), 200, Reason.ALLOWED, "docs")
    assert_decision(decide(engine, "GET", "/x", host="eu.docs.example.com:8443"), 200, Reason.ALLOWED, "docs")
    assert_decision(decide(engine, "GET", "/x", host="eu.docs.example.com"), 401, Reason.MISSING_CREDENTIAL)
    assert_decision(decide(engine, "POST", "/x", host="docs.example.com"), 401, Reason.MISSING_CREDENTIAL)
    assert_decision(decide(engine, "GET", "/x", host="docs.example.com.evil.org"), 401, Reason.MISSING_CREDENTIAL)


# -- what the upstream gets -----------------------------------------------------------


def test_header_values_are_percent_encoded_never_raw(tmp_path: Path) -> None:
    text = policy_text().replace(
        "    x-user-id: identity.subject\n",
        "    x-user-id: identity.subject\n    x-user-name: identity.claims.name\n",
    )
    engine = make_engine(tmp_path, text)
    token = mint(sub="alice\r\nx-injected: 1", name="Zo\u00eb 100% \u2603\t\x7f")
    decision = decide(engine, "GET", "/api/feed", bearer=token)
    assert decision.allowed
    headers = dict(decision.headers)
    assert headers == {
        "x-user-id": "alice%0D%0Ax-injected: 1",
        "x-user-name": "Zo%C3%AB 100%25 %E2%98%83%09%7F",
    }
    for value in headers.values():
        assert re.fullmatch(r"[\x20-\x7e]*", value)


def test_header_with_a_nul_is_removed_not_cut(engine: Engine) -> None:
    decision = decide(engine, "GET", "/api/feed", bearer=mint(sub="admin\x00alice"))
    assert decision.allowed
    assert "x-user-id" not in dict(decision.headers)
    assert "x-user-id" in decision.remove


def test_header_whose_expression_fails_is_removed(tmp_path: Path) -> None:
    text = policy_text().replace(
        "    x-user-id: identity.subject\n",
        "    x-user-id: identity.subject\n    x-tenant-id: identity.claims.tenant\n    x-groups: "
        "identity.claims.groups\n",
    )
    engine = make_engine(tmp_path, text)
    # The client sends its own copies; the decision removes them.
    spoofed = {"x-tenant-id": "t-admin", "x-groups": "admins", "x-user-id": "root"}
    decision = decide(engine, "GET", "/api/feed", bearer=mint(tenant=None, groups=["a"]), headers=spoofed)
    assert decision.allowed
    assert dict(decision.headers) == {"x-user-id": "alice"}
    assert {"x-tenant-id", "x-groups", "authorization"} <= set(decision.remove)
    decision = decide(engine, "GET", "/api/feed", bearer=mint(groups="a"), headers=spoofed)
    assert dict(decision.headers) == {"x-user-id": "alice", "x-tenant-id": "t1", "x-groups": "a"}


def test_identity_token_for_the_upstream() -> None:
    engine = Engine(load_policy(str(ACCEPTANCE / "policy.yaml")), clock=FixedClock())
    token = tokens.token(claims(groups=["orders-reader"], scope="orders:read"))
    decision = decide(engine, "GET", "/api/orders", bearer=token, headers={"x-tenant": "t1"}, principal=BILLING)
    assert decision.allowed
    issued = dict(decision.headers)["x-identity-token"]
    private = serialization.load_pem_private_key((ACCEPTANCE / "identity-es256.pem").read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    public = private.public_key()
    verified = pyjwt.decode(issued, public, algorithms=["ES256"], audience="internal",
                            options={"verify_exp": False, "verify_iat": False})
    assert verified["iss"] == "https://authz.example.internal"
    assert (verified["sub"], verified["kind"], verified["peer"]) == ("alice", "jwt", BILLING)
    assert verified["roles"] == ["orders-reader"] and verified["scopes"] == ["orders:read"]
    assert verified["exp"] - verified["iat"] == 60
    # An anonymous caller gets none, and a client-sent one is removed.
    decision = decide(engine, "GET", "/healthz", headers={"x-identity-token": "forged"})
    assert decision.allowed and "x-identity-token" in decision.remove
    assert "x-identity-token" not in dict(decision.headers)


def test_identity_token_exp_is_the_users_exp_never_the_leeway_after_it() -> None:
    engine = Engine(load_policy(str(ACCEPTANCE / "policy.yaml")), clock=FixedClock())
    bearer = tokens.token(claims(groups=["orders-reader"], exp=int(NOW) + 20))
    decision = decide(engine, "GET", "/api/orders", bearer=bearer, headers={"x-tenant": "t1"})
    issued = pyjwt.decode(dict(decision.headers)["x-identity-token"], options={"verify_signature": False})
    assert (issued["iat"], issued["exp"]) == (int(NOW), int(NOW) + 20)  # not + 30 s of leeway
    # The decision (and so the cached answer) is reused only while the token is fresh.
    assert decision.valid_until is not None and decision.valid_until <= int(NOW) + 20


@pytest.mark.parametrize("past", [1, 29])
def test_a_credential_accepted_within_the_leeway_gets_no_identity_token(past: int) -> None:
    engine = Engine(load_policy(str(ACCEPTANCE / "policy.yaml")), clock=FixedClock())
    bearer = tokens.token(claims(groups=["orders-reader"], exp=int(NOW) - past))
    decision = decide(engine, "GET", "/api/orders", bearer=bearer, headers={"x-tenant": "t1"})
    assert not decision.allowed and decision.reason is Reason.CREDENTIAL_IN_LEEWAY
    assert decision.status == 401 and "credential_in_leeway" in (decision.challenge or "")
    assert not decision.cacheable and decision.headers == ()
    # exp == now is already past: the token is valid up to, not at, its exp.
    bearer = tokens.token(claims(groups=["orders-reader"], exp=int(NOW)))
    assert decide(engine, "GET", "/api/orders", bearer=bearer,
                  headers={"x-tenant": "t1"}).reason is Reason.CREDENTIAL_IN_LEEWAY
    # The control: a second of life left is an allow with a one-second token.
    bearer = tokens.token(claims(groups=["orders-reader"], exp=int(NOW) + 1))
    decision = decide(engine, "GET", "/api/orders", bearer=bearer, headers={"x-tenant": "t1"})
    assert decision.allowed and "x-identity-token" in dict(decision.headers)


def test_within_the_leeway_a_policy_without_identity_token_still_allows(tmp_path: Path) -> None:
    # Accepting within the leeway is what the leeway is for; only asserting is refused.
    engine = make_engine(tmp_path)
    decision = decide(engine, "GET", "/api/feed", bearer=mint(exp=int(NOW) - 5))
    assert decision.allowed and decision.rule == "partner-feed", decision


# -- the provider examples decide as docs/policy.md says ----------------------------------


def provider_engine(tmp_path: Path, name: str) -> Engine:
    """An examples/providers policy with its jwks_uri values replaced by a
    local key set holding the contract key (nothing is fetched)."""
    text = (EXAMPLES / "providers" / name).read_text()
    text, count = re.subn(r"(?m)^(\s+)jwks_uri: \S+$", r"\1jwks_file: corp.jwks.json", text)
    assert count >= 1
    return Engine(load_policy(str(write_policy(tmp_path, text))), clock=FixedClock())


def provider_token(**payload: Any) -> str:
    return tokens.token({"iat": int(NOW) - 10, "exp": int(NOW) + 600, **payload})


def test_okta_example(tmp_path: Path) -> None:
    engine = provider_engine(tmp_path, "okta.yaml")
    base = {"iss": "https://example.okta.com/oauth2/default", "aud": "api://default", "sub": "alice@example.com",
            "cid": "0oa1client", "uid": "00u1"}
    reader = provider_token(**base, groups=["orders-readers", "Everyone"], scp=["openid", "orders:read"])
    decision = decide(engine, "GET", "/api/orders/7", bearer=reader)
    assert_decision(decision, 200, Reason.ALLOWED, "orders-readers")
    assert dict(decision.headers) == {"x-user-id": "alice@example.com", "x-client-id": "0oa1client"}
    # A machine client: no groups, the write scope.
    machine = provider_token(**{**base, "sub": "0oa1client"}, scp=["orders:write"])
    assert_decision(decide(engine, "POST", "/api/orders", bearer=machine), 200, Reason.ALLOWED,
                    "order-writers-by-scope")
    # An admin without the write scope cannot write.
    admin = provider_token(**base, groups=["orders-admins"], scp=["orders:read"])
    assert_decision(decide(engine, "DELETE", "/api/orders/7", bearer=admin), 403, Reason.DENIED_BY_RULE,
                    "writes-need-scope")
    admin = provider_token(**base, groups=["orders-admins"], scp=["orders:read", "orders:write"])
    assert_decision(decide(engine, "DELETE", "/api/orders/7", bearer=admin), 200, Reason.ALLOWED, "orders-admins")


def test_entra_id_example(tmp_path: Path) -> None:
    engine = provider_engine(tmp_path, "entra-id.yaml")
    home = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    partner = "0b3c6a55-3f71-4e6b-9d4a-1c2e3f4a5b6c"
    client_id = "6e74172b-be56-4843-9ff4-e66a39bb12e3"

    def entra(tenant: str, **extra: Any) -> str:
        return provider_token(iss=f"https://login.microsoftonline.com/{tenant}/v2.0", tid=tenant, ver="2.0",
                              sub="AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
                              oid="00000000-0000-0000-66f3-3332eca7ea81",
                              **{"aud": client_id, **extra})

    reader = entra(home, roles=["Orders.Read"], scp="Orders.Read")
    decision = decide(engine, "GET", "/api/orders", bearer=reader)
    assert_decision(decision, 200, Reason.ALLOWED, "Orders.Read")
    assert dict(decision.headers) == {"x-user-id": "00000000-0000-0000-66f3-3332eca7ea81", "x-tenant-id": home}
    # v1-style audience (the app ID URI) is accepted too.
    assert decide(engine, "GET", "/api/orders",
                  bearer=entra(home, roles=["Orders.Read"], aud="api://orders-api")).allowed
    # A delegated admin token writes only with the write scope; an app-only
    # token (no scp) with the role writes.
    assert_decision(decide(engine, "POST", "/api/orders/7",
                           bearer=entra(home, roles=["Orders.Admin"], scp="Orders.Read")),
                    403, Reason.DENIED_BY_RULE, "delegated-writes-need-scope")
    assert decide(engine, "POST", "/api/orders/7",
                  bearer=entra(home, roles=["Orders.Admin"], scp="Orders.Read Orders.Write")).allowed
    assert decide(engine, "POST", "/api/orders/7", bearer=entra(home, roles=["Orders.Admin"])).allowed
    # The partner tenant reads but never writes.
    assert decide(engine, "GET", "/api/orders", bearer=entra(partner, roles=["Orders.Read"])).allowed
    assert_decision(decide(engine, "POST", "/api/orders/7", bearer=entra(partner, roles=["Orders.Admin"])),
                    403, Reason.DENIED_BY_RULE, "partner-tenant-read-only")
    # The partner's tokens are only accepted with the client id as audience.
    assert_decision(decide(engine, "GET", "/api/orders",
                           bearer=entra(partner, roles=["Orders.Read"], aud="api://orders-api")),
                    401, Reason.INVALID_TOKEN)


def test_keycloak_example(tmp_path: Path) -> None:
    engine = provider_engine(tmp_path, "keycloak.yaml")
    base = {"iss": "https://sso.example.com/realms/shop", "aud": ["orders-api", "account"], "sub": "f1e2d3c4",
            "preferred_username": "alice", "scope": "openid profile orders", "azp": "web-shop"}
    reader = provider_token(**base, realm_access={"roles": ["orders-reader", "offline_access"]})
    decision = decide(engine, "GET", "/api/orders", bearer=reader)
    assert_decision(decision, 200, Reason.ALLOWED, "orders-reader")
    assert dict(decision.headers) == {"x-user-id": "f1e2d3c4", "x-username": "alice"}
    admin = provider_token(**base, realm_access={"roles": ["orders-admin"]})
    assert_decision(decide(engine, "POST", "/api/orders/admin/reindex", bearer=admin),
                    403, Reason.DENIED_BY_RULE, "admin-from-backoffice-only")
    backoffice = provider_token(**{**base, "azp": "backoffice"}, realm_access={"roles": ["orders-admin"]})
    assert_decision(decide(engine, "POST", "/api/orders/admin/reindex", bearer=backoffice), 200, Reason.ALLOWED,
                    "orders-admin")
    # Keycloak's default audience alone is not enough.
    account_only = provider_token(**{**base, "aud": "account"}, realm_access={"roles": ["orders-reader"]})
    assert_decision(decide(engine, "GET", "/api/orders", bearer=account_only), 401, Reason.INVALID_TOKEN)


def test_auth0_example(tmp_path: Path) -> None:
    engine = provider_engine(tmp_path, "auth0.yaml")
    base = {"iss": "https://example-shop.auth0.com/",
            "aud": ["https://api.example.com/orders", "https://example-shop.auth0.com/userinfo"],
            "sub": "auth0|64f1c2", "scope": "openid profile"}
    reader = provider_token(**base, **{"https://example.com/roles": ["orders-reader"]}, permissions=["read:orders"])
    decision = decide(engine, "GET", "/api/orders/7", bearer=reader)
    assert_decision(decision, 200, Reason.ALLOWED, "orders-reader")
    assert decision.identity.scopes == ("read:orders",)
    machine = provider_token(**{**base, "sub": "m2m@clients", "aud": "https://api.example.com/orders"},
                             permissions=["create:orders"])
    assert_decision(decide(engine, "POST", "/api/orders", bearer=machine), 200, Reason.ALLOWED,
                    "create-orders-by-permission")
    assert_decision(decide(engine, "POST", "/api/orders", bearer=reader), 403, Reason.NO_PERMISSION)
    # The issuer is compared exactly: without its trailing slash it is unknown.
    no_slash = provider_token(**{**base, "iss": "https://example-shop.auth0.com"}, permissions=["read:orders"])
    assert_decision(decide(engine, "GET", "/api/orders", bearer=no_slash), 401, Reason.UNKNOWN_ISSUER)


def test_a_known_issuer_read_elsewhere_is_invalid_not_unknown(tmp_path: Path) -> None:
    """docs/security.md 23 keeps unknown_issuer for an iss no issuer has."""
    (tmp_path / "corp.jwks.json").write_text((ACCEPTANCE / "corp.jwks.json").read_text())
    (tmp_path / "policy.yaml").write_text("""
version: 1
issuers:
  - {name: a, issuer: "https://a.test", audiences: [orders-api], jwks_file: corp.jwks.json, algorithms: [RS256]}
  - {name: b, issuer: "https://b.test", audiences: [orders-api], jwks_file: corp.jwks.json, algorithms: [RS256],
     from: [{cookie: b_token}]}
""")
    engine = Engine(load_policy(str(tmp_path / "policy.yaml")), clock=FixedClock())
    b_token = mint(iss="https://b.test")
    in_header = engine.decide(request(bearer=b_token))
    assert (in_header.status, in_header.reason.value) == (401, "invalid_token")
    stranger = engine.decide(request(bearer=mint(iss="https://c.test")))
    assert stranger.reason.value == "unknown_issuer"
    # From its own location the same token verifies: the policy grants
    # nothing, so a known caller gets 403, not 401.
    in_cookie = engine.decide(request(headers={"cookie": f"b_token={b_token}"}))
    assert (in_cookie.status, in_cookie.reason.value) == (403, "no_permission")
    assert in_cookie.identity is not None and in_cookie.identity.source == "b"


@pytest.mark.parametrize("host", [
    "admin.example.com:80:80", "x@admin.example.com", "admin.example.com:", "admin.example.com:8o",
    "admin example.com", "[::1", "admin.example.com:123456", "admin.example.com/", "a\\b",
])
def test_an_authority_that_is_not_host_port_is_an_invalid_request(engine: Engine, host: str) -> None:
    decision = engine.decide(request("GET", "/healthz", host=host))
    assert (decision.allowed, decision.reason, decision.status) == (False, Reason.INVALID_REQUEST, 403)


@pytest.mark.parametrize("host", ["api.example.com", "api.example.com:8443", "10.0.0.1:80", "[::1]:8080", "[::1]",
                                  "my_host.internal", ""])
def test_a_plain_authority_is_decided_by_the_rules(engine: Engine, host: str) -> None:
    assert engine.decide(request("GET", "/healthz", host=host)).allowed


def test_a_repeated_query_parameter_fails_closed(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent("""
        version: 1
        rules:
          - {name: reports, effect: allow, paths: ["/reports"], anonymous: true, when: 'request.query.tenant == "t1"'}
          - {name: open, effect: allow, paths: ["/open"], anonymous: true}
          - {name: not-t2, effect: deny, paths: ["/open"], when: 'request.query.tenant == "t2"'}
    """))
    engine = Engine(load_policy(str(policy)))
    assert engine.decide(request("GET", "/reports?tenant=t1")).allowed
    assert not engine.decide(request("GET", "/reports?tenant=t1&tenant=t2")).allowed  # the allow does not match
    assert engine.decide(request("GET", "/open?tenant=t1")).allowed
    denied = engine.decide(request("GET", "/open?tenant=t1&tenant=t1"))  # the deny matches
    assert (denied.allowed, denied.reason, denied.rule) == (False, Reason.DENIED_BY_RULE, "not-t2")
