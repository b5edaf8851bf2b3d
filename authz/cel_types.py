"""The one table of CEL variables: every variable an expression may read and
its type; for the records among them (``request``, ``source``,
``destination``, ``identity``), every field with its type.

Everything else is derived from :data:`VARIABLES`:

- the runtime's environment (:mod:`authz.cel`), which declares the records,
  maps and lists ``dyn`` (:func:`runtime_type`) so that evaluating converts
  plain dicts and nothing more;
- the checking environment (:mod:`authz.config.cel_check`), used at load
  only, in which each record is a protobuf message built from its fields,
  so that a wrong type inside an expression (``identity.roles == "admin"``,
  ``request.path > 3``) is a ``FILE:LINE`` error;
- the field check (:func:`unknown_field`) that names a misspelt field
  (``identity.rolez``, ``request.header``);
- what :class:`authz.request.View` builds (``tests/unit/test_cel.py``
  compares) and the variable table of docs/policy.md
  (``tests/unit/config/test_cel_check.py`` checks every field is there).

A type is written in CEL's own notation: ``string``, ``int``, ``double``,
``bool``, ``bytes``, ``timestamp``, ``dyn`` (anything: checked when
evaluated), ``list(T)``, ``map(string, T)``, or a mapping of field names to
types: a record (nested records are allowed).

To add a field, add one line to its record (``"body": "string",``); to add
a variable, one entry (``"data": "map(string, dyn)",``), and build its value
in :class:`authz.request.View`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeAlias

from cel_expr_python import cel as _cel

#: A type: its name in CEL notation, or a record (field name → type).
CelType: TypeAlias = str | Mapping[str, "CelType"]

_PEER: Mapping[str, CelType] = {"address": "string", "port": "int", "principal": "string"}

VARIABLES: Mapping[str, CelType] = {
    "request": {
        "method": "string",
        "host": "string",
        "path": "string",
        "scheme": "string",
        "headers": "map(string, string)",
        "query": "map(string, string)",
        # The body, only for a policy that reads it (authz.body: computed when read).
        "body": "bytes",
        "body_json": "dyn",
        "form": "map(string, string)",
    },
    "source": _PEER,
    "destination": _PEER,
    "context": "map(string, string)",
    "identity": {
        "kind": "string",
        "subject": "string",
        "issuer": "string",
        "roles": "list(string)",
        "scopes": "list(string)",
        "claims": "map(string, dyn)",
        # kind "certificate": its fields (empty otherwise); docs/policy.md
        "certificate": "map(string, dyn)",
    },
    "now": "timestamp",
    # The policy's outside data sources' answers, by source name (authz.data).
    "data": "map(string, dyn)",
}

SCALARS: Mapping[str, Any] = {
    "string": _cel.Type.STRING, "int": _cel.Type.INT, "double": _cel.Type.DOUBLE, "bool": _cel.Type.BOOL,
    "bytes": _cel.Type.BYTES, "timestamp": _cel.Type.TIMESTAMP, "dyn": _cel.Type.DYN,
}
_LIST = re.compile(r"list\((.+)\)")
_MAP = re.compile(r"map\(string,\s*(.+)\)")


def is_record(kind: CelType) -> bool:
    return not isinstance(kind, str)


def parse(kind: str) -> tuple[str, str | None]:
    """``kind`` as (form, element): ("scalar", None) for a scalar name,
    ("list", T) or ("map", T) with the element's type; raises ValueError
    for anything else (a typo in the table fails at import)."""
    if kind in SCALARS:
        return "scalar", None
    for form, pattern in (("list", _LIST), ("map", _MAP)):
        match = pattern.fullmatch(kind)
        if match:
            element = match.group(1)
            parse(element)
            return form, element
    raise ValueError(f"not a CEL type of the table: {kind!r}")


def cel_type(kind: str) -> Any:
    """The runtime's exact type for a type name (``map(string, string)`` →
    ``Type.Map(STRING, STRING)``)."""
    form, element = parse(kind)
    if form == "scalar":
        return SCALARS[kind]
    assert element is not None
    inner = cel_type(element)
    return _cel.Type.List(inner) if form == "list" else _cel.Type.Map(_cel.Type.STRING, inner)


def runtime_type(kind: CelType) -> Any:
    """How the evaluating environment declares a variable: records, maps,
    lists and ``dyn`` as ``dyn`` (values are plain dicts and lists, converted
    as they come), scalars as themselves (``now``: timestamp)."""
    if is_record(kind):
        return _cel.Type.DYN
    assert isinstance(kind, str)
    return SCALARS[kind] if parse(kind)[0] == "scalar" else _cel.Type.DYN


def unknown_field(path: tuple[str, ...], table: Mapping[str, CelType] = VARIABLES) -> str | None:
    """What is wrong with ``path`` (an attribute path an expression reads):
    a field its record does not have; None when it names a real one, or
    goes below a map or ``dyn`` value (whose keys are data)."""
    kind: CelType | None = table.get(path[0]) if path else None
    for depth, name in enumerate(path[1:], start=1):
        if kind is None or isinstance(kind, str):
            return None
        if name not in kind:
            return (f"{'.'.join(path[:depth])} has no field {name!r} (its fields: "
                    f"{', '.join(sorted(kind))})")
        kind = kind[name]
    return None


def _check_table(table: Mapping[str, CelType]) -> None:
    for kind in table.values():
        if isinstance(kind, str):
            parse(kind)
        else:
            _check_table(kind)


_check_table(VARIABLES)
