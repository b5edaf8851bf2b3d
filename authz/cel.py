"""CEL: one environment, compile at load, evaluate with fail-closed results,
and a static analysis of which attributes each expression reads.

Evaluation uses ``cel-expr-python`` (Google's C++ CEL runtime); it measured
about 13 µs for a typical condition including the conversion of its inputs,
where the Rust binding took 80 µs (its context conversion dominates) and the
pure-Python ``cel-python`` 370 µs (``benchmarks/cel_bench.py`` prints these).
The C++ runtime does not expose the parsed expression, so the analysis walks
the parse tree of ``cel-python``'s parser (lark), once per expression at load.

Variables (see CONTRACT.md, "CEL environment"): ``request``, ``source``,
``destination``, ``context``, ``identity`` (all dynamic maps) and ``now``
(timestamp).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel as _cel
from cel_expr_python.ext import ext_encoders, ext_strings

VARIABLES = ("request", "source", "destination", "context", "identity", "now")

#: An attribute path such as ("request", "headers", "x-tenant"). A shorter path
#: means everything below it is read.
AttrPath = tuple[str, ...]

_ENV = _cel.NewEnv(
    variables={
        "request": _cel.Type.DYN,
        "source": _cel.Type.DYN,
        "destination": _cel.Type.DYN,
        "context": _cel.Type.DYN,
        "identity": _cel.Type.DYN,
        "now": _cel.Type.TIMESTAMP,
    },
    extensions=[ext_strings.ExtStrings(), ext_encoders.ExtEncoders()],
)

_BOOL = _cel.Type.BOOL
_STRING = _cel.Type.STRING
_DYN = _cel.Type.DYN


class CelError(ValueError):
    """An expression that does not compile, or has the wrong result type."""


@dataclass(frozen=True, slots=True, eq=False)
class Expression:
    """A compiled CEL expression and the attribute paths it reads."""

    source: str
    reads: frozenset[AttrPath]
    roots: tuple[str, ...]
    _program: Any

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """The result as a plain Python value; raises :class:`EvaluationError`
        when the expression fails (missing key, type error, ...)."""
        try:
            value = self._program.eval(data=variables)
        except Exception as exc:  # the runtime raises for unconvertible inputs
            raise EvaluationError(str(exc)) from None
        if value.type() == _cel.Type.ERROR:
            raise EvaluationError(str(value.value()))
        return value.plain_value()

    def is_true(self, variables: Mapping[str, Any]) -> bool:
        """True only when the expression evaluates to the boolean true."""
        return self.evaluate(variables) is True


class EvaluationError(Exception):
    """A CEL expression failed at run time."""


def compile_expression(source: str, *, result: str) -> Expression:
    """Compile ``source``; ``result`` is "bool" or "string" (the expected type).

    Raises :class:`CelError` with the runtime's message (first line only).
    """
    try:
        program = _ENV.compile(source)
    except RuntimeError as exc:
        raise CelError(_first_error(str(exc))) from None
    want = _BOOL if result == "bool" else _STRING
    got = program.return_type()
    if not (got == want or got == _DYN):
        raise CelError(f"expression gives {got.name().lower()}, expected {result}")
    reads = analyse_reads(source)
    roots = tuple(sorted({path[0] for path in reads}))
    return Expression(source, reads, roots, program)


def _first_error(message: str) -> str:
    for line in message.splitlines():
        match = re.search(r"ERROR: <input>:(-?\d+):(-?\d+): (.*)", line)
        if match:
            text = match.group(3)
            return text if match.group(1) == "-1" else f"{text} (column {match.group(2)})"
    return message.splitlines()[0] if message else "invalid expression"


def analyse_reads(source: str) -> frozenset[AttrPath]:
    """Every attribute path the expression may read, over-approximated.

    A chain of field selections and constant string indexes from a variable
    (``request.headers["x-tenant"]``) yields that exact path; any other use
    of a value (iteration, a computed index, passing it to a function) yields
    the path up to that point, meaning "all of it". Names the analysis cannot
    resolve make the whole variable count as read.
    """
    from celpy import celparser  # load-time only

    try:
        tree = celparser.CELParser().parse(source)
    except Exception:
        return frozenset((name,) for name in VARIABLES)
    reads: set[AttrPath] = set()
    _walk(tree, reads)
    return frozenset(reads)


_STRING_LITERAL = re.compile(r"""(?:"([^"\\\n]*)"|'([^'\\\n]*)')""")


def _chain(node: Any) -> tuple[AttrPath, list[Any]] | None:
    """For an access chain rooted at a variable, its path and the subtrees
    that still need walking (computed indexes, arguments)."""
    from lark import Token, Tree

    if not isinstance(node, Tree):
        return None
    if node.data == "member" and len(node.children) == 1:
        return _chain(node.children[0])
    if node.data == "primary" and len(node.children) == 1:
        child = node.children[0]
        if isinstance(child, Tree) and child.data == "ident":
            name = str(child.children[0])
            if name in VARIABLES:
                return (name,), []
        return None
    if node.data == "member_dot":
        inner = _chain(node.children[0])
        if inner is None:
            return None
        path, pending = inner
        field = node.children[1]
        if isinstance(field, Token):
            return (*path, str(field)), pending
        return path, [*pending, field]
    if node.data == "member_index":
        inner = _chain(node.children[0])
        if inner is None:
            return None
        path, pending = inner
        literal = _literal_string(node.children[1])
        if literal is not None:
            return (*path, literal), pending
        return path, [*pending, node.children[1]]
    return None


def _literal_string(expr: Any) -> str | None:
    from lark import Token, Tree

    node = expr
    while isinstance(node, Tree) and len(node.children) == 1:
        if node.data == "literal":
            break
        node = node.children[0]
    if isinstance(node, Tree) and node.data == "literal":
        token = node.children[0]
        if isinstance(token, Token):
            match = _STRING_LITERAL.fullmatch(str(token))
            if match:
                return match.group(1) if match.group(1) is not None else match.group(2)
    return None


def _walk(node: Any, reads: set[AttrPath]) -> None:
    from lark import Tree

    if not isinstance(node, Tree):
        return
    chain = _chain(node)
    if chain is not None:
        path, pending = chain
        reads.add(path)
        for sub in pending:
            _walk(sub, reads)
        return
    if node.data == "ident":
        name = str(node.children[0])
        if name in VARIABLES:
            reads.add((name,))
        return
    for child in node.children:
        _walk(child, reads)
