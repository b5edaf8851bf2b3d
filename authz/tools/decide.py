"""``authz check`` and ``authz explain``: one CheckRequest (protobuf JSON)
decided against a policy, printed as the decision (check) or as the steps
that led to it (explain); a policy's own denial (``deny_with``) with the
status, headers and body the client gets."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from authz.errors import ConfigError

if TYPE_CHECKING:
    from authz.decision import Decision
    from authz.engine import Trace
    from authz.policy import Policy


def load_or_report(config: str) -> Policy | None:
    """The policy, or None after printing each of its problems to stderr."""
    from authz.config import load_policy

    try:
        return load_policy(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _read_request(name: str) -> str:
    with open(0 if name == "-" else name, encoding="utf-8", closefd=name != "-") as handle:
        return handle.read()


def decide(args: argparse.Namespace, *, explain: bool) -> bool | None:
    """Decide ``args.request`` under ``args.config`` and print it; whether it
    was allowed, or None when the policy or the request could not be read
    (the problems are printed to stderr)."""
    from google.protobuf.json_format import ParseError

    from authz.engine import Engine
    from authz.identity.certificate import peer_certificate
    from authz.tools.offline_body import apply_body
    from authz.wire.grpc import parse_json_request, to_request

    policy = load_or_report(args.config)
    if policy is None:
        return None
    try:
        check = parse_json_request(_read_request(args.request))
        if getattr(args, "client_cert", None) is not None:
            check.attributes.source.certificate = peer_certificate(args.client_cert)
        request = to_request(apply_body(args, check))
    except OSError as exc:
        print(f"{exc.filename or args.request}: cannot read: {exc.strerror}", file=sys.stderr)
        return None
    except (ParseError, UnicodeDecodeError, ValueError) as exc:
        print(f"{args.request}: not a CheckRequest in protobuf JSON: {exc}", file=sys.stderr)
        return None
    engine = Engine(policy)
    trace: Trace | None = [] if explain else None
    decision = _caller_check(policy, args.caller, check, trace)
    if decision is None:
        decision = engine.decide_blocking(request, timeout=args.timeout, trace=trace)
    if explain:
        assert trace is not None
        for step in trace:
            print(step)
        verdict = "ALLOW" if decision.allowed else "DENY"
        origin = policy.origin(decision.rule) if decision.rule else None
        where = ""
        if origin is not None:
            where = f" from {origin[0]}:{origin[1]}" + (f" (team {origin[2]})" if origin[2] else "")
        print(f"=> {verdict} {decision.status} {decision.reason.value}"
              + (f" (rule {decision.rule})" if decision.rule else "")
              + where)
        if decision.denial is not None:
            shown = client_reply(decision, request.headers)
            print(f"   deny_with: the client gets {shown['status']}")
            for name, value in shown["headers"].items():
                print(f"     {name}: {value}")
            body = shown["body"]
            print(f"     body: {body if body.isprintable() else json.dumps(body)}")
    else:
        out = decision.to_json()
        if decision.denial is not None:
            out["denial"] = client_reply(decision, request.headers)
        json.dump(out, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return bool(decision.allowed)


def client_reply(decision: Decision, headers: Mapping[str, str]) -> dict[str, Any]:
    """What the client gets for a denial, through either door: its status,
    every header (``content-type``, ``cache-control``, a 401's challenge, a
    redirect's ``location``, the policy's own) and the body, as
    :func:`authz.reply.render` makes them for a request with ``headers``."""
    from authz.reply import echoed_request_id, render

    reply = render(decision, echoed_request_id(headers))
    return {"status": reply.status, "headers": dict(reply.client), "body": reply.body.decode("utf-8", "replace")}


def _caller_check(policy: Policy, caller: str | None, check: Any, trace: Trace | None) -> Any:
    """With ``--caller``: the ``untrusted_caller`` denial when the policy's
    ``callers:`` (gRPC door) does not admit that caller to ask this Check;
    None when it does, or when no caller was named."""
    from authz.decision import Decision
    from authz.engine import Step
    from authz.errors import Reason
    from authz.wire.grpc import destination_principal

    callers = policy.callers
    if caller is None:
        return None
    if callers is None or not callers.binds("grpc"):
        if trace is not None:
            trace.append(Step("caller", caller, "not checked", "no callers: section binds the gRPC door"))
        return None
    destination = destination_principal(check) or "(none)"
    if callers.admits(caller, destination_principal(check)):
        if trace is not None:
            trace.append(Step("caller", caller, "admitted", f"to ask about destination {destination}"))
        return None
    detail = callers.refusal(caller, destination_principal(check))
    if trace is not None:
        trace.append(Step("caller", caller, "refused", detail))
    return Decision(allowed=False, reason=Reason.UNTRUSTED_CALLER, cacheable=False, detail=detail)
