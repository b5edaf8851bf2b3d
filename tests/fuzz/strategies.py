"""Inputs for the fuzz targets: a policy that reads every kind of request
attribute, and strategies for credentials, headers and request targets that
mix valid values (so decisions reach the rules and the response) with
random ones."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from testkit.paths import ACCEPTANCE
from testkit.tokens import claims, token

#: The acceptance policy's issuer, API key, peers and roles, plus rules and
#: response headers that read hosts, principals, query, context, the
#: destination and arbitrary claims, so that every matcher and the header
#: sanitizer see fuzzed values.
POLICY = """
version: 1
issuers:
  - name: corp
    issuer: https://idp.example.com
    audiences: [orders-api]
    jwks_file: corp.jwks.json
    algorithms: [RS256]
    leeway: 30s
    roles_claim: groups
    scopes_claim: scope
    from:
      - {header: authorization, prefix: "Bearer "}
      - {cookie: access_token}
api_keys:
  header: x-api-key
  keys:
    - {subject: partner-acme, sha256: "177578fe4330804b934c16b15ca7ffce257f191a164a354e6985f795c957aa5f", \
       roles: [orders-reader]}
peers:
  "spiffe://cluster.local/ns/shop/sa/billing": [orders-reader]
  "spiffe://cluster.local/ns/*/sa/**": [mesh]
roles:
  orders-reader:
    - {methods: [GET, HEAD], paths: [/api/orders, /api/orders/*]}
  orders-admin:
    - {paths: ["/api/orders/**"], hosts: ["*.example.com", "api.example.com:8443"]}
  mesh:
    - {paths: [/mesh/**], principals: ["spiffe://cluster.local/ns/shop/**"]}
    - {paths: [/q], \
       when: 'has(request.query) && "tenant" in request.query && request.query["tenant"] == identity.claims.tenant'}
rules:
  - {name: public, effect: allow, paths: [/healthz, "/public/**"], anonymous: true}
  - name: tenant-isolation
    effect: deny
    paths: ["/api/orders/**"]
    when: 'identity.kind == "jwt" && request.headers["x-tenant"] != identity.claims.tenant'
  - {name: blocked, effect: deny, source_ips: [203.0.113.0/24, "2001:db8::/32"]}
  - name: by-context
    effect: allow
    paths: [/ctx]
    anonymous: true
    when: '"mode" in context && context["mode"] == "open"'
  - name: internal-only
    effect: deny
    paths: [/internal/**]
    when: 'destination.port != 8080 || source.principal == ""'
  - name: by-method-and-host
    effect: allow
    methods: [OPTIONS]
    hosts: ["*.example.com"]
    anonymous: true
response:
  headers:
    x-user-id: identity.subject
    x-tenant-id: 'has(identity.claims.tenant) ? string(identity.claims.tenant) : ""'
    x-path: request.path
  remove: [authorization]
  identity_token: {header: x-identity-token, issuer: https://authz.example.internal, audience: internal, ttl: 60s,
                   signing_key: identity-es256.pem}
"""

#: Pieces that mean something to the path normalizer, so that random paths
#: hit its branches far more often than uniformly random text would.
PIECES = ["/", "/", "/", ".", "..", "%", "%2e", "%2E", "%2f", "%5C", "%00", "%41", "%7e", "%25", "%3B", "%zz", "%4",
          ";", ";v=1", "a", "Z", "~", "-", "_", "?", "#", "\\", " ", "\t", "\x00", "\x7f", "é", "\u2025", "\uff0e"]

API_KEY = "ak_live_3f9c2b7e4d1a"
ROLES = ["orders-reader", "orders-admin", "mesh", "nobody"]


def write_policy(directory: Path) -> Path:
    for name in ("corp.jwks.json", "identity-es256.pem"):
        shutil.copy(ACCEPTANCE / name, directory / name)
    path = directory / "policy.yaml"
    path.write_text(POLICY)
    return path


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                        max_leaves=8)


@st.composite
def signed_tokens(draw: st.DrawFn) -> str:
    """A token signed with the issuer's real key, with claims that are
    mostly right and sometimes anything: it verifies or fails on its claims."""
    now = int(time.time())
    overrides: dict[str, Any] = {
        "sub": draw(st.one_of(st.just("alice"), st.text(max_size=20), json_values())),
        "groups": draw(st.one_of(st.lists(st.sampled_from(ROLES), max_size=3), st.text(max_size=10), json_values())),
        "tenant": draw(st.one_of(st.sampled_from(["t1", "t2"]), json_values())),
        "exp": draw(st.one_of(st.just(now + 600), st.just(now - 600), st.integers(), st.floats(allow_nan=False),
                              st.text(max_size=5), st.just(10**400))),
        "aud": draw(st.one_of(st.just("orders-api"), st.lists(st.sampled_from(["orders-api", "x"]), max_size=2),
                              json_values())),
        "iss": draw(st.sampled_from(["https://idp.example.com", "https://idp.example.com", "https://other", ""])),
    }
    extra = draw(st.dictionaries(st.sampled_from(["nbf", "iat", "scope", "typ", "cnf"]), json_values(), max_size=2))
    payload = claims(**overrides)
    payload.update(extra)
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT", "kid": "corp-2026"}
    header.update(draw(st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "cty", "jku", "x5c"]),
                                       json_values(), max_size=2)))
    if "alg" in header and not isinstance(header["alg"], str):
        header["alg"] = "RS256"  # the signer needs a name; a wrong one is tried through the text below
    return token(payload, header=header)


#: Fixed credentials, minted once: valid, expired, forged (attacker's key, the issuer's kid), garbage.
def fixed_tokens() -> list[str]:
    from cryptography.hazmat.primitives import serialization

    attacker = serialization.load_pem_private_key((ACCEPTANCE / "attacker-signing-key.pem").read_bytes(), None)
    return [token(claims()), token(claims(exp=1_000_000)), token(claims(), key=attacker), "not.a.token", ""]


FIXED_TOKENS = fixed_tokens()

credential_values = st.one_of(
    st.just(f"Bearer {FIXED_TOKENS[0]}"),
    st.just(f"Bearer {FIXED_TOKENS[0]}"),
    st.just(f"Bearer {FIXED_TOKENS[0]}"),
    st.sampled_from(FIXED_TOKENS).map(lambda t: f"Bearer {t}"),
    signed_tokens().map(lambda t: f"Bearer {t}"),
    st.text(max_size=40),
    st.text(max_size=40).map(lambda t: f"Bearer {t}"),
    st.sampled_from(FIXED_TOKENS).map(lambda t: f"bearer {t}, Bearer {t}"),
)

HEADER_NAMES = ["authorization", "cookie", "x-api-key", "x-tenant", "x-request-id", ":path", ":authority", ":method",
                ":scheme", "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-client-cert", "content-length",
                "transfer-encoding", "traceparent", "x-user-id", "x_user_id", "x-identity-token"]


@st.composite
def header_dicts(draw: st.DrawFn) -> dict[str, str]:
    headers: dict[str, str] = {}
    if draw(st.integers(0, 3)):
        headers["authorization"] = draw(credential_values)
    if draw(st.integers(0, 5)) == 0:
        headers["cookie"] = draw(st.one_of(st.sampled_from(FIXED_TOKENS).map(lambda t: f"access_token={t}"),
                                           st.text(max_size=30)))
    if draw(st.integers(0, 5)) == 0:
        headers["x-api-key"] = draw(st.one_of(st.just(API_KEY), st.text(max_size=20)))
    if draw(st.integers(0, 4)):
        headers["x-tenant"] = draw(mostly(st.just("t1"), st.one_of(st.just("t2"), st.text(max_size=5))))
    extra = draw(st.one_of(st.just({}), st.dictionaries(
        st.one_of(st.sampled_from(HEADER_NAMES), st.text(min_size=1, max_size=10)), st.text(max_size=30), max_size=4)))
    return {**extra, **headers} if draw(st.integers(0, 3)) else {**headers, **extra}


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` seven times in eight, else ``odd``: decisions must reach the
    rules and the response often, not stop at the first malformed field."""
    return st.integers(0, 7).flatmap(lambda n: odd if n == 0 else usual)


VALID_TARGETS = ["/api/orders", "/api/orders/7", "/healthz", "/public/a", "/mesh/x", "/q?tenant=t1", "/internal/x",
                 "/ctx"]
targets = mostly(
    st.sampled_from(VALID_TARGETS),
    st.one_of(
        st.sampled_from(["/q?tenant=t1&tenant=t2", "/api/orders/%2e%2e/admin", "/a%2Fb", "/api/./orders//7",
                         "/healthz#x"]),
        st.lists(st.sampled_from([*PIECES, "api", "orders", "q", "tenant=t1", "&"]),
                 max_size=12).map(lambda p: "/" + "".join(p)),
        st.text(max_size=30),
    ),
)
hosts = mostly(st.sampled_from(["api.example.com", "api.example.com:8443", "x.example.com"]),
               st.one_of(st.sampled_from(["[::1]:80", "", "a b", "h:99999", "ex ample.com"]), st.text(max_size=20)))
methods = mostly(st.sampled_from(["GET", "HEAD", "OPTIONS"]),
                 st.one_of(st.sampled_from(["POST", "DELETE", "get", ""]), st.text(max_size=8)))
addresses = mostly(st.sampled_from(["198.51.100.7", "2001:db9::1"]),
                   st.one_of(st.sampled_from(["203.0.113.9", "2001:db8::1", "::ffff:203.0.113.9", "", "x"]),
                             st.text(max_size=15)))
principals = mostly(st.sampled_from(["", "spiffe://cluster.local/ns/shop/sa/billing"]),
                    st.one_of(st.sampled_from(["spiffe://cluster.local/ns/shop/sa/x",
                                               "spiffe://cluster.local/ns//sa/x"]),
                              st.text(max_size=30)))
