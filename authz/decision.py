"""The result of one decision: a value, whether it allows or denies."""

from __future__ import annotations

from typing import Any, NamedTuple

from authz.denials import Denial
from authz.errors import OUTCOMES, Reason
from authz.identity.base import ANONYMOUS, Identity


class Decision(NamedTuple):
    """An allow or a deny, with everything the wire and the logs need.

    ``valid_until`` is the wall-clock time after which the same request could
    be decided differently (the credential expires); ``cacheable`` is False
    for outcomes that must never be reused (errors, time-dependent rules).
    An immutable record (see :class:`authz.request.Request`).
    """

    allowed: bool
    reason: Reason
    rule: str | None = None
    identity: Identity = ANONYMOUS
    headers: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    detail: str | None = None
    valid_until: float | None = None
    cacheable: bool = True
    dry_run_denials: tuple[str, ...] = ()
    #: Headers for the client (allow only), in order; a name may repeat.
    client_headers: tuple[tuple[str, str], ...] = ()
    #: The dynamic metadata ``response.metadata`` computed (allow only);
    #: :meth:`envoy_metadata` adds the keys every answer carries.
    metadata: tuple[tuple[str, Any], ...] = ()
    #: ("client_header" | "metadata", name) left out of the answer (metrics).
    omitted: tuple[tuple[str, str], ...] = ()
    #: The policy's own denial (``deny_with``, :mod:`authz.denials`), filled
    #: for this request; None: the reason's default (:mod:`authz.reply`).
    denial: Denial | None = None

    def slim(self) -> Decision:
        """The decision as a cache entry keeps it: what logs, metrics and
        traces need, without the claims, headers, metadata or detail (the
        prepared response holds what the wire needs)."""
        return Decision(self.allowed, self.reason, self.rule, self.identity.slim(), (), (), None,
                        self.valid_until, self.cacheable, self.dry_run_denials, omitted=self.omitted,
                        denial=self.denial)

    def envoy_metadata(self) -> dict[str, Any]:
        """The dynamic metadata of the answer: the reason code, the rule and
        the issuer's name (configured name, ``api_key`` or ``peer``) on every
        answer, allow or deny; on an allow, the policy's keys too. Never a
        credential, and on a denial never a claim value."""
        out: dict[str, Any] = {"reason": self.reason.value}
        if self.rule:
            out["rule"] = self.rule
        if self.identity.source:
            out["issuer"] = self.identity.source
        if self.allowed and self.metadata:
            out.update(self.metadata)
        return out

    @property
    def challenge(self) -> str | None:
        """The www-authenticate challenge a denial carries (every 401 has one,
        a policy's own 401 too; a denial with another status none)."""
        return None if self.allowed or self.status != 401 else OUTCOMES[self.reason].challenge

    @property
    def status(self) -> int:
        """The HTTP status of the reply: the policy's own denial's, else the reason's."""
        return self.denial.status if self.denial is not None else OUTCOMES[self.reason].http_status

    @property
    def grpc_code(self) -> int:
        return OUTCOMES[self.reason].grpc_code

    def to_json(self) -> dict[str, Any]:
        """The shape ``authz check`` prints (which adds, for a policy's own
        denial, the reply the client gets: :mod:`authz.tools.decide`)."""
        identity = self.identity
        return {
            "allowed": self.allowed,
            "status": self.status,
            "reason": self.reason.value,
            "rule": self.rule,
            "headers": dict(self.headers),
            "remove": list(self.remove),
            "identity": {
                "kind": identity.kind,
                "subject": identity.subject,
                "issuer": identity.issuer,
                "roles": sorted(identity.roles),
                "scopes": list(identity.scopes),
            },
            "detail": self.detail,
            "dry_run_denials": list(self.dry_run_denials),
            "client_headers": [list(pair) for pair in self.client_headers],
            "metadata": self.envoy_metadata(),
        }
