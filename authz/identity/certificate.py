"""Client certificates as a credential (the policy's ``certificates`` section).

A certificate reaches authz from one of three sources, asked in the order
the policy's ``from`` lists them; the first present decides:

- ``peer``: Envoy's ``source.certificate`` (URL-encoded PEM of the client
  certificate of the connection Envoy received; the ext_authz filter sends
  it with ``include_peer_certificate: true``; gRPC door only);
- ``xfcc``: the ``Cert=`` (and ``Chain=``) of the ``x-forwarded-client-cert``
  element a hop authz trusts wrote (``Request.trusted_xfcc``, set by the
  door from ``serve --trust-xfcc``): never an element before it;
- ``client-cert``: RFC 9440 ``client-cert`` and ``client-cert-chain``
  (structured-field byte sequences of DER, ``:base64:``), only when a hop
  authz trusts sets them (``serve --trust-client-cert``).

A header source present on a request through a door that trusts no hop for
it is refused (``untrusted_certificate_header``), never ignored. The
certificate is verified with ``cryptography.x509.verification`` (chain to the
policy's CA bundle, validity at ``now``, extended key usage for client
authentication, a subjectAltName), then pinned when the policy lists pins.
Verified certificates are remembered in the engine's token cache, keyed by a
digest of the text as it came, so a repeated certificate costs a lookup.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from authz.errors import CertificateError, Reason
from authz.identity.base import Identity, TokenCache
from authz.identity.peer import PeerRoles
from authz.request import Request

XFCC = "x-forwarded-client-cert"
CLIENT_CERT = "client-cert"
CLIENT_CERT_CHAIN = "client-cert-chain"
SOURCES = ("peer", "xfcc", "client-cert")
SUBJECTS = ("uri_san", "dns_san", "subject_dn")
#: The longest certificate text read (a client certificate is ~1-2 KB; a chain a few).
MAX_TEXT = 32768
_DER = serialization.Encoding.DER


def _invalid(detail: str) -> CertificateError:
    return CertificateError(Reason.INVALID_CERTIFICATE, detail)


def split_quoted(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside double quotes, as Envoy
    writes ``x-forwarded-client-cert`` (a backslash escapes inside quotes);
    ValueError when a quote is left open."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted or escaped:
        raise ValueError("unbalanced quotes")
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def xfcc_certificate(value: str, element: int) -> tuple[str, str] | None:
    """(``Cert``, ``Chain``) of the element ``element`` (-1 the last) of an
    ``x-forwarded-client-cert`` value, URL-encoded PEM as Envoy writes them
    ("" for a missing ``Chain``); None when that element has no ``Cert``
    (or the header has fewer elements). Two ``Cert`` (or ``Chain``) in it
    is an invalid certificate: which one would count is ambiguous."""
    try:
        elements = split_quoted(value, ",")
        if len(elements) < -element:
            return None
        pairs = split_quoted(elements[element], ";")
    except ValueError as exc:
        raise _invalid(f"x-forwarded-client-cert does not parse: {exc}") from None
    found: dict[str, list[str]] = {"cert": [], "chain": []}
    for pair in pairs:
        key, _, raw = pair.strip().partition("=")
        if key.lower() in found:
            found[key.lower()].append(_unquote(raw))
    certs, chains = found["cert"], found["chain"]
    if len(certs) > 1 or len(chains) > 1:
        raise _invalid("the trusted x-forwarded-client-cert element holds two certificates")
    if not certs:
        return None
    return unquote(certs[0]), unquote(chains[0]) if chains else ""


def _sf_binary(item: str) -> bytes:
    """One structured-field byte sequence (RFC 8941: ``:base64:``)."""
    item = item.strip()
    if len(item) < 2 or item[0] != ":" or item[-1] != ":":
        raise _invalid("a client-cert header is not a byte sequence (:base64:)")
    try:
        return base64.b64decode(item[1:-1], validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("a client-cert header is not valid base64") from None


def _load_pem(text: str, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise _invalid(f"{what} is not PEM certificates") from None


def _load_der(data: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise _invalid(f"{what} is not a DER certificate") from None


def peer_certificate(path: str) -> str:
    """A PEM file as Envoy's ``source.certificate`` carries it (URL-encoded):
    ``authz check --client-cert``."""
    with open(path, "rb") as handle:
        return quote(handle.read().decode("ascii", "replace"))


def _names(sans: Any, kind: type) -> list[str]:
    return [] if sans is None else [str(value) for value in sans.get_values_for_type(kind)]


class CertificateSource:
    """Client certificates from the sources a policy names, verified against its CA bundle."""

    kind = "certificate"

    def __init__(self, sources: Sequence[str], anchors: Sequence[x509.Certificate], *, subject: str = "uri_san",
                 pins: frozenset[bytes] | None = None, roles: PeerRoles | None = None, line: int = 0) -> None:
        self.sources = tuple(sources)
        self.line = line  # of the policy's certificates section, for authz validate's warnings
        self.store = Store(list(anchors))
        self.subject = subject
        self.pins = pins
        self.roles = roles or PeerRoles()
        self.name = f"certificates (from {', '.join(self.sources)})"
        headers: list[str] = []
        if "xfcc" in self.sources:
            headers.append(XFCC)
        if "client-cert" in self.sources:
            headers += [CLIENT_CERT, CLIENT_CERT_CHAIN]
        #: Every header read (the decision cache keys on them; envoy-config forwards them).
        self.header_names: tuple[str, ...] = tuple(headers)
        self.header_name = headers[0] if headers else ""
        #: Request attributes read besides headers (:class:`authz.policy.Reads` paths).
        self.reads: frozenset[tuple[str, ...]] = frozenset({("source", "certificate")} if "peer" in self.sources
                                                           else ())

    def authenticate(self, request: Request, *, now: float, cache: TokenCache | None) -> Identity | None:
        """The identity of the first certificate present; None without one."""
        for source in self.sources:
            found = self._present(source, request)
            if found is not None:
                return self._identity(source, found, now, cache)
        return None

    # -- where a certificate is found ------------------------------------------

    def _present(self, source: str, request: Request) -> tuple[str, str] | None:
        """(certificate text, chain text) as the source carries them, or None."""
        if source == "peer":
            peer = request.source_certificate
            return (unquote(peer), "") if peer else None
        headers = request.headers
        if source == "xfcc":
            xfcc = headers.get(XFCC)
            if xfcc is None:
                return None
            if not request.trusted_xfcc:
                raise CertificateError(Reason.UNTRUSTED_CERTIFICATE_HEADER,
                                       "x-forwarded-client-cert, but no hop in front is trusted to set it")
            return xfcc_certificate(xfcc, request.trusted_xfcc)
        value, chain = headers.get(CLIENT_CERT), headers.get(CLIENT_CERT_CHAIN)
        if value is None and chain is None:
            return None
        if not request.trusted_client_cert:
            raise CertificateError(Reason.UNTRUSTED_CERTIFICATE_HEADER,
                                   "client-cert, but no hop in front is trusted to set it")
        if value is None:
            raise _invalid("client-cert-chain without client-cert")
        if "," in value:
            raise _invalid("two client-cert values where one is expected")
        return value, chain or ""

    # -- verification -------------------------------------------------------------

    def _identity(self, source: str, found: tuple[str, str], now: float, cache: TokenCache | None) -> Identity:
        text, chain = found
        if len(text) + len(chain) > MAX_TEXT:
            raise _invalid(f"the certificate and chain exceed {MAX_TEXT} characters")
        key = hashlib.sha256(f"certificate\0{source}\0{text}\0{chain}".encode("utf-8", "surrogatepass")).digest()
        epoch = 0
        if cache is not None:
            epoch = cache.epoch
            known = cache.get(key, now)
            if known is not None:
                return known
        identity = self._verify(source, text, chain, now)
        if cache is not None:
            cache.put(key, identity, now, epoch=epoch)
        return identity

    def _parse(self, source: str, text: str, chain: str) -> tuple[x509.Certificate, list[x509.Certificate]]:
        if source == "client-cert":
            leaf = _load_der(_sf_binary(text), "client-cert")
            intermediates = [_load_der(_sf_binary(item), "client-cert-chain") for item in chain.split(",")
                             if item.strip()] if chain else []
            return leaf, intermediates
        what = "source.certificate" if source == "peer" else "the x-forwarded-client-cert Cert"
        certificates = _load_pem(text, what)
        if len(certificates) != 1:
            raise _invalid(f"{what} holds {len(certificates)} certificates where one is expected")
        return certificates[0], _load_pem(chain, "the x-forwarded-client-cert Chain") if chain else []

    def _verify(self, source: str, text: str, chain: str, now: float) -> Identity:
        leaf, intermediates = self._parse(source, text, chain)
        at = datetime.datetime.fromtimestamp(now, datetime.UTC)
        if at < leaf.not_valid_before_utc:
            raise CertificateError(Reason.EXPIRED_CERTIFICATE, "the certificate is not valid yet")
        if at >= leaf.not_valid_after_utc:
            raise CertificateError(Reason.EXPIRED_CERTIFICATE, "the certificate has expired")
        der = leaf.public_bytes(_DER)
        fingerprint = hashlib.sha256(der).digest()
        try:
            usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        except ValueError:
            raise _invalid("the certificate's extensions do not parse") from None
        if usage is not None and not usage.digital_signature:
            raise _invalid("the certificate's key usage does not allow digital signatures (client authentication)")
        verifier = PolicyBuilder().store(self.store).time(at).build_client_verifier()
        try:
            verifier.verify(leaf, intermediates)
        except VerificationError as exc:
            message = str(exc)
            if "EKU" in message or "subjectAltName" in message:
                raise _invalid(f"not a client certificate: {message}") from None
            raise CertificateError(Reason.UNTRUSTED_CERTIFICATE, f"does not chain to the policy's CA: {message}") \
                from None
        if self.pins is not None and fingerprint not in self.pins:
            raise CertificateError(Reason.UNTRUSTED_CERTIFICATE, "the certificate is not one the policy pins")
        return self._make_identity(leaf, fingerprint, source)

    def _make_identity(self, leaf: x509.Certificate, fingerprint: bytes, source: str) -> Identity:
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            sans = None
        fields: dict[str, Any] = {
            "uri_sans": _names(sans, x509.UniformResourceIdentifier),
            "dns_sans": _names(sans, x509.DNSName),
            "email_sans": _names(sans, x509.RFC822Name),
            "subject_dn": leaf.subject.rfc4514_string(),
            "issuer_dn": leaf.issuer.rfc4514_string(),
            "serial": format(leaf.serial_number, "x"),
            "fingerprint": fingerprint.hex(),
            "source": source,
        }
        if self.subject == "subject_dn":
            subject = fields["subject_dn"]
            if not subject:
                raise _invalid("the certificate's subject DN is empty")
        else:
            names = fields["uri_sans" if self.subject == "uri_san" else "dns_sans"]
            if len(names) != 1:
                kind = "URI" if self.subject == "uri_san" else "DNS"
                raise _invalid(f"the certificate has {len(names)} {kind} SANs where the subject needs exactly one")
            subject = names[0]
        expires = leaf.not_valid_after_utc.timestamp()
        return Identity(kind="certificate", subject=subject, issuer=fields["issuer_dn"], source="certificate",
                        roles=self.roles.roles_for(subject) or frozenset(), claims=fields,
                        expires_at=expires, credential_exp=expires)
