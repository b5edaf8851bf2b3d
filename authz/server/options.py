"""The options of ``authz serve``: one frozen object, built once from the
command line and handed unchanged to the supervisor and, pickled, to every
worker process. Its field names are the flags' names, and its defaults are
the flags' (``authz serve --help``), so it has none of its own. What differs
between workers (the index, the worker's own port) is passed next to it."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, fields

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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeOptions:
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls)})

    def http_door(self) -> HttpDoorSettings:
        return HttpDoorSettings(self.http_authz_prefix, self.trusted_forwarded_hops, self.trust_xfcc)

    def worker_port(self, index: int) -> int | None:
        """The port worker ``index`` listens on besides the shared one."""
        return None if self.worker_ports is None else self.worker_ports + index

    def configure_logging(self) -> None:
        """Log lines as every authz process writes them (decision logs aside)."""
        logging.basicConfig(level=self.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
