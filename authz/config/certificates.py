"""The policy's ``certificates`` section: client certificates as a credential
(:class:`authz.identity.certificate.CertificateSource`), registered in
:data:`authz.config.compile.CREDENTIAL_SECTIONS`."""

from __future__ import annotations

import functools
import re
from typing import Any

from cryptography import x509

from authz import matchers
from authz.config.compiling import Compiling
from authz.config.schema import CertificatesSpec
from authz.config.source import Path
from authz.identity.certificate import CertificateSource
from authz.identity.credential import Credential
from authz.identity.peer import PeerRoles

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def compile_certificates(compiler: Compiling, config: CertificatesSpec, role_names: set[str]) -> list[Credential]:
    """The ``certificates`` section's source (none, with problems, when it is wrong)."""
    path: Path = ("certificates",)
    ok = True
    if not config.from_:
        compiler.problem((*path, "from"), "an empty list reads no certificate; omit the section instead")
        ok = False
    seen: set[str] = set()
    for i, where in enumerate(config.from_):
        compiler.once(seen, where, (*path, "from", i), f"{where!r} is listed twice")
    pins = None
    if config.pins is not None:
        pins = set()
        for i, pin in enumerate(config.pins):
            if not _SHA256_HEX.fullmatch(pin.lower().replace(":", "")):
                compiler.problem((*path, "pins", i), "a pin is the SHA-256 of the certificate's DER: 64 hex digits")
                ok = False
            else:
                pins.add(bytes.fromhex(pin.lower().replace(":", "")))
        if not config.pins:
            compiler.problem((*path, "pins"), "an empty list pins no certificate; omit the field to pin none")
            ok = False
    for glob, granted in config.roles.items():
        if not glob:
            compiler.problem((*path, "roles"), "empty subject pattern")
            ok = False
        elif compiler.attempt((*path, "roles", glob), functools.partial(matchers.glob_regex, glob)) is None:
            ok = False
        for i, role in enumerate(granted):
            if role not in role_names:
                compiler.problem((*path, "roles", glob, i), f"unknown role {role!r}")
    anchors = compiler.key_file(config.ca_file, (*path, "ca_file"), _ca_bundle)
    if anchors is None or not ok:
        return []
    return [CertificateSource(config.from_, anchors, subject=config.subject,
                              pins=frozenset(pins) if pins is not None else None,
                              roles=PeerRoles.compile({g: frozenset(r) for g, r in config.roles.items()}),
                              line=compiler.located.line(path, key=True))]


def _ca_bundle(data: bytes) -> list[Any]:
    try:
        anchors = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError("not a PEM bundle of CA certificates") from None
    return anchors


