"""Envoy configs for the benchmark's baselines: Envoy alone, and Envoy's own
jwt_authn + rbac filters expressing the benchmark policy natively (verify the
RS256 token of issuer corp with its local JWKS and its JWT cache on; allow GET
under /api/orders for group orders-reader, anything under it for orders-admin)."""

from __future__ import annotations

from typing import Any


def _metadata_group(group: str) -> dict[str, Any]:
    return {"metadata": {
        "filter": "envoy.filters.http.jwt_authn",
        "path": [{"key": "jwt_payload"}, {"key": "groups"}],
        "value": {"list_match": {"one_of": {"string_match": {"exact": group}}}},
    }}


def config(listen: int, admin: int, *, native: bool, jwks: str = "") -> dict[str, Any]:
    filters: list[dict[str, Any]] = []
    if native:
        filters.append({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"corp": {
                    "issuer": "https://idp.example.com",
                    "audiences": ["orders-api"],
                    "local_jwks": {"inline_string": jwks},
                    "payload_in_metadata": "jwt_payload",
                    "clock_skew_seconds": 30,
                    "jwt_cache_config": {"jwt_cache_size": 1000},
                }},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "corp"}}],
            },
        })
        filters.append({
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": {"action": "ALLOW", "policies": {
                    "orders-reader": {
                        "permissions": [{"and_rules": {"rules": [
                            {"or_rules": {"rules": [
                                {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                                {"header": {"name": ":method", "string_match": {"exact": "HEAD"}}},
                            ]}},
                            {"url_path": {"path": {"prefix": "/api/orders"}}},
                        ]}}],
                        "principals": [_metadata_group("orders-reader")],
                    },
                    "orders-admin": {
                        "permissions": [{"url_path": {"path": {"prefix": "/api/orders"}}}],
                        "principals": [_metadata_group("orders-admin")],
                    },
                }},
            },
        })
    filters.append({"name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{
            "name": "edge",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                              "HttpConnectionManager"),
                    "stat_prefix": "ingress_http",
                    "normalize_path": True,
                    "merge_slashes": True,
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                        {"match": {"prefix": "/"},
                         "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}},
                    ]}]},
                    "http_filters": filters,
                },
            }]}],
        }]},
    }
