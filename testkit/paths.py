"""Where the test fixtures and examples live; every path is inside the checkout."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
# The acceptance policy, keys and CheckRequests with their expected decisions.
ACCEPTANCE = FIXTURES / "acceptance"
# Public JSON Web Signature / JSON Web Key test vectors (C2SP/wycheproof).
WYCHEPROOF = FIXTURES / "wycheproof"
# Discovery documents and key sets shaped like Okta, Entra ID, Keycloak and Auth0 serve them.
PROVIDER_FIXTURES = FIXTURES / "providers"
EXAMPLES = REPO / "examples"
