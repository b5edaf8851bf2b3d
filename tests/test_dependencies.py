"""Every module authz imports is the standard library's, authz's own, or
comes from a distribution that authz declares as a run-time requirement.

A module that is only there because something else depends on it (lark under
cel-python, opentelemetry-api under opentelemetry-sdk) works until that
dependency changes its own; and one from a dev extra is missing from
``pip install authz`` altogether. Imports inside functions count the same:
authz imports some lazily (uvloop, the OTLP exporters), and they must still
be installed by ``pip install authz``. The generated ``authz._proto`` modules
are walked too (their ``google.rpc`` import needs googleapis-common-protos).
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from testkit.paths import REPO

PACKAGE = REPO / "authz"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) of each import in a file, nested ones
    included; ``from X import Y`` names X.Y when that is a module, else X."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                yield (_submodule(node.module, alias.name) or node.module), node.lineno


def _submodule(module: str, name: str) -> str | None:
    if module.partition(".")[0] in sys.stdlib_module_names:
        return None
    if f"{module}.{name}" in sys.modules:
        return f"{module}.{name}"
    try:
        found = importlib.util.find_spec(f"{module}.{name}")
    except (ModuleNotFoundError, ValueError):  # module is not a package
        return None
    return f"{module}.{name}" if found is not None else None


def declared() -> set[str]:
    """The run-time requirements of the installed authz (extras excluded)."""
    requirements = importlib.metadata.requires("authz") or []
    names = set()
    for requirement in requirements:
        if re.search(r"\bextra\s*==", requirement):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match, requirement
        names.add(_normalize(match.group(0)))
    return names


@cache
def _top_level_owners() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@cache
def _file_owners() -> dict[Path, set[str]]:
    owners: dict[Path, set[str]] = {}
    for distribution in importlib.metadata.distributions():
        name = _normalize(distribution.metadata["Name"])
        for file in distribution.files or []:
            if file.suffix == ".py":
                owners.setdefault(Path(str(distribution.locate_file(file))).resolve(), set()).add(name)
    return owners


def distributions_of(module: str) -> set[str]:
    """The distributions that installed ``module``'s file. A top-level name
    that packages_distributions() gives one owner is taken from there;
    namespace packages (google, opentelemetry, ...) have several owners, so
    the module itself is located and its file looked up in the RECORDs."""
    top = module.partition(".")[0]
    candidates = _top_level_owners().get(top, [])
    if len(set(candidates)) == 1:
        return {_normalize(candidates[0])}
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return set()
    return _file_owners().get(Path(spec.origin).resolve(), set())


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert any(p.parts[-2:] == ("v3", "external_auth_pb2.py") for p in files), \
        "authz/_proto is not generated: install authz (pip install -e '.[dev]')"
    return files


def test_every_import_is_stdlib_own_or_declared() -> None:
    requirements = declared()
    assert requirements, "authz declares no requirements: is it installed?"
    undeclared: list[str] = []
    for path in _sources():
        for module, line in imports(path):
            top = module.partition(".")[0]
            if top == "authz" or top in sys.stdlib_module_names or top == "__future__":
                continue
            owners = distributions_of(module)
            where = f"{path.relative_to(REPO)}:{line} imports {module}"
            if not owners:
                undeclared.append(f"{where}: no installed distribution provides it")
            elif not owners & requirements:
                undeclared.append(f"{where}, from {sorted(owners)}, which authz does not declare")
    assert not undeclared, "\n".join(dict.fromkeys(undeclared))


@pytest.mark.parametrize(("module", "distribution"), [
    ("lark", "lark"),
    ("opentelemetry.trace", "opentelemetry-api"),
    ("google.rpc.status_pb2", "googleapis-common-protos"),
    ("google.protobuf.json_format", "protobuf"),
])
def test_namespace_and_indirect_imports_map_to_their_distribution(module: str, distribution: str) -> None:
    assert distributions_of(module) == {distribution}


def test_no_envoy_proto_distribution_is_required() -> None:
    """Envoy's API comes from protos/vendor/ (compiled into authz._proto),
    never from a distribution that installs top-level envoy/ modules."""
    assert not declared() & {"xds-protos", "envoy-api", "udpa", "protoc-gen-validate"}
