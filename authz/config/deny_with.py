"""The ``deny_with`` section and a rule's own ``deny_with``, compiled into
:class:`authz.denials.DenyWith`, every mistake a ``FILE:LINE`` problem:
a status that is not a denial, a ``location`` without a redirect status (or
a redirect without one), a header that is hop-by-hop or that authz sets
itself, a template field that is not one of :data:`authz.denials.FIELDS`."""

from __future__ import annotations

import re
from collections.abc import Iterable

from authz.config import schema
from authz.config.compiling import Compiling
from authz.config.source import Path
from authz.denials import READS, REDIRECTS, DenyWith, Shape, Template, json_template, parse_template
from authz.metadata import BUILTIN

#: Headers authz sets on every denial, or that only Envoy or a hop may set.
OWNED = frozenset({"content-type", "cache-control", "www-authenticate", "location", "content-length",
                   "transfer-encoding", "connection", "keep-alive", "proxy-connection", "upgrade", "te", "trailer",
                   "proxy-authenticate", "proxy-authorization", "host", "expect", "date", "server"})
_OWNED_PREFIXES = ("x-envoy-", ":")
#: What a literal part of a header value or location may hold: printable ASCII.
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_LOCATION = re.compile(r"[\x21-\x7e]+")
_NOT_A_DENIAL = "status {} is not a denial: a 4xx, or a redirect (301, 302, 303, 307, 308) with a location"


def compile_deny_with(compiler: Compiling, spec: schema.DenyWithSpec | None, rules: Iterable[schema.RuleSpec],
                      metadata_keys: Iterable[str] = ()) -> DenyWith:
    taken = set(BUILTIN) | set(metadata_keys)
    unauthenticated = unauthorized = None
    if spec is not None:
        if spec.unauthenticated is not None:
            unauthenticated = compile_shape(compiler, spec.unauthenticated, ("deny_with", "unauthenticated"), taken)
        if spec.unauthorized is not None:
            unauthorized = compile_shape(compiler, spec.unauthorized, ("deny_with", "unauthorized"), taken)
    return DenyWith(unauthenticated, unauthorized, rule_shapes(compiler, rules, taken))


def rule_shapes(compiler: Compiling, rules: Iterable[schema.RuleSpec], taken: set[str]) -> dict[str, Shape]:
    """Each deny rule's own ``deny_with``; on an allow rule it is a problem."""
    shapes: dict[str, Shape] = {}
    for index, rule in enumerate(rules):
        if rule.deny_with is None:
            continue
        path: Path = ("rules", index, "deny_with")
        if rule.effect != "deny":
            compiler.problem(path, f"rule {rule.name!r} allows: only a deny rule's denials can have a 'deny_with'")
            continue
        shape = compile_shape(compiler, rule.deny_with, path, taken)
        if shape is not None:
            shapes[rule.name] = shape
    return shapes


def compile_shape(compiler: Compiling, spec: schema.DenyShapeSpec, path: Path, taken: set[str]) -> Shape | None:
    ok = True
    redirect = spec.status in REDIRECTS
    if not (400 <= spec.status <= 499 or redirect):
        compiler.problem((*path, "status"), _NOT_A_DENIAL.format(spec.status))
        ok = False
    location: Template | None = None
    if spec.location is not None:
        if not redirect:
            compiler.problem((*path, "location"), f"'location' goes with a redirect status (301, 302, 303, 307, "
                                                  f"308), not {spec.status}")
            ok = False
        elif not _LOCATION.fullmatch(spec.location):
            compiler.problem((*path, "location"), "a location is printable ASCII without spaces "
                                                  "(percent-encode the rest)")
            ok = False
        else:
            location = _template(compiler, (*path, "location"), spec.location)
            ok = ok and location is not None
    elif redirect:
        compiler.problem((*path, "status"), f"a redirect ({spec.status}) needs a 'location'")
        ok = False
    headers: list[tuple[str, Template]] = []
    for name, value in spec.headers.items():
        where: Path = (*path, "headers", name)
        header = compiler.header_name(name, where)
        if header is None:
            ok = False
            continue
        if header in OWNED or header.startswith(_OWNED_PREFIXES) or header in taken:
            compiler.problem(where, f"{name!r} is a header authz or Envoy sets on a denial (or a metadata key "
                                    "the HTTP door sends as a header): choose another name")
            ok = False
            continue
        if not _PRINTABLE.fullmatch(value):
            compiler.problem(where, "a header value is printable ASCII")
            ok = False
            continue
        template = _template(compiler, where, value)
        if template is None:
            ok = False
        else:
            headers.append((header, template))
    body: Template | None = None
    kind: str = "json"
    if spec.body is not None:
        if spec.body.text is not None:
            kind, body = "text", _template(compiler, (*path, "body", "text"), spec.body.text)
        else:
            body = compiler.attempt((*path, "body", "json"), lambda: json_template(spec.body.json_))  # type: ignore[union-attr]
        ok = ok and body is not None
    if not ok:
        return None
    return Shape(spec.status, location, tuple(headers), body, "text" if kind == "text" else "json",
                 compiler.located.line(path))


def _template(compiler: Compiling, path: Path, text: str) -> Template | None:
    return compiler.attempt(path, lambda: parse_template(text))


def deny_reads(deny_with: DenyWith) -> set[tuple[str, ...]]:
    """What the policy's denials read of the request: the decision cache
    keys on it, so a cached denial is filled as its request would be."""
    return {path for name in deny_with.fields() for path in READS.get(name, ())}
