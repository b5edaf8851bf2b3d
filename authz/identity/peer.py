"""Workload identities: the mTLS peer's SPIFFE ID (``source.principal``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz.identity.base import Identity
from authz.matchers import glob_regex


@dataclass(frozen=True, slots=True, eq=False)
class PeerRoles:
    """Globs over ``source.principal`` ('*' within a path segment, '**'
    across segments) and the roles each grants."""

    patterns: tuple[tuple[str, re.Pattern[str], frozenset[str]], ...] = ()

    @classmethod
    def compile(cls, peers: dict[str, frozenset[str]]) -> PeerRoles:
        return cls(tuple((glob, re.compile(glob_regex(glob)), roles) for glob, roles in peers.items()))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def roles_for(self, principal: str) -> frozenset[str] | None:
        """The roles granted to ``principal``, or None when no pattern matches."""
        if not principal:
            return None
        found: frozenset[str] | None = None
        for _glob, regex, roles in self.patterns:
            if regex.fullmatch(principal):
                found = roles if found is None else found | roles
        return found

    def identity(self, principal: str, roles: frozenset[str]) -> Identity:
        return Identity(kind="peer", subject=principal, source="peer", roles=roles)
