"""Closure-compiled CEL conditions (authz/cel_closures.py) give exactly the
C++ runtime's result, errors included, on generated expressions and inputs."""

from __future__ import annotations

from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from authz.cel import CelError, EvaluationError, Expression, compile_expression, select_reads

PATHS = ['identity.kind', 'identity.claims.tenant', 'request.headers["x-tenant"]', "request.headers['x']",
         'request.path', 'identity.claims.flag', 'identity.roles', 'identity.claims["a b"]']
CONTAINERS = ["identity.roles", "request.headers", "identity.claims", "identity.kind"]
LITERALS = ['"jwt"', '"t1"', '""', '"é"', "'x-tenant'", '"admin"', "true", "false"]


def _expressions() -> st.SearchStrategy[str]:
    operand = st.sampled_from(PATHS + LITERALS)
    atom = st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", operand, st.sampled_from(["==", "!="]), operand),
        st.builds(lambda a, b: f"{a} in {b}", st.sampled_from(LITERALS[:6]), st.sampled_from(CONTAINERS)),
        st.sampled_from(["true", "false", "identity.claims.flag", "request.path"]),
    )
    return st.recursive(atom, lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a} && {b})", inner, inner),
        st.builds(lambda a, b: f"({a} || {b})", inner, inner),
        st.builds(lambda a: f"!({a})", inner),
    ), max_leaves=6)


TEXT = st.sampled_from(["jwt", "t1", "", "é", "admin", "x-tenant", "t1\x00", "\ud800", "a b"])
SCALAR = st.one_of(TEXT, st.booleans(), st.integers(-2, 2), st.none(), st.floats(allow_nan=False, width=16))
VALUE = st.one_of(SCALAR, st.lists(SCALAR, max_size=3), st.dictionaries(TEXT, SCALAR, max_size=2))


def _maybe(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=keys)


VARIABLES = st.fixed_dictionaries({}, optional={
    "identity": _maybe({"kind": VALUE, "roles": VALUE,
                        "claims": st.one_of(_maybe({"tenant": VALUE, "flag": VALUE, "a b": VALUE}), VALUE)}),
    "request": _maybe({"path": VALUE, "headers": st.one_of(_maybe({"x-tenant": VALUE, "x": VALUE,
                                                                    "admin": VALUE}), VALUE)}),
})


def _outcome(run: Any) -> tuple[str, Any]:
    try:
        value = run()
    except EvaluationError as exc:
        return "error", str(exc)
    return "value", (type(value), value)


def _runtime(expression: Expression, variables: dict[str, Any]) -> tuple[str, Any]:
    return _outcome(lambda: expression._run(select_reads(variables, expression._read_paths)))


@settings(max_examples=1500, deadline=None)
@given(source=_expressions(), variables=VARIABLES)
def test_a_closure_gives_the_runtimes_result_or_asks_it(source: str, variables: dict[str, Any]) -> None:
    try:
        expression = compile_expression(source, result="bool")
    except CelError:
        event("does not compile")
        return
    if expression._path is not None:  # a plain path is read directly (authz.cel), never by a closure
        event("plain path")
        return
    assert expression._closure is not None, source  # every generated shape is in the subset
    try:
        expression._closure(variables)
        event("closure answered")
    except Exception:
        event("runtime asked")
    assert _outcome(lambda: expression.evaluate(variables)) == _runtime(expression, variables), source


def test_the_tenant_condition_is_answered_by_its_closure() -> None:
    expression = compile_expression('identity.kind == "jwt" && request.headers["x-tenant"] != identity.claims.tenant',
                                    result="bool")
    assert expression._closure is not None
    same = {"identity": {"kind": "jwt", "claims": {"tenant": "t1"}}, "request": {"headers": {"x-tenant": "t1"}}}
    other = {"identity": {"kind": "jwt", "claims": {"tenant": "t1"}}, "request": {"headers": {"x-tenant": "t2"}}}
    assert expression._closure(same) is False and expression._closure(other) is True
    assert expression.evaluate(same) is False and expression.evaluate(other) is True


def test_what_is_outside_the_subset_has_no_closure() -> None:
    for source in ['request.path.startsWith("/api")', 'size(identity.roles) > 1', "identity.claims.n == 1",
                   'identity.kind == "jwt" ? true : false', 'request.headers.exists(h, h == "x")']:
        assert compile_expression(source, result="bool")._closure is None, source
