"""load -> validate -> compile -> freeze.

:func:`authz.config.load.load_policy` reads a policy file, checks its shape
(schema); :class:`PolicyCompiler` then checks its meaning (CEL, CIDRs, role
references, key files, ...), collecting *every*
problem with its file and line before giving up, and builds an immutable
:class:`authz.policy.Policy`.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from authz import matchers
from authz.cel import CelError, Expression, compile_expression
from authz.config import schema
from authz.config.api_keys import INVALID_HEADER, api_key_section
from authz.config.callers import compile_callers
from authz.config.cel_check import check as check_types
from authz.config.certificates import compile_certificates
from authz.config.compiling import UNSETTABLE_HEADER
from authz.config.data import compile_data
from authz.config.deny_with import compile_deny_with, deny_reads
from authz.config.introspection import introspection_section
from authz.config.keyfiles import parse_jwks_file, read_key_file
from authz.config.login import login_section
from authz.config.response import compile_response
from authz.config.source import Located, Path
from authz.identity.credential import Credential, headers_of, reads_of
from authz.identity.introspected import IntrospectedSource
from authz.identity.jwks import FileKeys, KeyRegistry
from authz.identity.jws import ALGORITHMS
from authz.identity.jwt import JwtIssuer, JwtSource, TokenLocation
from authz.identity.peer import PeerRoles
from authz.login.session import SessionSource
from authz.outside.http import check_url
from authz.policy import Matcher, Policy, Reads, Rule, next_generation
from authz.response_plan import ResponsePlan
from authz.scope import Scope

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_COOKIE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers authz must never set or strip: framing, routing and hop-by-hop.
_RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "te",
    "keep-alive", "proxy-connection", "expect",
})
# What is said of a header name that fails header_name(), with the name as written.

T = TypeVar("T")


def policy_reads(roles: dict[str, tuple[Matcher, ...]], rules: list[Rule], response: ResponsePlan, *, peers: bool,
                 denials: set[tuple[str, ...]] | None = None) -> Reads:
    """What a policy's decisions read: its matchers, its response, what its
    own denials name of the request (``denials``), and the peer principal
    when peers or the identity token need it."""
    reads: set[tuple[str, ...]] = set(denials or ())
    for matcher in itertools.chain(*roles.values(), (rule.matcher for rule in rules)):
        reads |= matcher.reads()
    reads |= response.reads()
    if peers or response.identity_token is not None:
        reads.add(("source", "principal"))
    return Reads.from_paths(reads)


class PolicyCompiler:
    def __init__(self, located: Located, base: str, registry: KeyRegistry, *, fold_case: bool = False) -> None:
        self.located = located
        self.base = base
        self.registry = registry
        self.problems = located.problems
        # Every file the policy reads, in order: a reload watches them.
        self.files: dict[str, None] = {os.path.abspath(located.file): None}
        self.fold_case = fold_case  # paths.case_sensitive: false lower-cases the path patterns
        #: Roles defined elsewhere (a policy directory's team files), which
        #: api_keys and peers may grant.
        self.extra_roles: set[str] = set()
        #: A team file's scope, carried by every matcher compiled (authz.scope).
        self.scope: Scope | None = None
        #: What compile() found so far, for the credential sections.
        self.role_names: set[str] = set()
        self.compiled_issuers: list[JwtIssuer] = []

    def problem(self, path: Path, message: str) -> None:
        self.located.problem(path, message)

    def resolve(self, name: str) -> str:
        path = name if os.path.isabs(name) else os.path.join(self.base, name)
        self.files[os.path.abspath(path)] = None
        return path

    def once(self, seen: set[str], value: str, path: Path, message: str) -> None:
        """Note ``value`` as seen; a problem at ``path`` if it was already."""
        if value in seen:
            self.problem(path, message)
        seen.add(value)

    def attempt(self, path: Path, build: Callable[[], T]) -> T | None:
        """Run ``build``; a ValueError becomes a problem at ``path``."""
        try:
            return build()
        except ValueError as exc:
            self.problem(path, str(exc))
            return None

    def cel(self, path: Path, source: str, result: str) -> Expression | None:
        """Compile a CEL expression and check its types; a problem points at
        the line of the error inside a literal block (``when: |``), else at
        the value."""
        try:
            check_types(source, result)
            return compile_expression(source, result=result)
        except CelError as exc:
            line = None
            start = self.located.blocks.get(path)
            if start is not None and exc.line is not None:
                # An error at the end of the text points at its last line.
                last = source.rstrip("\n").count("\n") + 1
                line = start + min(exc.line, last) - 1
            self.located.problem(path, str(exc), line=line)
            return None

    # -- the whole policy -------------------------------------------------

    def compile(self, model: schema.PolicySpec) -> Policy:
        role_names = self.role_names = set(model.roles) | self.extra_roles
        issuers = self.compiled_issuers = self.issuers(model.issuers)
        sources: list[Credential] = []
        for section in CREDENTIAL_SECTIONS:
            sources.extend(section(self, model, sources))
        peers = self.peers(model.peers, role_names)
        roles = {
            name: tuple(m for i, p in enumerate(perms) if (m := self.matcher(p, ("roles", name, i))) is not None)
            for name, perms in model.roles.items()
        }
        rules = self.rules(model.rules)
        credential_headers = tuple(dict.fromkeys(name for source in sources for name in headers_of(source)))
        response = compile_response(self, model.response, credential_headers)
        deny_with = compile_deny_with(self, model.deny_with, model.rules, (key for key, _ in response.metadata))

        credential_reads = {path for source in sources for path in reads_of(source)}
        data, data_reads = compile_data(self, model, roles, rules, response.reads(), credential_headers)
        reads = policy_reads(roles, rules, response, peers=bool(peers),
                             denials=deny_reads(deny_with) | credential_reads | data_reads)
        cache, decision_ttl = model.cache, model.cache.decisions.ttl
        if response.identity_token is not None:
            # A cached answer carries its identity token: reuse it for at
            # most half its lifetime, so upstreams always get >= ttl/2.
            decision_ttl = min(decision_ttl, response.identity_token.ttl / 2)
        return Policy(
            generation=next_generation(),
            file=os.path.abspath(self.located.file),
            files=tuple(self.files),
            issuers=tuple(issuers),
            credential_sources=tuple(sources),
            peers=peers,
            roles=roles,
            deny_rules=tuple(r for r in rules if r.effect == "deny"),
            allow_rules=tuple(r for r in rules if r.effect == "allow"),
            response=response,
            reads=reads,
            decision_cache_size=cache.decisions.max_entries,
            decision_ttl=decision_ttl,
            deny_ttl=min(cache.decisions.deny_ttl, decision_ttl),
            token_cache_size=cache.tokens.max_entries,
            decision_cache_bytes=cache.decisions.max_bytes,
            token_cache_bytes=cache.tokens.max_bytes,
            peers_line=self.located.line(("peers",), key=True) if peers else 0,
            paths=model.paths.rules(),
            credential_headers=credential_headers,
            callers=compile_callers(self, model.callers) if model.callers is not None else None,
            deny_with=deny_with,
            outside_calls=(*dict.fromkeys(issuer.calls for source in sources
                                          if isinstance(source, IntrospectedSource)
                                          for issuer in source.issuers.values()),
                           *(source.login.calls for source in sources if isinstance(source, SessionSource)),
                           *(source.calls for source in (data.sources.values() if data else ()))),
            data=data,
            body=model.body.limits(),
            logins=tuple(source.login for source in sources if isinstance(source, SessionSource)),
        )

    # -- issuers ------------------------------------------------------------

    def issuers(self, issuers: list[schema.IssuerSpec]) -> list[JwtIssuer]:
        out = []
        names: set[str] = set()
        values: set[str] = set()
        for index, config in enumerate(issuers):
            path: Path = ("issuers", index)
            self.once(names, config.name, (*path, "name"), f"duplicate issuer name {config.name!r}")
            self.once(values, config.issuer, (*path, "issuer"), f"issuer {config.issuer!r} is configured twice")
            if config.introspection is not None:  # authz.config.introspection compiles it
                continue
            issuer = self.issuer(config, path)
            if issuer is not None:
                out.append(issuer)
        return out

    def issuer(self, config: schema.IssuerSpec, path: Path) -> JwtIssuer | None:
        ok = True
        problem = check_url(config.issuer)
        if problem:
            self.problem((*path, "issuer"), f"issuer {problem}")
            ok = False
        if not config.audiences:
            self.problem((*path, "audiences"), "an issuer needs at least one audience")
            ok = False
        for i, audience in enumerate(config.audiences):
            if not audience:
                self.problem((*path, "audiences", i), "empty audience")
                ok = False
        algorithms = frozenset(config.algorithms)
        if not algorithms:
            self.problem((*path, "algorithms"), "an issuer needs at least one algorithm")
            ok = False
        for i, alg in enumerate(config.algorithms):
            if alg not in ALGORITHMS:
                self.problem((*path, "algorithms", i),
                             f"unsupported algorithm {alg!r} (supported: {', '.join(sorted(ALGORITHMS))})")
                ok = False
            elif alg.startswith("HS") and config.jwks_file is None:
                self.problem((*path, "algorithms", i),
                             f"{alg} needs a shared secret from jwks_file; remote key sets never hold secrets")
                ok = False
        if config.jwks_file is not None and config.jwks_uri is not None:
            self.problem((*path, "jwks_file"), "give jwks_file or jwks_uri, not both")
            ok = False
        if config.jwks_uri is not None:
            problem = check_url(config.jwks_uri)
            if problem:
                self.problem((*path, "jwks_uri"), f"jwks_uri {problem}")
                ok = False
        for field in ("roles_claim", "scopes_claim"):
            if "" in getattr(config, field).split("."):
                self.problem((*path, field), "empty claim path segment")
                ok = False
        locations = []
        for i, where in enumerate(config.from_):
            location = self.location(where, (*path, "from", i))
            if location is None:
                ok = False
            else:
                locations.append(location)
        token_types = None
        if config.token_types is not None:
            token_types = frozenset(t.lower().removeprefix("application/") for t in config.token_types)
            if not token_types:
                self.problem((*path, "token_types"), "an empty list accepts no token; omit the field to accept any")
                ok = False
        if not ok:
            return None
        keys: Any
        if config.jwks_file is not None:
            keyset = self.key_file(config.jwks_file, (*path, "jwks_file"),
                                   functools.partial(parse_jwks_file, algorithms))
            if keyset is None:
                return None
            keys = FileKeys(keyset, self.resolve(config.jwks_file))
        else:
            keys = self.registry.get(config.name, config.issuer, config.jwks_uri, algorithms, config.jwks.settings())
        return JwtIssuer(
            name=config.name,
            issuer=config.issuer,
            audiences=frozenset(config.audiences),
            algorithms=algorithms,
            leeway=config.leeway,
            roles_claim=tuple(config.roles_claim.split(".")),
            scopes_claim=tuple(config.scopes_claim.split(".")),
            locations=tuple(locations),
            token_types=token_types,
            max_token_size=config.max_token_size,
            keys=keys,
        )

    def location(self, where: schema.TokenLocationSpec, path: Path) -> TokenLocation | None:
        if where.header is not None:
            name = self.header_name(where.header, (*path, "header"), INVALID_HEADER, fold=True)
            return None if name is None else TokenLocation(header=name, prefix=where.prefix or "")
        assert where.cookie is not None
        if not _COOKIE_NAME.fullmatch(where.cookie):
            self.problem((*path, "cookie"), f"invalid cookie name {where.cookie!r}")
            return None
        return TokenLocation(cookie=where.cookie)

    def key_file(self, name: str, path: Path, parse: Callable[[bytes], T]) -> T | None:
        """The key file ``name`` (beside the policy), parsed; None, with a
        problem at ``path``, when it cannot be."""
        return self.attempt(path, functools.partial(read_key_file, name, self.resolve(name), parse))

    def jwt_sources(self, issuers: list[JwtIssuer]) -> list[JwtSource]:
        by_location: dict[TokenLocation, list[JwtIssuer]] = {}
        for issuer in issuers:
            for location in issuer.locations:
                by_location.setdefault(location, []).append(issuer)
        known = frozenset(issuer.issuer for issuer in issuers)
        return [JwtSource(location, group, known_issuers=known) for location, group in by_location.items()]

    # -- peers ----------------------------------------------------------------

    def peers(self, peers: dict[str, list[str]], role_names: set[str]) -> PeerRoles:
        out: dict[str, frozenset[str]] = {}
        for glob, roles in peers.items():
            if not glob:
                self.problem(("peers",), "empty peer pattern")
                continue
            if self.attempt(("peers", glob), functools.partial(matchers.glob_regex, glob)) is None:
                continue
            for i, role in enumerate(roles):
                if role not in role_names:
                    self.problem(("peers", glob, i), f"unknown role {role!r}")
            out[glob] = frozenset(roles)
        return PeerRoles.compile(out)

    # -- permissions and rules ---------------------------------------------

    def matcher(self, config: schema.PermissionSpec, path: Path) -> Matcher | None:
        ok = True

        def each(field: str, items: list[str] | None, build: Callable[[list[str]], Any]) -> Any:
            nonlocal ok
            if items is None:
                return None
            if not items:
                self.problem((*path, field), "an empty list matches nothing; omit the field to match any")
            elif all([self.attempt((*path, field, i), functools.partial(build, [item])) is not None
                      for i, item in enumerate(items)]):
                built = self.attempt((*path, field), functools.partial(build, items))  # each alone, then together
                if built is not None:
                    return built
            ok = False
            return None

        hosts = each("hosts", config.hosts, matchers.compile_hosts)
        methods = each("methods", config.methods, matchers.compile_methods)
        paths = each("paths", config.paths, functools.partial(matchers.compile_paths, fold_case=self.fold_case))
        source_ips = each("source_ips", config.source_ips, matchers.compile_cidrs)
        principals = each("principals", config.principals, matchers.compile_globs)
        when = None
        if config.when is not None:
            when = self.cel((*path, "when"), config.when, "bool")
            ok = ok and when is not None
        if not ok:
            return None
        return Matcher(hosts=hosts, methods=methods, paths=paths, source_ips=source_ips, principals=principals,
                       when=when,
                       line=self.located.line(path), file=self.located.file, scope=self.scope)

    def rules(self, rules: list[schema.RuleSpec]) -> list[Rule]:
        out = []
        names: set[str] = set()
        for index, config in enumerate(rules):
            path: Path = ("rules", index)
            self.once(names, config.name, (*path, "name"), f"duplicate rule name {config.name!r}")
            if config.anonymous and config.effect == "deny":
                self.problem((*path, "anonymous"),
                             "'anonymous' applies to allow rules only (deny rules match every caller)")
            matcher = self.matcher(config, path)
            if matcher is not None:
                out.append(Rule(config.name, config.effect, matcher, config.anonymous, config.dry_run))
        return out

    # -- header names (the response section is compiled in authz.config.response) --

    def header_name(self, name: str, path: Path, message: str = UNSETTABLE_HEADER, *, fold: bool = False) -> str | None:
        """``name`` (lower-cased with ``fold``) if it names a header authz may
        read, set or remove; else None and a problem at ``path``: ``message``
        with the name as written."""
        header = name.lower() if fold else name
        if _HEADER_NAME.fullmatch(header) and header not in _RESERVED_HEADERS:
            return header
        self.problem(path, message.format(name))
        return None


# -- credentials: the one place a credential section registers ---------------

#: A policy section compiled into credential sources, given the sources of
#: the sections before it (:class:`authz.identity.credential.Credential`).
CredentialSection = Callable[[PolicyCompiler, schema.PolicySpec, list[Credential]], list[Credential]]


def _jwt_section(compiler: PolicyCompiler, model: schema.PolicySpec, before: list[Credential]) -> list[Credential]:
    return list(compiler.jwt_sources(compiler.compiled_issuers))


def _certificate_section(compiler: PolicyCompiler, model: schema.PolicySpec,
                         before: list[Credential]) -> list[Credential]:
    if model.certificates is None:
        return []
    return compile_certificates(compiler, model.certificates, compiler.role_names)


#: Every credential section, in the order its sources are asked: a new
#: credential is its module (authz/identity/) and one entry here.
CREDENTIAL_SECTIONS: tuple[CredentialSection, ...] = (
    introspection_section, _jwt_section, api_key_section, _certificate_section, login_section)
