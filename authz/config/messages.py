"""What reading a policy file says: unreadable files and pydantic's errors,
reworded as ``FILE:LINE: message`` problems.

:func:`read_yaml` loads a file (see :mod:`authz.config.source`);
:func:`validate` checks its shape against a schema model (see
:mod:`authz.config.schema`) and turns each pydantic error into a problem at
the line of the value it is about, in the words of the policy format.
"""

from __future__ import annotations

import datetime
import difflib
import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from authz.config.source import Located, load_yaml
from authz.errors import Problem

_DURATION_FIELDS = frozenset({"refresh_interval", "min_refetch_interval", "max_stale", "fetch_timeout", "leeway", "ttl",
                              "deny_ttl"})
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
_BOUNDS = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most",
           "less_than": "less than"}


def read_yaml(path: str, shown: str) -> Located:
    """The YAML file at ``path``, its problems reported under ``shown``."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        located = Located(shown, None)
        located.problems.append(Problem(shown, 1, f"cannot read the file: {os_reason(exc)}"))
        return located
    return load_yaml(text, shown)


def os_reason(exc: Exception) -> str:
    """Why a file could not be read, in lower case: "no such file or directory"."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(exc)


M = TypeVar("M", bound=BaseModel)


def validate(located: Located, model: type[M]) -> M | None:
    """``located.data`` as a ``model``; None, with its problems added to
    ``located``, when it does not fit."""
    try:
        return model.model_validate(located.data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            if not loc and not isinstance(located.data, dict):
                located.problem((), f"expected a mapping at the top of the file, not {yaml_type(located.data)}")
                continue
            key = error["type"] == "extra_forbidden"
            located.problem(loc, _message(error, model), key=key)
        return None


def yaml_type(value: Any) -> str:
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


def _message(error: Any, model: type[BaseModel]) -> str:
    """One pydantic error (from validating a ``model``) in the policy's words."""
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
        return f"expected {_TYPE_NAMES[kind]}, not {yaml_type(error.get('input'))}"
    if kind == "literal_error":
        if loc == ("version",):
            found = error.get("input")
            if isinstance(found, int) and not isinstance(found, bool):
                return f"unsupported policy version {found}: this authz reads version 1"
            return f"expected the number 1, not {yaml_type(found)}"
        return f"expected {ctx.get('expected')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "string_pattern_mismatch":
        return "invalid name (use letters, digits, '_', '.' and '-', at most 63 characters)"
    if kind in _BOUNDS:
        unit = "s" if last in _DURATION_FIELDS else ""
        limit = next(iter(ctx.values()))
        return f"must be {_BOUNDS[kind]} {limit:g}{unit}"
    return str(error["msg"])


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
