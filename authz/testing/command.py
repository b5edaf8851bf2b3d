"""The ``authz test`` command: load, run, report, exit 0/1/2."""

from __future__ import annotations

import argparse
import json
import sys
import time

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def cmd_test(args: argparse.Namespace) -> int:
    from authz.config import load_policy
    from authz.errors import ConfigError
    from authz.testing.cases import load_cases
    from authz.testing.runner import coverage, coverage_lines, parse_now, run_cases, verdict
    from authz.testing.standin import stand_in

    try:
        now = parse_now(args.now) if args.now is not None else time.time()
    except ValueError as exc:
        print(f"authz test: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        policy = load_policy(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    stand_ins = stand_in(policy)
    cases, problems = load_cases(args.cases, policy, stand_ins)
    if problems:
        for problem in sorted(problems, key=lambda p: (p.file, p.line)):
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    outcomes = run_cases(cases, stand_ins, now)
    failed = [o for o in outcomes if o.failures]
    for outcome in failed:
        print(f"FAIL {outcome.case.spec.name} ({outcome.case.where})")
        for line in outcome.failures:
            print(f"  {line}")
        print(f"  decision: {verdict(outcome.decision)}")
    if args.coverage or args.coverage_json:
        report = coverage(policy, outcomes)
        if args.coverage:
            for line in coverage_lines(report):
                print(line)
        if args.coverage_json:
            try:
                with open(args.coverage_json, "w", encoding="utf-8") as handle:
                    json.dump(report, handle, indent=2)
                    handle.write("\n")
            except OSError as exc:
                print(f"authz test: cannot write {args.coverage_json}: {exc.strerror}", file=sys.stderr)
                return EXIT_USAGE
    # The last line, alone: CI harnesses read it.
    print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed")
    return EXIT_FAILED if failed else EXIT_PASSED


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    test = sub.add_parser("test", help="run policy test cases (YAML) offline, like opa test")
    test.add_argument("--config", required=True, help="policy file (YAML) or policy directory")
    test.add_argument("--now", default=None, metavar="TIME",
                      help="the clock of every decision: Unix seconds or RFC 3339 (default: now)")
    test.add_argument("--coverage", action="store_true",
                      help="list the rules and role permissions no case matched, per file")
    test.add_argument("--coverage-json", default=None, metavar="FILE",
                      help="write the coverage report as JSON to FILE (for CI)")
    test.add_argument("cases", nargs="+", metavar="CASES", help="case files (YAML)")
    test.set_defaults(func=cmd_test)
