"""What ``authz validate --door http`` warns of: the parts of a policy that
read what the HTTP door cannot know with its settings (there they fail closed)."""

from __future__ import annotations

from authz.policy import Policy, Reads
from authz.wire.http import HttpDoorSettings
from authz.wire.http_headers import ENVOYS

_HOW_TO_KNOW = {
    "source_address": "known only with --trusted-forwarded-hops",
    "source_principal": "known only with --trust-xfcc",
}
_SHOWN = {"source_address": "source.address", "source_port": "source.port", "source_principal": "source.principal",
          "destination_address": "destination.address", "destination_port": "destination.port",
          "destination_principal": "destination.principal", "context": "context"}


def unknowable(policy: Policy, settings: HttpDoorSettings) -> list[str]:
    """``LINE: warning: ...`` for each permission, rule and peer mapping of
    ``policy`` that reads what the HTTP door cannot know with ``settings``:
    there it fails closed (``authz validate --door http``)."""
    unknown = settings.unknown()
    found: list[tuple[int, str]] = []

    def note(line: int, what: str, names: frozenset[str], effect: str) -> None:
        missing = sorted(names & unknown)
        if missing:
            said = ", ".join(f"{_SHOWN[n]} ({_HOW_TO_KNOW.get(n, 'never sent by this protocol')})" for n in missing)
            found.append((line, f"warning: {what} reads {said}: through the HTTP door it {effect}"))

    def envoys(line: int, what: str, reads: set[tuple[str, ...]], effect: str) -> None:
        for name in sorted({p[2].lower() for p in reads if p[:2] == ("request", "headers") and len(p) > 2} & ENVOYS):
            found.append((line, f"warning: {what} reads the header {name!r}, which through the HTTP door is "
                                f"Envoy's own on its call, never the client's: there it {effect}"))

    for rule in policy.deny_rules:
        note(rule.matcher.line, f"deny rule {rule.name!r}", rule.matcher.attributes, "matches every request it covers")
        envoys(rule.matcher.line, f"deny rule {rule.name!r}", rule.matcher.reads(), "matches every request it covers")
    for rule in policy.allow_rules:
        envoys(rule.matcher.line, f"allow rule {rule.name!r}", rule.matcher.reads(), "never allows")
    for rule in policy.allow_rules:
        note(rule.matcher.line, f"allow rule {rule.name!r}", rule.matcher.attributes, "never allows")
    for role, permissions in policy.roles.items():
        for index, permission in enumerate(permissions):
            note(permission.line, f"role {role!r} permission {index}", permission.attributes, "never allows")
    if policy.peers and "source_principal" in unknown:
        note(policy.peers_line, "peers", frozenset({"source_principal"}), "grants no roles")
    for source in policy.credential_sources:
        found.extend(_certificates(source, settings))
    plan = policy.response
    for kind, what, pairs in (("header", "response header", plan.headers),
                              ("client header", "client header", plan.client_headers),
                              ("metadata", "metadata key", plan.metadata)):
        for name, expression in pairs:
            reads = Reads.from_paths(set(expression.reads)).names()
            note(plan.lines.get(f"{kind} {name}", 0), f"{what} {name!r}", reads, "is left out")
    return [f"{line}: {message}" for line, message in sorted(found)]


def _certificates(source: object, settings: HttpDoorSettings) -> list[tuple[int, str]]:
    """The ``certificates`` section's sources the HTTP door cannot read with ``settings``."""
    sources = getattr(source, "sources", None)
    if getattr(source, "kind", None) != "certificate" or sources is None:
        return []
    line: int = getattr(source, "line", 0)
    notes = []
    if sources == ("peer",):
        notes.append((line, "warning: certificates reads only peer (source.certificate), which Envoy's HTTP "
                            "ext_authz client never sends: through the HTTP door no certificate is read; add xfcc "
                            "(the edge's own element, with --trust-xfcc)"))
    for name, trusted, flag in (("xfcc", settings.trust_xfcc, "--trust-xfcc"),
                                ("client-cert", settings.trust_client_cert, "--trust-client-cert")):
        if name in sources and not trusted:
            notes.append((line, f"warning: certificates reads {name}, trusted only with {flag}: through the HTTP "
                                "door a request carrying it is refused (untrusted_certificate_header)"))
    return notes
