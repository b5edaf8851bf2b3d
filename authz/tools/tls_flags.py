"""The TLS flags of ``authz envoy-config`` (what they build:
:mod:`authz.tools.envoy_tls`). Kept apart from it so the command line is
parsed without importing Envoy's config classes."""

from __future__ import annotations

import argparse
from typing import Any, Protocol


class TlsOptions(Protocol):
    """What the TLS builders read of ``authz.tools.envoy_config.EnvoyOptions``
    (a protocol, so neither module imports the other's importer)."""

    protocol: str
    authz_tls_cert: str | None
    authz_tls_key: str | None
    authz_ca: str | None
    authz_san: str | None
    downstream_tls_cert: str | None
    downstream_tls_key: str | None
    downstream_client_ca: str | None
    xfcc_from_hop: bool


#: Each file flag and the EnvoyOptions field it sets.
_FILES = {"--authz-tls-cert": "authz_tls_cert", "--authz-tls-key": "authz_tls_key", "--authz-ca": "authz_ca",
          "--authz-san": "authz_san", "--downstream-tls-cert": "downstream_tls_cert",
          "--downstream-tls-key": "downstream_tls_key", "--downstream-client-ca": "downstream_client_ca"}


def flags(options: TlsOptions) -> str:
    """These options as ``authz envoy-config`` flags, for the config's header comment."""
    return "".join(f" {flag} {value}" for flag, name in _FILES.items() if (value := getattr(options, name))) + (
        " --xfcc-from-hop" if options.xfcc_from_hop else "")


def add_arguments(envoy: argparse.ArgumentParser) -> None:
    """The TLS flags of ``authz envoy-config``."""
    envoy.add_argument("--authz-tls-cert", default=None, metavar="FILE",
                       help="call authz over TLS presenting this client certificate chain (authz serve "
                            "--grpc-client-ca, or authz's sidecar with --trust-caller-xfcc): the caller of 'callers:'")
    envoy.add_argument("--authz-tls-key", default=None, metavar="FILE", help="the client certificate's private key")
    envoy.add_argument("--authz-ca", default=None, metavar="FILE", help="the CA authz's server certificate chains to")
    envoy.add_argument("--authz-san", default=None, metavar="SPIFFE_ID",
                       help="authz's SPIFFE ID: its certificate must carry this URI SAN")
    envoy.add_argument("--downstream-tls-cert", default=None, metavar="FILE",
                       help="edge: the listener speaks TLS with this certificate chain (clients' certificates reach "
                            "authz: source.certificate on the gRPC door, x-forwarded-client-cert on both)")
    envoy.add_argument("--downstream-tls-key", default=None, metavar="FILE", help="edge: the listener's private key")
    envoy.add_argument("--downstream-client-ca", default=None, metavar="FILE",
                       help="edge: require a client certificate from this CA")
    envoy.add_argument("--xfcc-from-hop", action="store_true",
                       help="edge: a hop in front terminates the clients' mTLS and writes x-forwarded-client-cert; "
                            "forward it as it comes (only that hop may reach this Envoy)")


def options_of(args: argparse.Namespace) -> dict[str, Any]:
    """EnvoyOptions fields from the flags; ValueError when they do not go together."""
    found = {name: getattr(args, name) for name in _FILES.values()}
    if (args.authz_tls_cert is None) != (args.authz_tls_key is None) or (
            args.authz_tls_cert is not None and args.authz_ca is None) or (
            args.authz_san is not None and args.authz_tls_cert is None):
        raise ValueError("--authz-tls-cert, --authz-tls-key and --authz-ca go together (--authz-san needs them)")
    if (args.downstream_tls_cert is None) != (args.downstream_tls_key is None) or (
            args.downstream_client_ca is not None and args.downstream_tls_cert is None):
        raise ValueError("--downstream-tls-cert and --downstream-tls-key go together "
                         "(--downstream-client-ca needs them)")
    if args.xfcc_from_hop and args.downstream_tls_cert is not None:
        raise ValueError("--xfcc-from-hop is for an edge behind the hop that terminates TLS, "
                         "not with --downstream-tls-cert")
    if (args.downstream_tls_cert or args.xfcc_from_hop) and args.shape == "sidecar":
        raise ValueError("--downstream-tls-cert and --xfcc-from-hop apply to --shape edge")
    return {**found, "xfcc_from_hop": args.xfcc_from_hop}
