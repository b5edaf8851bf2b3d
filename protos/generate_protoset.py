#!/usr/bin/env python3
"""Write ``protos/envoy_ext_authz.protoset``: the ext_authz v3 API for ghz.

The file is a serialized ``google.protobuf.FileDescriptorSet`` holding
``authz/_proto/envoy/service/auth/v3/external_auth.proto`` and every file it
imports, transitively, each file after all of its imports (what ``protoc
--include_imports --descriptor_set_out`` produces). It is built from the
descriptors compiled into the installed Python modules, the same ones authz
itself serves with: ``authz._proto`` (generated from the .proto files vendored
in protos/vendor/ when the package is built or installed),
``googleapis-common-protos`` (google/rpc/status.proto) and ``protobuf`` (the
well-known types). No protoc runs here, so the output is a pure function of
the vendored files and those installed versions (file-level options aside, see
:func:`normalize`).

Usage, from the repository root::

    .venv/bin/python protos/generate_protoset.py           # (re)write the file
    .venv/bin/python protos/generate_protoset.py --check   # exit 1 if it is stale

``tests/test_ghz_configs.py`` regenerates the bytes and compares them with the
committed file, so the protoset cannot drift from the vendored .proto files.
After editing one, reinstall (``pip install -e '.[dev]'``, which recompiles
them) and rerun this script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from authz._proto.envoy.service.auth.v3 import external_auth_pb2

HERE = Path(__file__).resolve().parent
PROTOSET = HERE / "envoy_ext_authz.protoset"
#: The service ghz calls (``call`` in the configs: package.Service.Method).
SERVICE = "envoy.service.auth.v3.Authorization"


def ordered_files(root: Any = external_auth_pb2.DESCRIPTOR) -> list[Any]:
    """``root`` and its transitive imports as FileDescriptors, each after all
    of its own imports (depth-first post-order, imports in declaration order,
    so the order is deterministic)."""
    ordered: list[Any] = []
    seen: set[str] = set()

    def visit(file: Any) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    visit(root)
    return ordered


def file_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    files = []
    for file in ordered_files():
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        normalize(proto)
        files.append(proto)
    return descriptor_pb2.FileDescriptorSet(file=files)


def normalize(proto: descriptor_pb2.FileDescriptorProto) -> None:
    """Drop the file-level options (java_package, go_package, ...): they
    only steer code generators, ghz never reads them, and those of
    google/rpc/status.proto change between releases of
    googleapis-common-protos, which would make the bytes depend on it."""
    proto.ClearField("options")


def protoset_bytes() -> bytes:
    return bytes(file_descriptor_set().SerializeToString(deterministic=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROTOSET, help="where to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when --out differs from a fresh build")
    args = parser.parse_args(argv)
    data = protoset_bytes()
    if args.check:
        current = args.out.read_bytes() if args.out.exists() else b""
        if current != data:
            print(f"{args.out} is stale: run {Path(__file__).name} to regenerate it", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date ({len(data)} bytes)")
        return 0
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes, {len(ordered_files())} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
