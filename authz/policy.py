"""The compiled, immutable policy: matchers, rules, and what they read.

A :class:`Policy` is built once per load (see :mod:`authz.config`) and never
changes; a reload builds a new one with a new generation number. It knows
exactly which request attributes its matchers and CEL expressions read
(:class:`Reads`), which is what the decision cache keys on.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from authz.body import BODY_FIELDS, BODY_HEADERS, BodyLimits
from authz.cel import AttrPath, EvaluationError, Expression
from authz.denials import DenyWith
from authz.matchers import Globs, HostMatcher, IPNetwork
from authz.paths import DEFAULT_RULES, PathRules
from authz.request import ATTRIBUTES, View

if TYPE_CHECKING:
    from authz.callers import Callers
    from authz.data import DataPlan
    from authz.identity.credential import Credential
    from authz.identity.jwt import JwtIssuer
    from authz.identity.peer import PeerRoles
    from authz.response_plan import ResponsePlan
    from authz.scope import Scope

_GENERATIONS = itertools.count(1)


def next_generation() -> int:
    return next(_GENERATIONS)


@dataclass(frozen=True, slots=True, eq=False)
class Matcher:
    """One permission (or the matching part of a rule): every field it names
    must match. None means the field is not constrained."""

    hosts: HostMatcher | None = None
    methods: frozenset[str] | None = None
    paths: Globs | None = None
    source_ips: tuple[IPNetwork, ...] | None = None
    principals: Globs | None = None
    when: Expression | None = None
    #: Its line in the policy file (for messages about it), 0 when unknown.
    line: int = 0
    #: The file it is written in, as named in messages ("" when unknown).
    file: str = ""
    #: Set for a team file's permissions and rules: the team's scope, which
    #: must contain the request before anything else is matched.
    scope: Scope | None = None
    #: The request attributes it reads, as :data:`ATTRIBUTES` names (and
    #: ``"context"``); computed from the fields above.
    attributes: frozenset[str] = field(init=False, default=frozenset())

    def matches(self, view: View, *, fail_closed: bool) -> tuple[bool, str | None]:
        """(matched, note). ``fail_closed`` (deny rules) counts an attribute
        that cannot be evaluated as matched; otherwise as not matched. So
        does an attribute the request's door cannot know."""
        request = view.request
        scope = self.scope
        if scope is not None and not scope.contains(request.host, view.path):
            return False, None
        if self.methods is not None and request.method.upper() not in self.methods:
            return False, None
        if self.paths is not None and not self.paths.matches(view.path):
            return False, None
        if self.hosts is not None and not self.hosts.matches(request.host):
            return False, None
        if request.unknown and not request.unknown.isdisjoint(self.attributes):
            unknown = ", ".join(sorted(request.unknown.intersection(self.attributes)))
            return fail_closed, f"reads {unknown}, which this door cannot know"
        if scope is not None and not scope.has_destination(request.destination_principal):
            return False, None
        if self.principals is not None and (
            not request.source_principal or not self.principals.matches(request.source_principal)
        ):
            return False, None
        note = None
        if self.source_ips is not None:
            ip = view.source_ip
            inside = None if ip is None else any(ip in network for network in self.source_ips)
            if inside is None:
                note = "source address is not an IP"
                if not fail_closed:
                    return False, note
            elif not inside:
                return False, None
        if self.when is not None:
            try:
                result = self.when.evaluate(view.variables(self.when.roots))
            except EvaluationError as exc:
                return fail_closed, f"when failed: {exc}"
            if result is not True and result is not False:
                return fail_closed, "when did not give a boolean"
            return result, note
        return True, note

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", Reads.from_paths(self.reads()).names())

    def reads(self) -> set[AttrPath]:
        out: set[AttrPath] = set()
        if self.methods is not None:
            out.add(("request", "method"))
        if self.hosts is not None:
            out.add(("request", "host"))
        if self.source_ips is not None:
            out.add(("source", "address"))
        if self.principals is not None:
            out.add(("source", "principal"))
        if self.when is not None:
            out.update(self.when.reads)
        if self.scope is not None:
            out.update(self.scope.reads())
        return out


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    name: str
    effect: Literal["allow", "deny"]
    matcher: Matcher
    anonymous: bool = False
    dry_run: bool = False


_ALL = None


@dataclass(frozen=True, slots=True)
class Reads:
    """The request attributes a decision depends on, besides the credential.

    ``headers``/``context`` are the names read, or None for "all of them".
    The path (without query) and the host are always read: their validity
    alone decides ``invalid_path`` and ``invalid_request``.
    """

    method: bool = False
    host: bool = False
    query: bool = False
    scheme: bool = False
    source_address: bool = False
    source_port: bool = False
    source_principal: bool = False
    destination_address: bool = False
    destination_port: bool = False
    destination_principal: bool = False
    source_certificate: bool = False  # the certificates credential's peer source
    headers: frozenset[str] | None = frozenset()
    context: frozenset[str] | None = frozenset()
    now: bool = False
    #: ``request.body``, ``body_json`` or ``form`` (then the headers that say
    #: how to read a body, :data:`authz.body.BODY_HEADERS`, are read too).
    body: bool = False

    def attributes(self) -> tuple[str, ...]:
        """The :data:`authz.request.ATTRIBUTES` a decision reads: the path and
        the host always (their shape alone can refuse a request), the others
        as flagged."""
        return tuple(name for name in ATTRIBUTES if name in ("path", "host") or getattr(self, name))

    def names(self) -> frozenset[str]:
        """:meth:`attributes`, and ``"context"`` when any of it is read: the
        names a door may list as unknown (``Request.unknown``)."""
        names = set(self.attributes())
        if self.context is None or self.context:
            names.add("context")
        return frozenset(names)

    @classmethod
    def from_paths(cls, paths: set[AttrPath]) -> Reads:
        flags: dict[str, Any] = {}
        headers: set[str] | None = set()
        context: set[str] | None = set()
        every_request = ("method", "host", "query", "scheme")
        for path in paths:
            root, rest = path[0], path[1:]
            if root == "request":
                if not rest:
                    flags.update(dict.fromkeys(every_request, True))
                    flags["body"] = True
                    headers = _ALL
                elif rest[0] in BODY_FIELDS:
                    flags["body"] = True
                    if headers is not None:
                        headers.update(BODY_HEADERS)
                elif rest[0] == "headers":
                    if len(rest) == 1 or headers is None:
                        headers = _ALL
                    else:
                        headers.add(rest[1].lower())
                elif rest[0] in every_request:
                    flags[rest[0]] = True
            elif root in ("source", "destination"):
                fields = ("address", "port", "principal") if not rest else (rest[0],)
                for name in fields:
                    if name in ("address", "port", "principal"):
                        flags[f"{root}_{name}"] = True
                if root == "source" and rest[:1] == ("certificate",):
                    flags["source_certificate"] = True
            elif root == "context":
                if not rest or context is None:
                    context = _ALL
                else:
                    context.add(rest[0])
            elif root == "now":
                flags["now"] = True
        return cls(
            **flags,
            headers=None if headers is None else frozenset(headers),
            context=None if context is None else frozenset(context),
        )


@dataclass(frozen=True, eq=False)
class Policy:
    """A compiled policy. Immutable; reloads build a new one."""

    generation: int
    file: str
    files: tuple[str, ...]
    issuers: tuple[JwtIssuer, ...]
    credential_sources: tuple[Credential, ...]
    peers: PeerRoles
    roles: Mapping[str, tuple[Matcher, ...]]
    deny_rules: tuple[Rule, ...]
    allow_rules: tuple[Rule, ...]
    response: ResponsePlan
    reads: Reads
    # Cache settings: their defaults are the policy format's, in
    # authz.config.schema (CacheSpec).
    decision_cache_size: int
    decision_ttl: float
    deny_ttl: float
    token_cache_size: int
    credential_headers: tuple[str, ...] = field(default=())
    #: The line of ``peers`` in the policy file, for messages about it.
    peers_line: int = 0
    #: How request paths are read before any rule sees them.
    paths: PathRules = DEFAULT_RULES
    #: Who may ask, about what (``callers:``); None: anyone, about anything.
    callers: Callers | None = None
    #: How the policy's denials look (``deny_with``); empty: the defaults.
    deny_with: DenyWith = field(default_factory=DenyWith)
    #: The caches' byte bounds (``cache.*.max_bytes``); 0: bounded by entries only.
    decision_cache_bytes: int = 0
    token_cache_bytes: int = 0
    #: Every endpoint the policy calls per token or per request
    #: (:class:`authz.outside.calls.KeyedCalls`: introspection, data sources).
    outside_calls: tuple[Any, ...] = ()
    #: The ``data:`` sources and the rules that read them (authz.data); None: none.
    data: DataPlan | None = None
    #: ``body:``: the limits on a request body a rule reads.
    body: BodyLimits = field(default_factory=BodyLimits)
    #: The issuers' ``login:`` (browser sign-in, :class:`authz.login.Login`).
    logins: tuple[Any, ...] = ()

    def origin(self, name: str) -> tuple[str, int, str | None] | None:
        """Where the rule or role ``name`` (what a decision names) is
        written: (file, line, team or None for the root)."""
        for rule in (*self.deny_rules, *self.allow_rules):
            if rule.name == name:
                return _where(rule.matcher)
        permissions = self.roles.get(name)
        return _where(permissions[0]) if permissions else None


def _where(matcher: Matcher) -> tuple[str, int, str | None] | None:
    if not matcher.file:
        return None
    return matcher.file, matcher.line, None if matcher.scope is None else matcher.scope.team
