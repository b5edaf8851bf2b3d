"""Who sent a Check: the caller's identity, for the policy's ``callers:``.

Two sources, chosen by ``authz serve``'s flags (never both):

- ``--grpc-tls-cert/--grpc-tls-key/--grpc-client-ca``: the gRPC door speaks
  TLS and requires a client certificate from that CA; the caller is the
  certificate's URI SAN (its SPIFFE ID), which gRPC verified in the
  handshake. :class:`TlsFiles` makes the server credentials and reloads the
  three files when they change (a new handshake uses the new files; calls on
  open connections go on).
- ``--trust-caller-xfcc``: authz runs behind its own sidecar, which
  terminates mTLS and appends one element to ``x-forwarded-client-cert`` for
  the hop it terminated (``By=`` authz's own identity, ``URI=`` the caller's).
  The caller is the ``URI`` of that last element; anything before it was
  written by someone else and is never read here.

A reader returns "" when there is no identity: a bound door then refuses
the Check (``untrusted_caller``), never treats it as any caller.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authz.wire.forwarded import XFCC, client_cert_uri
from authz.wire.http_call import Call

log = logging.getLogger("authz.callers")

#: gRPC's auth-context property holding the peer's SPIFFE ID (set when its
#: certificate has exactly one URI SAN and it is a valid SPIFFE ID).
SPIFFE_PROPERTY = "peer_spiffe_id"

#: A function from (the door's parsed message, the gRPC call context or None) to the caller.
CallerReader = Callable[[Any, Any], str]


class CertificateCallers:
    """The caller of a gRPC call over mTLS: its certificate's SPIFFE ID, as
    gRPC verified it in the handshake (the ``peer_spiffe_id`` property: the
    certificate's one URI SAN, a valid SPIFFE ID; none when it has several).

    Reading gRPC's whole auth context costs ~6 µs a call (it copies the
    certificate's PEM); its peer identities (the certificate's SANs) cost
    0.3 µs. So the SPIFFE ID is read once per set of SANs and remembered:
    a certificate with the same SANs, issued by the same trusted CA, names
    the same workload."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._known: dict[tuple[bytes, ...], str] = {}

    def __call__(self, _message: Any, context: Any) -> str:
        identities = context.peer_identities()
        if not identities:
            return ""
        sans = tuple(identities)
        caller = self._known.get(sans)
        if caller is None:
            values = context.auth_context().get(SPIFFE_PROPERTY)
            caller = values[0].decode("utf-8", "replace") if values and len(values) == 1 else ""
            if len(self._known) >= self.size:
                self._known.clear()
            self._known[sans] = caller
        return caller


def grpc_xfcc_caller(_message: Any, context: Any) -> str:
    """The caller of a gRPC call that authz's own sidecar forwarded: the
    ``URI`` of the last element of its ``x-forwarded-client-cert``."""
    found = ""
    seen = False
    for key, value in context.invocation_metadata():
        if key == XFCC:
            if seen:  # two headers: not what one sidecar writes
                return ""
            found, seen = value, True
    return client_cert_uri(found)


def http_xfcc_caller(call: Call, _context: Any) -> str:
    """The caller of an HTTP-door call that authz's own sidecar forwarded."""
    value = call.raw.get(XFCC.encode("ascii"))
    return client_cert_uri(value.decode("utf-8")) if value else ""


def readers(*, client_ca: bool, trust_caller_xfcc: bool, http_door: bool) -> dict[str, CallerReader]:
    """The caller reader of each door that has a caller identity."""
    found: dict[str, CallerReader] = {}
    if client_ca:
        found["grpc"] = CertificateCallers()
    if trust_caller_xfcc:
        found["grpc"] = grpc_xfcc_caller
        if http_door:
            found["http"] = http_xfcc_caller
    return found


@dataclass(frozen=True)
class TlsFiles:
    """The gRPC door's certificate chain, key and client CA files, read
    again whenever their content changes (checked at each new handshake,
    by size and modification time first)."""

    cert: str
    key: str
    client_ca: str | None = None

    def _stat(self) -> tuple[Any, ...]:
        stamps = []
        for path in (self.cert, self.key, self.client_ca):
            if path is not None:
                info = os.stat(path)
                stamps.append((info.st_mtime_ns, info.st_size, info.st_ino))
        return tuple(stamps)

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """(chain, key, client CA) as PEM; ValueError when the key does not
        belong to the chain's first certificate (a rotation half written)."""
        with open(self.cert, "rb") as f:
            chain = f.read()
        with open(self.key, "rb") as f:
            key = f.read()
        ca = None
        if self.client_ca is not None:
            with open(self.client_ca, "rb") as f:
                ca = f.read()
            x509.load_pem_x509_certificates(ca)
        certificate = x509.load_pem_x509_certificate(chain)
        private = serialization.load_pem_private_key(key, password=None)
        raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if certificate.public_key().public_bytes(*raw) != private.public_key().public_bytes(*raw):
            raise ValueError(f"{self.key} is not the key of the certificate in {self.cert}")
        return chain, key, ca

    def credentials(self) -> Any:
        """gRPC server credentials that use the files as they are at each new
        handshake, requiring a client certificate when a client CA is given.
        One per listening port: gRPC asks each port's credentials for the
        files apart, and each must learn of a change."""
        import grpc

        stamp = self._stat()  # before reading: a change while reading is seen at the next handshake
        chain, key, ca = self.read()
        seen: dict[str, Any] = {"stamp": stamp, "digest": hashlib.sha256(chain + key + (ca or b"")).digest()}
        initial = grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

        def fetch() -> Any:
            try:
                stamp = self._stat()
                if stamp == seen["stamp"]:
                    return None
                chain, key, ca = self.read()
            except (OSError, ValueError) as exc:
                log.warning("gRPC TLS files changed but cannot be used yet (the old ones stay): %s", exc)
                return None
            seen["stamp"] = stamp
            digest = hashlib.sha256(chain + key + (ca or b"")).digest()
            if digest == seen["digest"]:
                return None
            seen["digest"] = digest
            log.info("gRPC TLS files changed: new handshakes use them")
            return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

        return grpc.dynamic_ssl_server_credentials(initial, fetch,
                                                   require_client_authentication=self.client_ca is not None)
