"""What Envoy learns on allow: headers for the upstream (computed by CEL,
removed, the identity token), headers for the client, and dynamic metadata.

Header values are sanitized: CR, LF, NUL, other controls and non-ASCII are
percent-encoded, never passed raw; so are the ',' and ';' that a value read
from the request or a claim brings (the policy's own are kept), so data
cannot add a list item or a cookie attribute. Every header authz sets is also stripped
from the client's request when authz has no value for it, so a client-sent
copy never reaches the upstream (nor one of its metadata keys, which the
HTTP door answers as headers). An expression that fails leaves its header
or metadata key out; it never turns the allow into a denial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from authz.cel import AttrPath, EvaluationError, Expression
from authz.identity.signing import IdentityTokenSigner
from authz.metadata import BUILTIN, Unrepresentable, as_text, carried
from authz.request import View
from authz.sanitize import mark_separators, sanitize_header_value, sanitize_marked_value

__all__ = ["MAX_ADDED_BYTES", "MAX_ADDED_HEADERS", "MAX_HEADER_VALUE", "MAX_REQUEST_BYTES", "MAX_REQUEST_HEADERS",
           "ROOMY_BYTES", "ROOMY_HEADERS", "Built", "ResponsePlan", "sanitize_header_value", "upstream_request_size"]

MAX_HEADER_VALUE = 8192
#: What one answer may add in all (upstream headers, client headers and
#: metadata, which the HTTP door carries as headers): within Envoy's limits.
MAX_ADDED_BYTES = 60 * 1024
MAX_ADDED_HEADERS = 100
#: Envoy's limits on one request's headers (``max_request_headers_kb`` 60,
#: ``max_headers_count`` 100, names and values counted): the request Envoy
#: forwards upstream, the client's headers with authz's, stays within them,
#: or the request is denied ``request_headers_too_large``.
MAX_REQUEST_BYTES = 60 * 1024
MAX_REQUEST_HEADERS = 100
#: Half of those: a decision is cached only when what it adds upstream fits
#: in this half, and a request is looked up in the cache only when its own
#: headers fit in the other (the doors check that at no cost), so a cached
#: answer can never make an oversized request.
ROOMY_BYTES = MAX_REQUEST_BYTES // 2
ROOMY_HEADERS = MAX_REQUEST_HEADERS // 2


class Built(NamedTuple):
    """What :meth:`ResponsePlan.build` makes of one allowed request."""

    headers: tuple[tuple[str, str], ...]
    remove: tuple[str, ...]
    notes: list[str]
    #: How long the answer may be reused (the identity token's reuse window), None when unbounded.
    fresh_until: float | None
    client_headers: tuple[tuple[str, str], ...] = ()
    metadata: tuple[tuple[str, Any], ...] = ()
    #: ("client_header" | "metadata", name) for each one left out because its
    #: expression failed or its value could not be sent (counted in metrics).
    omitted: tuple[tuple[str, str], ...] = ()
    #: True when the policy makes an identity token and the credential's own
    #: expiry has passed (accepted within the leeway): no token can be made,
    #: and the engine denies (``credential_in_leeway``).
    expired_credential: bool = False
    #: True when the client's headers with the ones added would pass Envoy's
    #: limits: the engine denies (``request_headers_too_large``).
    oversized: bool = False
    #: True when what is added upstream fits in half of Envoy's limits: the
    #: only answers the decision cache may keep.
    roomy: bool = True


class _Budget:
    """Envoy's limits on what one answer adds, shared by everything it adds."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    def take(self, name: str, value: str) -> bool:
        if len(value) > MAX_HEADER_VALUE or self.count >= MAX_ADDED_HEADERS:
            return False
        size = len(name) + len(value)
        if self.total + size > MAX_ADDED_BYTES:
            return False
        self.total += size
        self.count += 1
        return True


@dataclass(frozen=True, eq=False)
class ResponsePlan:
    headers: tuple[tuple[str, Expression], ...] = ()
    remove: tuple[str, ...] = ()
    identity_token: IdentityTokenSigner | None = None
    #: Headers for the client: (name, expression) pairs, a name possibly
    #: more than once (``Set-Cookie``); each expression gives a string or a
    #: list of strings, one header each.
    client_headers: tuple[tuple[str, Expression], ...] = ()
    #: Dynamic metadata: (key, expression) pairs, keys unique.
    metadata: tuple[tuple[str, Expression], ...] = ()
    #: The policy-file line of each expression, by ``"header NAME"``,
    #: ``"client header NAME"`` or ``"metadata KEY"`` (for messages).
    lines: dict[str, int] = field(default_factory=dict)
    #: The underscore spelling of every header it sets or removes
    #: (``x_user_id`` for ``x-user-id``), always removed: WSGI, CGI and Rack
    #: upstreams read both spellings as one name, so a client-sent twin must
    #: never reach them beside authz's value.
    twins: tuple[str, ...] = field(init=False, default=())
    #: Every header of the upstream request the policy owns: those it sets
    #: (``headers``, the identity token's), removes, their twins, and its
    #: metadata keys (authz's own included), which the HTTP door answers as
    #: headers. A client-sent copy of any of them never reaches the upstream:
    #: an answer sets it or removes it (:meth:`build`), and the configs
    #: ``authz envoy-config`` writes strip them where no Check runs.
    owned: tuple[str, ...] = field(init=False, default=())
    #: What every allow removes: ``owned`` less what an answer may set.
    _always_removed: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        names = [name for name, _ in self.headers] + list(self.remove)
        if self.identity_token is not None:
            names.append(self.identity_token.header)
        twins = tuple(dict.fromkeys(n.replace("-", "_") for n in names if "-" in n))
        object.__setattr__(self, "twins", twins)
        keys = [*BUILTIN, *(key for key, _ in self.metadata)]
        object.__setattr__(self, "_always_removed", tuple(dict.fromkeys([*self.remove, *twins, *keys])))
        object.__setattr__(self, "owned", tuple(dict.fromkeys([*names, *twins, *keys])))

    def upstream_headers(self) -> tuple[str, ...]:
        """The headers an allow may set for the upstream (what Envoy's
        ``allowed_upstream_headers`` must name for the HTTP door)."""
        names = [name for name, _ in self.headers]
        if self.identity_token is not None:
            names.append(self.identity_token.header)
        return tuple(names)

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self.identity_token.jwks) if self.identity_token else []}

    def reads(self) -> set[AttrPath]:
        """What its expressions read (the decision cache keys on it)."""
        out: set[AttrPath] = set()
        for _name, expression in (*self.headers, *self.client_headers, *self.metadata):
            out |= expression.reads
        return out

    def build(self, view: View) -> Built:
        """Everything an allowed request's answer adds."""
        budget = _Budget()
        set_headers: list[tuple[str, str]] = []
        remove = list(self._always_removed)
        notes: list[str] = []
        for name, expression in self.headers:
            try:
                value = expression.evaluate_with(view.variables(expression.roots), mark_separators)
            except EvaluationError as exc:
                notes.append(f"header {name}: {exc}")
                remove.append(name)
                continue
            if not isinstance(value, str) or not value:
                notes.append(f"header {name}: no string value")
                remove.append(name)
                continue
            value = sanitize_marked_value(value)
            if not budget.take(name, value):
                notes.append(f"header {name}: over Envoy's header limits, dropped")
                remove.append(name)
                continue
            set_headers.append((name, value))
        signer = self.identity_token
        fresh_until = None
        expired = False
        if signer is not None:
            limit = signer.limit(view.identity)
            if view.identity.authenticated and (limit is None or limit > view.now):
                token, fresh_until = signer.token(view.identity, view.request.source_principal, view.now)
                set_headers.append((signer.header, token))
            else:
                expired = view.identity.authenticated
                remove.append(signer.header)
        omitted: list[tuple[str, str]] = []
        client = self._client_headers(view, budget, notes, omitted) if self.client_headers else ()
        metadata = self._metadata(view, budget, notes, omitted) if self.metadata else ()
        removed = tuple(dict.fromkeys(remove))
        count, size = upstream_request_size(view.request.headers, set_headers)
        added = sum(len(name) + len(value) for name, value in set_headers)
        return Built(tuple(set_headers), removed, notes, fresh_until, client, metadata, tuple(omitted), expired,
                     oversized=count > MAX_REQUEST_HEADERS or size > MAX_REQUEST_BYTES,
                     roomy=len(set_headers) <= ROOMY_HEADERS and added <= ROOMY_BYTES)

    def _client_headers(self, view: View, budget: _Budget, notes: list[str],
                        omitted: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for name, expression in self.client_headers:
            try:
                value = expression.evaluate_with(view.variables(expression.roots), mark_separators)
            except EvaluationError as exc:
                notes.append(f"client header {name}: {exc}")
                omitted.append(("client_header", name))
                continue
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(item, str) for item in values):
                notes.append(f"client header {name}: not a string or a list of strings")
                omitted.append(("client_header", name))
                continue
            for item in values:
                if not item:
                    continue  # "" sends nothing: how a policy says "not this time"
                text = sanitize_marked_value(item)
                if not budget.take(name, text):
                    notes.append(f"client header {name}: over Envoy's header limits, dropped")
                    omitted.append(("client_header", name))
                    continue
                out.append((name, text))
        return tuple(out)

    def _metadata(self, view: View, budget: _Budget, notes: list[str],
                  omitted: list[tuple[str, str]]) -> tuple[tuple[str, Any], ...]:
        out: list[tuple[str, Any]] = []
        for key, expression in self.metadata:
            try:
                value = carried(expression.evaluate(view.variables(expression.roots)))
            except (EvaluationError, Unrepresentable) as exc:
                notes.append(f"metadata {key}: {exc}")
                omitted.append(("metadata", key))
                continue
            if value is None or value == "":
                continue  # null or "" leaves the key out: nothing to log or limit by
            if not budget.take(key, as_text(value)):
                notes.append(f"metadata {key}: over Envoy's header limits, dropped")
                omitted.append(("metadata", key))
                continue
            out.append((key, value))
        return tuple(out)


def upstream_request_size(client: Mapping[str, str],
                          set_headers: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> tuple[int, int]:
    """(headers, bytes of names and values) of the request Envoy forwards
    upstream at its largest: the client's headers as the door saw them
    (pseudo-headers included, as Envoy counts them) with those authz sets,
    each replacing the client's copy. Removals make no room: Envoy sets an
    answer's headers before it applies its removals, and a request over its
    limits in between fails (a 500 from Envoy, measured with Envoy 1.40)."""
    count = len(client)
    size = sum(len(name) + len(value) for name, value in client.items())
    for name, value in set_headers:
        old = client.get(name)
        if old is None:
            count += 1
            size += len(name) + len(value)
        else:
            size += len(value) - len(old)
    return count, size
