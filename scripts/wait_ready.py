"""Wait (up to 60 s) until every URL given answers 200."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request

deadline = time.monotonic() + 60
pending = list(sys.argv[1:])
while pending and time.monotonic() < deadline:
    url = pending[0]
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                pending.pop(0)
                continue
    except (urllib.error.URLError, OSError):
        pass
    time.sleep(0.2)
sys.exit(1 if pending else 0)
