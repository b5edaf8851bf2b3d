"""Simple CEL conditions as Python closures, for the inputs where the result
is provably the runtime's.

A condition made only of ``&&``, ``||``, ``!``, parentheses, ``==`` / ``!=``
between attribute paths and string literals, ``"literal" in path`` and the
literals ``true`` / ``false`` is compiled at load (from the parse tree
``authz.cel`` already walks for its analysis) to a closure over the request's
variables. The closure answers only when every value it reads is present and
of the type the operation is defined on (strings compared with strings, a
string looked up in a list of strings or in a map's keys, booleans combined),
with no NUL character in what it reads; for anything else (a missing key, a
number, a type the runtime would refuse or convert) it raises
:class:`Fallback` and the caller evaluates the expression with the C++
runtime, which gives the answer or the error it always gave. So a closure
never changes a decision, nor an error's message; it saves the runtime's
crossing and the copy of what the expression reads (~10-30 µs a condition).

``tests/unit/test_cel_closures.py`` compares it with the runtime on
generated expressions and inputs (hypothesis).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Variables = Mapping[str, Any]
Closure = Callable[[Variables], Any]

_VARIABLES = frozenset({"request", "source", "destination", "context", "identity", "data"})
_STRING = re.compile(r"""(?:"([^"\\\n]*)"|'([^'\\\n]*)')""")


class Fallback(Exception):
    """The closure cannot answer for these inputs: ask the runtime."""


_FALLBACK = Fallback()


def closure_for(source: str) -> Closure | None:
    """:func:`compile_closure` of ``source`` parsed (None when it does not parse)."""
    from celpy import celparser  # load-time only

    try:
        tree = celparser.CELParser().parse(source)
    except Exception:
        return None
    return compile_closure(tree)


def compile_closure(tree: Any) -> Closure | None:
    """A closure computing the condition whose parse tree (``celpy``'s lark
    tree) is ``tree``, or None when it is outside the subset above."""
    try:
        return _node(tree)
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


def _single(node: Any) -> Any:
    if len(node.children) != 1:
        raise _Unsupported
    return node.children[0]


def _node(node: Any) -> Closure:
    from lark import Tree

    if not isinstance(node, Tree):
        raise _Unsupported
    kind, children = node.data, node.children
    if kind in ("expr", "addition", "multiplication", "paren_expr"):
        return _node(_single(node))
    if kind == "conditionalor":
        if len(children) == 1:
            return _node(children[0])
        return _or(_node(children[0]), _node(children[1]))
    if kind == "conditionaland":
        if len(children) == 1:
            return _node(children[0])
        return _and(_node(children[0]), _node(children[1]))
    if kind == "relation":
        if len(children) == 1:
            return _node(children[0])
        test, right = children
        if not isinstance(test, Tree) or len(test.children) != 1:
            raise _Unsupported
        left = test.children[0]
        if test.data in ("relation_eq", "relation_ne"):
            return _equal(_value(left), _value(right), test.data == "relation_eq")
        if test.data == "relation_in":
            literal = _literal(left)
            if type(literal) is not str:
                raise _Unsupported
            return _contains(literal, _path(right))
        raise _Unsupported
    if kind == "unary":
        if len(children) == 1:
            return _boolean(_value(children[0]))
        if len(children) == 2 and isinstance(children[0], Tree) and children[0].data == "unary_not":
            return _not(_node(children[1]))
        raise _Unsupported
    if kind in ("member", "primary"):
        return _boolean(_value(node))
    raise _Unsupported


def _value(node: Any) -> Closure:
    """A closure for an operand: a literal, a path, or a condition in parentheses."""
    literal = _literal(node)
    if literal is not None:
        return lambda _variables: literal
    try:
        return _path(node)
    except _Unsupported:
        pass
    inner = _unwrap(node)
    if inner.data == "paren_expr":
        return _node(inner)
    raise _Unsupported


def _unwrap(node: Any) -> Any:
    from lark import Tree

    while isinstance(node, Tree) and len(node.children) == 1 and node.data in (
            "expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary",
            "member", "primary"):
        node = node.children[0]
    if not isinstance(node, Tree):
        raise _Unsupported
    return node


def _literal(node: Any) -> str | bool | None:
    from lark import Token

    try:
        inner = _unwrap(node)
    except _Unsupported:
        return None
    if inner.data != "literal" or len(inner.children) != 1 or not isinstance(inner.children[0], Token):
        return None
    text = str(inner.children[0])
    if text in ("true", "false"):
        return text == "true"
    match = _STRING.fullmatch(text)
    if match is None:
        return None
    value = match.group(1) if match.group(1) is not None else match.group(2)
    return None if "\x00" in value else value


def _path(node: Any) -> Closure:
    """A closure reading an attribute path (field selections and constant
    string indexes from a variable), as :func:`authz.cel.select_reads` does."""
    from lark import Token, Tree

    keys: list[str] = []
    while True:
        if not isinstance(node, Tree):
            raise _Unsupported
        if node.data in ("member", "primary", "expr", "conditionalor", "conditionaland", "relation", "addition",
                         "multiplication", "unary") and len(node.children) == 1:
            node = node.children[0]
        elif node.data == "member_dot" and isinstance(node.children[1], Token):
            keys.append(str(node.children[1]))
            node = node.children[0]
        elif node.data == "member_index":
            literal = _literal(node.children[1])
            if type(literal) is not str:
                raise _Unsupported
            keys.append(literal)
            node = node.children[0]
        elif node.data == "ident" and str(node.children[0]) in _VARIABLES:
            keys.append(str(node.children[0]))
            break
        else:
            raise _Unsupported
    path = tuple(reversed(keys))

    def read(variables: Variables) -> Any:
        value: Any = variables
        for key in path:
            if type(value) is not dict or key not in value:
                raise _FALLBACK
            value = value[key]
        return value

    return read


def _clean(value: Any) -> Any:
    """A string or bool as read, or Fallback (another type, or a NUL the
    runtime cannot represent)."""
    kind = type(value)
    if kind is bool:
        return value
    if kind is str and "\x00" not in value and (value.isascii() or _utf8(value)):
        return value
    raise _FALLBACK


def _utf8(value: str) -> bool:
    """Whether the runtime can take ``value`` (no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _equal(left: Closure, right: Closure, equal: bool) -> Closure:
    def compare(variables: Variables) -> bool:
        a, b = _clean(left(variables)), _clean(right(variables))
        if type(a) is not type(b):
            raise _FALLBACK
        return (a == b) is equal

    return compare


def _contains(literal: str, container: Closure) -> Closure:
    def contains(variables: Variables) -> bool:
        found = container(variables)
        kind = type(found)
        if kind is list:
            for item in found:
                _clean(item)
                if type(item) is not str:
                    raise _FALLBACK
            return literal in found
        if kind is dict:
            # The runtime is handed only the value under the key tested
            # (authz.cel.select_reads), converted: it must convert cleanly.
            if literal in found:
                _clean(found[literal])
                return True
            return False
        raise _FALLBACK

    return contains


def _boolean(operand: Closure) -> Closure:
    def boolean(variables: Variables) -> bool:
        value = operand(variables)
        if type(value) is not bool:
            raise _FALLBACK
        return value

    return boolean


def _not(operand: Closure) -> Closure:
    return lambda variables: not operand(variables)


# Both sides are always read, never short-circuited: the runtime is handed
# every value the expression reads and refuses the whole expression when one
# of them cannot be converted (a NUL), whatever the other side gives; a
# Fallback on either side asks the runtime for the whole expression.

def _and(left: Closure, right: Closure) -> Closure:
    def both(variables: Variables) -> bool:
        a = left(variables)
        return right(variables) and a  # type: ignore[no-any-return]

    return both


def _or(left: Closure, right: Closure) -> Closure:
    def either(variables: Variables) -> bool:
        a = left(variables)
        return right(variables) or a  # type: ignore[no-any-return]

    return either
