"""Running ``authz test`` as a user does, for the stand-in tests: a case
file written from text, decided at a fixed ``--now``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from authz.cli import main

NOW = "2026-01-01T00:00:00Z"
NOW_SECONDS = 1767225600


def run(capsys: pytest.CaptureFixture[str], tmp_path: Path, policy: str, cases: str) -> tuple[int, list[str], str]:
    """``authz test --config POLICY --now NOW CASES``: exit code, stdout lines, stderr."""
    path = tmp_path / "cases.yaml"
    path.write_text(textwrap.dedent(cases))
    code = main(["test", "--config", policy, "--now", NOW, str(path)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err
