"""What ``authz validate`` warns about: a valid policy that may not deny what
its author meant it to.

A path is matched exactly as normalized: ``/internal`` and ``/internal/`` are
two paths. Many routers serve both with one handler (Express by default,
Spring MVC before 6, Django with ``APPEND_SLASH`` after a redirect), so a deny
rule that names ``/internal`` alone leaves ``/internal/`` open there
(docs/security.md 51).

The headers a policy adds for the upstream share Envoy's limits on one
request (100 headers, 60 KiB) with the client's own: a request whose headers
leave too little room is denied ``request_headers_too_large``, and an answer
that adds more than half of them is never cached (docs/security.md 65).
"""

from __future__ import annotations

from authz.policy import Policy
from authz.response_plan import (
    MAX_HEADER_VALUE,
    MAX_REQUEST_BYTES,
    MAX_REQUEST_HEADERS,
    ROOMY_BYTES,
    ROOMY_HEADERS,
)


def _example(pattern: str) -> str:
    """A path the pattern matches: ``**`` segments left out, each ``*`` an ``x``."""
    return "/".join(segment.replace("*", "x") for segment in pattern.split("/") if segment != "**")


def trailing_slash_warnings(policy: Policy) -> list[str]:
    """``LINE: warning: ...`` for each path pattern of a deny rule whose
    trailing-slash form the rule does not match (a pattern ending in ``/`` or
    ``/**`` covers it itself; another of the rule's patterns may too)."""
    found: list[tuple[int, str]] = []
    for rule in policy.deny_rules:
        globs = rule.matcher.paths
        if globs is None:
            continue
        for pattern in globs.patterns:
            if pattern.endswith(("/", "/**")):
                continue
            example = _example(pattern)
            if not globs.matches(example + "/"):
                found.append((rule.matcher.line, (
                    f"warning: deny rule {rule.name!r} matches {example!r} but not {example + '/'!r}, which routers "
                    f"that ignore a trailing slash serve alike; write {pattern + '/**'!r} (it matches {pattern!r}, "
                    f"{pattern + '/'!r} and every path below) or add {pattern + '/'!r}"
                )))
    return [f"{line}: {message}" for line, message in sorted(found, key=lambda item: item[0])]


def header_size_warnings(policy: Policy) -> list[str]:
    """``LINE: warning: ...`` when the upstream headers the policy may add,
    each at its longest (8192 characters, the identity token counted so
    too), could pass Envoy's limits on one request by themselves: then even
    a small request may be denied ``request_headers_too_large``. At the line
    of the header that passes them."""
    plan = policy.response
    names = [(name, plan.lines.get(f"header {name}", 0)) for name, _expression in plan.headers]
    if plan.identity_token is not None:
        names.append((plan.identity_token.header, plan.lines.get("identity token", 0)))
    size = 0
    for count, (name, line) in enumerate(names, start=1):
        size += len(name) + MAX_HEADER_VALUE
        if count > MAX_REQUEST_HEADERS or size > MAX_REQUEST_BYTES:
            return [f"{line}: warning: response.headers: the {len(names)} upstream header(s) this policy sets could "
                    f"add up to {(len(names) * MAX_HEADER_VALUE) // 1024} KiB, past Envoy's limits on one request "
                    f"({MAX_REQUEST_HEADERS} headers, {MAX_REQUEST_BYTES // 1024} KiB, the client's own headers "
                    "included): a request they would not fit with is denied (request_headers_too_large); answers "
                    f"adding more than half ({ROOMY_HEADERS} headers, {ROOMY_BYTES // 1024} KiB) are not cached"]
    return []
