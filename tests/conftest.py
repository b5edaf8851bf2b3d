from __future__ import annotations

import os
import sys
from pathlib import Path

# The installed console scripts (authz, envoy) live beside the interpreter.
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
