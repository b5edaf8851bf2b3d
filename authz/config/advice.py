"""What ``authz validate`` warns about: a valid policy that may not deny what
its author meant it to.

A path is matched exactly as normalized: ``/internal`` and ``/internal/`` are
two paths. Many routers serve both with one handler (Express by default,
Spring MVC before 6, Django with ``APPEND_SLASH`` after a redirect), so a deny
rule that names ``/internal`` alone leaves ``/internal/`` open there
(docs/security.md 51).
"""

from __future__ import annotations

from authz.policy import Policy


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
