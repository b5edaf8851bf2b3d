"""Request-path normalization (RFC 3986 section 6.2.2) before matching.

The path is matched as the upstream will most likely resolve it: unreserved
characters are percent-decoded, dot segments are removed, then runs of slashes
are merged (the order Envoy's ``normalize_path`` + ``merge_slashes`` use). Paths
whose meaning depends on how the upstream decodes them are refused outright:
encoded '/', '\\', ';' and NUL, and dot segments carrying parameters
(``/..;/``, which Tomcat and Jetty resolve as ``..`` while a matcher would see
a name). Paths longer than the policy's limit are refused before anything
else, so no later step ever works on an unbounded input.

Path parameters (``/api/admin;x/users``, which Tomcat, Jetty and Spring serve
as ``/api/admin/users``) are refused unless the policy says the upstream uses
them (``paths.matrix_parameters: strip``); then every segment's parameters are
removed before matching, as those servers do (docs/security.md 49). Case
matters unless the policy says the upstream ignores it
(``paths.case_sensitive: false``; docs/security.md 51).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from authz.errors import InvalidPath

#: The longest path (as sent, without the query) matched by default; longer
#: ones are ``invalid_path`` (``paths.max_length``; docs/security.md 50).
MAX_PATH_LENGTH = 8192

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%(.{0,2})", re.DOTALL)
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")
_SLASHES = re.compile(r"/{2,}")
_UNSAFE_CHARS = re.compile(r"[^\x21-\x7e]|\\")
# Encoded '/', '\' and NUL change what an upstream sees as segments or strings.
_FORBIDDEN_ESCAPES = frozenset({"2F", "5C", "00"})
# An encoded ';' is a parameter delimiter to a server that decodes first
# (Spring's default) and a plain character to one that does not (Tomcat).
_ENCODED_SEMICOLON = "3B"
_DOT_WITH_PARAMS = re.compile(r"/\.\.?;")
_PARAMETERS = re.compile(r";[^/]*")


@dataclass(frozen=True, slots=True)
class PathRules:
    """How a policy reads request paths (its ``paths`` settings)."""

    #: The longest path, as sent and without its query, that is matched.
    max_length: int = MAX_PATH_LENGTH
    #: Remove ``;parameters`` from every segment instead of refusing them.
    strip_parameters: bool = False
    #: Lower-case the normalized path (the policy's path patterns are too).
    fold_case: bool = False


DEFAULT_RULES = PathRules()


def _normalize_escape(match: re.Match[str]) -> str:
    code = match.group(1)
    if not _HEX2.fullmatch(code):
        raise InvalidPath("malformed percent-encoding")
    code = code.upper()
    if code in _FORBIDDEN_ESCAPES:
        raise InvalidPath("encoded '/', '\\' or NUL in path")
    if code == _ENCODED_SEMICOLON:
        raise InvalidPath("encoded ';' in path")
    char = chr(int(code, 16))
    return char if char in _UNRESERVED else "%" + code


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")
    out: list[str] = []
    for segment in segments[1:]:
        if segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def split_path(raw: str) -> tuple[str, str]:
    """Split a request target into (path, query), dropping any fragment."""
    raw = raw.split("#", 1)[0]
    path, _, query = raw.partition("?")
    return path, query


def normalize_path(raw_path: str, rules: PathRules = DEFAULT_RULES) -> str:
    """Return the normalized form of a path (without query).

    Raises :class:`InvalidPath` for anything that is not a plain origin-form
    path: longer than ``rules.max_length``, not starting with '/', control
    characters, spaces, backslashes or non-ASCII characters, malformed or
    forbidden percent-escapes (``%2F``, ``%5C``, ``%00``, ``%3B``),
    ``.``/``..`` segments with parameters (``..;``), and any other ``;``
    unless ``rules.strip_parameters``, which removes them instead. With
    ``rules.fold_case`` the result is lower-cased.
    """
    if len(raw_path) > rules.max_length:
        raise InvalidPath(f"path longer than {rules.max_length} characters")
    if not raw_path.startswith("/"):
        raise InvalidPath("path is not in origin form")
    if _UNSAFE_CHARS.search(raw_path):
        raise InvalidPath("control character, backslash or non-ASCII character in path")
    if "%" in raw_path:
        raw_path = _PERCENT.sub(_normalize_escape, raw_path)
    if ";" in raw_path:
        if _DOT_WITH_PARAMS.search(raw_path):
            raise InvalidPath("dot segment with parameters ('..;') in path")
        if not rules.strip_parameters:
            raise InvalidPath("path parameter (';') in path")
        raw_path = _PARAMETERS.sub("", raw_path)
    if "." in raw_path:
        raw_path = _remove_dot_segments(raw_path)
    if "//" in raw_path:
        raw_path = _SLASHES.sub("/", raw_path)
    return raw_path.lower() if rules.fold_case else raw_path
