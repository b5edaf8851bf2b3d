"""The ``authz`` command: serve, check, explain, validate, test, token, envoy-config."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from authz.tools import tls_flags as envoy_tls

if TYPE_CHECKING:
    from authz.policy import Policy
    from authz.tools.policy_headers import PolicyHeaders

EXIT_ALLOWED = 0
EXIT_DENIED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _load_policy(config: str) -> Policy | None:
    from authz.tools.decide import load_or_report

    return load_or_report(config)


def cmd_validate(args: argparse.Namespace) -> int:
    policy = _load_policy(args.config)
    if policy is None:
        return EXIT_USAGE
    roles = len(policy.roles)
    rules = len(policy.deny_rules) + len(policy.allow_rules)
    teams_dir = os.path.join(os.path.abspath(args.config), "teams")
    teams = sum(1 for f in policy.files if os.path.dirname(f) == teams_dir and f.endswith(".yaml"))
    counted = f", {teams} team file(s)" if os.path.isdir(args.config) else ""
    print(f"{args.config}: valid ({len(policy.issuers)} issuer(s), {roles} role(s), {rules} rule(s){counted})")
    from authz.config.advice import header_size_warnings, trailing_slash_warnings
    from authz.config.body_advice import body_warnings

    parts = [(args.config, policy)]
    if os.path.isdir(args.config):
        from authz.config.teams import by_file

        parts = by_file(policy, args.config)  # each warning under the file it is about
    for file, part in parts:
        warnings = trailing_slash_warnings(part) + header_size_warnings(part) + body_warnings(part)
        if args.door == "http":
            from authz.wire.http import HttpDoorSettings
            from authz.wire.http_advice import unknowable

            settings = HttpDoorSettings(forwarded_hops=args.trusted_forwarded_hops, trust_xfcc=args.trust_xfcc,
                                        trust_client_cert=args.trust_client_cert)
            warnings += unknowable(part, settings)
        for line in sorted(warnings, key=lambda text: int(text.partition(":")[0])):
            print(f"{file}:{line}", file=sys.stderr)
    if args.envoy_config:
        from authz.tools.policy_headers import PolicyHeaders
        from authz.tools.spoof_check import spoofable

        try:
            with open(args.envoy_config, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{args.envoy_config}: cannot read: {exc}", file=sys.stderr)
            return EXIT_USAGE
        for warning in spoofable(args.envoy_config, text, PolicyHeaders.of(policy)):
            print(warning, file=sys.stderr)
    return 0


def _decide(args: argparse.Namespace, *, explain: bool) -> int:
    from authz.tools.decide import decide

    allowed = decide(args, explain=explain)
    return EXIT_USAGE if allowed is None else EXIT_ALLOWED if allowed else EXIT_DENIED


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cmd_serve(args: argparse.Namespace) -> int:
    from authz.server.options import ServeOptions
    from authz.server.supervisor import serve

    if args.workers < 1:
        print("authz serve: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    options = ServeOptions.from_args(args)
    if (problem := options.usage_error()) is not None:
        print(f"authz serve: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return serve(options)


def cmd_token(args: argparse.Namespace) -> int:
    from authz.tools.devtoken import DevTokenError, mint

    try:
        print(mint(args.config, issuer_name=args.issuer, key_file=args.key, subject=args.sub, roles=args.role,
                   scopes=args.scope, claims=args.claim, ttl=args.ttl, audience=args.aud))
    except DevTokenError as exc:
        print(f"authz token: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def cmd_envoy_config(args: argparse.Namespace) -> int:
    from authz.tools.envoy_config import EnvoyOptions, render
    from authz.tools.envoy_metadata import LocalLimit

    try:
        local_limits = [LocalLimit.parse(text) for text in args.local_rate_limit]
    except ValueError as exc:
        print(f"authz envoy-config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "envoy" and args.shape is None:
        print("authz envoy-config: --shape edge|sidecar is required with --format envoy", file=sys.stderr)
        return EXIT_USAGE
    headers = _policy_headers(args)
    if headers is None:
        return EXIT_USAGE
    try:
        tls_options = envoy_tls.options_of(args)
    except ValueError as exc:
        print(f"authz envoy-config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = EnvoyOptions(
        shape=args.shape or "edge",
        authz=[a for a in args.authz.split(",") if a],
        listen=args.listen,
        upstream=args.upstream,
        admin=args.admin,
        timeout=args.timeout,
        cert_chain=args.cert_chain,
        private_key=args.private_key,
        ca_cert=args.ca_cert,
        trust_domain=args.trust_domain,
        protected_prefixes=args.protect or ["/"],
        protocol=args.protocol,
        path_prefix=args.path_prefix,
        upstream_headers=headers.upstream,
        access_log=args.access_log,
        metadata_keys=headers.metadata,
        client_headers=headers.client,
        denial_headers=headers.denial,
        owned_headers=headers.owned,
        policy=args.config,
        rate_limit_by=[tuple(k.strip() for k in keys.split(",")) for keys in args.rate_limit_by],
        local_rate_limits=local_limits,
        **tls_options,
        body=headers.body,
    )
    try:
        if args.format == "envoy":
            text = render(options)
        else:
            from authz.tools import mesh_config

            command = (f"authz envoy-config --format {args.format} --protocol {args.protocol} --authz {args.authz}"
                       + (f" --config {args.config}" if args.config else ""))
            text = mesh_config.render(options, headers, args.format, command)
    except ValueError as exc:
        print(f"authz envoy-config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _policy_headers(args: argparse.Namespace) -> PolicyHeaders | None:
    """What the config lists: read from ``--config``, else the defaults (said
    on stderr), with the names given by flags added."""
    from authz.tools.policy_headers import NOT_FROM_POLICY, PolicyHeaders

    if args.config:
        policy = _load_policy(args.config)
        if policy is None:
            return None
        headers = PolicyHeaders.of(policy)
    else:
        headers = PolicyHeaders.defaults()
    headers = headers.with_extra(tuple(args.upstream_header or ()), tuple(args.client_header), tuple(args.metadata_key))
    if not args.config:
        print(NOT_FROM_POLICY.format(upstream=", ".join(headers.upstream)), file=sys.stderr)
    return headers


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="authz",
                     description="Envoy external authorization: JWT/OIDC, API keys, SPIFFE peers, RBAC and CEL.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the ext_authz gRPC server and its HTTP side")
    serve.add_argument("--config", required=True,
                       help="policy file (YAML) or policy directory; reloaded when it or a file it names changes")
    serve.add_argument("--grpc-address", default="0.0.0.0:9191",
                       help="ext_authz gRPC listen address (default %(default)s)")
    serve.add_argument("--http-address", default="0.0.0.0:8181",
                       help="/healthz /readyz /metrics /.well-known/jwks.json (default %(default)s)")
    serve.add_argument("--http-authz-address", default=None, metavar="HOST:PORT",
                       help="also answer Envoy's HTTP ext_authz protocol (http_service) here (default: off)")
    serve.add_argument("--http-authz-prefix", default="", metavar="PATH",
                       help="Envoy's http_service path_prefix (calls outside it are refused; default: none)")
    serve.add_argument("--trusted-forwarded-hops", type=int, default=0, metavar="N",
                       help="HTTP door: the client address is the x-forwarded-for entry N from the right "
                            "(0: not trusted, the source address is unknown; default %(default)s)")
    serve.add_argument("--trust-xfcc", action="store_true",
                       help="read the client's SPIFFE ID (HTTP door) and certificate (policy 'certificates: from: "
                            "[xfcc]', both doors) from the last x-forwarded-client-cert element, set by the Envoy "
                            "in front")
    serve.add_argument("--trust-client-cert", action="store_true",
                       help="a hop in front sets the RFC 9440 client-cert headers (policy 'certificates: from: "
                            "[client-cert]')")
    serve.add_argument("--grpc-tls-cert", default=None, metavar="FILE",
                       help="gRPC door: speak TLS with this certificate chain (PEM; reloaded when it changes)")
    serve.add_argument("--grpc-tls-key", default=None, metavar="FILE",
                       help="gRPC door: the certificate's private key (PEM)")
    serve.add_argument("--grpc-client-ca", default=None, metavar="FILE",
                       help="gRPC door: require a client certificate from this CA; the caller (policy 'callers:') "
                            "is its URI SAN")
    serve.add_argument("--trust-caller-xfcc", action="store_true",
                       help="authz runs behind its own sidecar: the caller (policy 'callers:') is the URI of the last "
                            "x-forwarded-client-cert element, the one that sidecar appends")
    serve.add_argument("--workers", type=int, default=_cpu_count(),
                       help="worker processes (default: CPUs available, %(default)s)")
    serve.add_argument("--pin-workers", choices=["auto", "on", "off"], default="auto",
                       help="pin worker i to a CPU of its own: auto (the default) when the process owns exactly "
                            "as many CPUs as workers (affinity and cgroup quota), on, or off")
    serve.add_argument("--worker-ports", type=int, metavar="BASE", default=None,
                       help="also listen on BASE+i in worker i, for Envoy clusters that list each worker as an "
                            "endpoint")
    serve.add_argument("--server", choices=["sync", "aio"], default="sync",
                       help="gRPC server flavour per worker: a thread pool (sync, the default: measured faster) "
                            "or grpc.aio on uvloop")
    serve.add_argument("--threads", type=int, default=4,
                       help="sync server: Check threads per worker (default %(default)s)")
    serve.add_argument("--max-connection-age", type=float, default=30.0,
                       help="seconds before a client connection is asked to reconnect (HTTP/2 GOAWAY), so the "
                            "kernel re-spreads long-lived connections over the workers (default %(default)s)")
    serve.add_argument("--max-streams-per-connection", type=int, default=None,
                       help="HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (default: gRPC's). Clients that open streams "
                            "before reading SETTINGS get some refused, so leave it unset for Envoy")
    serve.add_argument("--max-concurrent-checks", type=int, default=2000,
                       help="checks a worker decides at once, per door; more are refused at once (gRPC: "
                            "RESOURCE_EXHAUSTED; HTTP door: 503), which Envoy (failure_mode_allow: false) turns "
                            "into a denial (default %(default)s)")
    serve.add_argument("--drain-timeout", type=float, default=10.0,
                       help="seconds to finish in-flight checks on SIGTERM")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--dry-run", action="store_true",
                       help="evaluate fully, log and count every denial as 'would deny', but allow (like "
                            "istio.io/dry-run)")
    serve.add_argument("--decision-log", default="denials", choices=["none", "denials", "all"],
                       help="which decisions to log as JSON lines on stdout (default %(default)s)")
    serve.add_argument("--decision-log-sample", type=float, default=1.0, metavar="FRACTION",
                       help="fraction of allowed decisions logged with --decision-log all (default %(default)s)")
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="mint a development token for an issuer whose private key you hold")
    token.add_argument("--config", required=True, help="policy file or directory naming the issuer")
    token.add_argument("--key", required=True, help="the issuer's private signing key (PEM)")
    token.add_argument("--issuer", default=None, help="issuer name in the policy (default: the first)")
    token.add_argument("--sub", default="dev-user", help="subject (default %(default)s)")
    token.add_argument("--role", action="append", default=[],
                       help="role to put in the issuer's roles_claim (repeatable)")
    token.add_argument("--scope", action="append", default=[], help="scope to put in the scopes_claim (repeatable)")
    token.add_argument("--claim", action="append", default=[], metavar="NAME=JSON",
                       help="extra claim (value parsed as JSON, else string)")
    token.add_argument("--aud", default=None, help="audience (default: the issuer's first)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default %(default)s)")
    token.set_defaults(func=cmd_token)

    envoy = sub.add_parser("envoy-config", help="print an Envoy bootstrap (edge or sidecar shape) that calls authz")
    envoy.add_argument("--shape", default=None, choices=["edge", "sidecar"],
                       help="edge: Emissary-style AuthService gateway; sidecar: Istio CUSTOM-policy inbound sidecar "
                            "(mTLS)")
    envoy.add_argument("--authz", required=True, metavar="HOST:PORT[,HOST:PORT...]",
                       help="authz gRPC address(es); list each worker port to spread load evenly")
    envoy.add_argument("--protocol", choices=["grpc", "http"], default="grpc",
                       help="which door of authz Envoy calls: grpc (grpc_service) or http (http_service)")
    envoy.add_argument("--path-prefix", default="/authz",
                       help="http: authz serve --http-authz-prefix (default %(default)s)")
    envoy.add_argument("--config", default=None, metavar="POLICY",
                       help="read what Envoy must pass on from this policy: the headers it sets, removes or signs, "
                            "its client headers and metadata keys, and the headers it reads (without it: defaults, "
                            "said on stderr)")
    envoy.add_argument("--format", choices=["envoy", "istio", "emissary"], default="envoy",
                       help="envoy: a bootstrap (the default); istio: the meshConfig extensionProviders entry; "
                            "emissary: the AuthService")
    envoy.add_argument("--upstream-header", action="append", default=None, metavar="NAME",
                       help="http: also a header authz sets for the upstream (repeatable; without --config: "
                            "x-user-id, x-identity-token)")
    envoy.add_argument("--listen", default="0.0.0.0:8080", help="listener address (default %(default)s)")
    envoy.add_argument("--upstream", default="127.0.0.1:8000", help="the protected service (default %(default)s)")
    envoy.add_argument("--admin", default="127.0.0.1:9901", help="Envoy admin address (default %(default)s)")
    envoy.add_argument("--timeout", type=float, default=1.0,
                       help="ext_authz call timeout in seconds (default %(default)s)")
    envoy.add_argument("--cert-chain", default="/etc/certs/cert-chain.pem", help="sidecar: workload certificate chain")
    envoy.add_argument("--private-key", default="/etc/certs/key.pem", help="sidecar: workload private key")
    envoy.add_argument("--ca-cert", default="/etc/certs/root-cert.pem", help="sidecar: mesh root CA")
    envoy.add_argument("--trust-domain", default="cluster.local", help="sidecar: accepted SPIFFE trust domain")
    envoy.add_argument("--protect", action="append", metavar="PREFIX",
                       help="sidecar: path prefix the CUSTOM policy covers (repeatable; default /)")
    envoy.add_argument("--access-log", default=None, metavar="PATH",
                       help="write a JSON access log line per request here, with authz's metadata (reason, rule, "
                            "issuer and each --metadata-key) under 'authz'; the path is logged without its query")
    envoy.add_argument("--metadata-key", action="append", default=[], metavar="KEY",
                       help="a response.metadata key of the policy to log (and, http, to take from authz's answer); "
                            "repeatable")
    envoy.add_argument("--client-header", action="append", default=[], metavar="NAME",
                       help="http: a response.client_headers name Envoy passes to the client on allow (e.g. "
                            "set-cookie); repeatable")
    envoy.add_argument("--rate-limit-by", action="append", default=[], metavar="KEY[,KEY...]",
                       help="a route rate-limit action making a descriptor of these metadata keys; repeatable")
    envoy.add_argument("--local-rate-limit", action="append", default=[], metavar="KEY=VALUE[,...]:N/PERIOD",
                       help="local_ratelimit (after ext_authz): N requests per PERIOD for that descriptor, e.g. "
                            "tier=free:3/1m (VALUE * for a bucket per value); other requests are not limited; "
                            "repeatable")
    envoy_tls.add_arguments(envoy)
    envoy.add_argument("--output", "-o", default="-", help="write to this file instead of stdout")
    envoy.set_defaults(func=cmd_envoy_config)

    validate = sub.add_parser("validate", help="check a policy file; print FILE:LINE: message per problem")
    validate.add_argument("--config", required=True, help="policy file (YAML) or policy directory")
    validate.add_argument("--door", choices=["grpc", "http"], default="grpc",
                          help="also warn (on stderr; still exit 0) about what the policy reads that this door "
                               "cannot know, where it fails closed (default: grpc, which knows everything)")
    validate.add_argument("--trusted-forwarded-hops", type=int, default=0, metavar="N",
                          help="http: as authz serve --trusted-forwarded-hops")
    validate.add_argument("--trust-xfcc", action="store_true", help="http: as authz serve --trust-xfcc")
    validate.add_argument("--trust-client-cert", action="store_true", help="http: as authz serve --trust-client-cert")
    validate.add_argument("--envoy-config", default=None, metavar="FILE",
                          help="also warn (FILE:LINE, on stderr) for each header the policy owns that a client could "
                               "spoof through FILE: an Envoy bootstrap, an Emissary AuthService or an Istio mesh "
                               "config")
    validate.set_defaults(func=cmd_validate)

    from authz.testing.command import add_parser as add_test_parser
    from authz.tools.offline_body import add_body_arguments

    add_test_parser(sub)

    for name, explain, text in (
        ("check", False, "decide one CheckRequest (protobuf JSON) offline and print the decision as JSON"),
        ("explain", True, "like check, but print every step of the decision"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", required=True, help="policy file (YAML) or policy directory")
        command.add_argument("--request", required=True, help="CheckRequest in protobuf JSON ('-' for stdin)")
        command.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for remote key sets")
        command.add_argument("--caller", default=None, metavar="SPIFFE_ID",
                             help="the caller asking (the gRPC door's client certificate), checked against 'callers:'")
        command.add_argument("--client-cert", metavar="FILE", help="the client's certificate (PEM): source.certificate")
        add_body_arguments(command)
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
