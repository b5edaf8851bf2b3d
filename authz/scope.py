"""A team's scope: the part of the traffic one team file of a policy
directory owns (docs/policy.md, "Policy directories").

A scope is hosts, path prefixes and destination principals; a request is in
it when it matches every one of those the team declared (each a list: any
entry). Every permission and rule of a team file carries its team's scope,
and :meth:`authz.policy.Matcher.matches` checks it before anything else the
permission says, so whatever a team writes it can never match, and so never
allow, a request outside what it owns (docs/security.md 58).
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.cel import AttrPath
from authz.matchers import Globs, HostMatcher


@dataclass(frozen=True, slots=True, eq=False)
class Scope:
    """The requests a team owns. A field left None does not narrow it."""

    team: str
    #: The team file, as named in messages.
    file: str
    hosts: HostMatcher | None = None
    #: The owned prefixes, each as itself and ``prefix/**``.
    paths: Globs | None = None
    destinations: Globs | None = None

    def contains(self, host: str, path: str) -> bool:
        """Whether the (normalized) path and the authority are in the scope;
        the destination principal is checked apart (:meth:`has_destination`),
        once the door is known to carry it."""
        if self.paths is not None and not self.paths.matches(path):
            return False
        return self.hosts is None or self.hosts.matches(host)

    def has_destination(self, principal: str) -> bool:
        return self.destinations is None or (bool(principal) and self.destinations.matches(principal))

    def reads(self) -> set[AttrPath]:
        out: set[AttrPath] = set()
        if self.hosts is not None:
            out.add(("request", "host"))
        if self.destinations is not None:
            out.add(("destination", "principal"))
        return out
