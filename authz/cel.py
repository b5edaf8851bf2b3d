"""CEL: one environment, compile at load, evaluate with fail-closed results,
and a static analysis of which attributes each expression reads.

Evaluation uses ``cel-expr-python`` (Google's C++ CEL runtime). For the
contract's tenant-isolation condition over per-request variables it measured
about 11 µs, conversion of its inputs included, where the Rust binding
(``common-expression-language``) took 100 µs (20 µs when handed only what the
expression reads) and the pure-Python ``cel-python`` 500 µs;
``benchmarks/cel_bench.py`` prints these. The runtime is handed only the parts
of the variables an expression reads (:func:`select_reads`): converting whole
header and claim maps would cost more than evaluating.

The C++ runtime does not expose the parsed expression, so the analysis walks
the parse tree of ``cel-python``'s parser (lark), once per expression at load.

Variables (documented in docs/policy.md, "CEL"): ``request``, ``source``,
``destination``, ``context``, ``identity`` (declared dynamic here: the
types of their fields are checked at load, by :mod:`authz.config.cel_check`)
and ``now`` (timestamp); their types are :data:`authz.cel_types.VARIABLES`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cel_expr_python import cel as _cel
from cel_expr_python.ext import ext_encoders, ext_strings

from authz.cel_closures import Closure, Fallback, closure_for
from authz.cel_messages import first_error
from authz.cel_types import VARIABLES as TABLE
from authz.cel_types import runtime_type, unknown_field

#: The variables, in the order docs list them (their types: :mod:`authz.cel_types`).
VARIABLES = tuple(TABLE)

#: An attribute path such as ("request", "headers", "x-tenant"). A shorter path
#: means everything below it is read.
AttrPath = tuple[str, ...]

#: The extensions every environment declares (the load-time checker's too).
EXTENSIONS = (ext_strings.ExtStrings, ext_encoders.ExtEncoders)

_ENV = _cel.NewEnv(
    variables={name: runtime_type(kind) for name, kind in TABLE.items()},
    extensions=[extension() for extension in EXTENSIONS],
)


class CelError(ValueError):
    """An expression that does not compile, or has the wrong result type.

    ``line`` and ``column`` (1-based, within the expression) locate the
    first error when the compiler gives a position.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True, eq=False)
class Expression:
    """A compiled CEL expression and the attribute paths it reads."""

    source: str
    reads: frozenset[AttrPath]
    roots: tuple[str, ...]
    _program: Any
    #: Set when the whole expression is one attribute path (``identity.subject``,
    #: ``request.headers["x-tenant"]``): then it is read directly, which gives
    #: the same result as the runtime at a fraction of the cost.
    _path: AttrPath | None = None
    #: A condition in the subset ``authz.cel_closures`` compiles: answered
    #: in Python when it provably gives the runtime's result.
    _closure: Closure | None = None
    _read_paths: tuple[AttrPath, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_read_paths", minimal_paths(self.reads))

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """The result as a plain Python value; raises :class:`EvaluationError`
        when the expression fails (missing key, type error, a NUL character
        in what it reads, ...).

        Only what the expression reads is handed to the runtime (see
        :func:`select_reads`): converting whole header and claim maps
        would cost more than evaluating.
        """
        if self._path is not None:
            return _read_path(variables, self._path)
        if self._closure is not None:
            try:
                return self._closure(variables)
            except Fallback:
                pass
        return self._run(select_reads(variables, self._read_paths))

    def evaluate_with(self, variables: Mapping[str, Any], convert: Callable[[Any], Any]) -> Any:
        """As :meth:`evaluate`, on what the expression reads passed through
        ``convert`` first (``authz.sanitize.mark_separators``)."""
        if self._path is not None:
            return convert(_read_path(variables, self._path))
        return self._run(convert(select_reads(variables, self._read_paths)))

    def _run(self, data: Any) -> Any:
        try:
            value = self._program.eval(data=data)
            plain = value.plain_value()
        except Exception as exc:  # the runtime raises for unconvertible inputs
            raise EvaluationError(str(exc)) from None
        if plain is True or plain is False:
            # An error's plain value is its message (a str), never a bool:
            # a boolean answer needs no type check.
            return plain
        if value.type() == _cel.Type.ERROR:
            raise EvaluationError(str(value.value()))
        return plain

    def is_true(self, variables: Mapping[str, Any]) -> bool:
        """True only when the expression evaluates to the boolean true."""
        return self.evaluate(variables) is True


class EvaluationError(Exception):
    """A CEL expression failed at run time."""


#: The result types :func:`compile_expression` accepts for each kind of
#: result, by the runtime's type name ("dyn" is checked when evaluated).
_RESULTS: dict[str, frozenset[str]] = {
    "bool": frozenset({"BOOL", "DYN"}),
    "string": frozenset({"STRING", "DYN"}),
    "strings": frozenset({"STRING", "DYN", "LIST<STRING>", "LIST<DYN>"}),
}
#: What a "value" result (JSON-like: null, bool, number, string, list, map)
#: can never hold.
_NOT_VALUES = ("BYTES", "TIMESTAMP", "DURATION", "TYPE", "ERROR")
_EXPECTED = {"bool": "bool", "string": "string", "strings": "a string or a list of strings",
             "value": "a string, number, bool, list or map"}


def compile_expression(source: str, *, result: str) -> Expression:
    """Compile ``source``; ``result`` is the expected type: "bool",
    "string", "strings" (a string or a list of strings) or "value" (what
    JSON can hold: no bytes, timestamps or durations).

    Raises :class:`CelError` with the runtime's message (first line only).
    """
    if not source.strip():
        raise CelError("empty expression")
    try:
        program = _ENV.compile(source)
    except RuntimeError as exc:
        raise compile_error(str(exc)) from None
    if (wrong := result_problem(program.return_type().name(), result)) is not None:
        raise CelError(wrong)
    reads = analyse_reads(source)
    for read in sorted(reads):
        if (wrong := unknown_field(read)) is not None:
            raise CelError(wrong)
    roots = tuple(sorted({path[0] for path in reads}))
    path = next(iter(reads)) if len(reads) == 1 and _PLAIN_PATH.fullmatch(source) else None
    closure = closure_for(source) if result == "bool" and path is None else None
    return Expression(source, reads, roots, program, path, closure)


def result_problem(got: str, result: str) -> str | None:
    """What is wrong with an expression giving type ``got`` (the runtime's
    name: ``LIST<STRING>``) where ``result`` is expected; None when it fits."""
    fits = not any(kind in got for kind in _NOT_VALUES) if result == "value" else got in _RESULTS[result]
    return None if fits else f"expression gives {got.lower()}, expected {_EXPECTED[result]}"


_PLAIN_PATH = re.compile(
    r"\s*(?:request|source|destination|context|identity|data)"
    r"(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*|\s*\[\s*(?:\"[^\"\\\n]*\"|'[^'\\\n]*')\s*\])+\s*"
)


def _read_path(variables: Mapping[str, Any], path: AttrPath) -> Any:
    """Select ``path`` as CEL would: a missing key or a non-map on the way
    is an error, and so is a NUL in the value (see :func:`select_reads`)."""
    value: Any = variables
    for key in path:
        if not _is_mapping(value) or key not in value:
            raise EvaluationError(f"no such key: {key}")
        value = value[key]
    if _holds_nul(value):
        raise EvaluationError(_NUL_MESSAGE)
    return value


def minimal_paths(reads: frozenset[AttrPath]) -> tuple[AttrPath, ...]:
    """The read paths without those below another one (``request`` covers
    ``request.path``), sorted."""
    return tuple(sorted(p for p in reads if not any(p[: len(q)] == q for q in reads if len(q) < len(p))))


_SCALARS = (int, float, bool, type(None))
_NUL_MESSAGE = "a value read holds a NUL character, which the CEL runtime cannot represent"


def select_reads(variables: Mapping[str, Any], paths: tuple[AttrPath, ...]) -> dict[str, Any]:
    """The part of ``variables`` that ``paths`` reach, as nested dicts.

    Each path copies the maps it passes through with only the key it looks
    up, and ends at a value taken whole (or at a missing key, left missing,
    or at a value that is not a map). Since the paths over-approximate every
    access an expression makes, it sees exactly what it would see in
    ``variables``.

    The runtime cuts strings, bytes and map keys at the first NUL, so that
    ``"admin\\x00x"`` would equal ``"admin"``: a NUL in a value taken raises
    :class:`EvaluationError` (keys passed through are looked up exactly, so
    a key ``"a\\x00b"`` is never copied where ``a`` is read).
    """
    out: dict[str, Any] = {}
    for path in paths:
        source: Any = variables
        target = out
        last = len(path) - 1
        for depth, key in enumerate(path):
            if key not in source:
                break
            value = source[key]
            if depth == last or not _is_mapping(value):
                if _holds_nul(value):
                    raise EvaluationError(_NUL_MESSAGE)
                target[key] = value
                break
            inner = target.get(key)
            if inner is None:
                inner = target[key] = {}
            source, target = value, inner
    return out


def _is_mapping(value: Any) -> bool:
    # isinstance with an ABC is slow; nearly every map here is a dict.
    return type(value) is dict or isinstance(value, Mapping)


def _keys_hold_nul(mapping: Mapping[Any, Any]) -> bool:
    try:
        return "\x00" in "".join(mapping)
    except TypeError:
        return any(_holds_nul(key) for key in mapping)


def _holds_nul(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return "\x00" in value
    if kind in _SCALARS:
        return False
    if _is_mapping(value):
        if _keys_hold_nul(value):
            return True
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind is bytes or kind is bytearray:
        return b"\x00" in value
    else:
        return False
    for item in items:
        if type(item) is str:
            if "\x00" in item:
                return True
        elif type(item) not in _SCALARS and _holds_nul(item):
            return True
    return False


def compile_error(report: str, names: Mapping[str, str] | None = None) -> CelError:
    """The first error of the runtime's report, readable on one line
    (:mod:`authz.cel_messages`)."""
    message, line, column = first_error(report, names)
    return CelError(message, line, column)


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
        if isinstance(child, Tree) and child.data in _IDENT_NODES:
            name = str(child.children[0])
            if name in VARIABLES:
                return (name,), []
        return None
    if node.data == "member_dot":
        inner = _chain(node.children[0])
        if inner is None:
            return None
        path, pending = inner
        selected = node.children[1]
        if isinstance(selected, Token):
            return (*path, str(selected)), pending
        return path, [*pending, selected]
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


# ``request`` and ``.request`` (a name resolved from the root container).
_IDENT_NODES = frozenset({"ident", "dot_ident"})
# Nodes whose name tokens are field or function names, never variables.
_NAME_NODES = frozenset({"member_dot", "member_dot_arg", "fieldinits", "ident_arg", "dot_ident_arg"})


def _walk(node: Any, reads: set[AttrPath]) -> None:
    from lark import Token, Tree

    if not isinstance(node, Tree):
        return
    chain = _chain(node)
    if chain is not None:
        path, pending = chain
        reads.add(path)
        for sub in pending:
            _walk(sub, reads)
        return
    # `"x-tenant" in request.headers` reads one key's presence, not the map:
    # a cache keyed on every header would never hit.
    if node.data == "relation" and len(node.children) == 2:
        test, container = node.children
        if isinstance(test, Tree) and test.data == "relation_in" and len(test.children) == 1:
            key = _literal_string(test.children[0])
            while (isinstance(container, Tree) and len(container.children) == 1
                   and container.data not in ("member", "primary")):
                container = container.children[0]
            inner = _chain(container)
            if key is not None and inner is not None and not inner[1]:
                reads.add((*inner[0], key))
                return
    for child in node.children:
        if isinstance(child, Token):
            # Any other construct naming a variable reads all of it: the
            # analysis may over-approximate, never miss a read.
            if node.data not in _NAME_NODES and str(child) in VARIABLES:
                reads.add((str(child),))
        else:
            _walk(child, reads)
