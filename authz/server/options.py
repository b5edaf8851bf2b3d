"""The options of ``authz serve``: one frozen object, built once from the
command line and handed unchanged to the supervisor and, pickled, to every
worker process. Its field names are the flags' names, and its defaults are
the flags' (``authz serve --help``), so it has none of its own. What differs
between workers (the index, the worker's own port) is passed next to it."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, fields

from authz.errors import ConfigError, Problem
from authz.policy import Policy
from authz.wire.grpc import GRPC, GrpcDoor
from authz.wire.http import HttpDoorSettings


@dataclass(frozen=True)
class ServeOptions:
    config: str
    grpc_address: str
    http_address: str
    http_authz_address: str | None  # Envoy's HTTP ext_authz protocol; None: off
    http_authz_prefix: str
    trusted_forwarded_hops: int
    trust_xfcc: bool
    workers: int
    pin_workers: str  # "auto", "on" or "off" (see authz.server.cpus)
    worker_ports: int | None  # worker i also listens on worker_ports + i
    server: str  # "sync" (thread pool) or "aio"
    threads: int
    max_connection_age: float
    max_streams_per_connection: int | None
    max_concurrent_checks: int
    drain_timeout: float
    log_level: str
    dry_run: bool
    decision_log: str
    decision_log_sample: float
    grpc_tls_cert: str | None = None
    grpc_tls_key: str | None = None
    grpc_client_ca: str | None = None  # require a client certificate from this CA: the caller is its URI SAN
    trust_caller_xfcc: bool = False  # the caller is the last x-forwarded-client-cert element (authz's own sidecar)
    trust_client_cert: bool = False  # a hop in front sets the RFC 9440 client-cert headers

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeOptions:
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls)})

    def http_door(self) -> HttpDoorSettings:
        return HttpDoorSettings(self.http_authz_prefix, self.trusted_forwarded_hops, self.trust_xfcc,
                                self.trust_caller_xfcc, self.trust_client_cert)

    def grpc_door(self) -> GrpcDoor:
        """The gRPC door, told which certificate headers a hop in front sets."""
        if not (self.trust_xfcc or self.trust_client_cert):
            return GRPC
        return GrpcDoor(trusted_xfcc=self.http_door().certificate_trust().get("trusted_xfcc", 0),
                        trusted_client_cert=self.trust_client_cert)

    def usage_error(self) -> str | None:
        """What is wrong with the combination of caller-identity flags, if anything."""
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            return "--grpc-tls-cert and --grpc-tls-key go together"
        if self.grpc_client_ca is not None and self.grpc_tls_cert is None:
            return "--grpc-client-ca needs --grpc-tls-cert and --grpc-tls-key"
        if self.grpc_client_ca is not None and self.trust_caller_xfcc:
            return ("--grpc-client-ca and --trust-caller-xfcc both name the caller: use the first when callers "
                    "connect to authz directly, the second when authz's own sidecar terminates their mTLS")
        return None

    def caller_doors(self) -> frozenset[str]:
        """The doors on which a Check carries its caller's identity."""
        doors = set()
        if self.grpc_client_ca is not None or self.trust_caller_xfcc:
            doors.add("grpc")
        if self.http_authz_address and self.trust_caller_xfcc:
            doors.add("http")
        return frozenset(doors)

    def check_binding(self, policy: Policy) -> None:
        """Raise ConfigError (``FILE:LINE``, at ``callers``) when the policy
        binds callers on a door that serves without a caller identity: every
        Check through it would be refused, or, were it let through, anyone
        could ask. Such a door must get an identity or be declared
        ``gateway_only`` (and fenced so only the gateway reaches it)."""
        callers = policy.callers
        if callers is None:
            return
        served = ("grpc", "http") if self.http_authz_address else ("grpc",)
        has_identity = self.caller_doors()
        flags = {"grpc": "--grpc-client-ca (with --grpc-tls-cert/--grpc-tls-key) or --trust-caller-xfcc",
                 "http": "--trust-caller-xfcc (authz behind its own sidecar)"}
        problems = [Problem(policy.file, callers.line,
                            f"'callers' binds the {door} door, but authz serves it without a caller identity: "
                            f"give {flags[door]}, or declare it '- gateway_only: [{door}]' and fence it so only "
                            f"the gateway reaches it (docs/security.md)")
                    for door in served if callers.binds(door) and door not in has_identity]
        if problems:
            raise ConfigError(problems)

    def worker_port(self, index: int) -> int | None:
        """The port worker ``index`` listens on besides the shared one."""
        return None if self.worker_ports is None else self.worker_ports + index

    def configure_logging(self) -> None:
        """Log lines as every authz process writes them (decision logs aside)."""
        logging.basicConfig(level=self.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
