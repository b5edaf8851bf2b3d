"""The issuers with ``introspection:`` compiled into credential sources
(:class:`authz.identity.introspected.IntrospectedSource`), one per token
location they read: a credential section of
:data:`authz.config.compile.CREDENTIAL_SECTIONS`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from authz.config import schema
from authz.config.compiling import Compiling
from authz.config.messages import os_reason
from authz.config.source import Path
from authz.identity.introspected import ClientAuth, IntrospectedSource, IntrospectionIssuer
from authz.identity.jwt import JwtIssuer, TokenLocation
from authz.outside.calls import CallSettings, endpoint_calls
from authz.outside.http import check_url

if TYPE_CHECKING:
    from authz.identity.credential import Credential


class IssuerCompiling(Compiling, Protocol):
    compiled_issuers: list[JwtIssuer]

    def resolve(self, name: str) -> str: ...
    def location(self, where: schema.TokenLocationSpec, path: Path) -> TokenLocation | None: ...


def introspection_section(compiler: IssuerCompiling, model: schema.PolicySpec,
                          before: list[Credential]) -> list[Credential]:
    """One source per location an introspection issuer reads, asked before
    the JWT issuers' source of that location."""
    issuers: list[IntrospectionIssuer] = []
    for index, config in enumerate(model.issuers):
        if config.introspection is not None:
            built = _issuer(compiler, config, config.introspection, ("issuers", index))
            if built is not None:
                issuers.append(built)
    by_location: dict[TokenLocation, list[IntrospectionIssuer]] = {}
    for issuer in issuers:
        for location in issuer.locations:
            by_location.setdefault(location, []).append(issuer)
    jwt_locations = {location for issuer in compiler.compiled_issuers for location in issuer.locations}
    known = frozenset(config.issuer for config in model.issuers)
    sources: list[Credential] = []
    for location, group in by_location.items():
        if len(group) > 1:
            index = next(i for i, c in enumerate(model.issuers) if c.name == group[1].name)
            compiler.problem(("issuers", index, "introspection"),
                             f"issuers {group[0].name!r} and {group[1].name!r} both introspect tokens from "
                             f"{location.header_name}: an opaque token names no issuer, so one location has one")
            continue
        sources.append(IntrospectedSource(location, group, jwt_here=location in jwt_locations, known_issuers=known))
    return sources


def _issuer(compiler: IssuerCompiling, config: schema.IssuerSpec, spec: schema.IntrospectionSpec,
            path: Path) -> IntrospectionIssuer | None:
    where: Path = (*path, "introspection")
    ok = True
    for problem_path, problem in (((*path, "issuer"), check_url(config.issuer)),
                                  ((*where, "endpoint"), check_url(spec.endpoint))):
        if problem:
            compiler.problem(problem_path, f"{problem_path[-1]} {problem}")
            ok = False
    if config.jwks_uri is not None or config.jwks_file is not None:
        compiler.problem((*path, "jwks_uri" if config.jwks_uri is not None else "jwks_file"),
                         "an introspection issuer has no key set: its JWTs are introspected too")
        ok = False
    if not config.audiences or "" in config.audiences:
        compiler.problem((*path, "audiences"), "an issuer needs at least one non-empty audience")
        ok = False
    if not spec.client_id:
        compiler.problem((*where, "client_id"), "empty client_id")
        ok = False
    for field in ("roles_claim", "scopes_claim"):
        if "" in getattr(config, field).split("."):
            compiler.problem((*path, field), "empty claim path segment")
            ok = False
    locations = []
    for i, spot in enumerate(config.from_):
        location = compiler.location(spot, (*path, "from", i))
        ok = ok and location is not None
        if location is not None:
            locations.append(location)
    auth = _client_auth(compiler, spec, where)
    if not ok or auth is None:
        return None
    cache = spec.cache
    settings = CallSettings(timeout=spec.timeout, max_concurrent=spec.max_concurrent,
                            max_entries=cache.max_entries, max_bytes=cache.max_bytes)
    return IntrospectionIssuer(
        name=config.name, issuer=config.issuer, audiences=frozenset(config.audiences), endpoint=spec.endpoint,
        auth=auth, roles_claim=tuple(config.roles_claim.split(".")),
        scopes_claim=tuple(config.scopes_claim.split(".")), locations=tuple(locations),
        max_token_size=config.max_token_size, max_ttl=cache.max_ttl, negative_ttl=cache.negative_ttl,
        max_stale=cache.max_stale,
        # Kept across reloads while what an answer means stays the same (a rotated secret keeps them).
        calls=endpoint_calls(config.name, "introspection", settings, (
            config.issuer, frozenset(config.audiences), spec.endpoint, spec.client_id, config.roles_claim,
            config.scopes_claim, cache.max_ttl, cache.negative_ttl, cache.max_stale)),
    )


def _client_auth(compiler: IssuerCompiling, spec: schema.IntrospectionSpec, where: Path) -> ClientAuth | None:
    if spec.client_secret_file is not None:
        secret = _read_secret(compiler, spec.client_secret_file, (*where, "client_secret_file"))
        return None if secret is None else ClientAuth(spec.client_id, secret=secret)
    signer = spec.private_key_jwt
    assert signer is not None
    key = compiler.key_file(signer.key_file, (*where, "private_key_jwt", "key_file"), _private_key)
    if key is None:
        return None
    return ClientAuth(spec.client_id, key=key, alg=signer.alg, kid=signer.kid, audience=spec.endpoint)


def _read_secret(compiler: IssuerCompiling, name: str, path: Path) -> str | None:
    """The secret in file ``name`` (one line; the policy reload watches it)."""
    try:
        with open(compiler.resolve(name), encoding="utf-8") as handle:
            secret = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        compiler.problem(path, f"cannot read secret file {name!r}: {os_reason(exc)}")
        return None
    if not secret or "\n" in secret:
        compiler.problem(path, f"secret file {name!r} must hold one non-empty line")
        return None
    return secret


def _private_key(data: bytes) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        return load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key ({exc.__class__.__name__})") from None
