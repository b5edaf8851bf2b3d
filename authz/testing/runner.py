"""``authz test``: decide every case of the case files against a policy,
offline, at one fixed time, and say which failed and what came instead.

Each case's request goes through the gRPC door's reader (a CheckRequest,
as ``authz check`` reads one) and the server's engine, with the policy's
credentials and outside calls replaced by stand-ins
(:mod:`authz.testing.standin`, :mod:`authz.testing.outside`). Coverage
is read from each decision's trace: a rule or role permission is covered
when some case's decision matched it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from authz.body import PARTIAL_BODY
from authz.decision import Decision
from authz.engine import Engine, Trace
from authz.policy import Policy
from authz.testing.cases import Case, CertificateSpec, HeaderCheckSpec
from authz.testing.certs import Minted, present
from authz.testing.sessions import session_cookie
from authz.testing.standin import StandIns
from authz.wire.grpc import parse_json_request, to_request


class FixedClock:
    """The clock of every decision of a run (``--now``)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


def parse_now(text: str) -> float:
    """``--now``: Unix seconds, or an RFC 3339 time with its offset. Raises ValueError."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--now wants Unix seconds or an RFC 3339 time (2026-01-01T00:00:00Z), not {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"--now {text!r} has no UTC offset (add Z or +00:00)")
    return moment.timestamp()


@dataclass
class Outcome:
    case: Case
    decision: Decision
    #: One line per expectation not met: what was expected, what came instead.
    failures: list[str]
    #: The rules (by name) and permissions (``role[index]``) the decision matched.
    matched: set[str] = field(default_factory=set)


def run_cases(cases: Iterable[Case], stand_ins: StandIns, now: float) -> list[Outcome]:
    engine = Engine(stand_ins.policy, clock=FixedClock(now))
    outcomes = []
    for case in cases:
        trace: Trace = []
        stand_ins.outside.give_data(case.spec.data)
        decision = engine.decide_blocking(build_request(case, stand_ins, int(now)), timeout=0, trace=trace)
        matched = {step.subject for step in trace
                   if step.phase in ("deny rule", "allow rule", "permission") and step.result == "matched"}
        outcomes.append(Outcome(case, decision, compare(case, decision), matched))
    return outcomes


def build_request(case: Case, stand_ins: StandIns, now: int) -> Any:
    """The case's request as the gRPC door reads a CheckRequest (an
    introspected token's answer is made ready for it)."""
    spec = case.spec
    want = spec.request
    headers = {name.lower(): value for name, value in want.headers.items()}
    if spec.token is not None:
        name = spec.token.issuer
        if name in stand_ins.issuers:
            token = stand_ins.mint(name, spec.token.claims, now)
            location = stand_ins.issuers[name].locations[0]
        else:
            token = stand_ins.outside.introspected_token(name, spec.token.claims, spec.token.active, now)
            location = stand_ins.outside.introspection[name].locations[0]
        if location.cookie is not None:
            cookie = f"{location.cookie}={token}"
            headers["cookie"] = f"{headers['cookie']}; {cookie}" if headers.get("cookie") else cookie
        else:
            assert location.header is not None
            headers[location.header] = location.prefix + token
    if spec.api_key is not None:
        header, key = stand_ins.api_keys[spec.api_key]
        headers[header] = key
    if spec.session is not None:
        login = stand_ins.logins[spec.session.issuer]
        signed_in = now - login.ttl - 1 if spec.session.expired else now + spec.session.signed_in
        cookie = session_cookie(login, spec.session.claims, signed_in)
        headers["cookie"] = f"{headers['cookie']}; {cookie}" if headers.get("cookie") else cookie
    trust: dict[str, Any] = {}
    peer_certificate = ""
    if spec.certificate is not None:
        minted = _certificate(spec.certificate, stand_ins, now)
        headers.update(minted.headers)
        peer_certificate = minted.peer
        trust = {"trusted_xfcc": minted.trusted_xfcc, "trusted_client_cert": minted.trusted_client_cert}
    http = {"method": want.method, "path": want.path, "host": want.host, "scheme": want.scheme, "headers": headers}
    body = want.body.encode("utf-8") if want.body is not None else None
    if want.body_json is not None:
        body = json.dumps(want.body_json).encode("utf-8")
        headers.setdefault("content-type", "application/json")
    if body is not None:  # as Envoy passes a whole body on (with_request_body, pack_as_bytes)
        http["rawBody"] = base64.b64encode(body).decode("ascii")
        headers[PARTIAL_BODY] = "false"
    check = {
        "attributes": {
            "request": {"http": http},
            "source": _peer(want.source.address, want.source.port, want.source.principal),
            "destination": _peer(want.destination.address, want.destination.port, want.destination.principal),
            "contextExtensions": dict(want.context),
        }
    }
    if peer_certificate:
        check["attributes"]["source"]["certificate"] = peer_certificate
    return to_request(parse_json_request(json.dumps(check)), **trust)


def _certificate(spec: CertificateSpec, stand_ins: StandIns, now: int) -> Minted:
    """The case's certificate, minted by the stand-in CA, as the policy's source reads it."""
    assert stand_ins.ca is not None and stand_ins.certificates is not None
    not_before, not_after = (now - 7200, now - 3600) if spec.expired else (now + spec.not_before, now + spec.not_after)
    certificate = stand_ins.ca.mint(subject=spec.subject, uris=spec.uri_sans, dns=spec.dns_sans,
                                    emails=spec.email_sans, not_before=not_before, not_after=not_after,
                                    client_auth=spec.client_auth)
    return present(stand_ins.certificates, certificate)


def _peer(address: str, port: int, principal: str) -> dict[str, Any]:
    out: dict[str, Any] = {"principal": principal}
    if address:
        out["address"] = {"socketAddress": {"address": address, "portValue": port}}
    return out


def compare(case: Case, decision: Decision) -> list[str]:
    expect = case.spec.expect
    got: dict[str, Any] = {"allowed": decision.allowed, "status": decision.status,
                           "reason": decision.reason.value, "rule": decision.rule}
    failures = [f"{name}: expected {_show(getattr(expect, name))}, got {_show(got[name])}"
                for name in ("allowed", "status", "reason", "rule")
                if name in case.expected and getattr(expect, name) != got[name]]
    headers = dict(decision.headers)
    for name, want in expect.headers.items():
        value = headers.get(name.lower())
        problem = _header(want, value)
        if problem:
            failures.append(f"header {name}: {problem}")
    return failures


def _header(want: HeaderCheckSpec, value: str | None) -> str | None:
    if want.equals is not None:
        return None if value == want.equals else f"expected {want.equals!r}, got {_show_header(value)}"
    if want.present is not None:
        return None if (value is not None) == want.present else (
            "expected it set, got nothing" if want.present else f"expected it not set, got {value!r}")
    assert want.claims is not None
    if value is None:
        return "expected a JWT, got nothing"
    claims = jwt_claims(value)
    if claims is None:
        return f"expected a JWT, got {value!r}"
    wrong = [f"{k}: expected {_show(v)}, got {_show(claims.get(k, '(absent)'))}"
             for k, v in want.claims.items() if claims.get(k, _ABSENT) != v]
    return "; ".join(wrong) or None


_ABSENT = object()


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a compact JWS, not verified (authz signed it)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _show_header(value: str | None) -> str:
    return "nothing (not set)" if value is None else repr(value)


def verdict(decision: Decision) -> str:
    text = f"{'ALLOW' if decision.allowed else 'DENY'} {decision.status} {decision.reason.value}"
    return text + (f" (rule {decision.rule})" if decision.rule else "")


# -- coverage --------------------------------------------------------------------


def coverage(policy: Policy, outcomes: list[Outcome]) -> dict[str, Any]:
    """Every rule and role permission, per file, with whether a case matched it."""
    matched = set().union(*(o.matched for o in outcomes)) if outcomes else set()
    files: dict[str, dict[str, Any]] = {}
    items: list[tuple[str, str, Any]] = [("rule", rule.name, rule.matcher)
                                         for rule in (*policy.deny_rules, *policy.allow_rules)]
    items += [("permission", f"{role}[{index}]", matcher)
              for role, permissions in policy.roles.items() for index, matcher in enumerate(permissions)]
    for kind, name, matcher in items:
        entry = files.setdefault(matcher.file, {
            "file": matcher.file, "team": None if matcher.scope is None else matcher.scope.team,
            "total": 0, "matched": 0, "unmatched": [],
        })
        entry["total"] += 1
        if name in matched:
            entry["matched"] += 1
        else:
            entry["unmatched"].append({"kind": kind, "name": name, "line": matcher.line})
    listed = sorted(files.values(), key=lambda f: f["file"])
    for entry in listed:
        entry["unmatched"].sort(key=lambda item: item["line"])
    return {"total": sum(f["total"] for f in listed), "matched": sum(f["matched"] for f in listed), "files": listed}


def coverage_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"coverage: {report['matched']} of {report['total']} rules and role permissions matched by a case"]
    for entry in report["files"]:
        team = f" (team {entry['team']})" if entry["team"] else ""
        lines.append(f"  {entry['file']}{team}: {entry['matched']} of {entry['total']}")
        lines += [f"    {entry['file']}:{item['line']}: {item['kind']} {item['name']} not matched by any case"
                  for item in entry["unmatched"]]
    return lines
