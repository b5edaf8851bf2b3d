"""The Envoy API authz serves with: ``authz._proto``, generated at build time
from the .proto files vendored in protos/vendor/ (protos/README.md).

- The installed modules are what protoc makes of the vendored files today (an
  edited .proto needs a reinstall to take effect).
- Every message, field, oneof and enum kept is Envoy's: checked against an
  independent copy of Envoy's API, envoy-data-plane (betterproto2 classes
  generated from Envoy's own .proto files, and a run-time dependency of
  authz for ``authz envoy-config``).
- The generated code imports only authz._proto, google.* and grpc modules.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import importlib.resources
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy_data_plane.envoy.service.auth import v3 as _envoy_ext_authz  # noqa: F401 (registers its classes)
from envoy_data_plane.message_pool import default_message_pool
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool

from authz._proto.envoy.service.auth.v3 import external_auth_pb2
from testkit.paths import REPO

VENDOR = REPO / "protos" / "vendor"
GENERATED = REPO / "authz" / "_proto"


def _vendored_sources() -> list[str]:
    return sorted(p.relative_to(VENDOR).as_posix() for p in (VENDOR / "authz" / "_proto").rglob("*.proto"))


def _vendored_files() -> list[Any]:
    pool = descriptor_pool.Default()
    return [pool.FindFileByName(name) for name in _vendored_sources()]


def test_the_vendored_files_are_the_ones_the_service_imports() -> None:
    reached: set[str] = set()

    def visit(file: Any) -> None:
        if file.name not in reached:
            reached.add(file.name)
            for dependency in file.dependencies:
                visit(dependency)

    visit(external_auth_pb2.DESCRIPTOR)
    assert {name for name in reached if name.startswith("authz/")} == set(_vendored_sources())
    assert {name for name in reached if not name.startswith("authz/")} == {
        "google/rpc/status.proto", "google/protobuf/any.proto", "google/protobuf/struct.proto",
        "google/protobuf/wrappers.proto", "google/protobuf/timestamp.proto"}


def test_installed_modules_are_compiled_from_the_vendored_files(tmp_path: Path) -> None:
    out = tmp_path / "vendored.protoset"
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    run = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={VENDOR}", f"--proto_path={well_known}",
         f"--descriptor_set_out={out}", *_vendored_sources()],
        capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    for proto in compiled:
        for message in _messages(proto.message_type):
            for field in message.field:
                field.ClearField("json_name")  # protoc's Python output leaves it out
        installed = descriptor_pb2.FileDescriptorProto.FromString(
            descriptor_pool.Default().FindFileByName(proto.name).serialized_pb)
        assert proto == installed, f"{proto.name} changed since authz was installed: pip install -e '.[dev]'"


def _messages(messages: Any) -> Iterator[Any]:
    for message in messages:
        yield message
        yield from _messages(message.nested_type)


# -- the same API as Envoy's --------------------------------------------------------------

_TYPES = {
    descriptor.FieldDescriptor.TYPE_STRING: "string", descriptor.FieldDescriptor.TYPE_BYTES: "bytes",
    descriptor.FieldDescriptor.TYPE_BOOL: "bool", descriptor.FieldDescriptor.TYPE_INT32: "int32",
    descriptor.FieldDescriptor.TYPE_INT64: "int64", descriptor.FieldDescriptor.TYPE_UINT32: "uint32",
    descriptor.FieldDescriptor.TYPE_UINT64: "uint64", descriptor.FieldDescriptor.TYPE_ENUM: "enum",
    descriptor.FieldDescriptor.TYPE_MESSAGE: "message",
}


def _all_messages(file: Any) -> Iterator[Any]:
    def walk(message: Any) -> Iterator[Any]:
        if not message.GetOptions().map_entry:
            yield message
            for nested in message.nested_types:
                yield from walk(nested)

    for message in file.message_types_by_name.values():
        yield from walk(message)


def _envoy_class(full_name: str) -> Any:
    return default_message_pool.url_to_type[f"type.googleapis.com/{full_name}"]


#: Well-known types betterproto2 maps to Python types instead of classes.
_UNWRAPPED: dict[Any, str] = {datetime.datetime: "google.protobuf.Timestamp", bool: "google.protobuf.BoolValue"}


def _envoy_name(cls: Any) -> str:
    url = default_message_pool.type_to_url.get(cls)
    return _UNWRAPPED[cls] if url is None else str(url).removeprefix("type.googleapis.com/")


def _ours(field: Any) -> tuple[Any, ...]:
    oneof = field.containing_oneof.name if field.containing_oneof is not None else None
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return (field.number, "map", False, oneof, (_TYPES[key.type], _TYPES[value.type]))
    return (field.number, _TYPES[field.type], field.is_repeated, oneof, None)


def _theirs(meta: Any) -> tuple[Any, ...]:
    mapped = (meta.map_meta[0].proto_type, meta.map_meta[1].proto_type) if meta.map_meta else None
    return (meta.number, meta.proto_type, meta.repeated, meta.group, mapped)


@pytest.mark.parametrize("message", [m for f in _vendored_files() for m in _all_messages(f)],
                         ids=lambda m: m.full_name)
def test_message_is_envoys(message: Any) -> None:
    envoy = _envoy_class(message.full_name)
    theirs = {f.name: f.metadata["betterproto"] for f in dataclasses.fields(envoy)}
    assert [f.name for f in message.fields] == list(theirs), f"{message.full_name}: fields differ from Envoy's"
    for field in message.fields:
        meta = theirs[field.name]
        where = f"{field.full_name}"
        assert _ours(field) == _theirs(meta), where
        if field.type == field.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            assert _envoy_name(envoy._betterproto.cls_by_field[field.name]) == field.message_type.full_name, where
        elif field.type == field.TYPE_MESSAGE:  # a map: its value's type
            value = field.message_type.fields_by_name["value"]
            if value.message_type is not None:
                assert _envoy_name(envoy._betterproto.cls_by_field[f"{field.name}.value"]) == \
                    value.message_type.full_name, where
        if field.type == field.TYPE_ENUM:
            members = envoy._betterproto.cls_by_field[field.name].__members__
            assert [(v.name, v.number) for v in field.enum_type.values] == \
                [(name, int(member)) for name, member in members.items()], field.enum_type.full_name


def test_every_kept_enum_is_checked_through_a_field() -> None:
    enums = {e.full_name for f in _vendored_files() for e in f.enum_types_by_name.values()}
    enums |= {e.full_name for f in _vendored_files() for m in _all_messages(f) for e in m.enum_types}
    used = {field.enum_type.full_name for f in _vendored_files() for m in _all_messages(f)
            for field in m.fields if field.enum_type is not None}
    assert enums == used == {"envoy.type.v3.StatusCode", "envoy.config.core.v3.SocketAddress.Protocol",
                             "envoy.config.core.v3.HeaderValueOption.HeaderAppendAction"}


def test_the_service_is_envoys() -> None:
    service = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"]
    assert service.full_name == "envoy.service.auth.v3.Authorization"
    assert [(m.name, m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming)
            for m in service.methods] == [
        ("Check", "envoy.service.auth.v3.CheckRequest", "envoy.service.auth.v3.CheckResponse", False, False)]
    # ... and it is in the default pool, where gRPC server reflection looks.
    assert descriptor_pool.Default().FindServiceByName(service.full_name) is service


# -- the generated code --------------------------------------------------------------------


def test_generated_code_imports_only_authz_proto_google_and_grpc() -> None:
    modules = sorted(GENERATED.rglob("*.py"))
    assert any(p.name == "external_auth_pb2_grpc.py" for p in modules)
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name in ("grpc", "warnings") or name.startswith(("authz._proto.", "google.", "grpc.")), \
                    f"{path.relative_to(REPO)} imports {name}"
