"""`authz explain` on the acceptance fixtures: the verdict, and the step that decided."""

from __future__ import annotations

import json
from typing import Any

import pytest

from authz.cli import main
from testkit.paths import ACCEPTANCE

EXPECTED = json.loads((ACCEPTANCE / "expected.json").read_text())
# The line of the trace that must explain each denial.
WHY = {
    "missing_credential": r"[credential] jwt (header authorization): not present",
    "invalid_token": "[credential] invalid_token: rejected",
    "expired_token": "[credential] expired_token: rejected  (token expired)",
    "unknown_issuer": "[credential] unknown_issuer: rejected",
    "invalid_api_key": "[credential] invalid_api_key: rejected",
    "no_permission": "[permission] orders-reader[0]: no match",
    "invalid_path": "[request] path: invalid",
}


@pytest.mark.parametrize("case", EXPECTED["cases"], ids=lambda c: c["request"].rsplit("/", 1)[-1][:-5])
def test_explain(case: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", "--config", str(ACCEPTANCE / "policy.yaml"), "--request",
                 str(ACCEPTANCE / case["request"])])
    out = capsys.readouterr().out
    lines = out.splitlines()
    verdict = "ALLOW" if case["allowed"] else "DENY"
    assert lines[-1].startswith(f"=> {verdict} {case['status']} {case['reason']}")
    assert code == (0 if case["allowed"] else 1)
    assert lines[0].startswith("[request]")
    if case["reason"] == "denied_by_rule":
        assert any((line.startswith("[deny rule]") and line.endswith(": matched")) or ": matched  (" in line
                   for line in lines if line.startswith("[deny rule]"))
    elif case["reason"] in WHY:
        assert any(line.startswith(WHY[case["reason"]]) for line in lines), out
    if case["allowed"]:
        assert any(": matched" in line and (line.startswith("[permission]") or line.startswith("[allow rule]"))
                   for line in lines), out
    # The trace is for humans debugging, never a place for a credential.
    assert "eyJ" not in out
