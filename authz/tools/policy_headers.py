"""What a policy asks of the proxy in front of authz, read from the policy.

``authz envoy-config --config POLICY`` (an Envoy bootstrap, an Istio
extension provider or an Emissary ``AuthService``) and ``authz validate
--envoy-config`` list, from the compiled policy:

- ``upstream``: the headers an allow sets for the upstream (its
  ``response.headers`` and the identity token's header): through the HTTP
  door, Envoy copies only those its ``allowed_upstream_headers`` (Istio
  ``headersToUpstreamOnAllow``, Emissary ``allowed_authorization_headers``)
  names, and a client-sent copy of one it does not copy reaches the upstream;
- ``owned``: every header the policy owns (``ResponsePlan.owned``: those it
  sets, removes or signs, their underscore twins, and its metadata keys):
  a client-sent copy is stripped wherever no Check runs;
- ``client``: ``response.client_headers`` names; ``metadata``: the metadata keys;
- ``denial``: the headers the policy's own denials send the client
  (``deny_with``: its headers and ``location``), passed on a denial beside
  authz's own (Envoy's ``allowed_client_headers``);
- ``request``: the client headers authz reads (credentials, headers the
  policy reads, and those the HTTP door and logs read), for proxies that
  forward only the headers they list to the HTTP door (None: the policy
  reads every header, which no list can name);
- ``body``: whether (and up to how many bytes) the proxy buffers request
  bodies for the Check (:mod:`authz.tools.envoy_body`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from authz.metadata import BUILTIN
from authz.tools.envoy_body import BodyBuffering

if TYPE_CHECKING:
    from authz.policy import Policy

#: What ``authz envoy-config`` lists without ``--config``: the headers the
#: example policies set. Said on stderr: they may not cover a policy.
DEFAULT_UPSTREAM = ("x-user-id", "x-identity-token")
#: Headers authz reads from every call besides a policy's: the request id it
#: echoes, the forwarding headers the HTTP door may trust, trace context.
ALWAYS_READ = ("x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-client-cert",
               "traceparent", "tracestate")


#: What a denial from the HTTP door carries to the client (status, body and
#: content-length always pass).
DENIAL_HEADERS = ("content-type", "cache-control", "www-authenticate")


def denial_headers(policys: Sequence[str] = ()) -> list[str]:
    """What the HTTP door's denials may carry to the client: authz's own and
    the policy's (``deny_with``: its headers and ``location``)."""
    return list(dict.fromkeys([*DENIAL_HEADERS, *policys]))


def _twins(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name.replace("-", "_") for name in names if "-" in name)


@dataclass(frozen=True)
class PolicyHeaders:
    upstream: tuple[str, ...]
    owned: tuple[str, ...]
    client: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    request: tuple[str, ...] | None = ALWAYS_READ
    #: True when read from a policy; False for the defaults.
    from_policy: bool = False
    denial: tuple[str, ...] = ()
    #: Request bodies the proxy must buffer for the Check (None: none).
    body: BodyBuffering | None = None

    @classmethod
    def of(cls, policy: Policy) -> PolicyHeaders:
        plan = policy.response
        read = policy.reads.headers
        request = None if read is None else tuple(dict.fromkeys(
            name for name in (*policy.credential_headers, *sorted(read), *ALWAYS_READ)
            if not name.startswith(":") and name != "host"))
        # Browser sign-in (authz.login): an allow may rewrite the Cookie header
        # (the flow's cookies never reach the upstream); its replies carry
        # Location and Set-Cookie; an allow that renews a session, Set-Cookie.
        logins = getattr(policy, "logins", ())
        login = bool(logins)
        renews = ("set-cookie",) if any(entry.refresh_before is not None for entry in logins) else ()
        return cls(
            upstream=(*plan.upstream_headers(), *(("cookie",) if login else ())),
            owned=plan.owned,
            client=tuple(dict.fromkeys((*(name for name, _ in plan.client_headers), *renews))),
            metadata=tuple(key for key, _ in plan.metadata),
            request=request,
            from_policy=True,
            denial=tuple(dict.fromkeys((*policy.deny_with.header_names(),
                                        *(("location", "set-cookie") if login else ())))),
            body=BodyBuffering.of(policy),
        )

    @classmethod
    def defaults(cls, upstream: tuple[str, ...] = DEFAULT_UPSTREAM, metadata: tuple[str, ...] = ()) -> PolicyHeaders:
        return cls(upstream=upstream, owned=default_owned(upstream, metadata), metadata=metadata)

    def with_extra(self, upstream: tuple[str, ...] = (), client: tuple[str, ...] = (),
                   metadata: tuple[str, ...] = ()) -> PolicyHeaders:
        """These lists with names given on the command line added."""
        def merged(*names: str) -> tuple[str, ...]:
            return tuple(dict.fromkeys(names))
        up = merged(*self.upstream, *upstream)
        keys = merged(*self.metadata, *metadata)
        return PolicyHeaders(up, merged(*self.owned, *up, *_twins(up), *keys), merged(*self.client, *client), keys,
                             self.request, self.from_policy, self.denial, self.body)


def default_owned(upstream: tuple[str, ...], metadata: tuple[str, ...] = ()) -> tuple[str, ...]:
    """What a config strips without a policy: the listed upstream headers,
    their twins, and the metadata keys (authz's own included)."""
    return tuple(dict.fromkeys([*upstream, *_twins(upstream), *BUILTIN, *metadata]))


NOT_FROM_POLICY = ("authz envoy-config: no --config: the header lists in this config are defaults "
                   "({upstream}) and may not cover your policy; pass --config POLICY to read them from it")
