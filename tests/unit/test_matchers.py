"""Compiled matchers (authz.matchers) with plain values."""

from __future__ import annotations

import ipaddress
import re

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

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
    return compile_paths([pattern]).matches(path)


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


def test_folded_path_patterns_are_lower_case() -> None:
    globs = compile_paths(["/API/Admin/**", "/Health"], fold_case=True)
    assert globs.patterns == ("/api/admin/**", "/health")
    assert globs.matches("/api/admin/x") and globs.matches("/health")
    # The path is folded before matching (authz.paths); an upper-case one is not.
    assert not globs.matches("/API/admin/x")
    assert not compile_paths(["/API/Admin/**"]).matches("/api/admin/x")


def test_several_path_patterns_are_alternatives() -> None:
    globs = compile_paths(["/api/orders", "/api/orders/*"])
    assert globs.matches("/api/orders")
    assert globs.matches("/api/orders/7")
    assert not globs.matches("/api/orders/7/items")
    # The match binds the whole alternation, not just its last branch.
    assert not globs.matches("/api/ordersjunk")
    assert not globs.matches("junk/api/orders")


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


# -- linear matching (docs/security.md 50) -----------------------------------

HOSTILE = [
    "/**/a/**/b/**/c",
    "/files/*a*a*a*a*b",
    "/*a*a*a*a*a*a*a*a*b",
    "/**/**/**/**/**/**/x",
    "/**/*a*/**/*b*/**/*c*/d",
]


def test_wildcard_globs_run_on_re2_and_plain_ones_on_a_set() -> None:
    globs = compile_paths(["/api/orders", "/api/orders/*", "/files/*.json"])
    assert globs.exact == frozenset({"/api/orders"})
    # An RE2 automaton (no backtracking), never a Python regex.
    assert isinstance(globs.automaton, re2._Regexp) and not isinstance(globs.automaton, re.Pattern)
    assert compile_paths(["/a", "/b"]).automaton is None


@pytest.mark.parametrize("pattern", HOSTILE)
def test_hostile_patterns_decide_hostile_paths(pattern: str) -> None:
    # Shapes that send a backtracking engine into exponential or polynomial
    # time on a long path; here, on short ones, the answers are the same.
    backtracking = re.compile(glob_regex(pattern))
    globs = compile_paths([pattern])
    for path in ("/" + "a/" * 12, "/files/" + "a" * 20, "/" + "a" * 20 + "b", "/a/b/c", "/x/a/y/b/z/c",
                 "/xay/xby/xcy/d", "/" + "x/" * 6 + "x"):
        assert globs.matches(path) is (backtracking.fullmatch(path) is not None), (pattern, path)


_SEGMENT = st.sampled_from(["a", "b", "ab", "*", "a*", "*b", "*a*", "**", "x.y"])
_PATH_SEGMENT = st.sampled_from(["", "a", "b", "ab", "ba", "aab", "x.y", "xay"])


@settings(max_examples=300, deadline=None)
@given(pattern=st.lists(_SEGMENT, min_size=1, max_size=5), path=st.lists(_PATH_SEGMENT, min_size=0, max_size=6))
def test_re2_globs_answer_as_the_backtracking_regex_did(pattern: list[str], path: list[str]) -> None:
    glob, text = "/" + "/".join(pattern), "/" + "/".join(path)
    expected = re.compile(glob_regex(glob)).fullmatch(text) is not None
    assert compile_globs([glob]).matches(text) is expected, (glob, text)


def test_more_patterns_than_one_automaton_holds_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="1000 patterns with wildcards are too many or too long for one matcher"):
        compile_paths(["/" + "x*" * 100 + str(i) for i in range(1000)])


def test_non_ascii_principals_match_by_character() -> None:
    # '*' is one character or more of a segment, also when a character is several UTF-8 bytes.
    assert compile_globs(["spiffe://td/ns/*/sa/x"]).matches("spiffe://td/ns/\u00e9/sa/x")
    assert compile_globs(["spiffe://td/ns/caf*"]).matches("spiffe://td/ns/caf\u00e9")
    assert not compile_globs(["spiffe://td/ns/*"]).matches("spiffe://td/ns/\u00e9/x")


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
    assert compile_globs([pattern]).matches(principal) is expected


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
