"""Which redirects a key-set or discovery fetch may follow (docs/security.md 44)."""

from __future__ import annotations

import pytest

from authz.outside.http import FetchError, redirect_target


@pytest.mark.parametrize(("current", "location", "expected"), [
    ("https://idp.example.com/jwks", "/keys", "https://idp.example.com/keys"),
    ("https://idp.example.com/jwks", "https://cdn.example.com/k", "https://cdn.example.com/k"),
    ("http://127.0.0.1:8000/jwks", "/keys", "http://127.0.0.1:8000/keys"),  # loopback test servers
])
def test_redirects_within_https_or_loopback_are_followed(current: str, location: str, expected: str) -> None:
    assert redirect_target(current, location) == expected


@pytest.mark.parametrize(("current", "location", "why"), [
    ("https://idp.example.com/jwks", "http://idp.example.com/jwks", "https URL"),
    ("https://idp.example.com/jwks", "http://127.0.0.1/jwks", "leaves https"),
    ("http://127.0.0.1:8000/jwks", "http://keys.example.com/jwks", "https URL"),
    ("https://idp.example.com/jwks", "file:///etc/passwd", "https URL"),
])
def test_a_redirect_that_leaves_https_is_refused_before_it_is_followed(current: str, location: str, why: str) -> None:
    with pytest.raises(FetchError, match=why):
        redirect_target(current, location)
