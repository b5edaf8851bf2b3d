"""Who may ask authz, and about what: the policy's ``callers:`` section.

The *caller* is the workload that sends the Check (an Envoy: the gateway, or
a sidecar), not the client of the request it asks about. Its identity comes
from the transport (the gRPC door's client certificate, ``serve
--grpc-client-ca``) or from the ``x-forwarded-client-cert`` element authz's
own sidecar appended (``serve --trust-caller-xfcc``); see
:mod:`authz.server.caller_identity`. This module only decides, given that
identity and the request's ``destination.principal``, whether the caller is
admitted: it is part of the decision core and imports no transport.

An entry admits the callers its ``principals`` globs match, to ask about
``any`` destination, only about requests whose destination is the caller
itself (``self``), or about destinations its globs match. A caller no entry
admits, a Check without a caller identity, and a Check about a destination
no admitting entry covers are all refused (``untrusted_caller``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

from authz.matchers import Globs

#: The doors of authz a ``callers:`` section can govern.
DOORS = ("grpc", "http")
#: How many (caller, destination) answers each policy remembers: a sidecar
#: asks about itself, so a mesh of N workloads needs about N.
MEMO_SIZE = 8192


@dataclass(frozen=True, slots=True, eq=False)
class CallerEntry:
    """One entry: the callers it admits and what they may ask about."""

    principals: Globs
    destinations: Literal["any", "self"] | Globs
    line: int = 0

    def covers(self, caller: str, destination: str) -> bool:
        if not self.principals.matches(caller):
            return False
        if self.destinations == "any":
            return True
        if self.destinations == "self":
            return destination == caller
        assert isinstance(self.destinations, Globs)
        return bool(destination) and self.destinations.matches(destination)


@dataclass(frozen=True, eq=False)
class Callers:
    """The compiled ``callers:`` section. ``gateway_only`` names the doors
    it does not bind (the operator fences them so only the gateway reaches
    them); every other door is bound."""

    entries: tuple[CallerEntry, ...]
    gateway_only: frozenset[str] = frozenset()
    line: int = 0
    #: Whether an entry looks at the destination (``self`` or globs): when
    #: none does, a Check's destination is not even read.
    reads_destination: bool = field(init=False)
    _memo: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads_destination", any(entry.destinations != "any" for entry in self.entries))

    def binds(self, door: str) -> bool:
        """Whether Checks through ``door`` must come from an admitted caller."""
        return door not in self.gateway_only

    def admits(self, caller: str, destination: str) -> bool:
        """Whether ``caller`` may ask about a request to ``destination``
        (a ``destination.principal``, "" when the Check names none). No
        caller identity ("") is never admitted. Answers are remembered, so
        a caller that asks again costs one dictionary lookup."""
        if not caller:
            return False
        key = (caller, destination)
        known = self._memo.get(key)
        if known is not None:
            return known
        admitted = any(entry.covers(caller, destination) for entry in self.entries)
        with self._lock:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = admitted
        return admitted

    def refusal(self, caller: str, destination: str) -> str:
        """Why a caller was refused, for the decision log."""
        if not caller:
            return "the Check carries no caller identity"
        return f"caller {caller!r} is not admitted to ask about destination {destination or '(none)'!r}"
