"""The ``data:`` section of a policy: outside data sources compiled into an
:class:`authz.data.DataPlan`, and the refusals that keep them safe
(docs/security.md 84-86): a URL whose origin is not fixed text, plain http
to a host that is not loopback (unless the source opts in), a URL field
that could carry a credential, a source no rule reads, ``data`` read where
it is never fetched (the response), a name no source has."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Protocol

from authz.cel import AttrPath, Expression, analyse_reads
from authz.config import schema
from authz.config.compiling import Compiling
from authz.config.messages import os_reason
from authz.config.source import Path
from authz.data import DENY, DataPlan, DataSource, Reader
from authz.outside.calls import CallSettings, endpoint_calls
from authz.outside.http import check_url
from authz.policy import Matcher, Rule


class DataCompiling(Compiling, Protocol):
    def resolve(self, name: str) -> str: ...


#: The origin a URL must begin with, as fixed text: scheme and authority,
#: ended by the path's or the query's first character.
_ORIGIN = re.compile(r"(https?)://([^/?#{}@\s]+)(?=[/?])")
#: Headers that carry credentials whatever the policy says.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def template(text: str) -> list[tuple[bool, str]]:
    """``text`` as (is_field, text) parts: ``{...}`` holds a CEL expression
    (braces inside it balanced; quotes respected). Raises ValueError."""
    parts: list[tuple[bool, str]] = []
    i, start = 0, 0
    while i < len(text):
        if text[i] == "}":
            raise ValueError("a '}' with no '{' before it")
        if text[i] != "{":
            i += 1
            continue
        if i > start:
            parts.append((False, text[start:i]))
        depth, j, quote = 0, i, ""
        while j < len(text):
            char = text[j]
            if quote:
                if char == "\\":
                    j += 1
                elif char == quote:
                    quote = ""
            elif char in "\"'":
                quote = char
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        if j >= len(text):
            raise ValueError("a '{' that is never closed")
        parts.append((True, text[i + 1:j]))
        i = start = j + 1
    if start < len(text):
        parts.append((False, text[start:]))
    return parts


def secret_read(path: AttrPath, credential_headers: frozenset[str]) -> str | None:
    """What credential ``path`` could read, or None."""
    if path in (("request",), ("request", "headers"), ("identity",), ("identity", "claims"), ("request", "query")):
        return f"{'.'.join(path)} as a whole"
    if path[:2] == ("request", "headers") and len(path) > 2 and path[2].lower() in credential_headers:
        return f"the credential header {path[2].lower()!r}"
    return None


def compile_data(compiler: DataCompiling, model: schema.PolicySpec, roles: Mapping[str, tuple[Matcher, ...]],
                 rules: list[Rule], response_reads: set[AttrPath],
                 credential_headers: tuple[str, ...]) -> tuple[DataPlan | None, set[AttrPath]]:
    """The data plan (None when the policy names no source) and what its
    templates read of the request (for the decision cache's key)."""
    names = set(model.data)
    readers: list[Reader] = []
    read_by_rules: set[str] = set()

    def note(when: str | None, path: Path, matcher: Matcher | None, role: str | None) -> None:
        if when is None:
            return
        if not re.search(r"\bdata\b", when):
            return  # an expression the analysis cannot parse "reads" every variable
        found = analyse_reads(when)
        sources = {p[1] for p in found if p[0] == "data" and len(p) > 1}
        if ("data",) in found:
            compiler.problem((*path, "when"), "data as a whole: read each source as data.NAME")
        for name in sorted(sources - names):
            compiler.problem((*path, "when"), f"data.{name}: no data source has this name (data: lists them)")
        sources &= names
        read_by_rules.update(sources)
        if sources and matcher is not None:
            readers.append(Reader(dataclasses.replace(matcher, when=None), role, frozenset(sources)))

    by_name = {rule.name: rule for rule in rules}
    for index, spec in enumerate(model.rules):
        rule = by_name.get(spec.name)
        note(spec.when, ("rules", index), rule.matcher if rule is not None else None, None)
    for role, permissions in model.roles.items():
        compiled = roles.get(role, ())
        for index, permission in enumerate(permissions):
            matcher = compiled[index] if len(compiled) == len(permissions) else None
            note(permission.when, ("roles", role, index), matcher, role)
    if any(path[0] == "data" for path in response_reads):
        compiler.problem(("response",), "data is read by the when of rules and permissions only "
                                        "(the response is built after them)")
    credentials = _CREDENTIAL_HEADERS | frozenset(credential_headers)
    sources: dict[str, DataSource] = {}
    reads: set[AttrPath] = set()
    for name, source_spec in model.data.items():
        if name not in read_by_rules:
            compiler.problem(("data", name), f"data source {name!r} is read by no rule or permission (a "
                                             "source is called only when a when reads data.NAME)")
            continue
        source = _source(compiler, name, source_spec, credentials, reads)
        if source is not None:
            sources[name] = source
    if not model.data:
        return None, reads
    return DataPlan(sources, readers), reads


def _source(compiler: DataCompiling, name: str, spec: schema.DataSourceSpec, credentials: frozenset[str],
            reads: set[AttrPath]) -> DataSource | None:
    at: Path = ("data", name)
    ok = True
    url: list[str | Expression] = []
    try:
        parts = template(spec.url)
    except ValueError as exc:
        compiler.problem((*at, "url"), f"url: {exc}")
        return None
    origin = _ORIGIN.match(spec.url)
    if origin is None or (parts and parts[0][0]) or (parts and origin.end() > len(parts[0][1])):
        compiler.problem((*at, "url"), "url must begin with a fixed scheme://host[:port]/ (no user info; "
                                       "fields only after it)")
        ok = False
    elif not (spec.allow_insecure_http and origin.group(1) == "http"):
        problem = check_url(origin.group(0) + "/")
        if problem:
            compiler.problem((*at, "url"), f"url {problem}, or set allow_insecure_http: true")
            ok = False
    for is_field, text in parts:
        if not is_field:
            url.append(text)
            continue
        expression = compiler.cel((*at, "url"), text, "string")
        if expression is None:
            ok = False
            continue
        for path in sorted(expression.reads):
            if (secret := secret_read(path, credentials)) is not None:
                compiler.problem((*at, "url"), f"url field {{{text}}} reads {secret}: a credential must "
                                               "never travel in a URL (logs and proxies keep URLs)")
                ok = False
        reads.update(expression.reads)
        url.append(expression)
    body = None
    if spec.body is not None:
        if spec.method != "POST":
            compiler.problem((*at, "body"), "a body is sent with method: POST only")
            ok = False
        body = []
        for key, source in spec.body.items():
            expression = compiler.cel((*at, "body", key), source, "value")
            if expression is None:
                ok = False
            else:
                reads.update(expression.reads)
                body.append((key, expression))
    headers = _headers(compiler, spec, at)
    if not ok or headers is None:
        return None
    on_error: Any = DENY if isinstance(spec.on_error, str) else spec.on_error.value
    settings = CallSettings(timeout=spec.timeout, max_concurrent=spec.max_concurrent,
                            max_entries=spec.max_entries, max_bytes=spec.max_bytes)
    return DataSource(name, spec.method, tuple(url), headers, tuple(body) if body is not None else None,
                      spec.cache_ttl, on_error,
                      endpoint_calls(name, "data", settings,
                                     (spec.url, spec.method, tuple(spec.headers.items()), spec.cache_ttl)))


def _headers(compiler: DataCompiling, spec: schema.DataSourceSpec, at: Path) -> tuple[tuple[str, str], ...] | None:
    out = []
    ok = True
    for header, value in spec.headers.items():
        path: Path = (*at, "headers", header)
        name = compiler.header_name(header, path, fold=True)
        if name is None:
            ok = False
            continue
        if isinstance(value, str):
            out.append((name, value))
            continue
        try:
            with open(compiler.resolve(value.file), encoding="utf-8") as handle:
                secret = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            compiler.problem(path, f"cannot read {value.file!r}: {os_reason(exc)}")
            ok = False
            continue
        if not secret or "\n" in secret:
            compiler.problem(path, f"{value.file!r} must hold one non-empty line")
            ok = False
            continue
        out.append((name, value.prefix + secret))
    return tuple(out) if ok else None
