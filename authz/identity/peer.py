"""Workload identities: the mTLS peer's SPIFFE ID (``source.principal``)."""

from __future__ import annotations

from dataclasses import dataclass

from authz.identity.base import Identity
from authz.matchers import Globs, compile_globs


@dataclass(frozen=True, slots=True, eq=False)
class PeerRoles:
    """Globs over ``source.principal`` ('*' within a path segment, '**'
    across segments) and the roles each grants."""

    patterns: tuple[tuple[str, Globs, frozenset[str]], ...] = ()

    @classmethod
    def compile(cls, peers: dict[str, frozenset[str]]) -> PeerRoles:
        return cls(tuple((glob, compile_globs([glob]), roles) for glob, roles in peers.items()))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def roles_for(self, principal: str) -> frozenset[str] | None:
        """The roles granted to ``principal``, or None when no pattern matches."""
        if not principal:
            return None
        found: frozenset[str] | None = None
        for _glob, globs, roles in self.patterns:
            if globs.matches(principal):
                found = roles if found is None else found | roles
        return found

    def identity(self, principal: str, roles: frozenset[str]) -> Identity:
        return Identity(kind="peer", subject=principal, source="peer", roles=roles)
