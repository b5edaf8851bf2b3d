"""How long one CEL condition takes, per evaluation, in each Python CEL runtime.

The condition is the contract's tenant-isolation rule:

    identity.kind == "jwt" && request.headers["x-tenant"] != identity.claims.tenant

evaluated against per-request variables shaped like the ones the engine
builds (a request with a bearer token and the usual headers, the claims of
a typical access token). Every evaluation gets a different set of variables,
so the conversion of the inputs into the runtime's values is counted, as it
is when deciding.

Rows:

- ``authz.cel``: what authz does (cel-expr-python, Google's C++ runtime,
  handed only what the expression reads, with the NUL check).
- ``cel-expr-python, whole variables``: the same runtime handed every
  variable, to show what converting whole header and claim maps costs.
- ``common-expression-language`` (``import cel``, the Rust binding) and
  ``cel-python`` (``import celpy``, pure Python), when importable, each
  handed every variable and, to be fair, only what the expression reads
  (the same pruning authz does, with ``authz.cel.select_reads``).

Run: ``python benchmarks/cel_bench.py [--quick]``. Prints a table; asserts
nothing about time (it does check that every runtime gives the same answers).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cel_expr_python import cel as runtime
from cel_expr_python.ext import ext_encoders, ext_strings

from authz.cel import VARIABLES, compile_expression, minimal_paths, select_reads

CONDITION = 'identity.kind == "jwt" && request.headers["x-tenant"] != identity.claims.tenant'


def variables_for(index: int) -> dict[str, Any]:
    """The CEL variables of one request: every third one crosses tenants."""
    tenant = f"t{index % 7}"
    header_tenant = tenant if index % 3 else f"t{(index + 1) % 7}"
    claims = {
        "iss": "https://idp.example.com", "aud": "orders-api", "sub": f"user-{index}", "iat": 1_800_000_000,
        "exp": 1_800_000_600, "jti": f"jti-{index:08d}", "groups": ["orders-reader", "staff"],
        "scope": "openid orders:read", "tenant": tenant, "email": f"user-{index}@example.com",
        "name": "A. User", "amr": ["pwd", "mfa"],
    }
    headers = {
        ":authority": "api.example.com", ":method": "GET", ":path": "/api/orders/7", ":scheme": "https",
        "authorization": "Bearer " + "e" * 780, "x-tenant": header_tenant, "user-agent": "curl/8.5.0",
        "accept": "application/json", "x-request-id": f"req-{index}", "x-forwarded-for": "198.51.100.7",
        "x-envoy-internal": "true",
    }
    return {
        "request": {"method": "GET", "host": "api.example.com", "path": "/api/orders/7", "query": {},
                    "headers": headers, "scheme": "https"},
        "identity": {"kind": "jwt", "subject": claims["sub"], "issuer": claims["iss"],
                     "roles": ["orders-reader", "staff"], "scopes": ["openid", "orders:read"], "claims": claims},
    }


def expected(variables: dict[str, Any]) -> bool:
    return bool(variables["request"]["headers"]["x-tenant"] != variables["identity"]["claims"]["tenant"])


Runner = Callable[[dict[str, Any]], Any]


def runners() -> list[tuple[str, str, Runner | str]]:
    """(name, version, evaluate-one or why it is missing)."""
    out: list[tuple[str, str, Runner | str]] = []
    ours = compile_expression(CONDITION, result="bool")
    paths = minimal_paths(ours.reads)

    def pruned(run: Runner) -> Runner:
        return lambda v: run(select_reads(v, paths))
    version = importlib.metadata.version("cel-expr-python")
    out.append(("authz.cel (cel-expr-python, reads only)", version, ours.evaluate))
    # The same runtime, compiled as authz.cel compiles (same variables and
    # extensions), handed everything.
    env = runtime.NewEnv(
        variables={name: runtime.Type.TIMESTAMP if name == "now" else runtime.Type.DYN for name in VARIABLES},
        extensions=[ext_strings.ExtStrings(), ext_encoders.ExtEncoders()],
    )
    program = env.compile(CONDITION)
    out.append(("cel-expr-python, whole variables", version, lambda v: program.eval(data=v).plain_value()))

    try:
        import cel  # type: ignore[import-not-found]

        if not hasattr(cel, "compile"):
            # Other distributions ship a 'cel' package too (e.g. cel.expr protos).
            raise ImportError("'cel' here is not common-expression-language")
        rust = cel.compile(CONDITION)
        version = importlib.metadata.version("common-expression-language")
        out.append(("common-expression-language (Rust)", version, rust.execute))
        out.append(("common-expression-language, reads only", version, pruned(rust.execute)))
    except ImportError as exc:
        out.append(("common-expression-language (Rust)", "-", f"not importable: {exc}"))

    try:
        import celpy  # type: ignore[import-untyped]

        env = celpy.Environment()
        prog = env.program(env.compile(CONDITION))

        def run_celpy(v: dict[str, Any]) -> Any:
            return prog.evaluate({name: celpy.json_to_cel(value) for name, value in v.items()})

        version = importlib.metadata.version("cel-python")
        out.append(("cel-python (pure Python)", version, run_celpy))
        out.append(("cel-python, reads only", version, pruned(run_celpy)))
    except ImportError as exc:
        out.append(("cel-python (pure Python)", "-", f"not importable: {exc}"))
    return out


def one_pass(run: Runner, inputs: list[dict[str, Any]]) -> float:
    """µs per evaluation over one pass through all inputs."""
    start = time.perf_counter()
    for v in inputs:
        run(v)
    return (time.perf_counter() - start) / len(inputs) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    count, rounds = (200, 3) if args.quick else (2000, 7)
    inputs = [variables_for(i) for i in range(count)]

    print(f"condition: {CONDITION}")
    print(f"{count} distinct requests x {rounds} rounds; Python {sys.version.split()[0]}\n")
    available = [(name, version, run) for name, version, run in runners() if not isinstance(run, str)]
    notes: dict[str, str] = {}
    for name, _version, run in available:
        wrong = sum(1 for v in inputs if bool(run(v)) is not expected(v))  # also the warm-up
        notes[name] = f"{wrong} WRONG ANSWERS" if wrong else ""
    # Rounds interleave the runtimes, so that a busy moment of the machine
    # spreads over all of them instead of spoiling one row.
    samples: dict[str, list[float]] = {name: [] for name, _, _ in available}
    for _ in range(rounds):
        for name, _version, run in available:
            samples[name].append(one_pass(run, inputs))

    rows = []
    for name, version, run in runners():
        if isinstance(run, str):
            rows.append((name, version, "-", "-", run))
        else:
            times = samples[name]
            rows.append((name, version, f"{min(times):.1f}", f"{statistics.median(times):.1f}", notes[name]))
    width = max(len(r[0]) for r in rows)
    print(f"{'runtime':<{width}}  {'version':<8}  {'µs best':>8}  {'median':>8}  note")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 8}  {'-' * 8}  ----")
    for name, version, best, median, note in rows:
        print(f"{name:<{width}}  {version:<8}  {best:>8}  {median:>8}  {note}")
    return 1 if any("WRONG" in r[4] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
