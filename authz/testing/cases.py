"""Case files of ``authz test``: their shape, and what they mean to a policy.

A case file is YAML with ``cases:``, each a request as a person writes it,
the credential to present (a ``token`` minted from claims, or for an
introspection issuer an opaque token whose answer holds them, an
``api_key`` named by its subject, a client ``certificate`` by its names,
or a browser ``session`` of an issuer's login, from its claims), what each data source answers (``data``)
and what to ``expect``::

    cases:
      - name: a reader lists orders
        request: {method: GET, path: /api/orders, host: shop.example.com,
                  headers: {x-tenant: acme}, source: {address: 10.0.0.7, principal: ...},
                  destination: {principal: ...}, context: {...}}
        token: {issuer: dev, claims: {sub: alice, roles: [orders-reader]}}
        data: {plans: {tier: gold}}
        expect: {allowed: true, status: 200, reason: allowed, rule: orders-reader,
                 headers: {x-user-id: alice, x-identity-token: {claims: {sub: alice}}}}

Every problem is ``FILE:LINE: message`` (:func:`load_cases`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from cryptography import x509
from pydantic import BeforeValidator, Field, model_validator

from authz.config.messages import read_yaml, validate
from authz.config.schema import Model
from authz.config.source import Located
from authz.errors import Problem, Reason
from authz.login.session import SessionTooLarge
from authz.policy import Policy
from authz.testing.sessions import session_cookie
from authz.testing.standin import StandIns


class PeerSpec(Model):
    address: str = ""
    port: int = 0
    principal: str = ""


class RequestSpec(Model):
    method: str = "GET"
    path: str
    host: str = ""
    scheme: str = "https"
    headers: dict[str, str] = Field(default_factory=dict)
    source: PeerSpec = Field(default_factory=PeerSpec)
    destination: PeerSpec = Field(default_factory=PeerSpec)
    context: dict[str, str] = Field(default_factory=dict)
    #: The request body, as text (with its content-type in headers), or
    #: ``body_json`` (any JSON value; content-type application/json unless given).
    body: str | None = None
    body_json: Any = None

    @model_validator(mode="after")
    def _one_body(self) -> RequestSpec:
        if self.body is not None and self.body_json is not None:
            raise ValueError("give one of 'body' or 'body_json'")
        return self


class TokenSpec(Model):
    issuer: str
    #: Claims over the defaults (iss, aud, iat, exp; an introspection answer's
    #: active and token_type too); a claim set to null is left out.
    claims: dict[str, Any] = Field(default_factory=dict)
    #: An introspection issuer's token only: false, its introspection answers
    #: ``{active: false}``.
    active: bool = True


class CertificateSpec(Model):
    """A client certificate minted from the run's stand-in CA (authz/testing/certs.py)."""

    uri_sans: list[str] = Field(default_factory=list)
    dns_sans: list[str] = Field(default_factory=list)
    email_sans: list[str] = Field(default_factory=list)
    #: The subject DN, RFC 4514 (``CN=billing,O=Example``); default: empty.
    subject: str = ""
    #: Seconds from --now (negative: before it); default -300 and 3600.
    not_before: int = -300
    not_after: int = 3600
    #: Valid from two hours to one hour before --now (overrides not_before/not_after).
    expired: bool = False
    #: False: its extended key usage allows server authentication only.
    client_auth: bool = True


class SessionSpec(Model):
    """A browser session of an issuer's ``login:``, sealed with the run's key."""

    issuer: str
    #: Claims over the defaults (iss, aud: the login's client_id, iat); null leaves one out.
    claims: dict[str, Any] = Field(default_factory=dict)
    #: When it was signed in, in seconds from --now (it ends the login's ttl later).
    signed_in: int = 0
    #: Signed in a ttl and a second before --now: ended (overrides signed_in).
    expired: bool = False


class HeaderCheckSpec(Model):
    """What an upstream header must be: a value (a string written alone),
    or, for a header whose value varies from run to run, its presence, or
    (a JWT such as the identity token) the claims it carries."""

    equals: str | None = None
    present: bool | None = None
    claims: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> HeaderCheckSpec:
        if sum(value is not None for value in (self.equals, self.present, self.claims)) != 1:
            raise ValueError("give a value, or exactly one of 'present' or 'claims'")
        return self


def _header_check(value: Any) -> Any:
    return {"equals": value} if isinstance(value, str) else value


class ExpectSpec(Model):
    allowed: bool | None = None
    status: int | None = None
    reason: str | None = None
    rule: str | None = None
    headers: dict[str, Annotated[HeaderCheckSpec, BeforeValidator(_header_check)]] = Field(default_factory=dict)


class CaseSpec(Model):
    name: str
    request: RequestSpec
    token: TokenSpec | None = None
    api_key: str | None = None
    certificate: CertificateSpec | None = None
    session: SessionSpec | None = None
    #: What each data source answers (any JSON value); a source not given fails.
    data: dict[str, Any] = Field(default_factory=dict)
    expect: ExpectSpec


class CaseFileSpec(Model):
    cases: list[CaseSpec]


@dataclass(frozen=True)
class Case:
    """One case, checked against the policy, with where it is written."""

    spec: CaseSpec
    file: str
    line: int
    #: The expectation fields the case gives (``rule: null`` is an expectation).
    expected: frozenset[str]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def load_cases(paths: list[str], policy: Policy, stand_ins: StandIns) -> tuple[list[Case], list[Problem]]:
    """Every case of every file, and every problem found in them."""
    cases: list[Case] = []
    problems: list[Problem] = []
    for path in paths:
        located = read_yaml(path, path)
        spec = validate(located, CaseFileSpec) if not located.problems else None
        if spec is not None and not spec.cases:
            located.problem(("cases",), "no cases: a case file tests at least one request")
        if spec is not None:
            for index, written in enumerate(spec.cases):
                _check(located, ("cases", index), written, policy, stand_ins)
                given = written.expect.model_fields_set
                cases.append(Case(written, path, located.line(("cases", index, "name")), frozenset(given)))
        problems.extend(located.problems)
    names: dict[str, str] = {}
    for case in cases:
        if case.spec.name in names:
            problems.append(Problem(case.file, case.line, f"case name {case.spec.name!r} is used before, at "
                                                          f"{names[case.spec.name]}"))
        names.setdefault(case.spec.name, case.where)
    return cases, problems


def _check(located: Located, path: tuple[str | int, ...], case: CaseSpec, policy: Policy, stand_ins: StandIns) -> None:
    """What the schema cannot know: names the policy must have."""
    expect = case.expect
    if not expect.model_fields_set:
        located.problem((*path, "expect"), "expect nothing: give allowed, status, reason, rule or headers")
    if expect.reason is not None and expect.reason not in {r.value for r in Reason}:
        located.problem((*path, "expect", "reason"), f"unknown reason code {expect.reason!r}")
    if expect.rule is not None and policy.origin(expect.rule) is None and expect.rule not in policy.roles:
        located.problem((*path, "expect", "rule"), f"the policy has no rule or role named {expect.rule!r}")
    if expect.status is not None and not (expect.status in (200, 301, 302, 303, 307, 308)
                                          or 400 <= expect.status <= 499):
        located.problem((*path, "expect", "status"), "a decision's status is 200, 401 or 403 "
                                                     "(or a policy's deny_with status: a 4xx or a redirect)")
    if case.token is not None:
        _check_token(located, (*path, "token"), case.token, stand_ins)
    for name, value in case.data.items():
        if name not in stand_ins.outside.data:
            known = ", ".join(sorted(stand_ins.outside.data)) or "none"
            located.problem((*path, "data", name), f"no data source named {name!r} (the policy has: {known})")
        elif not _is_json(value):
            located.problem((*path, "data", name), "a data source answers a JSON value (quote a date or time)")
    if case.api_key is not None and case.api_key not in stand_ins.api_keys:
        known = ", ".join(sorted(stand_ins.api_keys)) or "none"
        located.problem((*path, "api_key"), f"no API key with subject {case.api_key!r} (the policy has: {known})")
    if case.certificate is not None:
        _check_certificate(located, (*path, "certificate"), case.certificate, stand_ins)
    if case.session is not None:
        _check_session(located, (*path, "session"), case.session, stand_ins)
    if not case.request.path.startswith("/"):
        located.problem((*path, "request", "path"), "a request path starts with '/'")


def _check_token(located: Located, path: tuple[str | int, ...], token: TokenSpec, stand_ins: StandIns) -> None:
    introspected = token.issuer in stand_ins.outside.introspection
    if token.issuer not in stand_ins.issuers and not introspected:
        known = ", ".join(sorted({*stand_ins.issuers, *stand_ins.outside.introspection})) or "none"
        located.problem((*path, "issuer"), f"no issuer named {token.issuer!r} (the policy has: {known})")
    elif not token.active and not introspected:
        located.problem((*path, "active"), f"issuer {token.issuer!r} verifies JWTs: 'active' is for an "
                                           "introspection issuer's token (an expired JWT: give exp)")
    if not token.active and token.claims:
        located.problem((*path, "claims"), "an inactive token's introspection answer is 'active: false' alone: "
                                           "give no claims")
    if not _is_json(token.claims):
        located.problem((*path, "claims"), "claims must be JSON values (quote a date or time: "
                                           "'2026-01-01', or give exp and iat as Unix seconds)")


def _check_certificate(located: Located, path: tuple[str | int, ...], spec: CertificateSpec,
                       stand_ins: StandIns) -> None:
    if not stand_ins.has_certificates:
        located.problem(path, "the policy has no certificates section: a client certificate authenticates nothing")
    elif stand_ins.certificates is None:
        located.problem(path, "the policy pins certificates by SHA-256 (certificates.pins): a certificate minted "
                              "for the run is never one it pins, so authz test cannot present one")
    try:
        x509.Name.from_rfc4514_string(spec.subject)
    except ValueError as exc:
        why = f": {exc}" if str(exc) else ""
        located.problem((*path, "subject"), f"not an RFC 4514 distinguished name (CN=billing,O=Example){why}")
    kinds: tuple[tuple[str, Callable[[str], x509.GeneralName]], ...] = (
        ("uri_sans", x509.UniformResourceIdentifier), ("dns_sans", x509.DNSName), ("email_sans", x509.RFC822Name))
    for field, kind in kinds:
        for index, name in enumerate(getattr(spec, field)):
            try:
                kind(name)
            except ValueError:
                located.problem((*path, field, index), f"{name!r} is not ASCII: write an IDN as its A-label "
                                                       "(xn--...), as a certificate holds it")
    if not spec.expired and spec.not_after <= spec.not_before:
        located.problem((*path, "not_after"), "not_after is not after not_before")


def _check_session(located: Located, path: tuple[str | int, ...], spec: SessionSpec, stand_ins: StandIns) -> None:
    if spec.issuer not in stand_ins.logins:
        known = ", ".join(sorted(stand_ins.logins)) or "none"
        located.problem((*path, "issuer"), f"no issuer named {spec.issuer!r} signs browsers in (login:; the policy "
                                           f"has: {known})")
    if not _is_json(spec.claims):
        located.problem((*path, "claims"), "claims must be JSON values (quote a date or time)")
    elif spec.issuer in stand_ins.logins:
        try:
            session_cookie(stand_ins.logins[spec.issuer], spec.claims, 0)
        except SessionTooLarge:
            located.problem((*path, "claims"), "these claims do not fit a session cookie, even cut to the "
                                               "subject, roles and scopes")
    if spec.signed_in > 0:
        located.problem((*path, "signed_in"), "a session is signed in before --now: give 0 or fewer seconds")


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
