"""Type-checking CEL expressions at load, in an environment of exact types.

The runtime (:mod:`authz.cel`) declares ``request``, ``identity`` and the
other records ``dyn``: it is handed plain dicts, and a wrong type shows only
when an expression is evaluated, as a denial. Here every record of
:data:`authz.cel_types.VARIABLES` becomes a protobuf message (built from the
table into a descriptor pool of its own, no ``.proto`` file to keep in step),
so that CEL's checker knows each field's type: ``identity.roles == "admin"``
(a list against a string), ``request.path > 3`` or ``now > "2020"`` are
refused when the policy loads, with the types that clash. This environment
is never evaluated; what runs is the runtime's program, unchanged.

A ``map(string, dyn)`` field (``identity.claims``) is a map of
``google.protobuf.Value``, which CEL types ``dyn``: any use of a claim type-checks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

from cel_expr_python import cel as _cel
from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2, timestamp_pb2

from authz.cel import EXTENSIONS, CelError, compile_error, result_problem
from authz.cel_messages import readable
from authz.cel_types import VARIABLES, CelType, cel_type, is_record, parse

_PACKAGE = "authz.cel.check"
_Field = descriptor_pb2.FieldDescriptorProto
_SCALAR_FIELDS = {"string": _Field.TYPE_STRING, "int": _Field.TYPE_INT64, "double": _Field.TYPE_DOUBLE,
                  "bool": _Field.TYPE_BOOL, "bytes": _Field.TYPE_BYTES}
_MESSAGE_FIELDS = {"timestamp": ".google.protobuf.Timestamp", "dyn": ".google.protobuf.Value"}
_UNDEFINED_FIELD = re.compile(r"undefined field '([^']*)' not found in struct '([^']*)'")


class Checker:
    """A checking environment declared from a table of variables (the
    project's is :data:`authz.cel_types.VARIABLES`; :func:`check` uses it)."""

    def __init__(self, table: Mapping[str, CelType]) -> None:
        file = descriptor_pb2.FileDescriptorProto(
            name="authz/cel/check.proto", package=_PACKAGE, syntax="proto3",
            dependency=["google/protobuf/struct.proto", "google/protobuf/timestamp.proto"])
        #: Each message's full name → the variable path it stands for (in error messages).
        self.names: dict[str, str] = {}
        #: Each record's path → its fields, sorted.
        self.fields: dict[str, list[str]] = dict(_records(table))
        variables: dict[str, Any] = {}
        for variable, kind in table.items():
            if isinstance(kind, str):
                variables[variable] = cel_type(kind)
            else:
                full = _add_record(file.message_type.add(), f".{_PACKAGE}", variable, variable, kind, self.names)
                variables[variable] = _cel.Type(full.lstrip("."))
        pool = descriptor_pool.DescriptorPool()
        for dependency in (struct_pb2, timestamp_pb2):
            known = descriptor_pb2.FileDescriptorProto()
            dependency.DESCRIPTOR.CopyToProto(known)
            pool.Add(known)
        pool.Add(file)
        self._env = _cel.NewEnv(descriptor_pool=pool, variables=variables,
                                extensions=[extension() for extension in EXTENSIONS])

    def check(self, source: str, result: str) -> None:
        """Type-check ``source`` with every field's type, and its result
        against ``result`` (as :func:`authz.cel.compile_expression` takes it).

        Raises :class:`authz.cel.CelError` naming the types that clash.
        """
        try:
            program = self._env.compile(source)
        except RuntimeError as exc:
            error = compile_error(str(exc), self.names)
            raise CelError(self._said_of_fields(str(error)), error.line, error.column) from None
        if (wrong := result_problem(program.return_type().name(), result)) is not None:
            raise CelError(readable(wrong, self.names))


    def _said_of_fields(self, message: str) -> str:
        """A misspelt field, said with the fields its record has."""
        match = _UNDEFINED_FIELD.search(message)
        if match is None or match.group(2) not in self.fields:
            return message
        field, record = match.group(1), match.group(2)
        said = f"{record} has no field {field!r} (its fields: {', '.join(self.fields[record])})"
        return message[: match.start()] + said + message[match.end():]


@functools.cache
def _checker() -> Checker:
    return Checker(VARIABLES)


def check(source: str, result: str) -> None:
    """:meth:`Checker.check` with the project's variables (the environment
    is built once, at the first expression)."""
    _checker().check(source, result)


def _add_record(message: Any, scope: str, name: str, path: str, record: Mapping[str, CelType],
                names: dict[str, str]) -> str:
    """Declare ``record`` as ``message`` (nested records as nested
    messages); its full name."""
    message.name = "".join(part.capitalize() for part in name.split("_"))
    full = f"{scope}.{message.name}"
    names[full.lstrip(".")] = path
    for number, (field, kind) in enumerate(record.items(), start=1):
        declared = message.field.add(name=field, number=number, label=_Field.LABEL_OPTIONAL)
        if is_record(kind):
            assert not isinstance(kind, str)
            declared.type = _Field.TYPE_MESSAGE
            declared.type_name = _add_record(message.nested_type.add(), full, field, f"{path}.{field}", kind, names)
            continue
        assert isinstance(kind, str)
        form, element = parse(kind)
        if form == "scalar":
            _set_type(declared, kind)
        elif form == "list":
            assert element is not None
            declared.label = _Field.LABEL_REPEATED
            _set_type(declared, element)
        else:
            assert element is not None
            entry = message.nested_type.add(name="".join(p.capitalize() for p in field.split("_")) + "Entry")
            entry.options.map_entry = True
            entry.field.add(name="key", number=1, label=_Field.LABEL_OPTIONAL, type=_Field.TYPE_STRING)
            _set_type(entry.field.add(name="value", number=2, label=_Field.LABEL_OPTIONAL), element)
            declared.label = _Field.LABEL_REPEATED
            declared.type = _Field.TYPE_MESSAGE
            declared.type_name = f"{full}.{entry.name}"
    return full


def _set_type(field: Any, kind: str) -> None:
    """A field (or a list's or map's element) of type ``kind``; what a
    message cannot hold exactly (a list of lists) is declared ``dyn``, which
    accepts every use: checking may let an error through to run time, never
    refuse a right expression."""
    if kind in _SCALAR_FIELDS:
        field.type = _SCALAR_FIELDS[kind]
    else:
        field.type = _Field.TYPE_MESSAGE
        field.type_name = _MESSAGE_FIELDS.get(kind, _MESSAGE_FIELDS["dyn"])


def _records(table: Mapping[str, CelType], prefix: str = "") -> Iterator[tuple[str, list[str]]]:
    """Each record of ``table`` (nested ones too) by path, with its fields."""
    for name, kind in table.items():
        if not isinstance(kind, str):
            yield prefix + name, sorted(kind)
            yield from _records(kind, f"{prefix}{name}.")
