"""The stand-in CA of ``authz test``: client certificates minted for cases.

A policy's ``certificates`` section trusts its ``ca_file``, whose private
key ``authz test`` does not hold. :func:`stand_in_certificates` replaces the
section's :class:`authz.identity.certificate.CertificateSource` with one
that trusts a CA made for the run (and only it), everything else as the
policy has it: the same sources, subject kind and roles. The verification
(chain, validity at ``--now``, key usage, subjectAltName) and the identity
mapping are the server's own code, untouched. A policy that pins
certificates by SHA-256 is not stood in: a certificate minted for the run
can never be one it pins, so a case giving one is refused
(:mod:`authz.testing.cases`; docs/security.md 59).
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authz.identity.certificate import CLIENT_CERT, XFCC, CertificateSource
from authz.identity.credential import Credential

_PEM = serialization.Encoding.PEM
#: The stand-in CA is valid at any ``--now`` a case may give.
_CA_FROM = datetime.datetime(1971, 1, 1, tzinfo=datetime.UTC)
_CA_UNTIL = datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Minted:
    """A case's client certificate, as its source carries it."""

    #: Envoy's ``source.certificate`` (URL-encoded PEM), or "".
    peer: str
    #: headers a trusted hop would have set, with the trust the request needs
    headers: dict[str, str]
    trusted_xfcc: int
    trusted_client_cert: bool


class StandInCA:
    """A CA made for the run (EC P-256) that mints client certificates."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authz test stand-in CA")])
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_CA_FROM).not_valid_after(_CA_UNTIL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def mint(self, *, subject: str, uris: Sequence[str], dns: Sequence[str], emails: Sequence[str],
             not_before: float, not_after: float, client_auth: bool) -> x509.Certificate:
        """A client certificate with these names, valid from ``not_before``
        to ``not_after`` (Unix seconds); ``client_auth`` false: its extended
        key usage is server authentication only."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        names += [x509.RFC822Name(e) for e in emails]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [ExtendedKeyUsageOID.SERVER_AUTH]
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string(subject))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.fromtimestamp(not_before, datetime.UTC))
            .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.UTC))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if names:  # none: the verifier refuses it (no subjectAltName), as the server would
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not subject)
        return builder.sign(self.key, hashes.SHA256())


def present(source: CertificateSource, certificate: x509.Certificate) -> Minted:
    """``certificate`` the way ``source`` reads one first: Envoy's
    ``source.certificate``; or the element a trusted hop wrote in
    ``x-forwarded-client-cert``; or RFC 9440 ``client-cert`` from a trusted hop
    (as ``serve --trust-xfcc`` / ``--trust-client-cert`` would trust it)."""
    first = source.sources[0]
    pem = certificate.public_bytes(_PEM).decode("ascii")
    if first == "peer":
        return Minted(quote(pem), {}, 0, False)
    if first == "xfcc":
        return Minted("", {XFCC: f'Cert="{quote(pem)}"'}, -1, False)
    der = certificate.public_bytes(serialization.Encoding.DER)
    return Minted("", {CLIENT_CERT: f":{base64.b64encode(der).decode('ascii')}:"}, 0, True)


def stand_in_certificates(sources: Sequence[Credential],
                          ) -> tuple[list[Credential], CertificateSource | None, StandInCA | None]:
    """``sources`` with the (unpinned) certificates source trusting a
    stand-in CA alone; that source and the CA (None without one)."""
    replaced: list[Credential] = []
    found: CertificateSource | None = None
    ca: StandInCA | None = None
    for source in sources:
        if isinstance(source, CertificateSource) and source.pins is None:
            ca = StandInCA()
            found = CertificateSource(source.sources, [ca.cert], subject=source.subject, roles=source.roles,
                                      line=source.line)
            replaced.append(found)
        else:
            replaced.append(source)
    return replaced, found, ca
