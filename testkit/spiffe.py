"""The SPIFFE IDs the caller-binding tests use, and the ``callers:`` section
they share: the gateway may ask about any destination, every workload only
about itself (docs/security.md 60)."""

GATEWAY = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
ORDERS = "spiffe://cluster.local/ns/shop/sa/orders"
BILLING = "spiffe://cluster.local/ns/shop/sa/billing"
REPORTS = "spiffe://cluster.local/ns/analytics/sa/reports"
AUTHZ = "spiffe://cluster.local/ns/authz/sa/authz"

CALLERS = f"""\
callers:
  - principals: ["{GATEWAY}"]
    destinations: any
  - principals: ["spiffe://cluster.local/ns/*/sa/*"]
    destinations: self
"""
