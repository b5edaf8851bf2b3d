"""The identity value (who is calling, as every credential source reports it)
and the token cache a source may be handed."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

#: What verified the caller: "jwt", "api_key", "peer", "certificate", "anonymous", or a new
#: credential's own kind (:class:`authz.identity.credential.Credential`).
Kind = str

_NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


class Identity(NamedTuple):
    """Who is calling, as far as a verified credential (or the peer) says.

    ``expires_at`` is the wall-clock second after which the credential no
    longer verifies (``exp`` + leeway for a JWT); caches never keep an
    identity or a decision past it. ``credential_exp`` is the credential's
    own expiry, without leeway (a JWT's ``exp``): what authz asserts about
    the caller (the identity token) never outlives it, since leeway is for
    accepting a credential, never for asserting one. An immutable record
    (see :class:`authz.request.Request`).
    """

    kind: Kind
    subject: str | None = None
    issuer: str | None = None
    source: str | None = None  # the configured issuer's name, "api_key", or "peer"
    roles: frozenset[str] = frozenset()
    scopes: tuple[str, ...] = ()
    claims: Mapping[str, Any] = _NO_CLAIMS
    expires_at: float | None = None
    credential_exp: float | None = None

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"

    def with_roles(self, extra: frozenset[str]) -> Identity:
        if extra <= self.roles:
            return self
        return Identity(
            self.kind, self.subject, self.issuer, self.source, self.roles | extra,
            self.scopes, self.claims, self.expires_at, self.credential_exp,
        )

    def slim(self) -> Identity:
        """Who, without the claims: what a cached decision keeps for logs."""
        return Identity(self.kind, self.subject, self.issuer, self.source, expires_at=self.expires_at,
                        claims=_NO_CLAIMS, credential_exp=self.credential_exp)

    def cel_value(self) -> dict[str, Any]:
        """The ``identity`` variable of the CEL environment."""
        return {
            "kind": self.kind,
            "subject": self.subject if self.subject is not None else "",
            "issuer": self.issuer if self.issuer is not None else "",
            "roles": sorted(self.roles),
            "scopes": list(self.scopes),
            # The CEL runtime converts plain dicts only.
            "claims": claims if type(claims := self.claims) is dict else dict(claims),
            # A client certificate's fields (authz/identity/certificate.py) are its claims.
            "certificate": claims if self.kind == "certificate" else {},
        }


ANONYMOUS = Identity(kind="anonymous")


class TokenCache(Protocol):
    """Identities of tokens verified before, by digest (the engine is handed
    one; :class:`authz.server.cache.VerifiedTokenCache` is the server's).

    ``epoch`` changes whenever keys leave a key set. A source reads it before
    it looks at any key and hands it to ``put``, which refuses the identity if
    the epoch moved meanwhile: a token verified with a key that has just been
    removed is never stored (docs/security.md 52)."""

    @property
    def epoch(self) -> int: ...
    def get(self, key: bytes, now: float) -> Identity | None: ...
    def put(self, key: bytes, identity: Identity, now: float, *, epoch: int) -> None: ...
