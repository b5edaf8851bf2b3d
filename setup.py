"""Build hook: compile the vendored Envoy ext_authz .proto files into ``authz._proto``.

Everything else about the package is declared in pyproject.toml; this file only
adds a step to ``build_py``. protoc (from grpcio-tools, a build requirement)
compiles ``protos/vendor/authz/_proto/**/*.proto`` into ``*_pb2.py``, ``*_pb2.pyi`` and
``*_pb2_grpc.py`` modules of the package ``authz._proto``, a name no other
distribution installs, so installing authz never overwrites another
distribution's files (xds-protos, which authz used before, ships its own copies
of opentelemetry.proto and google.rpc modules). ``google/rpc/status.proto`` and
the well-known types are only includes: their modules come from
googleapis-common-protos and protobuf at run time.

Where the modules go:

- a wheel (``pip install .``, ``pip wheel .``, ``python -m build``): into the
  build directory, so they are in the wheel and nowhere else;
- an editable install (``pip install -e .``): into the source tree,
  ``authz/_proto/`` (ignored by git), which the editable install imports from.

See protos/README.md.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: protoc's root for the vendored files: a file's path below it is its import
#: path, which decides its generated module (authz/_proto/x.proto -> authz._proto.x_pb2).
PROTOS = ROOT / "protos" / "vendor"
#: The generated package, relative to a directory on sys.path.
PACKAGE = Path("authz", "_proto")


def proto_sources() -> list[str]:
    """The .proto files to compile, as protoc names them (relative to protos/vendor/)."""
    sources = sorted(path.relative_to(PROTOS).as_posix() for path in (PROTOS / PACKAGE).rglob("*.proto"))
    if not sources:
        raise RuntimeError(f"no .proto files under {PROTOS / PACKAGE}: the build needs protos/vendor/")
    return sources


def compile_protos(destination: Path) -> list[Path]:
    """(Re)write ``destination/authz/_proto`` from the .proto files; the files written."""
    import importlib.resources

    from grpc_tools import protoc

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory(prefix="authz-protoc-") as scratch:
        out = Path(scratch)
        args = [
            "grpc_tools.protoc",
            f"--proto_path={PROTOS}",
            f"--proto_path={well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *proto_sources(),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        generated = out / PACKAGE
        for directory in [generated, *(p for p in generated.rglob("*") if p.is_dir())]:
            (directory / "__init__.py").touch()
        target = destination / PACKAGE
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(generated, target)
    return sorted(path for path in target.rglob("*") if path.is_file())


class BuildPyWithProtos(build_py):
    """build_py, then protoc into the build directory (or the source tree when editable)."""

    def run(self) -> None:
        super().run()
        destination = ROOT if self.editable_mode else Path(self.build_lib)
        self._generated = compile_protos(destination)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs += [str(path) for path in getattr(self, "_generated", [])]
        return outputs


setup(cmdclass={"build_py": BuildPyWithProtos})
