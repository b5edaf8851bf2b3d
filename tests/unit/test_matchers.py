"""Compiled matchers (authz.matchers) with plain values."""

from __future__ import annotations

import ipaddress

import pytest

from authz.matchers import (
    compile_cidrs,
    compile_globs,
    compile_hosts,
    compile_methods,
    compile_paths,
    glob_regex,
    ip_in,
    parse_ip,
    split_host,
)


def path_matches(pattern: str, path: str) -> bool:
    return compile_paths([pattern]).fullmatch(path) is not None


# -- paths -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/api/orders", "/api/orders", True),
        ("/api/orders", "/api/orders/", False),
        ("/api/orders", "/api/order", False),
        ("/api/orders", "/API/orders", False),
        # '*' is exactly one non-empty segment.
        ("/api/orders/*", "/api/orders/1", True),
        ("/api/orders/*", "/api/orders/", False),
        ("/api/orders/*", "/api/orders", False),
        ("/api/orders/*", "/api/orders/1/items", False),
        ("/api/*/items", "/api/orders/items", True),
        ("/api/*/items", "/api/items", False),
        # '*' inside a segment stays inside it.
        ("/api/v*/orders", "/api/v2/orders", True),
        ("/api/v*/orders", "/api/v/orders", True),
        ("/api/v*/orders", "/api/v2/x/orders", False),
        ("/files/*.json", "/files/a.json", True),
        ("/files/*.json", "/files/a/b.json", False),
        # '**' is zero or more segments: /a/** is /a and everything below.
        ("/api/orders/**", "/api/orders", True),
        ("/api/orders/**", "/api/orders/", True),
        ("/api/orders/**", "/api/orders/1", True),
        ("/api/orders/**", "/api/orders/1/items/2", True),
        ("/api/orders/**", "/api/ordersx", False),
        ("/api/orders/**", "/api/orders-admin", False),
        ("/api/orders/**", "/api", False),
        ("/api/**/items", "/api/items", True),
        ("/api/**/items", "/api/orders/1/items", True),
        ("/api/**/items", "/api/orders/1/itemsx", False),
        ("/api/**/items", "/apix/items", False),
        ("/**", "/", True),
        ("/**", "/anything/at/all", True),
        # Regex metacharacters in patterns are literal.
        ("/a.b", "/axb", False),
        ("/a.b", "/a.b", True),
        ("/a+(b)", "/a+(b)", True),
        ("/a$", "/a$", True),
    ],
)
def test_path_globs(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected


def test_several_path_patterns_are_alternatives() -> None:
    regex = compile_paths(["/api/orders", "/api/orders/*"])
    assert regex.fullmatch("/api/orders")
    assert regex.fullmatch("/api/orders/7")
    assert not regex.fullmatch("/api/orders/7/items")
    # fullmatch binds the whole alternation, not just its last branch.
    assert not regex.fullmatch("/api/ordersjunk")
    assert not regex.fullmatch("junk/api/orders")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("api/orders", "must start with '/'"),
        ("/api/orders**", "'\\*\\*' must be a whole segment"),
        ("/api/**x/y", "'\\*\\*' must be a whole segment"),
        ("/api/orders?id=1", "query or fragment"),
        ("/api/orders#top", "query or fragment"),
        ("/api/../admin", "'.' or '..' segment"),
        ("/api/./admin", "'.' or '..' segment"),
        ("/api//admin", "empty segment"),
        ("/api/caf\u00e9", "non-ASCII"),
        ("/api/a b", "space"),
        ("/api\\admin", "character"),
    ],
)
def test_bad_path_patterns(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_paths([pattern])


# -- principals (globs without the leading '/') ------------------------------


@pytest.mark.parametrize(
    ("pattern", "principal", "expected"),
    [
        ("spiffe://cluster.local/ns/shop/sa/billing", "spiffe://cluster.local/ns/shop/sa/billing", True),
        ("spiffe://cluster.local/ns/shop/sa/billing", "spiffe://cluster.local/ns/shop/sa/billing2", False),
        ("spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/shop/sa/billing", True),
        ("spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/shop/sa/", False),
        ("spiffe://cluster.local/ns/shop/sa/*", "spiffe://cluster.local/ns/shop/sa/a/b", False),
        ("spiffe://cluster.local/ns/*/sa/billing", "spiffe://cluster.local/ns/other/sa/billing", True),
        ("spiffe://cluster.local/ns/shop/**", "spiffe://cluster.local/ns/shop/sa/billing", True),
        ("spiffe://cluster.local/ns/shop/**", "spiffe://cluster.local/ns/shopping/sa/billing", False),
        ("spiffe://cluster.local/**", "spiffe://evil.local/ns/shop/sa/billing", False),
        ("spiffe://*.local/ns/shop/sa/billing", "spiffe://cluster.local/ns/shop/sa/billing", True),
        ("**", "anything at all", True),
        # '.' in a trust domain is literal.
        ("spiffe://cluster.local/ns/shop/sa/billing", "spiffe://clusterxlocal/ns/shop/sa/billing", False),
    ],
)
def test_principal_globs(pattern: str, principal: str, expected: bool) -> None:
    assert (compile_globs([pattern]).fullmatch(principal) is not None) is expected


def test_glob_regex_rejects_partial_double_star() -> None:
    with pytest.raises(ValueError, match="whole segment"):
        glob_regex("spiffe://cluster.local/ns/shop**")


# -- methods -----------------------------------------------------------------


def test_methods_are_upper_cased_tokens() -> None:
    assert compile_methods(["get", "POST", "PROPFIND"]) == frozenset({"GET", "POST", "PROPFIND"})
    for bad in ("", "GET POST", "GET,POST", "G\u00c9T", "GET\r\n"):
        with pytest.raises(ValueError, match="invalid HTTP method"):
            compile_methods([bad])


# -- hosts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "authority", "expected"),
    [
        (["api.example.com"], "api.example.com", True),
        (["api.example.com"], "API.Example.COM", True),
        (["API.EXAMPLE.COM"], "api.example.com", True),
        (["api.example.com"], "api.example.com.", True),
        (["api.example.com."], "api.example.com", True),
        (["api.example.com"], "api.example.org", False),
        (["api.example.com"], "xapi.example.com", False),
        # A port in :authority is ignored unless the pattern has one.
        (["api.example.com"], "api.example.com:8443", True),
        (["api.example.com:8443"], "api.example.com:8443", True),
        (["api.example.com:8443"], "api.example.com", False),
        (["api.example.com:8443"], "api.example.com:443", False),
        # '*.example.com' needs at least one label before the suffix.
        (["*.example.com"], "api.example.com", True),
        (["*.example.com"], "a.b.example.com", True),
        (["*.example.com"], "example.com", False),
        (["*.example.com"], ".example.com", False),
        (["*.example.com"], "evilexample.com", False),
        (["*.example.com"], "api.example.com.evil.org", False),
        (["*.example.com"], "API.EXAMPLE.COM:443", True),
        (["*.example.com:443"], "api.example.com:443", True),
        (["*.example.com:443"], "api.example.com:80", False),
        (["*.example.com:443"], "api.example.com", False),
        # IPv6 literals: brackets, port, and the compressed form.
        (["[2001:db8::1]"], "[2001:db8::1]", True),
        (["[2001:db8::1]"], "[2001:db8::1]:8080", True),
        (["[2001:db8::1]"], "[2001:DB8:0:0::1]", True),
        (["[2001:db8::1]:8080"], "[2001:db8::1]:8080", True),
        (["[2001:db8::1]:8080"], "[2001:db8::1]:9090", False),
        (["[2001:db8::1]"], "[2001:db8::2]", False),
        (["[::1]"], "::1", False),
        (["10.0.0.1"], "10.0.0.1:8080", True),
        (["10.0.0.1"], "10.0.0.10", False),
        # '*' alone matches any host.
        (["*"], "anything.example:1", True),
        (["*"], "", True),
        (["api.example.com", "*.internal"], "db.internal", True),
        (["api.example.com"], "", False),
    ],
)
def test_hosts(patterns: list[str], authority: str, expected: bool) -> None:
    assert compile_hosts(patterns).matches(authority) is expected


@pytest.mark.parametrize(
    "pattern",
    ["api_internal.example.com", "*example.com", "api.*.example.com", "*.*.example.com",
     "-api.example.com", "api.example.com:0", "api.example.com:65536", "api.example.com:http",
     "[2001:db8::zz]", "[:::]", "https://api.example.com", "api.example.com/path", ""],
)
def test_bad_host_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match="host pattern"):
        compile_hosts([pattern])


def test_split_host() -> None:
    assert split_host("API.example.com.:443") == ("api.example.com", "443")
    assert split_host("api.example.com") == ("api.example.com", None)
    assert split_host("[2001:DB8::0:1]:8080") == ("[2001:db8::1]", "8080")
    assert split_host("[2001:db8::1]") == ("[2001:db8::1]", None)
    assert split_host("[not-an-address]") == ("[not-an-address]", None)


# -- CIDRs -------------------------------------------------------------------


def test_cidrs() -> None:
    networks = compile_cidrs(["203.0.113.0/24", "2001:db8::/32", "192.0.2.7"])
    assert ip_in(networks, "203.0.113.9") is True
    assert ip_in(networks, "203.0.114.9") is False
    assert ip_in(networks, "2001:db8:1::5") is True
    assert ip_in(networks, "2001:db9::5") is False
    # A bare address is a /32.
    assert ip_in(networks, "192.0.2.7") is True
    assert ip_in(networks, "192.0.2.8") is False


def test_ipv4_mapped_sources_match_ipv4_networks() -> None:
    # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
    networks = compile_cidrs(["203.0.113.0/24"])
    assert ip_in(networks, "::ffff:203.0.113.9") is True
    assert ip_in(networks, "::FFFF:203.0.113.9") is True
    assert ip_in(networks, "::ffff:203.0.114.9") is False
    assert parse_ip("::ffff:203.0.113.9") == ipaddress.IPv4Address("203.0.113.9")


def test_ipv4_mapped_networks_match_ipv4_sources() -> None:
    # Written as an IPv4-mapped IPv6 range, a network still matches the
    # (unwrapped) IPv4 source, in either form.
    networks = compile_cidrs(["::ffff:203.0.113.0/120"])
    assert networks == (ipaddress.IPv4Network("203.0.113.0/24"),)
    assert ip_in(networks, "203.0.113.9") is True
    assert ip_in(networks, "::ffff:203.0.113.9") is True
    assert ip_in(networks, "203.0.114.9") is False


def test_source_that_is_not_an_ip() -> None:
    networks = compile_cidrs(["0.0.0.0/0", "::/0"])
    assert ip_in(networks, "") is None
    assert ip_in(networks, "unix:/var/run/envoy.sock") is None
    assert ip_in(networks, "203.0.113.9:443") is None
    assert ip_in(networks, "203.0.113.9") is True
    assert ip_in(networks, "2001:db8::1") is True


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("203.0.113.7/24", r"has host bits set \(did you mean 203\.0\.113\.0/24\?\)"),
        ("2001:db8::1/32", r"has host bits set \(did you mean 2001:db8::/32\?\)"),
        ("203.0.113.0/33", "does not appear to be an IPv4 or IPv6 network"),
        ("203.0.113/24", "does not appear to be an IPv4 or IPv6 network"),
        ("example.com/24", "does not appear"),
        ("", "does not appear"),
    ],
)
def test_bad_cidrs(cidr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_cidrs([cidr])
