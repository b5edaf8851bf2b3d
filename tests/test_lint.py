"""The codebase stays clean: ruff, and mypy --strict over the package, the tests and testkit."""

from __future__ import annotations

import subprocess
import sys

from testkit.paths import REPO


def test_ruff() -> None:
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "authz", "tests", "testkit", "benchmarks", "protos",
                          "setup.py"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:]


def test_mypy_strict() -> None:
    run = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:]
