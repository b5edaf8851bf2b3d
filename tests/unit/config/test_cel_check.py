"""Types inside CEL expressions are checked when the policy loads
(docs/policy.md, "CEL"; docs/security.md 68): a clash is a ``FILE:LINE``
error naming both types, and a right expression over ``dyn`` values
(claims, maps) still loads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from authz.cel import CelError, compile_expression
from authz.cel_types import VARIABLES, CelType, parse, unknown_field
from authz.config.cel_check import Checker
from authz.config.load import load_policy
from authz.errors import ConfigError
from testkit.paths import REPO


def _policy(tmp_path: Path, when: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nrules:\n  - name: r\n    effect: deny\n    when: " + when + "\n")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_policy(str(path))
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize(("when", "message"), [
    ("'identity.roles == \"admin\"'", "'==' cannot be applied to list(string) and string (column 16)"),
    ("'request.path > 3'", "'>' cannot be applied to string and int (column 14)"),
    ("'identity.subject + 1 == 2'", "'+' cannot be applied to string and int (column 18)"),
    ("'request.headers[\"x\"] == 1'", "'==' cannot be applied to string and int (column 22)"),
    ("'request.query[\"page\"] > 1'", "'>' cannot be applied to string and int (column 23)"),
    ("'source.port == \"80\"'", "'==' cannot be applied to int and string (column 13)"),
    ("'destination.port == \"443\"'", "'==' cannot be applied to int and string (column 18)"),
    ("'size(identity.kind) > \"a\"'", "'>' cannot be applied to int and string (column 21)"),
    ("'now > \"2020\"'", "'>' cannot be applied to timestamp and string (column 5)"),
    ("'context.tier == 1'", "'==' cannot be applied to string and int (column 14)"),
    ("'identity.scopes.exists(s, s == 1)'", "'==' cannot be applied to string and int (column 29)"),
    ("'identity.subject.startsWith(1)'", "'startsWith' cannot be applied to string and int (column 28)"),
    ("'identity == \"admin\"'", "'==' cannot be applied to identity and string (column 10)"),
    ("'!identity.issuer'", "'!' cannot be applied to string (column 1)"),
    ("'identity.rolez == \"a\"'",
     "identity has no field 'rolez' (its fields: certificate, claims, issuer, kind, roles, scopes, subject) "
     "(column 9)"),
    ("'\"x\" in request.header'", "request has no field 'header' (its fields: body, body_json, form, headers, host, "
                                  "method, path, query, scheme) (column 15)"),
])
def test_a_type_clash_inside_an_expression_is_a_file_line_error(tmp_path: Path, when: str, message: str) -> None:
    path = _policy(tmp_path, when)
    assert _problems(path) == [f"{path}:5: rules[0].when: {message}"]


def test_a_clash_in_a_block_points_at_its_own_line(tmp_path: Path) -> None:
    path = _policy(tmp_path, '|\n      identity.kind == "jwt" &&\n      source.port == "22"')
    assert _problems(path) == [
        f"{path}:7: rules[0].when: '==' cannot be applied to int and string (line 2, column 13 of the expression)"]


def test_every_clash_of_a_policy_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nrules:\n"
                    "  - {name: a, effect: deny, when: 'source.port == \"22\"'}\n"
                    "  - {name: b, effect: deny, when: 'request.path == 1'}\n"
                    "response:\n  headers:\n    x-roles: identity.roles\n  metadata:\n    m: now\n")
    assert _problems(path) == [
        f"{path}:3: rules[0].when: '==' cannot be applied to int and string (column 13)",
        f"{path}:4: rules[1].when: '==' cannot be applied to string and int (column 14)",
        f"{path}:7: response.headers.x-roles: expression gives list<string>, expected string",
        f"{path}:9: response.metadata.m: expression gives timestamp, expected a string, number, bool, list or map",
    ]


def test_sec_68_a_deny_rule_whose_types_clash_is_refused_not_silently_never_matched(tmp_path: Path) -> None:
    # The runtime alone compares an int with a string as "not equal": this
    # deny rule would never match, and every request to port 22 would pass it.
    runtime = compile_expression('source.port == "22"', result="bool")
    assert runtime.evaluate({"source": {"port": 22}}) is False
    path = _policy(tmp_path, "'source.port == \"22\"'")
    assert _problems(path) == [f"{path}:5: rules[0].when: '==' cannot be applied to int and string (column 13)"]


DYN_HEAVY = [
    'has(identity.claims.tenant) && identity.claims.tenant == request.headers["x-tenant"]',
    'identity.claims.tenant.startsWith("t") && identity.claims.level > 2 && identity.claims.a.b.c != null',
    '"admin" in identity.roles || identity.scopes.exists(s, s.startsWith("orders:"))',
    '"x-tenant" in request.headers && request.headers["x-tenant"].lowerAscii() == "t1"',
    'has(request.query.page) && int(request.query["page"]) > 1 && request.path.matches("^/api/")',
    'now > timestamp("2020-01-01T00:00:00Z") && timestamp(identity.claims.exp) < now + duration("1h")',
    'identity.claims.groups.exists(g, g == "admins") && size(identity.claims.groups) < 50',
    'context.tier == "gold" && has(context.mode) && source.port > 1024 && destination.principal != ""',
    'request.headers.exists(k, k.startsWith("x-")) || request.method in ["GET", "HEAD"]',
    'base64.encode(bytes(identity.subject)) != "" && identity.roles.join(",").contains("a")',
]


@pytest.mark.parametrize("source", DYN_HEAVY)
def test_a_right_expression_over_dyn_values_still_loads(tmp_path: Path, source: str) -> None:
    path = _policy(tmp_path, "'" + source + "'")
    assert load_policy(str(path)).deny_rules[0].name == "r"


@pytest.mark.parametrize(("source", "result"), [
    ("identity.claims.groups", "strings"), ("identity.roles", "strings"), ("identity.claims", "value"),
    ("request.headers", "value"), ("source.port", "value"),
    ('identity.claims.tenant + "/" + identity.subject', "string"),
])
def test_every_result_the_runtime_accepts_the_checker_accepts(source: str, result: str) -> None:
    compile_expression(source, result=result)
    Checker(VARIABLES).check(source, result)


TABLE: Mapping[str, CelType] = {
    "identity": {"subject": "string", "certificate": {"dns_names": "list(string)", "not_after": "timestamp"}},
    "data": "map(string, dyn)",
    "form": "map(string, list(string))",
    "body": "bytes",
}


@pytest.mark.parametrize(("source", "message"), [
    ("identity.certificate.dns_names == 'a'", "'==' cannot be applied to list(string) and string"),
    ("identity.certificate.not_after > 1", "'>' cannot be applied to timestamp and int"),
    ("identity.certificate.x", "identity.certificate has no field 'x' (its fields: dns_names, not_after)"),
    ("body == 'a'", "'==' cannot be applied to bytes and string"),
    ("data.x.y == 1 && form.a == ['b'] && identity.certificate == data.c", None),
])
def test_a_field_or_variable_is_one_line_of_the_table_nested_records_too(source: str, message: str | None) -> None:
    checker = Checker(TABLE)
    if message is None:
        checker.check(source, "bool")
        return
    with pytest.raises(CelError, match=re.escape(message)):
        checker.check(source, "bool")


def test_nested_records_name_a_misspelt_field() -> None:
    nested: Mapping[str, CelType] = {"identity": {"certificate": {"subject": "string"}}}
    assert unknown_field(("identity", "certificate", "subjet"), nested) == (
        "identity.certificate has no field 'subjet' (its fields: subject)")
    assert unknown_field(("identity", "certificate", "subject", "x"), nested) is None


def test_a_type_the_table_cannot_hold_fails_at_once() -> None:
    for wrong in ("str", "list(strin)", "map(int, string)", "map(string)"):
        with pytest.raises(ValueError, match="not a CEL type of the table"):
            parse(wrong)


def _documented_rows() -> dict[str, str]:
    text = (REPO / "docs" / "policy.md").read_text()
    section = text[text.index("\n## CEL\n"):]
    return {match.group(1): match.group(2) for match in re.finditer(r"^\| `(\w+)` \| (.*) \|$", section, re.MULTILINE)}


def test_docs_list_every_variable_and_field_of_the_table() -> None:
    rows = _documented_rows()
    for name, kind in VARIABLES.items():
        assert name in rows, f"docs/policy.md, CEL: no row for {name}"
        if not isinstance(kind, str):
            for field in kind:
                assert f"`{field}`" in rows[name], f"docs/policy.md, CEL: {name}.{field} is not documented"
