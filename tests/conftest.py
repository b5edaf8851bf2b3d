from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.paths import CONTRACT

if not CONTRACT.is_dir():
    raise pytest.UsageError(f"the shared acceptance fixtures are missing: expected {CONTRACT}")

# The installed console scripts (authz, envoy) live beside the interpreter.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
