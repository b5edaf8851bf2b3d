"""TLS in the Envoy ``authz envoy-config`` writes, and its flags.

To authz: ``--authz-tls-cert/--authz-tls-key/--authz-ca [--authz-san]``
present Envoy's client certificate to authz (or its sidecar), the caller of
the policy's ``callers:`` (docs/security.md 60).

From clients, at the edge (``--shape edge``), so the policy's
``certificates`` credential can read their certificates
(authz/identity/certificate.py, docs/policy.md "Client certificates"):

- ``--downstream-tls-cert/--downstream-tls-key/--downstream-client-ca``: the
  edge listener speaks TLS and requires a client certificate from that CA.
  The gRPC door gets it as ``source.certificate`` (``include_peer_certificate``);
  Envoy's HTTP ext_authz client sends headers only, so the edge also replaces
  ``x-forwarded-client-cert`` with its own element for the connection
  (``SANITIZE_SET`` with ``Cert``, ``Chain`` and ``URI``), which the HTTP door
  reads with ``serve --trust-xfcc``. Client-sent RFC 9440 ``client-cert``
  headers are removed before any filter: no hop in front of a TLS-terminating
  edge can have set them.
- ``--xfcc-from-hop``: the edge sits behind a hop that terminates the
  client's mTLS and writes the last ``x-forwarded-client-cert`` element
  (``SANITIZE_SET`` or ``APPEND_FORWARD``): the edge forwards the header as
  it came (``ALWAYS_FORWARD_ONLY``); only that hop may reach the edge.

Without either, Envoy's default (``SANITIZE``) drops every client-sent
``x-forwarded-client-cert`` before authz sees it.
"""

from __future__ import annotations

from typing import Any

from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation
from envoy_data_plane.envoy.config.core.v3 import DataSource, TransportSocket, TypedExtensionConfig
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManagerForwardClientCertDetails,
    HttpConnectionManagerSetCurrentClientCertDetails,
)
from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
    HeaderMutation as EarlyHeaderMutation,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CertificateValidationContext,
    CommonTlsContext,
    DownstreamTlsContext,
    SubjectAltNameMatcher,
    SubjectAltNameMatcherSanType,
    TlsCertificate,
    UpstreamTlsContext,
)
from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
from envoy_data_plane.google.protobuf import Any as AnyMessage

from authz.tools.tls_flags import TlsOptions, flags

__all__ = ["authz_tls", "connection_manager", "ext_authz", "flags", "listener_tls"]

#: The RFC 9440 headers, which no Envoy writes: dropped at a TLS-terminating edge.
RFC9440_HEADERS = ("client-cert", "client-cert-chain")


def terminates_tls(options: TlsOptions) -> bool:
    return options.downstream_tls_cert is not None


def listener_tls(options: TlsOptions) -> dict[str, Any]:
    """The edge filter chain's ``transport_socket``, when it terminates TLS."""
    if not terminates_tls(options):
        return {}
    context = DownstreamTlsContext(
        require_client_certificate=options.downstream_client_ca is not None,
        common_tls_context=CommonTlsContext(
            tls_certificates=[TlsCertificate(
                certificate_chain=DataSource(filename=options.downstream_tls_cert or ""),
                private_key=DataSource(filename=options.downstream_tls_key or ""),
            )],
            validation_context=CertificateValidationContext(
                trusted_ca=DataSource(filename=options.downstream_client_ca)) if options.downstream_client_ca else None,
            alpn_protocols=["h2", "http/1.1"],
        ),
    )
    return {"transport_socket": TransportSocket(name="envoy.transport_sockets.tls",
                                                typed_config=AnyMessage.pack(context))}


def connection_manager(options: TlsOptions) -> dict[str, Any]:
    """The edge connection manager's client-certificate fields."""
    if terminates_tls(options):
        strip = EarlyHeaderMutation(mutations=[HeaderMutation(remove=name) for name in RFC9440_HEADERS])
        return {
            "forward_client_cert_details": HttpConnectionManagerForwardClientCertDetails.SANITIZE_SET,
            "set_current_client_cert_details": HttpConnectionManagerSetCurrentClientCertDetails(
                cert=True, chain=True, uri=True),
            "early_header_mutation_extensions": [TypedExtensionConfig(
                name="envoy.http.early_header_mutation.header_mutation", typed_config=AnyMessage.pack(strip))],
        }
    if options.xfcc_from_hop:
        return {"forward_client_cert_details": HttpConnectionManagerForwardClientCertDetails.ALWAYS_FORWARD_ONLY}
    return {}


def ext_authz(options: TlsOptions) -> dict[str, Any]:
    """The ext_authz filter's: the peer's certificate for the gRPC door."""
    return {"include_peer_certificate": True} if terminates_tls(options) and options.protocol == "grpc" else {}


def authz_tls(options: TlsOptions) -> TransportSocket:
    """TLS to authz, presenting Envoy's client certificate: authz (or its
    sidecar) knows who asks, for the policy's ``callers:``."""
    validation = CertificateValidationContext(
        trusted_ca=DataSource(filename=options.authz_ca or ""),
        match_typed_subject_alt_names=[SubjectAltNameMatcher(
            san_type=SubjectAltNameMatcherSanType.URI, matcher=StringMatcher(exact=options.authz_san),
        )] if options.authz_san else [],
    )
    context = UpstreamTlsContext(common_tls_context=CommonTlsContext(
        tls_certificates=[TlsCertificate(
            certificate_chain=DataSource(filename=options.authz_tls_cert or ""),
            private_key=DataSource(filename=options.authz_tls_key or ""),
        )],
        validation_context=validation,
        alpn_protocols=["h2"] if options.protocol == "grpc" else ["http/1.1"],
    ))
    return TransportSocket(name="envoy.transport_sockets.tls", typed_config=AnyMessage.pack(context))
