"""``authz envoy-config --format istio|emissary``: what mesh and gateway
users write instead of an Envoy bootstrap, with the header lists read from
the policy (:class:`authz.tools.policy_headers.PolicyHeaders`).

- ``istio``: the ``meshConfig.extensionProviders`` entry: ``envoyExtAuthzGrpc``
  (``--protocol grpc``: Envoy sends every header and applies authz's answer
  as it is) or ``envoyExtAuthzHttp`` (``--protocol http``): the headers
  authz reads (``includeRequestHeadersInCheck``), those it sets for the
  upstream (``headersToUpstreamOnAllow``: copied, replacing client-sent
  copies), and those the client gets (``headersToDownstreamOnDeny``,
  ``headersToDownstreamOnAllow``).
- ``emissary``: the ``AuthService``: over gRPC, or ``proto: http`` with
  ``allowed_request_headers`` (what authz reads) and
  ``allowed_authorization_headers`` (what it sets, and its denials' headers).

Both are checked against the schemas vendored in tests/fixtures/crds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from authz.tools.policy_headers import DENIAL_HEADERS

if TYPE_CHECKING:
    from authz.tools.envoy_config import EnvoyOptions
    from authz.tools.policy_headers import PolicyHeaders

#: Istio's provider names in deploy/istio/mesh (an AuthorizationPolicy's provider.name).
ISTIO_NAMES = {"grpc": "authz", "http": "authz-http"}
#: Headers Emissary copies from an authz answer without being told.
EMISSARY_DEFAULT_AUTHORIZATION_HEADERS = ("location", "authorization", "proxy-authenticate", "set-cookie",
                                          "www-authenticate")


def _service(options: EnvoyOptions) -> tuple[str, int]:
    if len(options.authz) != 1:
        raise ValueError("--format istio|emissary takes one --authz HOST:PORT (the authz Service)")
    host, _, port = options.authz[0].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--authz {options.authz[0]!r} is not HOST:PORT")
    return host, int(port)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def istio(options: EnvoyOptions, headers: PolicyHeaders) -> dict[str, Any]:
    """``{"extensionProviders": [entry]}``, a meshConfig fragment."""
    host, port = _service(options)
    common: dict[str, Any] = {"service": host, "port": port, "timeout": _seconds(options.timeout),
                              "failOpen": False, "statusOnError": "503"}
    if options.protocol == "grpc":
        entry = {"name": ISTIO_NAMES["grpc"], "envoyExtAuthzGrpc": {**common, **_istio_body(headers, "grpc")}}
    else:
        http: dict[str, Any] = {**common, "pathPrefix": options.path_prefix}
        http["includeRequestHeadersInCheck"] = list(headers.request or ("*",))
        if headers.upstream:
            http["headersToUpstreamOnAllow"] = list(headers.upstream)
        http["headersToDownstreamOnDeny"] = list(dict.fromkeys([*DENIAL_HEADERS, *headers.denial]))
        if headers.client:
            http["headersToDownstreamOnAllow"] = list(headers.client)
        http.update(_istio_body(headers, "http"))
        entry = {"name": ISTIO_NAMES["http"], "envoyExtAuthzHttp": http}
    return {"extensionProviders": [entry]}


def _istio_body(headers: PolicyHeaders, protocol: str) -> dict[str, Any]:
    """``includeRequestBodyInCheck``, only for a policy that reads request bodies."""
    return headers.body.istio(protocol) if headers.body is not None else {}


def emissary(options: EnvoyOptions, headers: PolicyHeaders) -> dict[str, Any]:
    host, port = _service(options)
    spec: dict[str, Any] = {"auth_service": f"{host}:{port}"}
    if options.protocol == "grpc":
        spec.update(proto="grpc", protocol_version="v3")
    else:
        spec.update(proto="http", path_prefix=options.path_prefix)
    spec.update(timeout_ms=int(options.timeout * 1000), failure_mode_allow=False, status_on_error={"code": 503})
    if headers.body is not None:  # only for a policy that reads request bodies
        spec.update(headers.body.emissary())
    if options.protocol == "http":
        if "set-cookie" in headers.client:
            raise ValueError("a login with session.refresh needs Emissary's gRPC AuthService: its HTTP one copies an "
                             "allow's Set-Cookie (a renewed session) onto the upstream request, not to the client")
        if headers.request:
            spec["allowed_request_headers"] = list(headers.request)
        # One list for both directions: on allow copied onto the upstream
        # request (replacing client-sent copies), on deny passed to the client.
        spec["allowed_authorization_headers"] = list(dict.fromkeys([*headers.upstream, *DENIAL_HEADERS,
                                                                    *headers.denial]))
    return {"apiVersion": "getambassador.io/v3alpha1", "kind": "AuthService",
            "metadata": {"name": "authz", "namespace": "emissary"}, "spec": spec}


def render(options: EnvoyOptions, headers: PolicyHeaders, kind: str, command: str) -> str:
    document = istio(options, headers) if kind == "istio" else emissary(options, headers)
    where = ("# Put the entry under meshConfig.extensionProviders (IstioOperator spec.meshConfig, istiod Helm\n"
             "# values meshConfig, or the istio ConfigMap's mesh); docs/deploy-istio.md.\n" if kind == "istio" else
             "# An Emissary / Edge Stack AuthService; docs/deploy-edge-stack.md.\n")
    notes = ""
    if options.protocol == "http" and headers.request is None:
        notes = ("# The policy reads every request header: list here each header your clients send that it\n"
                 "# needs ('*' forwards all of them).\n")
    return f"# Generated by: {command}\n{where}{notes}" + yaml.safe_dump(document, sort_keys=False,
                                                                         default_flow_style=False)
