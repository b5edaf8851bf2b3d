"""The policy file's schema (version 1), as strict pydantic models.

Shape and types only: unknown fields, wrong types and out-of-range numbers are
caught here; everything that needs meaning (CEL, CIDRs, role references, key
files) is checked when the policy is compiled. The models are named ``...Spec``
to tell them from the compiled types they become (``PolicySpec`` ->
:class:`authz.policy.Policy`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from authz.body import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, DEFAULT_MAX_ELEMENTS, MAX_BODY_BYTES, BodyLimits
from authz.identity.jwks import JwksSettings
from authz.paths import MAX_PATH_LENGTH, PathRules

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """'30s', '10m', '1h30m', '500ms' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 10m or 24h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value and re.fullmatch(f"(?:{_DURATION_PART.pattern})+", value):
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    else:
        raise ValueError(f"expected a duration such as 30s, 10m or 24h, not {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
_JWKS_DEFAULTS = JwksSettings()


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class TokenLocationSpec(Model):
    header: str | None = None
    prefix: str | None = None
    cookie: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> TokenLocationSpec:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("give exactly one of 'header' or 'cookie'")
        if self.prefix is not None and self.header is None:
            raise ValueError("'prefix' applies to a header only")
        return self


class JwksSpec(Model):
    """:class:`authz.identity.jwks.JwksSettings` as written in a policy
    (same field names and defaults, with bounds)."""

    refresh_interval: Duration = Field(default=_JWKS_DEFAULTS.refresh_interval, ge=30.0)
    min_refetch_interval: Duration = Field(default=_JWKS_DEFAULTS.min_refetch_interval, ge=30.0)
    max_stale: Duration = Field(default=_JWKS_DEFAULTS.max_stale, ge=0.0)
    fetch_timeout: Duration = Field(default=_JWKS_DEFAULTS.fetch_timeout, gt=0.0, le=30.0)

    def settings(self) -> JwksSettings:
        return JwksSettings(**self.model_dump())


class IntrospectionCacheSpec(Model):
    """How long introspection answers are kept (docs/policy.md)."""

    max_ttl: Duration = Field(default=300.0, gt=0.0, le=86400.0)
    negative_ttl: Duration = Field(default=10.0, gt=0.0, le=3600.0)
    #: How long past max_ttl an active answer stands in while the endpoint
    #: fails (never past the token's exp).
    max_stale: Duration = Field(default=300.0, ge=0.0, le=86400.0)
    max_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    max_bytes: int = Field(default=8 * 2**20, ge=4096, le=2**40)


class PrivateKeyJwtSpec(Model):
    key_file: str
    alg: Literal["RS256", "ES256", "PS256", "EdDSA"] = "RS256"
    kid: str | None = None


class IntrospectionSpec(Model):
    """An issuer whose tokens are checked by RFC 7662 introspection."""

    endpoint: str
    client_id: str
    client_secret_file: str | None = None
    private_key_jwt: PrivateKeyJwtSpec | None = None
    cache: IntrospectionCacheSpec = Field(default_factory=IntrospectionCacheSpec)
    timeout: Duration = Field(default=1.0, gt=0.0, le=30.0)
    max_concurrent: int = Field(default=16, ge=1, le=1024)

    @model_validator(mode="after")
    def _one_auth(self) -> IntrospectionSpec:
        if (self.client_secret_file is None) == (self.private_key_jwt is None):
            raise ValueError("give one of 'client_secret_file' or 'private_key_jwt'")
        return self


class SessionSpec(Model):
    """A login's session cookie (authz/login/session.py)."""

    ttl: Duration = Field(default=8 * 3600.0, gt=0.0, le=30 * 86400.0)
    cookie: str = "authz_session"
    keys_file: str
    #: Keep the provider's refresh token and renew the session with it
    #: (authz/login/renew.py), ``refresh_before`` its end (default: the last quarter of ttl).
    refresh: bool = False
    refresh_before: Duration | None = Field(default=None, gt=0.0)


class LoginSpec(Model):
    """Browser sign-in with this issuer (docs/login.md)."""

    client_id: str
    client_secret_file: str | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    callback_path: str = "/oauth2/callback"
    logout_path: str = "/oauth2/logout"
    paths: list[str] | None = None
    session: SessionSpec
    timeout: Duration = Field(default=2.0, gt=0.0, le=30.0)


class IssuerSpec(Model):
    name: Name
    issuer: str
    audiences: list[str]
    jwks_uri: str | None = None
    jwks_file: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway: Duration = Field(default=30.0, le=300.0)
    roles_claim: str = "roles"
    scopes_claim: str = "scope"
    from_: list[TokenLocationSpec] = Field(
        default_factory=lambda: [TokenLocationSpec(header="authorization", prefix="Bearer ")], alias="from"
    )
    token_types: list[str] | None = None
    max_token_size: int = Field(default=8192, ge=256, le=65536)
    jwks: JwksSpec = Field(default_factory=JwksSpec)
    introspection: IntrospectionSpec | None = None
    login: LoginSpec | None = None


class ApiKeySpec(Model):
    subject: str
    sha256: str
    roles: list[str] = Field(default_factory=list)


class ApiKeysSpec(Model):
    header: str = "x-api-key"
    keys: list[ApiKeySpec] = Field(default_factory=list)
    keys_file: str | None = None


class ApiKeysFileSpec(Model):
    """The content of ``api_keys.keys_file``: a list of keys, or ``{keys: [...]}``."""

    keys: list[ApiKeySpec]


CertificateSource = Literal["peer", "xfcc", "client-cert"]


def _from_peer() -> list[CertificateSource]:
    return ["peer"]


class CertificatesSpec(Model):
    """Client certificates as a credential (authz/identity/certificate.py)."""

    ca_file: str
    from_: list[CertificateSource] = Field(default_factory=_from_peer, alias="from")
    subject: Literal["uri_san", "dns_san", "subject_dn"] = "uri_san"
    pins: list[str] | None = None
    roles: dict[str, list[str]] = Field(default_factory=dict)


class PermissionSpec(Model):
    hosts: list[str] | None = None
    methods: list[str] | None = None
    paths: list[str] | None = None
    source_ips: list[str] | None = None
    principals: list[str] | None = None
    when: str | None = None


class DenyBodySpec(Model):
    """A denial's body: ``json`` (any JSON value; its strings may hold
    template fields) or ``text`` (text/plain)."""

    json_: Any = Field(default=None, alias="json")
    text: str | None = None

    @model_validator(mode="after")
    def _one(self) -> DenyBodySpec:
        if (self.json_ is None) == (self.text is None):
            raise ValueError("give one of 'json' or 'text'")
        return self


class DenyShapeSpec(Model):
    """How a denial looks (``deny_with``, docs/policy.md)."""

    status: int
    location: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    body: DenyBodySpec | None = None


class DenyWithSpec(Model):
    unauthenticated: DenyShapeSpec | None = None
    unauthorized: DenyShapeSpec | None = None


class RuleSpec(PermissionSpec):
    name: Name
    effect: Literal["allow", "deny"]
    anonymous: bool = False
    dry_run: bool = False
    deny_with: DenyShapeSpec | None = None


class IdentityTokenSpec(Model):
    header: str = "x-identity-token"
    issuer: str
    audience: str
    ttl: Duration = Field(default=60.0, ge=5.0, le=3600.0)
    signing_key: str
    extra_public_keys: list[str] = Field(default_factory=list)


class ResponseSpec(Model):
    headers: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)
    identity_token: IdentityTokenSpec | None = None
    #: Envoy dynamic metadata on allow: key -> CEL expression (any JSON-like value).
    metadata: dict[str, str] = Field(default_factory=dict)
    #: Headers for the client on allow: name -> CEL expression, or a list of them
    #: (each giving a string, or a list of strings: one header each).
    client_headers: dict[str, str | list[str]] = Field(default_factory=dict)


#: Default byte bounds of the caches (docs/operations.md: sizing a worker):
#: with them one worker stays under 160 MB RSS whatever its callers send.
DECISIONS_MAX_BYTES = 24 * 2**20
TOKENS_MAX_BYTES = 8 * 2**20


class DecisionCacheSpec(Model):
    max_entries: int = Field(default=100_000, ge=0, le=10_000_000)
    #: The bytes the entries may hold (each sized when stored); 0: entries only.
    max_bytes: int = Field(default=DECISIONS_MAX_BYTES, ge=0, le=2**40)
    ttl: Duration = Field(default=30.0, ge=0.0, le=3600.0)
    deny_ttl: Duration = Field(default=2.0, ge=0.0, le=60.0)


class TokenCacheSpec(Model):
    # ~2.5 KB per verified token (its claims); decisions are cached apart.
    max_entries: int = Field(default=10_000, ge=0, le=10_000_000)
    max_bytes: int = Field(default=TOKENS_MAX_BYTES, ge=0, le=2**40)


class CacheSpec(Model):
    decisions: DecisionCacheSpec = Field(default_factory=DecisionCacheSpec)
    tokens: TokenCacheSpec = Field(default_factory=TokenCacheSpec)


class PathsSpec(Model):
    """:class:`authz.paths.PathRules` as written in a policy."""

    max_length: int = Field(default=MAX_PATH_LENGTH, ge=256, le=65536)
    matrix_parameters: Literal["refuse", "strip"] = "refuse"
    case_sensitive: bool = True

    def rules(self) -> PathRules:
        return PathRules(max_length=self.max_length, strip_parameters=self.matrix_parameters == "strip",
                         fold_case=not self.case_sensitive)


class CallerSpec(Model):
    """One entry of ``callers:``: the principals of callers it admits and
    the destinations they may ask about, or the doors that are not bound
    (``gateway_only``: fenced so that only the gateway reaches them)."""

    principals: list[str] | None = None
    destinations: str | list[str] | None = None
    gateway_only: list[Literal["grpc", "http"]] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> CallerSpec:
        if self.gateway_only is not None:
            if self.principals is not None or self.destinations is not None:
                raise ValueError("an entry with 'gateway_only' names doors only (no 'principals' or 'destinations')")
            if not self.gateway_only:
                raise ValueError("'gateway_only' lists no door")
            return self
        if not self.principals:
            raise ValueError("give 'principals' (the callers' SPIFFE IDs, globs) and 'destinations'")
        if self.destinations is None:
            raise ValueError("give 'destinations': any, self, or a list of principal globs")
        if isinstance(self.destinations, str) and self.destinations not in ("any", "self"):
            raise ValueError(f"'destinations' is any, self, or a list of principal globs, not {self.destinations!r}")
        if isinstance(self.destinations, list) and not self.destinations:
            raise ValueError("'destinations' lists nothing: use any, self, or principal globs")
        return self


class SecretFileSpec(Model):
    """A header value read from a file (a data source's credential)."""

    file: str
    prefix: str = ""


class DataSourceSpec(Model):
    """One outside data source (``data:``, docs/policy.md)."""

    url: str
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str | SecretFileSpec] = Field(default_factory=dict)
    #: A JSON object: name -> CEL expression (any JSON-like value).
    body: dict[str, str] | None = None
    cache_ttl: Duration = Field(default=30.0, gt=0.0, le=86400.0)
    timeout: Duration = Field(default=1.0, gt=0.0, le=30.0)
    on_error: Literal["deny"] | DataFallbackSpec = "deny"
    allow_insecure_http: bool = False
    max_concurrent: int = Field(default=16, ge=1, le=1024)
    max_entries: int = Field(default=10_000, ge=1, le=10_000_000)
    max_bytes: int = Field(default=8 * 2**20, ge=4096, le=2**40)


class DataFallbackSpec(Model):
    value: Any
_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024 * 1024}


def parse_size(value: Any) -> int:
    """'8KiB', '1MiB', '512B' or a number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 8KiB, 64KiB or 1MiB")
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a size such as 8KiB, 64KiB or 1MiB, not {value!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


Size = Annotated[int, BeforeValidator(parse_size)]


class BodySpec(Model):
    """``body:``, the limits on a request body that a rule reads
    (:class:`authz.body.BodyLimits`, same names and defaults): authz and the
    Envoy config ``authz envoy-config --config`` writes both use them."""

    max_bytes: Size = Field(default=DEFAULT_MAX_BYTES, ge=1, le=MAX_BODY_BYTES)
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=1, le=256)
    max_elements: int = Field(default=DEFAULT_MAX_ELEMENTS, ge=1, le=1_000_000)

    def limits(self) -> BodyLimits:
        return BodyLimits(**self.model_dump())


class PolicySpec(Model):
    version: Literal[1]
    issuers: list[IssuerSpec] = Field(default_factory=list)
    api_keys: ApiKeysSpec | None = None
    peers: dict[str, list[str]] = Field(default_factory=dict)
    certificates: CertificatesSpec | None = None
    roles: dict[str, list[PermissionSpec]] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)
    response: ResponseSpec = Field(default_factory=ResponseSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    paths: PathsSpec = Field(default_factory=PathsSpec)
    callers: list[CallerSpec] | None = None
    deny_with: DenyWithSpec | None = None
    data: dict[Name, DataSourceSpec] = Field(default_factory=dict)
    body: BodySpec = Field(default_factory=BodySpec)
