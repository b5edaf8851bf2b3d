"""Request-path normalization (authz.paths) with plain strings."""

from __future__ import annotations

import pytest

from authz.errors import InvalidPath
from authz.paths import MAX_PATH_LENGTH, PathRules, normalize_path, split_path


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/", "/"),
        ("/api/orders", "/api/orders"),
        ("/api/orders/", "/api/orders/"),
        # Dot segments (RFC 3986 section 5.2.4).
        ("/api/./orders", "/api/orders"),
        ("/api/admin/../orders", "/api/orders"),
        ("/api/orders/.", "/api/orders/"),
        ("/api/orders/..", "/api/"),
        ("/api/orders/1/../..", "/api/"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/.", "/"),
        ("/a/..b/c", "/a/..b/c"),
        ("/a/b../c", "/a/b../c"),
        ("/a/.../c", "/a/.../c"),
        # Encoded dots are unreserved: decoded, then removed as dot segments.
        ("/api/admin/%2e%2e/orders", "/api/orders"),
        ("/api/admin/%2E%2E/orders", "/api/orders"),
        ("/api/admin/.%2e/orders", "/api/orders"),
        ("/api/%2e/orders", "/api/orders"),
        # Duplicate slashes are merged after dot segments are removed, so a
        # '..' after '//' removes the empty segment (Envoy's order).
        ("//api///orders", "/api/orders"),
        ("/a//../b", "/a/b"),
        ("/a/b//", "/a/b/"),
        # Unreserved characters are decoded; others keep (upper-case) escapes.
        ("/%7Euser/%41%62c", "/~user/Abc"),
        ("/a%3fb", "/a%3Fb"),
        ("/a%20b", "/a%20b"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%252Fb", "/a%252Fb"),
    ],
)
def test_normalize(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        # Encoded '/', '\' and NUL, in either case.
        "/api/orders%2F..%2Fadmin",
        "/api/orders%2f..%2fadmin",
        "/api%5Cadmin",
        "/api%5cadmin",
        "/api/orders%00.json",
        # Raw backslash and NUL.
        "/api\\admin",
        "/api/orders\x00.json",
        # Malformed percent-encoding.
        "/api/%",
        "/api/%4",
        "/api/%zz",
        "/api/%4g",
        "/api/%u002e%u002e/admin",
        # Non-ASCII, control characters, spaces.
        "/café",
        "/api/\u2215admin",
        "/api/orders\r\nx-injected: 1",
        "/api/\torders",
        "/api/\x7forders",
        "/api/orders 1",
        # Dot segments with parameters: Tomcat and Jetty read '..;' as '..'.
        "/api/public/..;/admin",
        "/api/public/.;/admin",
        "/api/public/%2e%2e;x=1/admin",
        # Not origin-form.
        "api/orders",
        "",
        "*",
        "http://example.com/api",
    ],
)
def test_refused(raw: str) -> None:
    with pytest.raises(InvalidPath):
        normalize_path(raw)


# Path parameters (docs/security.md 49), in every position a segment can have them.
PARAMETERS = [
    ("/api/admin;x/users", "/api/admin/users"),  # a middle segment
    ("/api;x/admin/users", "/api/admin/users"),  # the first segment
    ("/api/admin/users;jsessionid=1", "/api/admin/users"),  # the last segment
    ("/api/admin/users;", "/api/admin/users"),  # an empty parameter
    ("/api/admin;a=1;b=2/users", "/api/admin/users"),  # several in one segment
    ("/api;a/admin;b/users;c", "/api/admin/users"),  # in every segment
    ("/;x/api/admin", "/api/admin"),  # an empty segment with a parameter
    ("/api/;x/admin", "/api/admin"),
    ("/api/admin/;x", "/api/admin/"),
    ("/;x", "/"),
    ("/api/public/x;y/../../admin", "/api/admin"),  # before a dot segment
    ("/api/public/../admin;x/users", "/api/admin/users"),  # after a dot segment
    ("/api/%61dmin;x/users", "/api/admin/users"),  # beside an escape that decodes
    ("/api//admin;x//users", "/api/admin/users"),  # beside slashes that merge
    ("/api/admin;x=/users", "/api/admin/users"),
    ("/api/admin;x=a,b/users", "/api/admin/users"),
]


@pytest.mark.parametrize(("raw", "stripped"), PARAMETERS)
def test_path_parameters_are_refused_by_default(raw: str, stripped: str) -> None:
    with pytest.raises(InvalidPath, match="path parameter"):
        normalize_path(raw)


@pytest.mark.parametrize(("raw", "stripped"), PARAMETERS)
def test_path_parameters_are_removed_from_every_segment_when_the_policy_says_so(raw: str, stripped: str) -> None:
    assert normalize_path(raw, PathRules(strip_parameters=True)) == stripped


@pytest.mark.parametrize("raw", [
    # An encoded ';' is a delimiter to a server that decodes first and a
    # plain character to one that does not: refused in both modes.
    "/api/admin%3Bx/users", "/api/admin%3bx/users", "/api%3B/admin", "/%3b", "/api/admin/users%3B",
    # '..;' and '.;' are '..' and '.' to Tomcat and Jetty: refused in both modes.
    "/api/public/..;/admin", "/api/public/.;x/admin", "/api/public/%2e%2e;/admin", "/api/public/%2E;/admin",
    "/..;", "/api/.;",
])
@pytest.mark.parametrize("strip", [False, True])
def test_encoded_semicolons_and_dot_segments_with_parameters_are_always_refused(raw: str, strip: bool) -> None:
    with pytest.raises(InvalidPath, match=r"encoded ';'|'\.\.;'"):
        normalize_path(raw, PathRules(strip_parameters=strip))


def test_case_is_kept_unless_the_policy_folds_it() -> None:
    assert normalize_path("/API/Admin/%7eX%3f") == "/API/Admin/~X%3F"
    folded = PathRules(fold_case=True)
    assert normalize_path("/API/Admin/%7eX%3f", folded) == "/api/admin/~x%3f"
    assert normalize_path("/API;X/Admin", PathRules(strip_parameters=True, fold_case=True)) == "/api/admin"


def test_refusal_says_why() -> None:
    with pytest.raises(InvalidPath, match="encoded '/'"):
        normalize_path("/a%2Fb")
    with pytest.raises(InvalidPath, match="malformed percent-encoding"):
        normalize_path("/a%2")
    with pytest.raises(InvalidPath, match="non-ASCII"):
        normalize_path("/é")
    with pytest.raises(InvalidPath, match=r"path parameter \(';'\) in path"):
        normalize_path("/a;b")
    with pytest.raises(InvalidPath, match="encoded ';' in path"):
        normalize_path("/a%3Bb", PathRules(strip_parameters=True))


def test_a_path_over_the_limit_is_refused_before_anything_else() -> None:
    at_limit = "/" + "a" * (MAX_PATH_LENGTH - 1)
    assert normalize_path(at_limit) == at_limit
    with pytest.raises(InvalidPath, match=f"longer than {MAX_PATH_LENGTH} characters"):
        normalize_path(at_limit + "a")
    # Measured as sent: dot segments or escapes that normalization would shrink still count.
    with pytest.raises(InvalidPath, match="longer than"):
        normalize_path("/a" + "/." * MAX_PATH_LENGTH)
    short = PathRules(max_length=300)
    assert normalize_path("/" + "b" * 299, short) == "/" + "b" * 299
    with pytest.raises(InvalidPath, match="longer than 300 characters"):
        normalize_path("/" + "b" * 300, short)


def test_normalized_path_is_stable() -> None:
    # Normalizing twice changes nothing: what is matched is a fixed point.
    for raw in ("/a/%2e%2e/b//c/./d/..", "/%7e/x%3f", "/a//../b"):
        once = normalize_path(raw)
        assert normalize_path(once) == once
    strip = PathRules(strip_parameters=True)
    for raw, _stripped in PARAMETERS:
        once = normalize_path(raw, strip)
        assert normalize_path(once) == normalize_path(once, strip) == once


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/api/orders", "/api/orders", ""),
        ("/api/orders?id=1&x=2", "/api/orders", "id=1&x=2"),
        ("/api/orders?", "/api/orders", ""),
        ("/api/orders#frag", "/api/orders", ""),
        ("/api/orders?id=1#frag", "/api/orders", "id=1"),
        ("/api/orders#frag?id=1", "/api/orders", ""),
        ("/api/orders?next=/a?b", "/api/orders", "next=/a?b"),
        ("/api/%3F?q", "/api/%3F", "q"),
    ],
)
def test_split_path(target: str, path: str, query: str) -> None:
    assert split_path(target) == (path, query)


def test_query_is_not_normalized_into_the_path() -> None:
    # '/..' in the query never reaches the path.
    path, query = split_path("/api/orders?x=/../admin")
    assert normalize_path(path) == "/api/orders"
    assert query == "x=/../admin"
