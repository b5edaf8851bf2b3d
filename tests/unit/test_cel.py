"""CEL (authz.cel): compile errors, evaluation, fail-closed matching, and the
static analysis of what an expression reads (with authz.policy.Reads)."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest

from authz.cel import (
    CelError,
    EvaluationError,
    analyse_reads,
    compile_expression,
    minimal_paths,
    select_reads,
)
from authz.identity.base import ANONYMOUS, Identity
from authz.policy import Matcher, Reads
from authz.request import View
from testkit.requests import request

TENANT_ISOLATION = 'identity.kind == "jwt" && request.headers["x-tenant"] != identity.claims.tenant'

ALICE = Identity(kind="jwt", subject="alice", issuer="https://idp.example.com", roles=frozenset({"orders-reader"}),
                 scopes=("orders:read",), claims={"sub": "alice", "tenant": "t1", "n": 3})


def view(identity: Identity = ALICE, **kwargs: object) -> View:
    req = request(**kwargs)  # type: ignore[arg-type]
    path, _, query = req.path.partition("?")
    return View(req, path, query, identity, now=1_800_000_000.0)


# -- compiling ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("request.path ==", "syntax error: unexpected end of expression (column 16)"),
        ("request.path == 'a' )", "syntax error: unexpected ')' (column 21)"),
        ("user.tenant == 'a'", "undeclared reference to 'user.tenant'"),
        ("tenant == 'a'", "undeclared reference to 'tenant' (column 1)"),
        ("now > 5", "'>' cannot be applied to timestamp and int (column 5)"),
        ("", "empty expression"),
        ("   ", "empty expression"),
    ],
)
def test_compile_errors(source: str, message: str) -> None:
    with pytest.raises(CelError) as caught:
        compile_expression(source, result="bool")
    assert message in str(caught.value)
    # One line, without the runtime's status decorations.
    assert "\n" not in str(caught.value)
    assert "INVALID_ARGUMENT" not in str(caught.value)
    assert "in container" not in str(caught.value)


def test_compile_error_position() -> None:
    with pytest.raises(CelError) as caught:
        compile_expression('identity.kind == "jwt" &&\n  && true', result="bool")
    assert (caught.value.line, caught.value.column) == (2, 3)
    assert "line 2, column 3" in str(caught.value)


@pytest.mark.parametrize(
    ("source", "result", "got"),
    [
        ('"yes"', "bool", "string"),
        ("size(identity.roles)", "bool", "int"),
        ("1.5", "bool", "double"),
        ("[true]", "bool", "list<bool>"),
        ("now", "string", "timestamp"),
        ("true", "string", "bool"),
        ("size(identity.roles)", "string", "int"),
    ],
)
def test_wrong_result_type(source: str, result: str, got: str) -> None:
    with pytest.raises(CelError, match=re.escape(f"expression gives {got}, expected {result}")):
        compile_expression(source, result=result)


def test_dynamic_results_are_accepted_and_checked_at_run_time() -> None:
    # identity.claims.n has no static type: it compiles as a condition, and
    # its non-boolean value is caught when evaluated (see the Matcher tests).
    expression = compile_expression("identity.claims.n", result="bool")
    assert expression.evaluate({"identity": ALICE.cel_value()}) == 3


# -- evaluating --------------------------------------------------------------


def test_evaluate_tenant_isolation() -> None:
    expression = compile_expression(TENANT_ISOLATION, result="bool")
    assert expression.roots == ("identity", "request")
    same = view(headers={"x-tenant": "t1"})
    other = view(headers={"x-tenant": "t2"})
    assert expression.evaluate(same.variables(expression.roots)) is False
    assert expression.evaluate(other.variables(expression.roots)) is True
    with pytest.raises(EvaluationError, match="x-tenant"):
        expression.evaluate(view().variables(expression.roots))
    # '&&' short-circuits an error when the other side is false.
    assert expression.evaluate(view(identity=ANONYMOUS).variables(expression.roots)) is False


@pytest.mark.parametrize("query", ["tenant=t1&tenant=t2", "tenant=t1&tenan%74=t2", "tenant=t1&other=1&other=2"])
def test_a_query_with_a_repeated_name_is_not_there_to_read(query: str) -> None:
    """Frameworks disagree on which of two values counts (Django, PHP and
    Rails read the last), so an expression that reads the query of such a
    request fails to evaluate: a deny rule matches, an allow rule does not."""
    for source in ('request.query.tenant == "t1"', 'has(request.query.tenant)', '"tenant" in request.query',
                   'request.query.size() > 0'):
        expression = compile_expression(source, result="bool")
        with pytest.raises(EvaluationError):
            expression.evaluate(view(path=f"/api?{query}").variables(expression.roots))
    plain = compile_expression('request.query.tenant == "t1"', result="bool")
    assert plain.evaluate(view(path="/api?tenant=t1&x=1").variables(plain.roots)) is True


def test_the_environment() -> None:
    v = view(method="POST", path="/api/orders?id=7&flag", host="api.example.com:8443",
             headers={"x-tenant": "t1"}, principal="spiffe://cluster.local/ns/shop/sa/billing",
             context={"env": "prod"})
    checks = [
        'request.method == "POST"',
        'request.path == "/api/orders"',
        'request.host == "api.example.com:8443"',
        'request.query.id == "7"',
        'request.query.flag == ""',
        'request.headers["x-tenant"] == "t1"',
        'request.scheme == "https"',
        'source.address == "198.51.100.7" && source.port == 40000',
        'source.principal == "spiffe://cluster.local/ns/shop/sa/billing"',
        'destination.address == "10.0.0.12" && destination.port == 8080',
        'context.env == "prod"',
        'identity.kind == "jwt" && identity.subject == "alice" && identity.issuer == "https://idp.example.com"',
        '"orders-reader" in identity.roles && identity.scopes == ["orders:read"]',
        'identity.claims.tenant == "t1"',
        'now == timestamp("2027-01-15T08:00:00Z")',
        'request.path.startsWith("/api/") && request.path.split("/").size() == 3',  # ext strings
        'base64.encode(b"a") == "YQ=="',  # ext encoders
    ]
    for source in checks:
        expression = compile_expression(source, result="bool")
        assert expression.is_true(v.variables(expression.roots)), source


def test_now_is_the_decision_time() -> None:
    v = view()
    assert v.variables(("now",))["now"] == datetime.datetime(2027, 1, 15, 8, 0, tzinfo=datetime.UTC)


def test_anonymous_identity_in_cel() -> None:
    expression = compile_expression('identity.kind == "anonymous" && identity.subject == "" && size(identity.roles) == '
                                    '0',
                                    result="bool")
    assert expression.is_true(view(identity=ANONYMOUS).variables(expression.roots))


def test_is_true_only_for_true() -> None:
    expression = compile_expression("identity.claims.n", result="bool")
    assert expression.is_true({"identity": {"claims": {"n": True}}}) is True
    assert expression.is_true({"identity": {"claims": {"n": 1}}}) is False
    assert expression.is_true({"identity": {"claims": {"n": "true"}}}) is False


# -- fail closed: Matcher with a `when` ----------------------------------------


@pytest.mark.parametrize(
    ("source", "kwargs"),
    [
        # A missing header: evaluation error.
        ('request.headers["x-tenant"] == "t1"', {}),
        # A missing claim.
        ('identity.claims.department == "sales"', {}),
        # A type error at run time.
        ('identity.claims.tenant + 1 == 2', {}),
        # Division by zero.
        ("1 / (size(identity.roles) - 1) == 1", {}),
        # Not a boolean.
        ("identity.claims.n", {}),
        ("identity.claims.tenant", {}),
    ],
)
def test_when_that_fails_matches_for_deny_and_not_for_allow(source: str, kwargs: dict[str, object]) -> None:
    matcher = Matcher(when=compile_expression(source, result="bool"))
    v = view(**kwargs)  # type: ignore[arg-type]
    denied, note = matcher.matches(v, fail_closed=True)
    assert denied is True and note
    allowed, note = matcher.matches(v, fail_closed=False)
    assert allowed is False and note


def test_when_true_and_false_are_the_same_either_way() -> None:
    yes = Matcher(when=compile_expression('identity.claims.tenant == "t1"', result="bool"))
    no = Matcher(when=compile_expression('identity.claims.tenant == "t2"', result="bool"))
    for fail_closed in (True, False):
        assert yes.matches(view(), fail_closed=fail_closed) == (True, None)
        assert no.matches(view(), fail_closed=fail_closed) == (False, None)


def test_when_is_not_evaluated_when_another_field_does_not_match() -> None:
    # An erroring `when` on a non-matching path never denies.
    matcher = Matcher(paths=None, methods=frozenset({"DELETE"}),
                      when=compile_expression('request.headers["x-missing"] == "x"', result="bool"))
    assert matcher.matches(view(method="GET"), fail_closed=True) == (False, None)


# -- static analysis ----------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        (TENANT_ISOLATION,
         {("identity", "kind"), ("request", "headers", "x-tenant"), ("identity", "claims", "tenant")}),
        ("request.headers['x-tenant'] == 'a'", {("request", "headers", "x-tenant")}),
        ('has(request.headers.x)', {("request", "headers", "x")}),
        ('request.headers["x"].size() > 0', {("request", "headers", "x")}),
        ('context.env == "prod"', {("context", "env")}),
        ('context["env"] == "prod"', {("context", "env")}),
        ("destination.port == 80", {("destination", "port")}),
        ("now > timestamp('2020-01-01T00:00:00Z')", {("now",)}),
        ("true", set()),
        # Anything but a constant selection reads all below that point.
        ("request.headers.exists(h, h == 'a')", {("request", "headers")}),
        ('size(request.headers) > 1', {("request", "headers")}),
        ('"x" in request.headers', {("request", "headers", "x")}),  # presence of one key, not the whole map
        ('request.headers["a" + "b"] == "x"', {("request", "headers")}),
        ('identity.claims[request.headers["x"]] == 1', {("identity", "claims"), ("request", "headers", "x")}),
        ('request.headers["a\\"b"] == ""', {("request", "headers")}),
        ("request == request", {("request",)}),
        ("dyn(request).path == 'a'", {("request",)}),
        ("(request).path == 'a'", {("request",)}),
        # A name resolved from the root container is still the variable.
        ('.request.headers["x"] == "a"', {("request", "headers", "x")}),
        # A field that happens to be called like a variable is only a field.
        ('identity.claims.source == "a"', {("identity", "claims", "source")}),
        # Over-approximation is allowed: a comprehension variable named like
        # a variable counts as the variable.
        ("[1].exists(request, request == 1)", {("request",)}),
    ],
)
def test_analyse_reads(source: str, reads: set[tuple[str, ...]]) -> None:
    assert analyse_reads(source) == frozenset(reads)


def test_unparsable_source_reads_everything() -> None:
    everything = {("request",), ("source",), ("destination",), ("context",), ("identity",), ("now",), ("data",)}
    assert analyse_reads("request.?path == 'x'") == frozenset(everything)


def test_roots_are_the_variables_read() -> None:
    # Only the variables read are built for an evaluation.
    expression = compile_expression('.request.headers["x"] == "a"', result="bool")
    assert expression.roots == ("request",)
    assert expression.is_true(view(headers={"x": "a"}).variables(expression.roots))


def test_reads_from_paths() -> None:
    reads = Reads.from_paths({("request", "method"), ("request", "headers", "X-Tenant"), ("context", "env"),
                              ("source", "address"), ("identity", "claims", "tenant"), ("request", "path")})
    assert reads == Reads(method=True, headers=frozenset({"x-tenant"}), context=frozenset({"env"}), source_address=True)
    assert Reads.from_paths(set()) == Reads()


def test_reads_from_paths_whole_subtrees() -> None:
    everything = Reads.from_paths({("request",)})
    assert everything.method and everything.host and everything.query and everything.scheme
    assert everything.headers is None
    assert Reads.from_paths({("request", "headers", "a"), ("request", "headers")}).headers is None
    assert Reads.from_paths({("request", "headers"), ("request", "headers", "a")}).headers is None
    assert Reads.from_paths({("context",), ("context", "env")}).context is None
    source = Reads.from_paths({("source",)})
    assert source.source_address and source.source_port and source.source_principal
    assert not source.destination_address
    destination = Reads.from_paths({("destination", "principal")})
    assert destination.destination_principal and not destination.destination_port
    assert Reads.from_paths({("now",)}).now


def test_reads_of_a_compiled_expression() -> None:
    expression = compile_expression(TENANT_ISOLATION, result="bool")
    reads = Reads.from_paths(set(expression.reads))
    assert reads.headers == frozenset({"x-tenant"})
    assert reads == Reads(headers=frozenset({"x-tenant"}))


# -- what reaches the runtime ----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        # The runtime cuts strings at NUL: "admin\0x" would equal "admin".
        ('identity.subject == "admin"', {"identity": {"subject": "admin\x00x"}}),
        ('identity.claims.b == b"admin"', {"identity": {"claims": {"b": b"admin\x00x"}}}),
        ('request.query.user == "admin"', {"request": {"query": {"user": "admin\x00x"}}}),
        ('identity.claims.groups[0] == "admin"', {"identity": {"claims": {"groups": ["admin\x00x"]}}}),
        # ... and map keys: "admin\0x" would answer for "admin".
        ("identity.claims.exists(k, k == 'admin')", {"identity": {"claims": {"admin\x00x": 1}}}),
    ],
)
def test_nul_in_what_is_read_fails_the_evaluation(source: str, variables: dict[str, object]) -> None:
    expression = compile_expression(source, result="bool")
    with pytest.raises(EvaluationError, match="NUL"):
        expression.evaluate(variables)


def test_nul_elsewhere_does_not_matter() -> None:
    expression = compile_expression('identity.subject == "admin"', result="bool")
    assert expression.evaluate({"identity": {"subject": "admin", "claims": {"note": "a\x00b"}}}) is True
    # A key with a NUL is never confused with the key looked up.
    lookup = compile_expression("identity.claims.admin == 1", result="bool")
    with pytest.raises(EvaluationError, match="Key not found"):
        lookup.evaluate({"identity": {"claims": {"admin\x00x": 1}}})
    assert lookup.evaluate({"identity": {"claims": {"admin\x00x": 2, "admin": 1}}}) is True
    # Membership of a constant key is an exact lookup too: "admin\0x" is not "admin".
    member = compile_expression('"admin" in identity.claims.groups', result="bool")
    assert member.evaluate({"identity": {"claims": {"groups": {"admin\x00x": True}}}}) is False
    assert member.evaluate({"identity": {"claims": {"groups": {"admin\x00x": True, "admin": True}}}}) is True


def test_select_reads_hands_over_only_what_is_read() -> None:
    variables = {
        "request": {"method": "GET", "headers": {"x-tenant": "t1", "authorization": "Bearer secret"}},
        "identity": {"kind": "jwt", "claims": {"tenant": "t1", "other": {"deep": 1}}},
        "now": datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC),
    }
    expression = compile_expression(TENANT_ISOLATION, result="bool")
    assert select_reads(variables, minimal_paths(expression.reads)) == {
        "request": {"headers": {"x-tenant": "t1"}},
        "identity": {"kind": "jwt", "claims": {"tenant": "t1"}},
    }
    # A missing key stays missing, a value that is not a map is taken whole,
    # and a whole subtree is taken as it is.
    assert select_reads(variables, (("identity", "claims", "nope"), ("request", "method", "x"))) == {
        "identity": {"claims": {}}, "request": {"method": "GET"},
    }
    taken: Any = select_reads(variables, (("identity", "claims"),))
    whole: Any = variables
    assert taken["identity"]["claims"] is whole["identity"]["claims"]


def test_minimal_paths() -> None:
    reads = frozenset({("request",), ("request", "headers", "x"), ("identity", "claims", "a"), ("identity", "claims")})
    assert minimal_paths(reads) == (("identity", "claims"), ("request",))


def test_pruned_evaluation_gives_the_same_answers() -> None:
    # The same expressions over the full variables and over what they read.
    v = view(method="POST", path="/api/orders?id=7", headers={"x-tenant": "t2"}, context={"env": "prod"})
    cases = {
        TENANT_ISOLATION: True,
        'identity.kind == "jwt" && request.headers["x-tenant"] == identity.claims.tenant': False,
        'has(request.headers.x) || has(context.env)': True,
        'has(identity.claims.nope)': False,
        'size(request.headers) > 3 && "x-tenant" in request.headers': True,
        'request.headers.exists(h, h.startsWith("x-") && request.headers[h] == "t2")': True,
        'identity.claims.exists(k, k == "tenant") && identity.roles.all(r, r.endsWith("reader"))': True,
        'request.query.id == "7" && context.env == "prod" && request.method == "POST"': True,
        "identity.claims.n > 2 && identity.claims.n < 4": True,
        'request.headers["x-other"] == "a"': None,  # an error either way
    }
    for source, expected in cases.items():
        expression = compile_expression(source, result="bool")
        variables = v.variables(expression.roots)
        full = expression._program.eval(data=variables)
        if expected is None:
            assert full.type().name().lower() == "error"
            with pytest.raises(EvaluationError):
                expression.evaluate(variables)
        else:
            assert full.plain_value() is expected, source
            assert expression.evaluate(variables) is expected, source


def test_an_identity_without_claims_shows_an_empty_claims_map() -> None:
    """API-key, peer and anonymous identities carry a read-only empty claims
    map; CEL must still see a map it can read whole, not an error."""
    for identity in (Identity(kind="api_key", subject="partner"), Identity(kind="peer", subject="spiffe://x"),
                     ANONYMOUS):
        view = View(request("GET", "/"), "/", "", identity, 0.0)
        expression = compile_expression("size(identity.claims) == 0 && !has(identity.claims.tenant)", result="bool")
        assert expression.evaluate(view.variables(expression.roots)) is True, identity.kind


@pytest.mark.parametrize(("source", "message"), [
    ('"admin" in identity.rolez', "identity has no field 'rolez'"),
    ('request.header["x"] == "1"', "request has no field 'header'"),
    ("source.prot > 1", "source has no field 'prot'"),
])
def test_a_field_no_variable_has_is_refused_at_load(source: str, message: str) -> None:
    with pytest.raises(CelError, match=message):
        compile_expression(source, result="bool")


def test_fields_of_maps_and_the_table_are_accepted() -> None:
    compile_expression('request.headers["x"] == "1" && identity.claims.foo == "x" && has(request.query.a)'
                       ' && context.anything == "y" && destination.port > 1', result="bool")


def test_the_view_builds_exactly_the_fields_the_table_declares() -> None:
    from authz.body import BODY_FIELDS, BodyLimits
    from authz.cel_types import VARIABLES as TABLE

    # A policy that reads a body: its fields are there when read (authz.body);
    # body_json of a JSON body, form of a form.
    for content_type, missing in (("application/json", "form"), ("application/x-www-form-urlencoded", "body_json")):
        body = b"{}" if missing == "form" else b""
        view = View(request("GET", "/a?q=1", headers={"content-type": content_type}, body=body),
                    "/a", "q=1", Identity(kind="jwt", subject="s"), now=0.0, body_limits=BodyLimits())
        built = view.variables(tuple(TABLE))
        assert set(built) == set(TABLE)
        for name, kind in TABLE.items():
            if not isinstance(kind, str):
                present = {field for field in kind if field in built[name]}
                assert present == set(kind) - {missing} == set(built[name]) - {missing}, name
    # One that reads none: no body field at all.
    plain = View(request("GET", "/a"), "/a", "", Identity(kind="jwt", subject="s"), now=0.0).variables(("request",))
    assert set(plain["request"]) == set(TABLE["request"]) - set(BODY_FIELDS)
