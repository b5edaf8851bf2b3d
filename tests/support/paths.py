"""Where the test fixtures live; every path is inside the checkout."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
# The acceptance policy, keys and CheckRequests with their expected decisions.
ACCEPTANCE = FIXTURES / "acceptance"
# Public JSON Web Signature / JSON Web Key test vectors (C2SP/wycheproof).
WYCHEPROOF = FIXTURES / "wycheproof"
EXAMPLES = REPO / "examples"
