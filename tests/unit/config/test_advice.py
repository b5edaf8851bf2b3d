"""What `authz validate` warns about (authz.config.advice): deny rules whose
path a trailing slash walks around (docs/security.md 51)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from authz.config import load_policy
from authz.config.advice import trailing_slash_warnings


def warnings_for(tmp_path: Path, rules: str, tail: str = "") -> list[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n" + textwrap.indent(textwrap.dedent(rules), "  ") + tail)
    return trailing_slash_warnings(load_policy(str(policy)))


@pytest.mark.parametrize("paths", [
    '["/internal/**"]', '["/internal", "/internal/"]', '["/internal", "/internal/**"]', '["/internal/"]',
    '["/**"]', '["/"]', '["/api/*/admin/**"]', '["/files/*", "/files/*/"]',
])
def test_deny_rules_that_cover_the_trailing_slash_need_no_warning(tmp_path: Path, paths: str) -> None:
    assert warnings_for(tmp_path, f"- {{name: r, effect: deny, paths: {paths}}}\n") == []


def test_a_deny_rule_on_a_bare_path_is_warned_about_at_its_line(tmp_path: Path) -> None:
    found = warnings_for(tmp_path, """\
        - {name: open, effect: allow, anonymous: true, paths: [/public]}
        - name: internal
          effect: deny
          paths: [/internal, "/api/*/admin", "/api/**/debug", "/api/v*/x.json", "/ok/**"]
    """)
    assert found == [
        "4: warning: deny rule 'internal' matches '/internal' but not '/internal/', which routers that ignore a "
        "trailing slash serve alike; write '/internal/**' (it matches '/internal', '/internal/' and every path "
        "below) or add '/internal/'",
        "4: warning: deny rule 'internal' matches '/api/x/admin' but not '/api/x/admin/', which routers that ignore "
        "a trailing slash serve alike; write '/api/*/admin/**' (it matches '/api/*/admin', '/api/*/admin/' and "
        "every path below) or add '/api/*/admin/'",
        "4: warning: deny rule 'internal' matches '/api/debug' but not '/api/debug/', which routers that ignore a "
        "trailing slash serve alike; write '/api/**/debug/**' (it matches '/api/**/debug', '/api/**/debug/' and "
        "every path below) or add '/api/**/debug/'",
        "4: warning: deny rule 'internal' matches '/api/vx/x.json' but not '/api/vx/x.json/', which routers that "
        "ignore a trailing slash serve alike; write '/api/v*/x.json/**' (it matches '/api/v*/x.json', "
        "'/api/v*/x.json/' and every path below) or add '/api/v*/x.json/'",
    ]


def test_allow_rules_and_permissions_are_not_warned_about(tmp_path: Path) -> None:
    # Missing the trailing-slash form there refuses too much, never too little.
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent("""\
        version: 1
        roles:
          reader: [{paths: [/api/orders]}]
        rules:
          - {name: open, effect: allow, anonymous: true, paths: [/public]}
          - {name: any, effect: deny, when: 'request.path == "/internal"'}
    """))
    assert trailing_slash_warnings(load_policy(str(policy))) == []


def test_with_case_folded_the_warning_names_the_lower_cased_pattern(tmp_path: Path) -> None:
    found = warnings_for(tmp_path, "- {name: r, effect: deny, paths: [/Internal]}\n",
                         "paths:\n  case_sensitive: false\n")
    assert len(found) == 1 and "matches '/internal' but not '/internal/'" in found[0]
