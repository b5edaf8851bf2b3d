"""Stand-ins for the policy's outside calls: introspection and data sources.

``authz test`` never opens a connection. An issuer's introspection and a
data source each keep their own code, untouched, but their
:class:`authz.outside.calls.KeyedCalls` is replaced by a
:class:`StandInCalls`, answered in process from what the case gives:

- an introspection issuer's answer is built for the opaque token the runner
  presents (``active``, ``iss``, ``aud``, ``iat``, ``exp`` and
  ``token_type``, under the case's claims) and judged by the server's own
  :func:`authz.identity.introspected.judge`;
- a data source answers the case's value for it, whatever URL and body the
  request gave (they are still built, so a field that cannot be computed
  fails as in the server); a source the case does not give fails as a call
  that failed: its ``on_error`` decides (docs/security.md 59).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from authz.data import DataPlan
from authz.identity.credential import Credential
from authz.identity.introspected import IntrospectedSource, IntrospectionIssuer, judge
from authz.outside.calls import Call, CallFailed, CallSettings, KeyedCalls

#: The key under which a :class:`StandInCalls` answers every call.
_ANY = b""
#: Why a call the case gives no answer for fails.
NO_ANSWER = "authz test calls nothing, and the case gives no answer"


class StandInCalls(KeyedCalls[Any]):
    """An endpoint's calls, answered by what :meth:`answer` was given, never
    over the network: any other call fails (:class:`CallFailed`)."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(name, CallSettings(), kind=kind)
        self._answers: dict[bytes, Any] = {}

    def answer(self, value: Any, key: bytes = _ANY) -> None:
        """Answer ``value`` to the call ``key`` (by default: to every call)."""
        self._answers[key] = value

    def clear(self) -> None:
        self._answers.clear()

    def get(self, key: bytes, call: Call, headers: Mapping[str, str] | None = None) -> Any:
        for held in (key, _ANY):
            if held in self._answers:
                self.stats.hits += 1
                return self._answers[held]
        self.stats.misses += 1
        raise CallFailed(NO_ANSWER)

    def peek(self, key: bytes) -> Any:
        return self._answers.get(key, self._answers.get(_ANY))


@dataclasses.dataclass(frozen=True)
class OutsideStandIns:
    """The introspection issuers and data sources of a stand-in policy."""

    #: issuer name -> the issuer, answered by its stand-in
    introspection: Mapping[str, IntrospectionIssuer]
    #: data source name -> its stand-in calls
    data: Mapping[str, StandInCalls]

    def introspected_token(self, name: str, claims: Mapping[str, Any], active: bool, now: int) -> str:
        """A fresh opaque token of issuer ``name`` (never a JWT), whose
        introspection answers ``active: false``, or an active answer from
        the issuer and ``now`` under ``claims`` (a claim given as None is
        left out), as the server's own checks judge it at ``now``."""
        issuer = self.introspection[name]
        body: dict[str, Any] = {"active": False}
        if active:
            body = {"active": True, "iss": issuer.issuer, "aud": sorted(issuer.audiences)[0], "iat": now,
                    "exp": now + 3600, "token_type": "access_token"}
            body.update(json.loads(json.dumps(dict(claims))))
            body = {key: value for key, value in body.items() if value is not None}
        token = secrets.token_urlsafe(32)
        calls = issuer.calls
        assert isinstance(calls, StandInCalls)
        calls.clear()
        calls.answer(judge(issuer, body, now).value, issuer.key(token))
        return token

    def give_data(self, answers: Mapping[str, Any]) -> None:
        """Each source answers its value in ``answers`` (as parsed JSON);
        the others fail."""
        for name, calls in self.data.items():
            calls.clear()
            if name in answers:
                calls.answer(json.loads(json.dumps(answers[name])))


def stand_in_outside(sources: Sequence[Credential], data: DataPlan | None,
                     ) -> tuple[list[Credential], DataPlan | None, OutsideStandIns]:
    """``sources`` (credential sources) with every introspection issuer
    answered by a stand-in, and ``data`` with every source answered by one."""
    issuers: dict[str, IntrospectionIssuer] = {}
    replaced: list[Credential] = []
    for source in sources:
        if not isinstance(source, IntrospectedSource):
            replaced.append(source)
            continue
        group = []
        for issuer in (source.opaque, *(i for i in source.issuers.values() if i is not source.opaque)):
            if issuer.name not in issuers:
                issuers[issuer.name] = dataclasses.replace(issuer, calls=StandInCalls(issuer.name, "introspection"))
            group.append(issuers[issuer.name])
        replaced.append(IntrospectedSource(source.location, group, jwt_here=source.jwt_here,
                                           known_issuers=source.known_issuers))
    calls: dict[str, StandInCalls] = {}
    plan = None
    if data is not None:
        calls = {name: StandInCalls(name, "data") for name in data.sources}
        plan = DataPlan({name: dataclasses.replace(source, calls=calls[name]) for name, source in data.sources.items()},
                        data.readers)
    return replaced, plan, OutsideStandIns(issuers, calls)
