"""End to end: the installed ``authz test`` command on every example policy
with its case file, as a policy repository's CI runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testkit.paths import EXAMPLES, REPO

AUTHZ = str(Path(sys.executable).with_name("authz"))
NOW = "2026-01-01T00:00:00Z"
#: Every example policy (file or directory) and the case file that tests it.
EXAMPLE_CASES = {
    "examples/policy.yaml": "examples/tests/policy.cases.yaml",
    "examples/policy-dir": "examples/tests/policy-dir.cases.yaml",
    **{f"examples/providers/{p.name}": f"examples/tests/{p.stem}.cases.yaml"
       for p in sorted((EXAMPLES / "providers").glob("*.yaml"))},
}


def authz_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUTHZ, "test", *args], capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize(("config", "cases"), EXAMPLE_CASES.items(), ids=list(EXAMPLE_CASES))
def test_every_example_passes_its_cases(config: str, cases: str) -> None:
    count = len(yaml.safe_load((REPO / cases).read_text())["cases"])
    run = authz_test("--config", config, "--now", NOW, "--coverage", cases)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == f"{count} passed, 0 failed"
    # Every rule and role permission of the examples is exercised by a case.
    assert lines[0].startswith("coverage: ") and " not matched " not in run.stdout, run.stdout


def test_every_example_policy_has_cases() -> None:
    policies = {"examples/policy.yaml", "examples/policy-dir",
                *(f"examples/providers/{p.name}" for p in (EXAMPLES / "providers").glob("*.yaml"))}
    assert set(EXAMPLE_CASES) == policies
    assert all((REPO / cases).is_file() for cases in EXAMPLE_CASES.values())


def test_a_failing_case_fails_the_run(tmp_path: Path) -> None:
    text = (EXAMPLES / "tests" / "policy.cases.yaml").read_text()
    broken = tmp_path / "broken.cases.yaml"
    broken.write_text(text.replace("reason: no_permission", "reason: allowed", 1))
    run = authz_test("--config", "examples/policy.yaml", "--now", NOW, str(broken))
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[0] == f"FAIL a reader may not delete ({broken}:26)"
    assert "  reason: expected allowed, got no_permission" in lines
    total = text.count("  - name: ")
    assert lines[-1] == f"{total - 1} passed, 1 failed"


def test_a_case_file_error_stops_the_run(tmp_path: Path) -> None:
    broken = tmp_path / "broken.cases.yaml"
    broken.write_text("cases:\n  - name: x\n    request: {path: /}\n    token: {issuer: okta}\n"
                      "    expect: {allowed: true}\n")
    run = authz_test("--config", "examples/policy.yaml", str(broken))
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == f"{broken}:4: cases[0].token.issuer: no issuer named 'okta' (the policy has: dev)\n"


def test_the_pre_commit_hooks_run_as_documented() -> None:
    """Each hook of .pre-commit-hooks.yaml, with the args docs/policy.md
    shows, on the example policy directory."""
    hooks = {hook["id"]: hook for hook in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"authz-validate", "authz-test"}
    args = {
        "authz-validate": ["--config", "examples/policy-dir"],
        "authz-test": ["--config", "examples/policy-dir", "--now", NOW, "examples/tests/policy-dir.cases.yaml"],
    }
    for name, hook in hooks.items():
        assert hook["pass_filenames"] is False and hook["language"] == "python"
        program, *rest = hook["entry"].split()
        assert program == "authz"
        run = subprocess.run([AUTHZ, *rest, *args[name]], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert run.returncode == 0, run.stdout + run.stderr
    docs = (REPO / "docs" / "policy.md").read_text()
    assert "- id: authz-validate" in docs and "- id: authz-test" in docs
