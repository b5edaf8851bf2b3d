"""The ``authz`` command: serve, check, validate, explain."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from authz.errors import ConfigError

EXIT_ALLOWED = 0
EXIT_DENIED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _load(path: str) -> object:
    from authz.config import load_policy

    return load_policy(path)


def _read_request(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    with open(name, encoding="utf-8") as handle:
        return handle.read()


def cmd_validate(args: argparse.Namespace) -> int:
    from authz.config import load_policy

    try:
        policy = load_policy(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    roles = len(policy.roles)
    rules = len(policy.deny_rules) + len(policy.allow_rules)
    print(f"{args.config}: valid ({len(policy.issuers)} issuer(s), {roles} role(s), {rules} rule(s))")
    return 0


def _decide(args: argparse.Namespace, *, explain: bool) -> int:
    from google.protobuf.json_format import ParseError

    from authz.config import load_policy
    from authz.engine import Engine, Trace
    from authz.envoy import parse_json_request, to_request

    try:
        policy = load_policy(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    try:
        check = parse_json_request(_read_request(args.request))
        request = to_request(check)
    except OSError as exc:
        print(f"{args.request}: cannot read: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except (ParseError, UnicodeDecodeError, ValueError) as exc:
        print(f"{args.request}: not a CheckRequest in protobuf JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    engine = Engine(policy)
    trace: Trace | None = [] if explain else None
    decision = engine.decide_blocking(request, timeout=args.timeout, trace=trace)
    if explain:
        assert trace is not None
        for step in trace:
            print(step)
        verdict = "ALLOW" if decision.allowed else "DENY"
        print(f"=> {verdict} {decision.status} {decision.reason.value}" + (f" (rule {decision.rule})" if decision.rule else ""))
    else:
        json.dump(decision.to_json(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return EXIT_ALLOWED if decision.allowed else EXIT_DENIED


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="authz", description="Envoy external authorization: JWT/OIDC, API keys, SPIFFE peers, RBAC and CEL.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    validate = sub.add_parser("validate", help="check a policy file; print FILE:LINE: message per problem")
    validate.add_argument("--config", required=True, help="policy file (YAML)")
    validate.set_defaults(func=cmd_validate)

    for name, explain, text in (
        ("check", False, "decide one CheckRequest (protobuf JSON) offline and print the decision as JSON"),
        ("explain", True, "like check, but print every step of the decision"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", required=True, help="policy file (YAML)")
        command.add_argument("--request", required=True, help="CheckRequest in protobuf JSON ('-' for stdin)")
        command.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for remote key sets")
        command.set_defaults(func=lambda args, explain=explain: _decide(args, explain=explain))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
