"""The ``callers`` section of a policy: who may ask authz, about what, and
through which doors, compiled into :class:`authz.callers.Callers`."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Literal

from authz import matchers
from authz.callers import DOORS, CallerEntry, Callers
from authz.config import schema
from authz.config.source import Path

if TYPE_CHECKING:
    from authz.config.compiling import Compiling


def compile_callers(compiler: Compiling, entries: list[schema.CallerSpec]) -> Callers:
    compiled: list[CallerEntry] = []
    unbound: set[str] = set()
    for index, entry in enumerate(entries):
        where = ("callers", index)
        if entry.gateway_only is not None:
            for i, door in enumerate(entry.gateway_only):
                compiler.once(unbound, door, (*where, "gateway_only", i),
                              f"door {door!r} is already declared gateway-only")
            continue
        assert entry.principals is not None and entry.destinations is not None
        principals = _globs(compiler, entry.principals, (*where, "principals"))
        destinations: Literal["any", "self"] | matchers.Globs | None
        if isinstance(entry.destinations, list):
            destinations = _globs(compiler, entry.destinations, (*where, "destinations"))
        else:
            destinations = "self" if entry.destinations == "self" else "any"
        if principals is not None and destinations is not None:
            compiled.append(CallerEntry(principals, destinations, compiler.located.line(where)))
    bound = [door for door in DOORS if door not in unbound]
    if not entries:
        compiler.problem(("callers",), "'callers' lists nothing: remove it (anyone may ask) or admit the callers")
    elif not bound:
        compiler.problem(("callers",), "'callers' declares every door gateway-only, so it binds none: remove it")
    elif not compiled and not any(entry.gateway_only is None for entry in entries):
        compiler.problem(("callers",), f"'callers' admits no caller: the {' and '.join(bound)} door"
                         f"{'s' if len(bound) > 1 else ''} would refuse every Check")
    return Callers(tuple(compiled), frozenset(unbound), compiler.located.line(("callers",), key=True))


def _globs(compiler: Compiling, globs: list[str], path: Path) -> matchers.Globs | None:
    """SPIFFE ID globs ('*' within a segment, '**' across segments)."""
    ok = True
    for i, glob in enumerate(globs):
        if not glob.startswith("spiffe://") or len(glob) <= len("spiffe://"):
            compiler.problem((*path, i), f"{glob!r} is not a SPIFFE ID glob (spiffe://TRUST-DOMAIN/PATH)")
            ok = False
        elif compiler.attempt((*path, i), functools.partial(matchers.glob_regex, glob)) is None:
            ok = False
    return compiler.attempt(path, functools.partial(matchers.compile_globs, globs)) if ok else None
