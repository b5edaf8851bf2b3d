"""The import graph of authz/ has no circles: every import counts, at module
level, inside a function or under ``TYPE_CHECKING`` (a circle of types is a
circle of meaning too). Read from the source with ``ast``, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "authz"


def module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_of(p): p for p in PACKAGE.rglob("*.py") if "_proto" not in p.parts}


def edges(name: str, path: Path, known: set[str]) -> set[str]:
    """The authz modules ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the module; ``from pkg import name``, the package.
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return {f for f in found if f in known and f != name}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` (a depth-first search), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: edges(name, path, set(found)) for name, path in found.items()}


def test_the_import_graph_of_authz_has_no_circles() -> None:
    assert cycle(graph()) is None, " -> ".join(cycle(graph()) or [])


def test_the_circle_finder_finds_one() -> None:
    made = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert cycle(made) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_is_read() -> None:
    names = modules()
    assert "authz.config.compile" in names and "authz.wire" in names
    assert "authz.config.response" in graph()["authz.config.compile"]
