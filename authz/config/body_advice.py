"""What ``authz validate`` warns of a policy that reads request bodies: a
rule or permission that reads ``request.body_json`` or ``request.form`` on
every method. A request that carries no such body (a ``GET``) then fails the
read: a deny rule denies it (``body_content_type``), an allow rule or
permission never allows it, which is rarely what was meant (docs/policy.md,
"Request bodies")."""

from __future__ import annotations

from authz.policy import Matcher, Policy

_PARSED = ("body_json", "form")


def _parsed_field(matcher: Matcher) -> str | None:
    for path in sorted(matcher.reads()):
        if path[0] == "request" and len(path) > 1 and path[1] in _PARSED:
            return path[1]
    return None


def body_warnings(policy: Policy) -> list[str]:
    """``LINE: warning: ...`` for each rule or permission that reads a
    parsed body on every method."""
    found: list[tuple[int, str]] = []
    named = [(f"rule {rule.name!r}", rule.matcher) for rule in (*policy.deny_rules, *policy.allow_rules)]
    named += [(f"role {role!r} permission {index}", matcher) for role, matchers in policy.roles.items()
              for index, matcher in enumerate(matchers)]
    for what, matcher in named:
        field = _parsed_field(matcher)
        if field is None or matcher.methods is not None:
            continue
        found.append((matcher.line, f"{what} reads request.{field} on every method: a request without such a "
                                    "body (a GET) fails the read (a deny rule denies it, body_content_type); "
                                    "name the methods that carry one (methods: [POST, PUT, PATCH])"))
    return [f"{line}: warning: {text}" for line, text in sorted(found)]
