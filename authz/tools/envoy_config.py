"""``authz envoy-config``: Envoy bootstraps for the two places authz sits.

Built from the typed Envoy config classes of ``envoy-data-plane``, so every
field name and type is checked as the config is built, then written as YAML:

- ``edge``: what Emissary / Edge Stack generates for an ``AuthService`` with
  ``proto: grpc, protocol_version: v3``: the ext_authz filter with a gRPC
  service, ``transport_api_version: V3``, ``clear_route_cache``, a timeout
  and ``failure_mode_allow: false``; a route with ``bypass_auth`` (ext_authz
  disabled) and one with ``auth_context_extensions`` (``context_extensions``).
- ``sidecar``: what Istio generates for an AuthorizationPolicy with
  ``action: CUSTOM``: an mTLS inbound listener (so ``source.principal`` is the
  caller's SPIFFE ID), a shadow RBAC filter marking the requests the policy
  covers, and ext_authz gated on that mark by ``filter_enabled_metadata``.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapStaticResources
from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType, ClusterLbPolicy
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    ApiVersion,
    DataSource,
    GrpcService,
    GrpcServiceEnvoyGrpc,
    Http1ProtocolOptions,
    Http2ProtocolOptions,
    HttpProtocolOptionsHeadersWithUnderscoresAction,
    HttpUri,
    SocketAddress,
    TransportSocket,
)
from envoy_data_plane.envoy.config.core.v3 import HttpProtocolOptions as CoreHttpProtocolOptions
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.rbac.v3 import Permission, Principal, Rbac, RbacAction
from envoy_data_plane.envoy.config.rbac.v3 import Policy as RbacPolicy
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import (
    AuthorizationResponse,
    CheckSettings,
    ExtAuthz,
    ExtAuthzPerRoute,
    HttpService,
)
from envoy_data_plane.envoy.extensions.filters.http.rbac.v3 import Rbac as RbacFilter
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
    HttpConnectionManagerForwardClientCertDetails,
    HttpConnectionManagerSetCurrentClientCertDetails,
    HttpFilter,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
    CertificateValidationContext,
    CommonTlsContext,
    DownstreamTlsContext,
    SubjectAltNameMatcher,
    SubjectAltNameMatcherSanType,
    TlsCertificate,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type.matcher.v3 import (
    ListStringMatcher,
    MetadataMatcher,
    MetadataMatcherPathSegment,
    PathMatcher,
    RegexMatcher,
    StringMatcher,
    ValueMatcher,
)
from envoy_data_plane.google.protobuf import Any as AnyMessage

from authz.tools import envoy_metadata
from authz.tools import envoy_resilience as resilience
from authz.tools import envoy_tls as tls
from authz.tools.envoy_body import BodyBuffering, body_flags
from authz.tools.envoy_metadata import LocalLimit
from authz.tools.policy_headers import default_owned, denial_headers

EXT_AUTHZ = "envoy.filters.http.ext_authz"
RBAC = "envoy.filters.http.rbac"
ISTIO_SHADOW_PREFIX = "istio_ext_authz_"
ISTIO_POLICY_PREFIX = "istio-ext-authz"


@dataclass
class EnvoyOptions:
    shape: str  # "edge" | "sidecar"
    authz: Sequence[str]  # HOST:PORT of authz; several = one endpoint each (e.g. --worker-ports)
    listen: str = "0.0.0.0:8080"
    upstream: str = "127.0.0.1:8000"
    admin: str = "127.0.0.1:9901"
    timeout: float = 1.0
    # sidecar only: the workload's certificate and the mesh CA (PEM files).
    cert_chain: str = "/etc/certs/cert-chain.pem"
    private_key: str = "/etc/certs/key.pem"
    ca_cert: str = "/etc/certs/root-cert.pem"
    trust_domain: str = "cluster.local"
    # The AuthorizationPolicy's rules[].to.operation.paths (prefixes).
    protected_prefixes: Sequence[str] = ("/",)
    context_extensions: dict[str, str] = field(default_factory=lambda: {"virtual_host": "edge"})
    bypass_prefix: str = "/.well-known/"
    # Answer 200 from Envoy itself instead of routing to the upstream (for
    # measuring what the authorization step costs, nothing else).
    direct_response: bool = False
    # Which door of authz Envoy calls: "grpc" (grpc_service) or "http" (http_service).
    protocol: str = "grpc"
    # http: the path prefix of authz's HTTP door (authz serve --http-authz-prefix).
    path_prefix: str = "/authz"
    # http: the headers authz may set for the upstream (a policy's response headers
    # and identity-token header), copied from its 200.
    upstream_headers: Sequence[str] = ("x-user-id", "x-identity-token")
    # What routes checks around a lost authz process (authz.tools.envoy_resilience):
    # all of them unless the fault benchmark measures fewer.
    resilience: Sequence[str] = resilience.MEASURES
    # What Envoy does with authz's answer (authz/tools/envoy_metadata.py): a
    # JSON access log file, the metadata keys it logs (and, http, takes from
    # authz's headers) besides reason/rule/issuer, the headers authz may send
    # the client on allow (http), rate-limit descriptors made of metadata keys
    # (one tuple of keys per descriptor), and local_ratelimit buckets for them.
    access_log: str | None = None
    metadata_keys: Sequence[str] = ()
    client_headers: Sequence[str] = ()
    # http: the headers a policy's own denials send the client (deny_with), passed beside DENIAL_HEADERS.
    denial_headers: Sequence[str] = ()
    rate_limit_by: Sequence[Sequence[str]] = ()
    local_rate_limits: Sequence[LocalLimit] = ()
    # Every header the policy owns (authz.tools.policy_headers): stripped from the client's request on routes
    # where no Check runs (the edge's bypass route, the sidecar's paths outside protected_prefixes). None: the
    # upstream headers, their twins and the metadata keys.
    owned_headers: Sequence[str] | None = None
    # The policy the lists were read from (authz envoy-config --config), for the header comment.
    policy: str | None = None

    def owned(self) -> list[str]:
        if self.owned_headers is not None:
            return list(self.owned_headers)
        return list(default_owned(tuple(self.upstream_headers), tuple(envoy_metadata.metadata_keys(self))))
    # The client certificate Envoy presents to authz (authz serve --grpc-client-ca,
    # or authz's own sidecar with --trust-caller-xfcc), the CA authz's certificate
    # must chain to, and authz's SPIFFE ID (its URI SAN) when it is to be checked.
    authz_tls_cert: str | None = None
    authz_tls_key: str | None = None
    authz_ca: str | None = None
    authz_san: str | None = None
    # edge: clients' certificates (authz.tools.envoy_tls): TLS with a client CA, or behind an XFCC hop.
    downstream_tls_cert: str | None = None
    downstream_tls_key: str | None = None
    downstream_client_ca: str | None = None
    xfcc_from_hop: bool = False
    body: BodyBuffering | None = None  # request bodies buffered for the Check (authz.tools.envoy_body)


def _address(host_port: str) -> Address:
    host, _, port = host_port.rpartition(":")
    return Address(socket_address=SocketAddress(address=host.strip("[]"), port_value=int(port)))


def _duration(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds)


def _cluster(name: str, endpoints: Sequence[str], *, http2: bool, connect_timeout: datetime.timedelta | None = None,
             **extra: Any) -> Cluster:
    protocol = (
        HttpProtocolOptionsExplicitHttpConfig(http2_protocol_options=Http2ProtocolOptions())
        if http2 else HttpProtocolOptionsExplicitHttpConfig(http_protocol_options=Http1ProtocolOptions())
    )
    options = HttpProtocolOptions(explicit_http_config=protocol)
    return Cluster(
        name=name,
        type=ClusterDiscoveryType.STATIC,
        connect_timeout=connect_timeout or _duration(1.0),
        lb_policy=ClusterLbPolicy.LEAST_REQUEST if len(endpoints) > 1 else ClusterLbPolicy.ROUND_ROBIN,
        typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": AnyMessage.pack(options),
        },
        load_assignment=ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[LocalityLbEndpoints(lb_endpoints=[
                LbEndpoint(endpoint=Endpoint(address=_address(e))) for e in endpoints
            ])],
        ),
        **extra,
    )


def _authz_cluster(options: EnvoyOptions) -> Cluster:
    """The cluster of authz's endpoints, routing around one that is lost."""
    measures = options.resilience
    return _cluster(
        "authz", options.authz, http2=options.protocol == "grpc",
        connect_timeout=resilience.connect_timeout(options.timeout),
        circuit_breakers=resilience.circuit_breakers(measures),
        outlier_detection=resilience.outlier_detection(measures),
        health_checks=resilience.health_checks(options.protocol, measures),
        **({"transport_socket": tls.authz_tls(options)} if options.authz_tls_cert else {}),
    )


def _exact(names: Sequence[str]) -> ListStringMatcher:
    return ListStringMatcher(patterns=[StringMatcher(exact=name) for name in names])


def _ext_authz(options: EnvoyOptions, **extra: Any) -> ExtAuthz:
    extra.update(options.body.envoy(options.protocol) if options.body is not None else {})
    if options.protocol == "http":
        service = HttpService(
            server_uri=HttpUri(uri="http://authz", cluster="authz", timeout=_duration(options.timeout)),
            path_prefix=options.path_prefix,
            retry_policy=resilience.retry_policy("http", options.resilience, options.timeout),
            authorization_response=AuthorizationResponse(
                # Copied onto the upstream request, replacing client-sent copies;
                # the answer removes the owned headers it does not set.
                **({"allowed_upstream_headers": _exact(options.upstream_headers)} if options.upstream_headers else {}),
                allowed_client_headers=_exact(denial_headers(options.denial_headers)),
                **envoy_metadata.authorization_response(options),
            ),
        )
        return ExtAuthz(
            http_service=service,
            # Every request header, as the gRPC door receives them.
            allowed_headers=ListStringMatcher(patterns=[StringMatcher(safe_regex=RegexMatcher(regex=".*"))]),
            transport_api_version=ApiVersion.V3,
            failure_mode_allow=False,
            clear_route_cache=True,
            **extra,
        )
    return ExtAuthz(
        grpc_service=GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name="authz"),
                                 timeout=_duration(options.timeout),
                                 retry_policy=resilience.retry_policy("grpc", options.resilience, options.timeout)),
        transport_api_version=ApiVersion.V3,
        failure_mode_allow=False,
        clear_route_cache=True,
        **extra,
    )


def _per_route(**kwargs: Any) -> dict[str, AnyMessage]:
    return {EXT_AUTHZ: AnyMessage.pack(ExtAuthzPerRoute(**kwargs))}


def _hcm(options: EnvoyOptions, filters: list[HttpFilter], routes: list[Route], **extra: Any) -> Filter:
    manager = HttpConnectionManager(
        stat_prefix="ingress_http" if options.shape == "edge" else "inbound_http",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        normalize_path=True,
        merge_slashes=True,
        use_remote_address=True,
        # A header spelt with underscores (x_user_id) is dropped before any
        # filter: upstreams that read headers through CGI names (WSGI, Rack)
        # take it for the header authz sets (authz removes the twins too).
        common_http_protocol_options=CoreHttpProtocolOptions(
            headers_with_underscores_action=HttpProtocolOptionsHeadersWithUnderscoresAction.DROP_HEADER),
        route_config=RouteConfiguration(
            name="local",
            virtual_hosts=[VirtualHost(name="all", domains=["*"], routes=routes)],
        ),
        http_filters=[*filters, *envoy_metadata.filters_after_authz(options),
                      HttpFilter(name="envoy.filters.http.router", typed_config=AnyMessage.pack(Router()))],
        access_log=envoy_metadata.access_logs(options),
        **extra,
    )
    return Filter(name="envoy.filters.network.http_connection_manager", typed_config=AnyMessage.pack(manager))


def _unchecked(options: EnvoyOptions, prefix: str, **extra: Any) -> Route:
    """A route where no Check runs: no answer sets or removes the policy's
    headers there, so the route strips every client-sent copy itself (after
    every filter: nothing of authz's is on these requests to lose)."""
    return _to_upstream(options, prefix, request_headers_to_remove=options.owned(), **extra)


def _to_upstream(options: EnvoyOptions, prefix: str, **extra: Any) -> Route:
    if options.direct_response:
        action = DirectResponseAction(status=200, body=DataSource(inline_string="ok\n"))
        return Route(match=RouteMatch(prefix=prefix), direct_response=action, **extra)
    return Route(match=RouteMatch(prefix=prefix),
                 route=RouteAction(cluster="upstream", rate_limits=envoy_metadata.rate_limits(options)), **extra)


def edge(options: EnvoyOptions) -> Bootstrap:
    ext_authz = HttpFilter(name=EXT_AUTHZ, typed_config=AnyMessage.pack(
        _ext_authz(options, **tls.ext_authz(options))))
    routes = [
        # Emissary Mapping with bypass_auth: true
        _unchecked(options, options.bypass_prefix, typed_per_filter_config=_per_route(disabled=True)),
        # Emissary Mapping with auth_context_extensions: {...}
        _to_upstream(options, "/", typed_per_filter_config=_per_route(
            check_settings=CheckSettings(context_extensions=dict(options.context_extensions)))),
    ]
    listener = Listener(
        name="edge",
        address=_address(options.listen),
        filter_chains=[FilterChain(filters=[_hcm(options, [ext_authz], routes, **tls.connection_manager(options))],
                                   **tls.listener_tls(options))],
    )
    return _bootstrap(options, listener)


def sidecar(options: EnvoyOptions) -> Bootstrap:
    shadow = RbacFilter(
        shadow_rules=Rbac(action=RbacAction.DENY, policies={
            f"{ISTIO_POLICY_PREFIX}-ns[default]-policy[ext-authz]-rule[{index}]": RbacPolicy(
                permissions=[Permission(url_path=PathMatcher(path=StringMatcher(prefix=prefix)))],
                principals=[Principal(any=True)],
            )
            for index, prefix in enumerate(options.protected_prefixes)
        }),
        shadow_rules_stat_prefix=ISTIO_SHADOW_PREFIX,
    )
    ext_authz = _ext_authz(
        options,
        **({"include_peer_certificate": True} if options.protocol == "grpc" else {}),
        filter_enabled_metadata=MetadataMatcher(
            filter=RBAC,
            path=[MetadataMatcherPathSegment(key=f"{ISTIO_SHADOW_PREFIX}shadow_effective_policy_id")],
            value=ValueMatcher(string_match=StringMatcher(prefix=ISTIO_POLICY_PREFIX)),
        ),
    )
    filters = [
        HttpFilter(name=RBAC, typed_config=AnyMessage.pack(shadow)),
        HttpFilter(name=EXT_AUTHZ, typed_config=AnyMessage.pack(ext_authz)),
    ]
    tls = DownstreamTlsContext(
        require_client_certificate=True,
        common_tls_context=CommonTlsContext(
            tls_certificates=[TlsCertificate(
                certificate_chain=DataSource(filename=options.cert_chain),
                private_key=DataSource(filename=options.private_key),
            )],
            validation_context=CertificateValidationContext(
                trusted_ca=DataSource(filename=options.ca_cert),
                match_typed_subject_alt_names=[SubjectAltNameMatcher(
                    san_type=SubjectAltNameMatcherSanType.URI,
                    matcher=StringMatcher(prefix=f"spiffe://{options.trust_domain}/"),
                )],
            ),
            alpn_protocols=["h2", "http/1.1"],
        ),
    )
    # Paths the CUSTOM policy does not cover skip ext_authz (the shadow
    # rules mark none of them): their routes strip the policy's headers.
    covered = list(dict.fromkeys(options.protected_prefixes))
    routes = [_to_upstream(options, "/")] if "/" in covered else [
        *(_to_upstream(options, prefix) for prefix in covered), _unchecked(options, "/")]
    hcm = _hcm(
        options, filters, routes,
        # The HTTP door reads the caller's SPIFFE ID from this header: Envoy
        # replaces whatever the client sent (SANITIZE_SET). The gRPC door gets
        # it as source.principal and needs no header; Istio forwards.
        forward_client_cert_details=(HttpConnectionManagerForwardClientCertDetails.SANITIZE_SET
                                     if options.protocol == "http"
                                     else HttpConnectionManagerForwardClientCertDetails.APPEND_FORWARD),
        set_current_client_cert_details=HttpConnectionManagerSetCurrentClientCertDetails(uri=True),
    )
    listener = Listener(
        name="virtualInbound",
        address=_address(options.listen),
        filter_chains=[FilterChain(
            filters=[hcm],
            transport_socket=TransportSocket(name="envoy.transport_sockets.tls", typed_config=AnyMessage.pack(tls)),
        )],
    )
    return _bootstrap(options, listener)


def _bootstrap(options: EnvoyOptions, listener: Listener) -> Bootstrap:
    authz = _authz_cluster(options)
    return Bootstrap(
        admin=Admin(address=_address(options.admin)),
        static_resources=BootstrapStaticResources(
            listeners=[listener],
            clusters=[authz, _cluster("upstream", [options.upstream], http2=False)],
        ),
    )


def render(options: EnvoyOptions) -> str:
    bootstrap = edge(options) if options.shape == "edge" else sidecar(options)
    document = bootstrap.to_dict()
    _explicit_fail_closed(document)
    resilience.fix_json_names(document)
    header = (
        f"# Envoy bootstrap, shape '{options.shape}', generated by: authz envoy-config "
        f"--shape {options.shape} --authz {','.join(options.authz)}"
        + (f" --protocol http --path-prefix {options.path_prefix}" if options.protocol == "http" else "")
        + envoy_metadata.flags(options) + tls.flags(options)
        + (f" --config {options.policy}" if options.policy else "") + body_flags(options.body) + "\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _explicit_fail_closed(node: Any) -> None:
    """proto3 JSON drops false booleans; ``failureModeAllow: false`` is written
    out anyway, so readers of the config see that authz fails closed."""
    if isinstance(node, dict):
        if node.get("@type", "").endswith("ext_authz.v3.ExtAuthz"):
            node["failureModeAllow"] = False
            node.get("withRequestBody", {})["allowPartialMessage"] = False  # said too: Envoy answers 413 itself
        for value in node.values():
            _explicit_fail_closed(value)
    elif isinstance(node, list):
        for value in node:
            _explicit_fail_closed(value)
