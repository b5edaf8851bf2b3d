"""What the proxy must do for a policy that reads request bodies: buffer the
body (up to the policy's ``body.max_bytes``) and pass it on with the Check.

Only a policy whose rules or response read ``request.body``, ``body_json`` or
``form`` (``Reads.body``) turns buffering on; any other gets no
``with_request_body`` at all, so Envoy streams bodies as before and sends
authz none.

- Envoy (``authz envoy-config --format envoy``): ``with_request_body`` on the
  ext_authz filter, ``allow_partial_message: false`` (Envoy itself answers
  413 to a longer body, and authz refuses one marked partial anyway) and,
  on the gRPC door, ``pack_as_bytes: true`` (``raw_body``: a body that is not
  UTF-8 stays a valid CheckRequest). The HTTP door gets the body as its
  call's body, which Envoy takes from the text field: no ``pack_as_bytes``.
- Istio: ``includeRequestBodyInCheck`` in the extension provider.
- Emissary: ``include_body`` in the ``AuthService``.

Why the whole filter and not only the routes the body rules cover: a rule's
paths are globs matched on authz's normalized path (``**``, case folding,
matrix parameters), which no Envoy route prefix reproduces exactly, and a
request routed past the buffering would reach a body rule without its body.
Buffering more than needed costs only memory, bounded by ``max_bytes`` per
request in flight; Envoy waits for no body on a request that has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from authz.policy import Policy


@dataclass(frozen=True, slots=True)
class BodyBuffering:
    """The proxy buffers request bodies up to ``max_bytes`` for the Check."""

    max_bytes: int

    @classmethod
    def of(cls, policy: Policy) -> BodyBuffering | None:
        """What ``policy`` needs: None when no rule reads a body."""
        return cls(policy.body.max_bytes) if policy.reads.body else None

    def envoy(self, protocol: str) -> dict[str, Any]:
        """The ext_authz filter's ``with_request_body``."""
        from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import BufferSettings  # envoy-config only

        return {"with_request_body": BufferSettings(max_request_bytes=self.max_bytes, allow_partial_message=False,
                                                    pack_as_bytes=protocol == "grpc")}

    def istio(self, protocol: str) -> dict[str, Any]:
        """The extension provider's ``includeRequestBodyInCheck``."""
        return {"includeRequestBodyInCheck": {"maxRequestBytes": self.max_bytes, "allowPartialMessage": False,
                                              **({"packAsBytes": True} if protocol == "grpc" else {})}}

    def emissary(self) -> dict[str, Any]:
        """The AuthService's ``include_body``."""
        return {"include_body": {"max_bytes": self.max_bytes, "allow_partial": False}}


def body_flags(buffering: BodyBuffering | None) -> str:
    """What the generated header comment says of it."""
    return "" if buffering is None else f" (request bodies buffered, up to {buffering.max_bytes} bytes)"
