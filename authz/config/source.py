"""YAML loading that remembers where every value came from.

PyYAML composes the document into nodes that carry their line; this module
turns the node tree into plain Python values plus a table from each value's
path (``("issuers", 0, "audiences")``) to its line, so that every later
problem can be reported as ``FILE:LINE: message``.

The line of a path is the line of its value when the value is a scalar (what
a problem with a value points at), else the line of its key (a problem with a
list or mapping is best shown where it is named). Problems about a key itself
(unknown, duplicate) use the key's line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from authz.errors import Problem

Path = tuple[str | int, ...]

#: A policy is small: more values than this means alias expansion ("billion
#: laughs") or a file that is not a policy.
MAX_VALUES = 200_000

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class Located:
    """A loaded document: its data, the line of every path, and its problems."""

    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: Lines of mapping keys, for problems about the key itself.
    key_lines: dict[Path, int] = field(default_factory=dict)
    #: For literal block scalars (``|``): the line of their first content
    #: line, so that a position inside the text maps to a line of the file.
    blocks: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path, *, key: bool = False) -> int:
        """The line of ``path`` (of its key with ``key``), or of its nearest
        ancestor that has one."""
        path = tuple(path)
        if key and path in self.key_lines:
            return self.key_lines[path]
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def problem(self, path: Path, message: str, *, key: bool = False, line: int | None = None) -> None:
        where = render_path(path)
        self.problems.append(Problem(
            self.file,
            line if line is not None else self.line(path, key=key),
            f"{where}: {message}" if where else message,
        ))

    def remap(self, prefix: Path) -> None:
        """Move every recorded path under ``prefix`` (the document became
        the value at ``prefix`` of a wrapper)."""
        self.lines = {(*prefix, *k): v for k, v in self.lines.items()}
        self.key_lines = {(*prefix, *k): v for k, v in self.key_lines.items()}
        self.blocks = {(*prefix, *k): v for k, v in self.blocks.items()}


def render_path(path: Path) -> str:
    """``("peers", "spiffe://x", 0)`` -> ``peers["spiffe://x"][0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += ("." if out else "") + part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


def load_yaml(text: str, file: str) -> Located:
    """Parse YAML text; syntax errors, duplicate keys, non-string keys,
    unknown tags and recursive aliases become problems (the data is None
    when the text does not parse)."""
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
        located.problems.append(Problem(file, line, f"invalid YAML: {_yaml_reason(exc)}"))
        return located
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        located.problems.append(Problem(file, line, f"invalid YAML: character U+{code:04X} is not allowed"))
        return located
    except yaml.YAMLError as exc:
        located.problems.append(Problem(file, 1, f"invalid YAML: {str(exc).splitlines()[0]}"))
        return located
    if node is None:
        located.problems.append(Problem(file, 1, "the file is empty"))
        return located
    try:
        located.data = _Converter(located, loader).convert(node, ())
    except _TooBig:
        located.problems.append(Problem(file, 1,
                                        f"the document has more than {MAX_VALUES} values (YAML aliases expanding?)"))
        located.data = None
    return located


def _yaml_reason(exc: yaml.MarkedYAMLError) -> str:
    reason = exc.problem or exc.context or "syntax error"
    if exc.context and exc.problem and exc.context_mark is not None:
        reason = f"{reason} ({exc.context} at line {exc.context_mark.line + 1})"
    return reason


_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"})


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


class _TooBig(Exception):
    pass


_BAD = object()  # a scalar that could not be constructed (already reported)


class _Converter:
    def __init__(self, located: Located, loader: yaml.SafeLoader) -> None:
        self.located = located
        self.loader = loader
        self.active: set[int] = set()  # nodes being converted: an alias cycle revisits one
        self.count = 0

    def problem(self, node: yaml.Node, message: str) -> None:
        self.located.problems.append(Problem(self.located.file, node.start_mark.line + 1, message))

    def convert(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _TooBig
        located = self.located
        located.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            if node.style == "|":
                located.blocks[path] = node.start_mark.line + 2
            value = self.scalar(node, path)
            return None if value is _BAD else value
        if id(node) in self.active:
            # The node is the alias's target: point at the key that refers to it.
            line = located.key_lines.get(path, node.start_mark.line + 1)
            located.problems.append(Problem(located.file, line,
                                            f"{render_path(path) or 'document'}: recursive YAML alias"))
            return None
        if node.tag not in _COLLECTION_TAGS:
            self.problem(node, f"{render_path(path) or 'document'}: unsupported YAML tag {_short_tag(node.tag)!r}")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*path, index)) for index, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self.mapping(node, path)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        located = self.located
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problem(key_node, f"{render_path(path) or 'document'}: YAML merge keys ('<<') are not supported")
                continue
            key = self.scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            if key is _BAD:
                continue
            if not isinstance(key, str):
                shown = f"{key!r} (quote it)" if isinstance(key_node, yaml.ScalarNode) else "a list or mapping"
                self.problem(key_node, f"{render_path(path) or 'document'}: keys must be strings, not {shown}")
                continue
            key_path = (*path, key)
            if key in out:
                self.problem(key_node, f"{render_path(key_path)}: duplicate key")
                continue
            key_line = key_node.start_mark.line + 1
            located.key_lines[key_path] = key_line
            out[key] = self.convert(value_node, key_path)
            if not isinstance(value_node, yaml.ScalarNode):
                located.lines[key_path] = key_line
        return out

    def scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        """The scalar's value; a value its tag cannot hold (``!!int abc``,
        an unknown tag) is a problem and ``_BAD``."""
        where = render_path(path) or "document"
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            self.problem(node, f"{where}: unsupported YAML tag {_short_tag(node.tag)!r}")
        except Exception:
            # PyYAML's constructors fail in many ways (int('abc'), a
            # timestamp regex that does not match, ...): all are bad values.
            self.problem(node, f"{where}: {node.value!r} is not a valid {_short_tag(node.tag)}")
        return _BAD
