"""Compiled request matchers: hosts, methods, paths, source IPs, principals.

Each matcher is built once at config load. Patterns are validated by the
``compile_*`` functions, which raise ``ValueError`` with a message fit for a
``FILE:LINE: message`` report.

Globs (paths, principals) run on RE2 automata, never on a backtracking
engine: a match costs time linear in the text whatever patterns the policy
holds (docs/security.md 50).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import re2

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?(:[0-9]{1,5})?")
_IPV6_HOST = re.compile(r"\[[0-9a-f:.]+\](:[0-9]{1,5})?")
_PATH_UNSAFE = re.compile(r"[^\x21-\x7e]|\\")


def _segment_regex(segment: str) -> str:
    if segment == "*":
        return "[^/]+"
    return "[^/]*".join(re.escape(part) for part in segment.split("*"))


def glob_regex(pattern: str) -> str:
    """Translate a '/'-separated glob to a regex: '*' stays within one segment,
    a whole '**' segment spans any number of segments (zero included)."""
    if pattern in ("**", "/**"):
        return ".*" if pattern == "**" else "(?:/.*)?"
    parts = pattern.split("/")
    out = ""
    for index, part in enumerate(parts):
        if part == "**":
            out += "(?:/.*)?" if index else ".*"
            continue
        if "**" in part:
            raise ValueError(f"'**' must be a whole segment in {pattern!r}")
        out += ("/" if index else "") + _segment_regex(part)
    return out


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.never_capture = True
_RE2_OPTIONS.log_errors = False


@dataclass(frozen=True, slots=True, eq=False)
class Globs:
    """Compiled globs: the patterns without a wildcard in a set, the others
    as one RE2 automaton (which has no backtracking: linear in the text)."""

    patterns: tuple[str, ...]
    exact: frozenset[str]
    automaton: Any  # a compiled re2 pattern, or None

    def matches(self, text: str) -> bool:
        """Whether ``text`` matches one of the patterns as a whole."""
        if text in self.exact:
            return True
        # bytes, not str: the wrapper then skips mapping byte offsets back to
        # characters, which costs more than the match.
        return self.automaton is not None and self.automaton.fullmatch(text.encode()) is not None


def compile_globs(patterns: Iterable[str]) -> Globs:
    patterns = tuple(patterns)
    wild = [p for p in patterns if "*" in p]
    automaton = None
    if wild:
        source = "|".join(f"(?:{glob_regex(p)})" for p in wild)
        try:
            automaton = re2.compile(source, _RE2_OPTIONS)
        except re2.error:
            raise ValueError(f"{len(wild)} patterns with wildcards are too many or too long for one matcher") from None
    return Globs(patterns, frozenset(p for p in patterns if "*" not in p), automaton)


def compile_paths(patterns: Iterable[str], *, fold_case: bool = False) -> Globs:
    """Path globs, matched against the normalized path. A pattern that no
    normalized path can match (dot segments, '//', characters that are
    refused or percent-encoded in a path) is an error, not a silent miss.
    ``fold_case``: the paths matched are lower-cased, so the patterns are too."""
    patterns = [p.lower() for p in patterns] if fold_case else list(patterns)
    for pattern in patterns:
        if not pattern.startswith("/"):
            raise ValueError(f"path pattern {pattern!r} must start with '/'")
        if "?" in pattern or "#" in pattern:
            raise ValueError(f"path pattern {pattern!r} must not contain a query or fragment")
        if _PATH_UNSAFE.search(pattern):
            raise ValueError(f"path pattern {pattern!r} has a space, control, non-ASCII or '\\' character, which a "
                             "path never has")
        segments = pattern.split("/")
        if any(segment in (".", "..") for segment in segments):
            raise ValueError(f"path pattern {pattern!r} has a '.' or '..' segment; paths are matched after removing "
                             "those")
        if "" in segments[1:-1]:
            raise ValueError(f"path pattern {pattern!r} has an empty segment ('//'); paths are matched after merging "
                             "slashes")
    return compile_globs(patterns)


def compile_methods(methods: Iterable[str]) -> frozenset[str]:
    out = set()
    for method in methods:
        if not _HTTP_TOKEN.fullmatch(method):
            raise ValueError(f"invalid HTTP method {method!r}")
        out.add(method.upper())
    return frozenset(out)


#: An authority as RFC 3986 allows it for HTTP, and no more: a host name (or
#: IP address) or a bracketed IPv6 literal, and at most one port. No
#: userinfo, no second port, nothing a host matcher could read two ways.
_AUTHORITY = re.compile(r"(?:[a-z0-9._~-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?", re.IGNORECASE)


def valid_authority(host: str) -> bool:
    """Whether ``host`` is a plain ``host[:port]`` (the empty string, no
    authority at all, is left to the rules)."""
    return not host or _AUTHORITY.fullmatch(host) is not None


def split_host(host: str) -> tuple[str, str | None]:
    """Split an :authority into (lower-case host without trailing dot, port or None).

    An IPv6 literal keeps its brackets and takes its compressed form, so
    ``[0:0::1]`` and ``[::1]`` are the same host.
    """
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        name, rest = host[: end + 1], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else None
        # Not an address: compared as written, so it matches no valid pattern.
        with contextlib.suppress(ValueError):
            name = f"[{ipaddress.IPv6Address(name[1:-1]).compressed}]"
        return name, port
    name, sep, port_text = host.rpartition(":")
    if not sep:
        name, port = host, None
    else:
        port = port_text
    return name.rstrip("."), port


@dataclass(frozen=True, slots=True)
class HostMatcher:
    """Exact names and ``*.suffix`` wildcards (one or more labels), each
    optionally with a port; a pattern without a port ignores the request's."""

    exact: frozenset[tuple[str, str | None]]
    suffixes: tuple[tuple[str, str | None], ...]
    any_host: bool

    def matches(self, authority: str) -> bool:
        if self.any_host:
            return True
        name, port = split_host(authority)
        if (name, None) in self.exact or (port is not None and (name, port) in self.exact):
            return True
        for suffix, want_port in self.suffixes:
            if name.endswith(suffix) and len(name) > len(suffix) and (want_port is None or want_port == port):
                return True
        return False


def compile_hosts(patterns: Iterable[str]) -> HostMatcher:
    exact: set[tuple[str, str | None]] = set()
    suffixes: list[tuple[str, str | None]] = []
    any_host = False
    for pattern in patterns:
        lowered = pattern.lower()
        if lowered == "*":
            any_host = True
            continue
        if not (_HOST_PATTERN.fullmatch(lowered) or _IPV6_HOST.fullmatch(lowered)):
            raise ValueError(f"invalid host pattern {pattern!r} (exact name or '*.example.com', optional ':port')")
        if lowered.startswith("["):
            try:
                ipaddress.IPv6Address(lowered[1 : lowered.index("]")])
            except ValueError:
                raise ValueError(f"invalid IPv6 address in host pattern {pattern!r}") from None
        name, port = split_host(lowered)
        if port is not None:
            if not 0 < int(port) < 65536:
                raise ValueError(f"invalid port in host pattern {pattern!r}")
            port = str(int(port))
        if name.startswith("*."):
            suffixes.append((name[1:], port))
        else:
            exact.add((name, port))
    return HostMatcher(frozenset(exact), tuple(suffixes), any_host)


def compile_cidrs(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (a bare address is a /32 or /128). IPv4-mapped IPv6 ranges
    (``::ffff:203.0.113.0/120``) become the IPv4 range, since source
    addresses are matched with IPv4-mapped addresses unwrapped."""
    out: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f" (did you mean {ipaddress.ip_network(cidr, strict=False)}?)"
            raise ValueError(f"invalid CIDR {cidr!r}: {exc}{hint}") from None
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
            mapped = network.network_address.ipv4_mapped
            if mapped is not None:
                network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
        out.append(network)
    return tuple(out)


@lru_cache(maxsize=4096)
def parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address as an IP, IPv4-mapped IPv6 unwrapped; None when unparsable.
    Kept for the addresses seen most recently: ``ipaddress`` parses in Python,
    and the same callers (a sidecar's pods, a gateway's clients) come back."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def ip_in(networks: tuple[IPNetwork, ...], address: str) -> bool | None:
    """Whether the address is in any network; None when it is not an IP."""
    ip = parse_ip(address)
    if ip is None:
        return None
    return any(ip in network for network in networks)
