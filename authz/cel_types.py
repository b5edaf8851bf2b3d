"""The one table of CEL variables: every variable an expression may read,
its type, and for the records among them (``request``, ``source``,
``destination``, ``identity``) every field with its type. The CEL
environment is declared from it (:mod:`authz.cel`), :class:`authz.request.View`
builds exactly these fields (``tests/unit/test_cel.py`` checks it), and an
expression naming a field no record has (``identity.rolez``,
``request.header``) is refused at load with its ``FILE:LINE``, instead of
failing closed at every request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cel_expr_python import cel as _cel

_STRING = _cel.Type.STRING
_INT = _cel.Type.INT
_DYN = _cel.Type.DYN


@dataclass(frozen=True, slots=True)
class Variable:
    """A variable's CEL type as the runtime declares it, and its fields
    (name → the type each holds, for docs and checks); None: a map whose
    keys are data (``context``), or no fields (``now``)."""

    type: Any
    fields: Mapping[str, str] | None = field(default=None)


_PEER = {"address": "string", "port": "int", "principal": "string"}

VARIABLES: Mapping[str, Variable] = {
    "request": Variable(_DYN, {"method": "string", "host": "string", "path": "string", "scheme": "string",
                               "headers": "map(string, string)", "query": "map(string, string)"}),
    "source": Variable(_DYN, _PEER),
    "destination": Variable(_DYN, _PEER),
    "context": Variable(_DYN),
    "identity": Variable(_DYN, {"kind": "string", "subject": "string", "issuer": "string",
                                "roles": "list(string)", "scopes": "list(string)", "claims": "map(string, dyn)"}),
    "now": Variable(_cel.Type.TIMESTAMP),
    # The policy's outside data sources' answers, by source name (authz.data).
    "data": Variable(_DYN),
}


def unknown_field(path: tuple[str, ...]) -> str | None:
    """What is wrong with ``path`` (an attribute path an expression reads):
    a field its record does not have; None when it names a real one."""
    if len(path) < 2:
        return None
    variable = VARIABLES.get(path[0])
    if variable is None or variable.fields is None or path[1] in variable.fields:
        return None
    return (f"{path[0]} has no field {path[1]!r} (its fields: "
            f"{', '.join(sorted(variable.fields))})")
