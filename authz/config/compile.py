"""load -> validate -> compile -> freeze.

:func:`load_policy` reads a policy file, checks its shape (schema), then its
meaning (CEL, CIDRs, role references, key files, ...), collecting *every*
problem with its file and line before giving up, and builds an immutable
:class:`authz.policy.Policy`.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import json
import os
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from authz.cel import CelError, Expression, compile_expression
from authz.config import schema
from authz.config.source import Located, Path, load_yaml
from authz.errors import ConfigError, Problem
from authz.identity.api_key import ApiKeyEntry, ApiKeySource
from authz.identity.jwks import FetchLoop, FileKeys, JwksSettings, RemoteKeys, check_url
from authz.identity.jws import ALGORITHMS
from authz.identity.jwt import JwtIssuer, JwtSource, TokenLocation
from authz.identity.keys import load_ec_key, parse_jwks, public_jwk
from authz.identity.peer import PeerRoles
from authz.identity.token import IdentityTokenSigner
from authz.matchers import (
    compile_cidrs,
    compile_globs,
    compile_hosts,
    compile_methods,
    compile_paths,
    glob_regex,
)
from authz.policy import Matcher, Policy, Reads, Rule, next_generation
from authz.upstream import ResponsePlan

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_COOKIE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Headers authz must never set or strip: framing, routing and hop-by-hop.
_RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "te",
    "keep-alive", "proxy-connection", "expect",
})
_DURATION_FIELDS = frozenset({"refresh_interval", "min_refetch_interval", "max_stale", "fetch_timeout", "leeway", "ttl", "deny_ttl"})
_TYPE_NAMES = {
    "string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
# What a required field is for, said when it is missing.
_MISSING_HINTS = {
    "version": "missing required field (write 'version: 1')",
    "audiences": "missing required field (an issuer needs at least one audience: the token's aud must contain one)",
    "effect": "missing required field ('allow' or 'deny')",
}


class KeyRegistry:
    """Remote key sets that outlive a policy: a reload that keeps an issuer
    keeps its cached keys instead of fetching them again."""

    def __init__(self, loop: FetchLoop | None = None) -> None:
        self.loop = loop
        self._sets: dict[tuple[Any, ...], RemoteKeys] = {}

    def get(self, name: str, issuer: str, jwks_uri: str | None, algorithms: frozenset[str], settings: JwksSettings) -> RemoteKeys:
        key = (name, issuer, jwks_uri, algorithms, settings)
        found = self._sets.get(key)
        if found is None:
            found = RemoteKeys(name, issuer, jwks_uri, algorithms, settings, loop=self.loop)
            self._sets[key] = found
        return found

    def retain(self, keep: Iterable[RemoteKeys]) -> None:
        """Stop and forget the sets no longer in use."""
        keep_ids = {id(k) for k in keep}
        for key, keys in list(self._sets.items()):
            if id(keys) not in keep_ids:
                keys.stop()
                del self._sets[key]


def load_policy(path: str, *, registry: KeyRegistry | None = None) -> Policy:
    """Load, validate and compile the policy at ``path``.

    Raises :class:`ConfigError` listing every problem found.
    """
    located = _read_yaml(path, path)
    if located.problems:
        raise ConfigError(located.problems)
    model = _validate(located, schema.Policy)
    if located.problems or model is None:
        raise ConfigError(located.problems)
    compiler = _Compiler(located, os.path.dirname(os.path.abspath(path)), registry or KeyRegistry())
    policy = compiler.compile(model)
    if compiler.problems:
        raise ConfigError(compiler.problems)
    return policy


def _read_yaml(path: str, shown: str) -> Located:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        located = Located(shown, None)
        located.problems.append(Problem(shown, 1, f"cannot read the file: {_os_reason(exc)}"))
        return located
    return load_yaml(text, shown)


def _os_reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(exc)


M = TypeVar("M", bound=BaseModel)


def _validate(located: Located, model: type[M]) -> M | None:
    try:
        return model.model_validate(located.data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            if not loc and not isinstance(located.data, dict):
                located.problem((), f"expected a mapping at the top of the file, not {_yaml_type(located.data)}")
                continue
            key = error["type"] == "extra_forbidden"
            located.problem(loc, _message(error, model), key=key)
        return None


def _yaml_type(value: Any) -> str:
    """How a loaded YAML value is named in a message."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, datetime.date):
        return "a date"
    return f"a {type(value).__name__}"


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names (aliases where set) of the model found at ``loc``."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for name, info in annotation.model_fields.items():
                if part in (name, info.alias):
                    annotation = info.annotation
                    break
            else:
                return []
            continue
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is list and isinstance(part, int) and args:
            annotation = args[0]
        elif origin is dict and isinstance(part, str) and len(args) == 2:
            annotation = args[1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [info.alias or name for name, info in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _message(error: Any, model: type[BaseModel] = schema.Policy) -> str:
    kind = error["type"]
    loc = error["loc"]
    ctx = error.get("ctx") or {}
    last = loc[-1] if loc else None
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(last), _fields_at(model, tuple(loc[:-1])), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown field{hint}"
    if kind == "missing":
        return _MISSING_HINTS.get(str(last), "missing required field")
    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, not {_yaml_type(error.get('input'))}"
    if kind == "literal_error":
        if loc == ("version",):
            found = error.get("input")
            if isinstance(found, int) and not isinstance(found, bool):
                return f"unsupported policy version {found}: this authz reads version 1"
            return f"expected the number 1, not {_yaml_type(found)}"
        return f"expected {ctx.get('expected')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "string_pattern_mismatch":
        return "invalid name (use letters, digits, '_', '.' and '-', at most 63 characters)"
    unit = "s" if last in _DURATION_FIELDS else ""
    bounds = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most", "less_than": "less than"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit:g}{unit}"
    return str(error["msg"])


class _Compiler:
    def __init__(self, located: Located, base: str, registry: KeyRegistry) -> None:
        self.located = located
        self.base = base
        self.registry = registry
        self.problems = located.problems
        self.files: list[str] = [os.path.abspath(located.file)]

    def problem(self, path: Path, message: str) -> None:
        self.located.problem(path, message)

    def resolve(self, name: str) -> str:
        path = name if os.path.isabs(name) else os.path.join(self.base, name)
        self.files.append(os.path.abspath(path))
        return path

    def attempt(self, path: Path, build: Callable[[], Any]) -> Any:
        """Run ``build``; a ValueError becomes a problem at ``path``."""
        try:
            return build()
        except ValueError as exc:
            self.problem(path, str(exc))
            return None

    def cel(self, path: Path, source: str, result: str) -> Expression | None:
        """Compile a CEL expression; a problem points at the line of the
        error inside a literal block (``when: |``), else at the value."""
        try:
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

    def compile(self, model: schema.Policy) -> Policy:
        role_names = set(model.roles)
        issuers = self.issuers(model.issuers)
        sources: list[JwtSource | ApiKeySource] = self.jwt_sources(issuers)
        api_keys = self.api_keys(model.api_keys, role_names) if model.api_keys is not None else None
        if api_keys is not None:
            if any(isinstance(s, JwtSource) and s.location.header == api_keys.header for s in sources):
                self.problem(("api_keys", "header"), f"header {api_keys.header!r} already carries JWTs")
            sources.append(api_keys)
        peers = self.peers(model.peers, role_names)
        roles = {
            name: tuple(m for i, p in enumerate(perms) if (m := self.matcher(p, ("roles", name, i))) is not None)
            for name, perms in model.roles.items()
        }
        rules = self.rules(model.rules)
        response = self.response(model.response)

        reads: set[tuple[str, ...]] = set()
        for matchers in roles.values():
            for matcher in matchers:
                reads |= matcher.reads()
        for rule in rules:
            reads |= rule.matcher.reads()
        for _name, expression in response.headers:
            reads |= expression.reads
        if peers or response.identity_token is not None:
            reads.add(("source", "principal"))

        cache = model.cache
        decision_ttl = cache.decisions.ttl
        if response.identity_token is not None:
            # A cached answer carries its identity token: reuse it for at
            # most half its lifetime, so upstreams always get >= ttl/2.
            decision_ttl = min(decision_ttl, response.identity_token.ttl / 2)
        return Policy(
            generation=next_generation(),
            file=os.path.abspath(self.located.file),
            files=tuple(dict.fromkeys(self.files)),
            issuers=tuple(issuers),
            credential_sources=tuple(sources),
            peers=peers,
            roles=roles,
            deny_rules=tuple(r for r in rules if r.effect == "deny"),
            allow_rules=tuple(r for r in rules if r.effect == "allow"),
            response=response,
            reads=Reads.from_paths(reads),
            decision_cache_size=cache.decisions.max_entries,
            decision_ttl=decision_ttl,
            deny_ttl=min(cache.decisions.deny_ttl, decision_ttl),
            token_cache_size=cache.tokens.max_entries,
            credential_headers=tuple(dict.fromkeys(
                (s.location.header_name if isinstance(s, JwtSource) else s.header) for s in sources
            )),
        )

    # -- issuers ------------------------------------------------------------

    def issuers(self, issuers: list[schema.Issuer]) -> list[JwtIssuer]:
        out = []
        names: set[str] = set()
        values: set[str] = set()
        for index, config in enumerate(issuers):
            path: Path = ("issuers", index)
            if config.name in names:
                self.problem((*path, "name"), f"duplicate issuer name {config.name!r}")
            names.add(config.name)
            if config.issuer in values:
                self.problem((*path, "issuer"), f"issuer {config.issuer!r} is configured twice")
            values.add(config.issuer)
            issuer = self.issuer(config, path)
            if issuer is not None:
                out.append(issuer)
        return out

    def issuer(self, config: schema.Issuer, path: Path) -> JwtIssuer | None:
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
                self.problem((*path, "algorithms", i), f"unsupported algorithm {alg!r} (supported: {', '.join(sorted(ALGORITHMS))})")
                ok = False
            elif alg.startswith("HS") and config.jwks_file is None:
                self.problem((*path, "algorithms", i), f"{alg} needs a shared secret from jwks_file; remote key sets never hold secrets")
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
        settings = JwksSettings(
            refresh_interval=config.jwks.refresh_interval,
            min_refetch_interval=config.jwks.min_refetch_interval,
            max_stale=config.jwks.max_stale,
            fetch_timeout=config.jwks.fetch_timeout,
        )
        keys: Any
        if config.jwks_file is not None:
            keys = self.key_file(config.jwks_file, algorithms, (*path, "jwks_file"))
            if keys is None:
                return None
        else:
            keys = self.registry.get(config.name, config.issuer, config.jwks_uri, algorithms, settings)
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

    def location(self, where: schema.TokenLocation, path: Path) -> TokenLocation | None:
        if where.header is not None:
            name = where.header.lower()
            if not _HEADER_NAME.fullmatch(name) or name in _RESERVED_HEADERS:
                self.problem((*path, "header"), f"invalid header name {where.header!r}")
                return None
            return TokenLocation(header=name, prefix=where.prefix or "")
        assert where.cookie is not None
        if not _COOKIE_NAME.fullmatch(where.cookie):
            self.problem((*path, "cookie"), f"invalid cookie name {where.cookie!r}")
            return None
        return TokenLocation(cookie=where.cookie)

    def key_file(self, name: str, algorithms: frozenset[str], path: Path) -> FileKeys | None:
        file = self.resolve(name)
        try:
            with open(file, "rb") as handle:
                document = json.loads(handle.read())
        except OSError as exc:
            self.problem(path, f"cannot read key file {name!r}: {_os_reason(exc)}")
            return None
        except (ValueError, RecursionError):
            self.problem(path, f"key file {name!r} is not JSON (a JWKS document: {{\"keys\": [...]}})")
            return None
        try:
            keyset = parse_jwks(document, algorithms, allow_symmetric=True)
        except ValueError as exc:
            self.problem(path, f"key file {name!r}: {exc}")
            return None
        return FileKeys(keyset, file)

    def jwt_sources(self, issuers: list[JwtIssuer]) -> list[JwtSource | ApiKeySource]:
        by_location: dict[TokenLocation, list[JwtIssuer]] = {}
        for issuer in issuers:
            for location in issuer.locations:
                by_location.setdefault(location, []).append(issuer)
        known = frozenset(issuer.issuer for issuer in issuers)
        return [JwtSource(location, group, known_issuers=known) for location, group in by_location.items()]

    # -- API keys and peers -------------------------------------------------

    def api_keys(self, config: schema.ApiKeys, role_names: set[str]) -> ApiKeySource | None:
        header = config.header.lower()
        if not _HEADER_NAME.fullmatch(header) or header in _RESERVED_HEADERS:
            self.problem(("api_keys", "header"), f"invalid header name {config.header!r}")
        entries: list[ApiKeyEntry] = []
        seen: set[str] = set()
        self.key_entries(config.keys, ("api_keys", "keys"), self.located, role_names, entries, seen)
        if config.keys_file is not None:
            file = self.resolve(config.keys_file)
            # Problems in the keys file are reported under its own name, as
            # reachable from where the policy file was named.
            shown = config.keys_file
            if not os.path.isabs(shown):
                shown = os.path.join(os.path.dirname(self.located.file), shown)
            located = _read_yaml(file, shown)
            if not located.problems:
                if isinstance(located.data, list):
                    located.data = {"keys": located.data}
                    located.remap(("keys",))
                if isinstance(located.data, dict):
                    model = _validate(located, schema.ApiKeysFile)
                    if model is not None:
                        self.key_entries(model.keys, ("keys",), located, role_names, entries, seen)
                else:
                    located.problem((), f"expected a list of keys (or a mapping with 'keys'), not {_yaml_type(located.data)}")
            self.problems.extend(located.problems)
        return ApiKeySource(header, tuple(entries))

    def key_entries(
        self, keys: list[schema.ApiKey], path: Path, located: Located, role_names: set[str],
        entries: list[ApiKeyEntry], seen: set[str],
    ) -> None:
        for index, key in enumerate(keys):
            where: Path = (*path, index)
            digest = key.sha256.lower()
            if not _SHA256_HEX.fullmatch(digest):
                located.problem((*where, "sha256"), "sha256 must be 64 hexadecimal digits (the hash of the key, never the key)")
                continue
            if digest in seen:
                located.problem((*where, "sha256"), "the same key is listed twice")
                continue
            seen.add(digest)
            for i, role in enumerate(key.roles):
                if role not in role_names:
                    located.problem((*where, "roles", i), f"unknown role {role!r}")
            entries.append(ApiKeyEntry(key.subject, bytes.fromhex(digest), frozenset(key.roles)))

    def peers(self, peers: dict[str, list[str]], role_names: set[str]) -> PeerRoles:
        out: dict[str, frozenset[str]] = {}
        for glob, roles in peers.items():
            if not glob:
                self.problem(("peers",), "empty peer pattern")
                continue
            if self.attempt(("peers", glob), functools.partial(glob_regex, glob)) is None:
                continue
            for i, role in enumerate(roles):
                if role not in role_names:
                    self.problem(("peers", glob, i), f"unknown role {role!r}")
            out[glob] = frozenset(roles)
        return PeerRoles.compile(out)

    # -- permissions and rules ---------------------------------------------

    def matcher(self, config: schema.Permission, path: Path) -> Matcher | None:
        ok = True

        def each(field: str, items: list[str] | None, build: Callable[[list[str]], Any]) -> Any:
            nonlocal ok
            if items is None:
                return None
            if not items:
                self.problem((*path, field), "an empty list matches nothing; omit the field to match any")
                ok = False
                return None
            for i, item in enumerate(items):
                if self.attempt((*path, field, i), functools.partial(build, [item])) is None:
                    ok = False
            return build(items) if ok else None

        hosts = each("hosts", config.hosts, compile_hosts)
        methods = each("methods", config.methods, compile_methods)
        paths = each("paths", config.paths, compile_paths)
        source_ips = each("source_ips", config.source_ips, compile_cidrs)
        principals = each("principals", config.principals, compile_globs)
        when = None
        if config.when is not None:
            when = self.cel((*path, "when"), config.when, "bool")
            ok = ok and when is not None
        if not ok:
            return None
        return Matcher(hosts=hosts, methods=methods, paths=paths, source_ips=source_ips, principals=principals, when=when)

    def rules(self, rules: list[schema.Rule]) -> list[Rule]:
        out = []
        names: set[str] = set()
        for index, config in enumerate(rules):
            path: Path = ("rules", index)
            if config.name in names:
                self.problem((*path, "name"), f"duplicate rule name {config.name!r}")
            names.add(config.name)
            if config.anonymous and config.effect == "deny":
                self.problem((*path, "anonymous"), "'anonymous' applies to allow rules only (deny rules match every caller)")
            matcher = self.matcher(config, path)
            if matcher is not None:
                out.append(Rule(config.name, config.effect, matcher, config.anonymous, config.dry_run))
        return out

    # -- response -------------------------------------------------------------

    def header_name(self, name: str, path: Path) -> bool:
        if not _HEADER_NAME.fullmatch(name) or name in _RESERVED_HEADERS:
            self.problem(path, f"{name!r} is not a header authz may set or remove (lower-case names; not pseudo or hop-by-hop headers)")
            return False
        return True

    def response(self, config: schema.Response) -> ResponsePlan:
        headers = []
        for name, source in config.headers.items():
            path: Path = ("response", "headers", name)
            if not self.header_name(name, path):
                continue
            expression = self.cel(path, source, "string")
            if expression is not None:
                headers.append((name, expression))
        remove = []
        for i, name in enumerate(config.remove):
            if self.header_name(name, ("response", "remove", i)):
                if name in config.headers:
                    self.problem(("response", "remove", i), f"{name!r} is both set and removed")
                remove.append(name)
        signer = None
        if config.identity_token is not None:
            signer = self.identity_token(config.identity_token, set(config.headers) | set(remove))
        return ResponsePlan(tuple(headers), tuple(remove), signer)

    def identity_token(self, config: schema.IdentityToken, taken: set[str]) -> IdentityTokenSigner | None:
        path: Path = ("response", "identity_token")
        ok = self.header_name(config.header, (*path, "header"))
        if config.header in taken:
            self.problem((*path, "header"), f"{config.header!r} is also set or removed in response")
            ok = False
        private = None
        try:
            private = load_ec_key(self.resolve(config.signing_key))
        except OSError as exc:
            self.problem((*path, "signing_key"), f"cannot read key file {config.signing_key!r}: {_os_reason(exc)}")
        except ValueError as exc:
            self.problem((*path, "signing_key"), f"key file {config.signing_key!r}: {exc}")
        if private is not None and not hasattr(private, "sign"):
            self.problem((*path, "signing_key"), f"key file {config.signing_key!r} holds a public key; signing needs the private key")
            private = None
        jwks = []
        for i, name in enumerate(config.extra_public_keys):
            try:
                extra = load_ec_key(self.resolve(name))
            except OSError as exc:
                self.problem((*path, "extra_public_keys", i), f"cannot read key file {name!r}: {_os_reason(exc)}")
                continue
            except ValueError as exc:
                self.problem((*path, "extra_public_keys", i), f"key file {name!r}: {exc}")
                continue
            public = extra.public_key() if hasattr(extra, "public_key") else extra
            jwks.append(public_jwk(public))
        if private is None or not ok:
            return None
        own = public_jwk(private.public_key())  # type: ignore[union-attr]
        return IdentityTokenSigner(
            header=config.header,
            issuer=config.issuer,
            audience=config.audience,
            ttl=config.ttl,
            key=private,  # type: ignore[arg-type]
            kid=own["kid"],
            jwks=(own, *(k for k in jwks if k["kid"] != own["kid"])),
        )
