"""YAML loading that remembers where every value came from.

PyYAML composes the document into nodes that carry their line; this module
turns the node tree into plain Python values plus a table from each value's
path (``("issuers", 0, "audiences")``) to its line, so that every later
problem can be reported as ``FILE:LINE: message``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from authz.errors import Problem

Path = tuple[str | int, ...]


@dataclass
class Located:
    """A loaded document: its data, the line of every path, and its problems."""

    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def problem(self, path: Path, message: str) -> None:
        where = render_path(path)
        self.problems.append(Problem(self.file, self.line(path), f"{where}: {message}" if where else message))


def render_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def load_yaml(text: str, file: str) -> Located:
    """Parse YAML text; syntax errors, duplicate keys and non-string keys
    become problems (the data is None when the text does not parse)."""
    located = Located(file, None)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        located.problems.append(Problem(file, line, f"invalid YAML: {exc.problem or exc.context}"))
        return located
    except yaml.YAMLError as exc:
        located.problems.append(Problem(file, 1, f"invalid YAML: {exc}"))
        return located
    if node is None:
        located.problems.append(Problem(file, 1, "the file is empty"))
        return located
    located.data = _convert(node, (), located, loader)
    return located


def _convert(node: yaml.Node, path: Path, located: Located, loader: yaml.SafeLoader) -> Any:
    located.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                located.problems.append(Problem(located.file, key_node.start_mark.line + 1, "YAML merge keys ('<<') are not supported"))
                continue
            key = _convert(key_node, (*path, "<key>"), located, loader) if not isinstance(key_node, yaml.ScalarNode) else loader.construct_object(key_node)
            if not isinstance(key, str):
                located.problems.append(Problem(located.file, key_node.start_mark.line + 1, f"{render_path(path) or 'document'}: keys must be strings, not {key!r}"))
                continue
            if key in out:
                located.problems.append(Problem(located.file, key_node.start_mark.line + 1, f"{render_path((*path, key))}: duplicate key"))
                continue
            located.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, (*path, key), located, loader)
            located.lines[(*path, key)] = key_node.start_mark.line + 1
        located.lines.pop((*path, "<key>"), None)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, index), located, loader) for index, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
