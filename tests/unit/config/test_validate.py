"""`authz validate` through the real CLI: one fixture per invalid config.

Each ``tests/fixtures/invalid/*.yaml`` states what it must print, one
``# expect: <line>`` comment per line of stderr, in order. ``{file}`` stands
for the path as given on the command line and ``{dir}`` for its directory
(companion files such as keys files are reported under their own name).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testkit.paths import ACCEPTANCE, EXAMPLES, REPO

INVALID = REPO / "tests" / "fixtures" / "invalid"
FIXTURES = sorted(INVALID.glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: (.*)$", re.MULTILINE)


def validate(path: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", "validate", "--config", path],
        capture_output=True, text=True, timeout=60, cwd=cwd,
    )


def expected_lines(fixture: Path, shown: str) -> list[str]:
    lines = _EXPECT.findall(fixture.read_text(encoding="utf-8"))
    directory = os.path.dirname(shown)
    prefix = directory + "/" if directory else ""
    return [line.replace("{file}", shown).replace("{dir}/", prefix) for line in lines]


def test_there_are_fixtures_for_every_case() -> None:
    # A fixture without expectations would pass on any output.
    assert len(FIXTURES) >= 45
    for fixture in FIXTURES:
        assert _EXPECT.search(fixture.read_text(encoding="utf-8")), f"{fixture.name} states no '# expect:' line"


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_invalid_config_is_reported_exactly(fixture: Path) -> None:
    shown = str(fixture.relative_to(REPO))
    run = validate(shown)
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    assert run.stderr.splitlines() == expected_lines(fixture, shown)


def test_paths_are_shown_as_given(tmp_path: Path) -> None:
    # The same fixture named by an absolute path, and from its own folder.
    fixture = INVALID / "api-keys-file.yaml"
    run = validate(str(fixture))
    assert run.returncode == 2
    assert run.stderr.splitlines() == expected_lines(fixture, str(fixture))
    run = validate(fixture.name, cwd=INVALID)
    assert run.returncode == 2
    assert run.stderr.splitlines() == expected_lines(fixture, fixture.name)
    assert run.stderr.splitlines()[0].startswith("files/api-keys-bad.yaml:4: ")


def test_problems_are_sorted_by_line() -> None:
    run = validate(str((INVALID / "several-problems.yaml").relative_to(REPO)))
    numbers = [int(line.split(":")[1]) for line in run.stderr.splitlines()]
    assert len(numbers) == 7
    assert numbers == sorted(numbers)


def test_missing_config_file() -> None:
    run = validate("tests/fixtures/invalid/no-such-policy.yaml")
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "tests/fixtures/invalid/no-such-policy.yaml:1: cannot read the file: no such file or directory",
    ]


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(b"version: 1\nrules: \xff\xfe\n")
    run = validate(str(policy))
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"{policy}:1: cannot read the file: not UTF-8 text"]


def test_a_pattern_list_too_large_for_one_matcher_is_reported_at_its_line(tmp_path: Path) -> None:
    # Each pattern is fine alone; together they exceed what one automaton may hold.
    patterns = "".join(f"      - /{'x*' * 100}{i}\n" for i in range(1000))
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"version: 1\nrules:\n  - name: big\n    effect: deny\n    paths:\n{patterns}")
    run = validate(str(policy))
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        f"{policy}:5: rules[0].paths: 1000 patterns with wildcards are too many or too long for one matcher",
    ]


def test_warnings_go_to_stderr_by_line_and_leave_the_policy_valid(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent("""\
        version: 1
        rules:
          - {name: internal, effect: deny, paths: [/internal]}
          - {name: lan, effect: allow, anonymous: true, source_ips: [10.0.0.0/8]}
          - {name: admin, effect: deny, paths: [/admin, /admin/**]}
          - {name: debug, effect: deny, paths: [/debug]}
    """))
    slash = ("warning: deny rule {0!r} matches '/{0}' but not '/{0}/', which routers that ignore a trailing slash "
             "serve alike; write '/{0}/**' (it matches '/{0}', '/{0}/' and every path below) or add '/{0}/'")
    run = validate(str(policy))
    assert run.returncode == 0 and run.stdout.startswith(f"{policy}: valid (")
    assert run.stderr.splitlines() == [f"{policy}:3: " + slash.format("internal"),
                                       f"{policy}:6: " + slash.format("debug")]
    # With the HTTP door's warnings, in line order.
    run = subprocess.run([sys.executable, "-m", "authz", "validate", "--config", str(policy), "--door", "http"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0
    lines = run.stderr.splitlines()
    assert [line.split(":")[1] for line in lines] == ["3", "4", "6"]
    assert "allow rule 'lan' reads source.address" in lines[1]


def test_headers_that_could_pass_envoys_limits_are_warned_about_at_their_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    headers = "".join(f"    x-h{i}: identity.subject\n" for i in range(8))
    policy.write_text("version: 1\nrules:\n  - {name: open, effect: allow, paths: [/x], anonymous: true}\n"
                      "response:\n  headers:\n" + headers)
    run = validate(str(policy))
    assert run.returncode == 0 and run.stdout.startswith(f"{policy}: valid (")
    assert len(run.stderr.splitlines()) == 1
    assert run.stderr.startswith(f"{policy}:13: warning: response.headers: the 8 upstream header(s) this policy sets")
    policy.write_text(policy.read_text().replace("    x-h7: identity.subject\n", ""))
    assert validate(str(policy)).stderr == ""  # seven fit


def test_alias_expansion_is_bounded(tmp_path: Path) -> None:
    # "Billion laughs": nine levels of ten aliases would be 10^9 values.
    lines = ["version: 1", 'a0: &a0 ["x"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    policy = tmp_path / "laughs.yaml"
    policy.write_text("\n".join(lines) + "\n")
    run = validate(str(policy))
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        f"{policy}:1: the document has more than 200000 values (YAML aliases expanding?)"]


def _policies() -> list[Path]:
    """The contract policy, every policy file (one with a top-level
    ``version:``) under examples/, and every policy directory there (a
    ``policy.yaml`` beside ``teams/``: its files are one policy, not each)."""
    found = [ACCEPTANCE / "policy.yaml"]
    directories = sorted(p.parent for p in EXAMPLES.rglob("teams") if (p.parent / "policy.yaml").is_file())
    for path in sorted(EXAMPLES.rglob("*.y*ml")):
        if any(d in path.parents for d in directories):
            continue
        if re.search(r"^version:", path.read_text(encoding="utf-8"), re.MULTILINE):
            found.append(path)
    return found + directories


def test_examples_exist() -> None:
    names = {path.name for path in _policies()}
    assert {"okta.yaml", "entra-id.yaml", "keycloak.yaml", "auth0.yaml"} <= names


@pytest.mark.parametrize("policy", _policies(), ids=lambda p: str(p.relative_to(p.parents[1])))
def test_valid_policy_validates(policy: Path) -> None:
    run = validate(str(policy))
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.startswith(f"{policy}: valid (")


def test_remote_key_sets_are_not_fetched_to_validate() -> None:
    # jwks_uri and discovery issuers validate offline: compiling a policy
    # creates their key sets but starts no fetch (a fetch would first start
    # the "authz-jwks" thread). A fresh process, so no other test's fetches count.
    script = textwrap.dedent("""\
        import sys, threading
        from authz.config import load_policy
        remote = 0
        for path in sys.argv[1:]:
            for issuer in load_policy(path).issuers:
                if hasattr(issuer.keys, "fetch_count"):
                    remote += 1
                    assert issuer.keys.fetch_count == 0, path
                    assert issuer.keys.status()["state"] == "loading", path
        print(remote, sorted(t.name for t in threading.enumerate()))
    """)
    run = subprocess.run([sys.executable, "-c", script, *map(str, _policies())],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr
    remote, threads = run.stdout.split(" ", 1)
    assert int(remote) >= 5  # the provider examples' issuers
    assert "authz-jwks" not in threads
