"""The decision pipeline: one function, read top to bottom.

Phase 0, request shape: a path that cannot be matched safely is refused
    (403 ``invalid_path``), and so is an authority that is not host[:port]
    (403 ``invalid_request``).
Phase 1, credential: the first credential source present in the request
    decides; a presented credential that does not verify is a 401, whatever
    the rules say. None presented: the mTLS peer if ``peers`` lists it, else
    anonymous.
Phase 2, peer roles: roles ``peers`` grants to ``source.principal`` join
    the identity's roles. Then outside data: the ``data:`` sources read by
    the rules and permissions that may apply are called, all at once (a
    Check waits for them: ``CallPending``); one that fails denies
    (``data_unavailable``) unless it has a fallback value, and a decision
    that read data is cached no longer than its ``cache_ttl``.
Phase 3, deny rules: any match is a 403 (a rule whose ``when`` fails to
    evaluate counts as matched: fail closed).
Phase 4, permissions: a role with a matching permission, or a matching allow
    rule, allows (a ``when`` that fails counts as not matched).
Phase 5, default: 401 with a challenge for an anonymous caller, 403 otherwise.
Phase 3-6, body: a body a rule or response expression read and could not
    have (cut, compressed, another media type, malformed, ambiguous, too
    deep) denies with its ``body_*`` reason, whatever else matched
    (:mod:`authz.body`; only for a policy that reads a body).
Login (``login:`` of an issuer, :mod:`authz.login`), around all of it: a
    login's callback and logout paths are answered by its own steps; a
    browser navigation denied for want of a credential is sent to sign in;
    an allow never passes the flow's cookies upstream.
Phase 6, response: headers and identity token for the upstream, headers
    for the client, dynamic metadata for Envoy. A credential past its own
    exp (accepted within the leeway) gets no identity token: 401
    ``credential_in_leeway`` when the policy makes one. The client's headers
    with the policy's must stay within Envoy's limits: 403
    ``request_headers_too_large`` otherwise.
"""

from __future__ import annotations

import contextlib
import time as _time
from dataclasses import dataclass
from typing import Any, Protocol

from authz import login
from authz.data import Fetched
from authz.decision import Decision
from authz.errors import CredentialError, InvalidPath, Reason
from authz.identity.base import ANONYMOUS, Identity, TokenCache
from authz.matchers import valid_authority
from authz.paths import normalize_path, split_path
from authz.policy import Matcher, Policy
from authz.request import Request, View


class Clock(Protocol):
    def time(self) -> float: ...
    def monotonic(self) -> float: ...


class SystemClock:
    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a decision trace (``authz explain``)."""

    phase: str
    subject: str
    result: str
    note: str | None = None

    def __str__(self) -> str:
        tail = f"  ({self.note})" if self.note else ""
        return f"[{self.phase}] {self.subject}: {self.result}{tail}"


Trace = list[Step]


class CallPending(Exception):
    """The decision needs an outside call under way (a key set being
    fetched, :mod:`authz.outside`): wait on ``future`` (a
    ``concurrent.futures.Future``) within the request's deadline, then
    decide again with ``may_wait=False``."""

    def __init__(self, future: Any) -> None:
        super().__init__("outside call in progress")
        self.future = future


class Engine:
    """Decides requests against one compiled policy.

    ``token_cache`` remembers verified tokens across decisions (a server
    hands each engine its own); without one every token is verified.
    """

    def __init__(self, policy: Policy, *, clock: Clock | None = None, token_cache: TokenCache | None = None,
                 dry_run: bool = False) -> None:
        self.policy = policy
        self.clock: Clock = clock or SystemClock()
        self.token_cache = token_cache
        #: Evaluate fully, but turn every denial into an allow that records
        #: what would have been denied (``authz serve --dry-run``).
        self.dry_run = dry_run
        #: The body limits when the policy reads a body (None: no body is read).
        self.body_limits = policy.body if policy.reads.body else None

    def decide(self, request: Request, *, may_wait: bool = True, trace: Trace | None = None) -> Decision:
        """Decide one request. Raises :class:`CallPending` (only when
        ``may_wait``) when a key set must be fetched first; any
        other exception is a bug the caller turns into ``internal_error``."""
        decision = self._login(request, may_wait, trace) if self.policy.logins else \
            self._decide(request, may_wait, trace)
        if decision.allowed or decision.denial is not None:  # a login step's reply is its own
            return decision
        if self.dry_run:
            return self._would_deny(request, decision, trace)
        if self.policy.deny_with:
            denial = self.policy.deny_with.fill(decision.reason, decision.rule, request.scheme, request.host,
                                                request.path)
            if denial is not None:
                _note(trace, "deny_with", decision.reason.value, f"status {denial.status}", decision.rule)
                return decision._replace(denial=denial)
        return decision

    def _login(self, request: Request, may_wait: bool, trace: Trace | None) -> Decision:
        """The decision with browser sign-in (:mod:`authz.login`): the one
        place the engine calls it."""
        def path() -> str | None:
            try:
                return normalize_path(split_path(request.path)[0], self.policy.paths)
            except InvalidPath:
                return None
        try:
            decision = login.decide(self.policy.logins, request, self.clock.time(), may_wait=may_wait, path=path,
                                    rest=lambda asked: self._decide(asked, may_wait, trace),
                                    start_allowed=not self.dry_run)
        except login.Waiting as waiting:
            raise CallPending(waiting.future) from None
        if decision.denial is not None:
            _note(trace, "login", decision.reason.value, f"status {decision.denial.status}", decision.detail)
        return decision

    def _would_deny(self, request: Request, denial: Decision, trace: Trace | None) -> Decision:
        raw_path, query = split_path(request.path)
        try:
            path = normalize_path(raw_path, self.policy.paths)
        except InvalidPath:
            path = raw_path
        view = View(request, path, query, denial.identity, self.clock.time(), self.body_limits)
        built = self.policy.response.build(view)
        label = f"{denial.reason.value}:{denial.rule or '-'}"
        _note(trace, "dry run", label, "would deny; allowed")
        return Decision(
            allowed=True, reason=Reason.ALLOWED, rule=None, identity=denial.identity, headers=built.headers,
            remove=built.remove, detail=denial.detail, valid_until=_earliest(denial.valid_until, built.fresh_until),
            cacheable=denial.cacheable,
            dry_run_denials=(*denial.dry_run_denials, label),
            client_headers=built.client_headers, metadata=built.metadata, omitted=built.omitted,
        )

    def _decide(self, request: Request, may_wait: bool, trace: Trace | None) -> Decision:
        policy = self.policy
        now = self.clock.time()

        # Phase 0: request shape.
        raw_path, query = split_path(request.path)
        try:
            path = normalize_path(raw_path, self.policy.paths)
        except InvalidPath as exc:
            _note(trace, "request", "path", "invalid", str(exc))
            return self._deny(Reason.INVALID_PATH, ANONYMOUS, detail=str(exc), trace=trace)
        if not valid_authority(request.host):
            _note(trace, "request", "authority", "invalid", "not host[:port]")
            return self._deny(Reason.INVALID_REQUEST, ANONYMOUS, detail="the authority is not host[:port]", trace=trace)
        _note(trace, "request", f"{request.method} {path}", "normalized")

        # Phase 1: credential -> identity.
        try:
            identity = self._authenticate(request, now, may_wait, trace)
        except CredentialError as exc:
            _note(trace, "credential", exc.reason.value, "rejected", exc.detail)
            # Never cached: time and key sets change these outcomes.
            return self._deny(exc.reason, ANONYMOUS, detail=exc.detail, trace=trace, cacheable=False)

        # Phase 2: roles granted to the mTLS peer.
        principal = request.source_principal
        if policy.peers and principal:
            peer_roles = policy.peers.roles_for(principal)
            if peer_roles is not None:
                if identity.kind == "anonymous":
                    identity = policy.peers.identity(principal, peer_roles)
                    _note(trace, "identity", "peer", principal, f"roles {sorted(peer_roles)}")
                else:
                    identity = identity.with_roles(peer_roles)
                    _note(trace, "identity", "peer roles added", principal, f"roles {sorted(peer_roles)}")
        view = View(request, path, query, identity, now, self.body_limits)

        # Phase 2b: outside data the rules that may apply read (authz.data).
        data_until = None
        if policy.data is not None:
            fetched = policy.data.fetch(view, now, may_wait=may_wait)
            if not isinstance(fetched, Fetched):
                raise CallPending(fetched)
            if fetched.failed is not None:
                _note(trace, "data", "unavailable", "deny", fetched.failed)
                return self._deny(Reason.DATA_UNAVAILABLE, identity, detail=fetched.failed, trace=trace,
                                  cacheable=False)
            view.data, data_until = fetched.values, fetched.until
            _note(trace, "data", ", ".join(sorted(fetched.values)) or "none needed", "read")

        # Phase 3: deny rules win.
        would_deny: list[str] = []
        for rule in policy.deny_rules:
            matched, note = rule.matcher.matches(view, fail_closed=True)
            if trace is not None:
                _note(trace, "deny rule", rule.name, "matched" if matched else "no match", note or _when(rule.matcher))
            if matched:
                if rule.dry_run:
                    would_deny.append(rule.name)
                    continue
                return _until(self._unread_body(view, identity, trace, would_deny) or self._deny(
                    Reason.DENIED_BY_RULE, identity, rule=rule.name, trace=trace, would_deny=would_deny), data_until)

        # Phase 4: a role's permission or an allow rule.
        granted = self._grant(view, identity, trace, would_deny)
        if (refused := self._unread_body(view, identity, trace, would_deny)) is not None:
            return refused
        if granted is None:
            # Phase 5: nothing allows.
            reason = Reason.NO_PERMISSION if identity.authenticated else Reason.MISSING_CREDENTIAL
            return _until(self._deny(reason, identity, trace=trace, would_deny=would_deny), data_until)

        # Phase 6: what the upstream, the client and Envoy learn.
        built = policy.response.build(view)
        for text in built.notes:
            _note(trace, "response", text.partition(":")[0], "omitted", text.partition(": ")[2])
        if (refused := self._unread_body(view, identity, trace, would_deny)) is not None:
            return refused
        if built.expired_credential:
            # Leeway is for accepting a credential, never for asserting one.
            return self._deny(Reason.CREDENTIAL_IN_LEEWAY, identity, detail="the credential's exp has passed "
                              "(accepted within the leeway); no identity token outlives it", trace=trace,
                              would_deny=would_deny, cacheable=False)
        if built.oversized:
            # Never cached: the same key may come with fewer headers.
            return self._deny(Reason.REQUEST_HEADERS_TOO_LARGE, identity, detail="the client's headers with the "
                              "policy's would pass Envoy's limits (100 headers, 60 KiB)", trace=trace,
                              would_deny=would_deny, cacheable=False)
        return Decision(
            allowed=True,
            reason=Reason.ALLOWED,
            rule=granted,
            identity=identity,
            headers=built.headers,
            remove=built.remove,
            valid_until=_earliest(_earliest(identity.expires_at, built.fresh_until), data_until),
            cacheable=not policy.reads.now and built.roomy,
            dry_run_denials=tuple(would_deny),
            client_headers=built.client_headers,
            metadata=built.metadata,
            omitted=built.omitted,
        )

    def _unread_body(self, view: View, identity: Identity, trace: Trace | None,
                     would_deny: list[str]) -> Decision | None:
        """The denial for a body an expression read and could not have (its
        ``body_*`` reason), or None: a rule that could not see the body never
        decides, whichever way it failed."""
        if self.body_limits is None or (problem := view.body_problem) is None:
            return None
        _note(trace, "body", problem.reason.value, "unreadable", problem.detail)
        return self._deny(problem.reason, identity, detail=problem.detail, trace=trace, would_deny=would_deny)

    def decide_blocking(self, request: Request, *, timeout: float, trace: Trace | None = None) -> Decision:
        """Decide, waiting (blocking this thread) up to ``timeout`` seconds for
        a key set being fetched. For offline use; servers wait asynchronously."""
        try:
            return self.decide(request, trace=trace)
        except CallPending as pending:
            # Deciding again reports keys still missing as a denial.
            with contextlib.suppress(Exception):
                pending.future.result(timeout=timeout)
            if trace is not None:
                trace.clear()
            return self.decide(request, may_wait=False, trace=trace)

    def _authenticate(self, request: Request, now: float, may_wait: bool, trace: Trace | None) -> Identity:
        """The identity of the first credential presented. The one place
        that decides whether a key-set fetch under way is waited for."""
        for source in self.policy.credential_sources:
            try:
                identity = source.authenticate(request, now=now, cache=self.token_cache)
            except CredentialError as exc:
                if may_wait and exc.retry is not None:
                    raise CallPending(exc.retry) from None
                raise
            if identity is not None:
                _note(trace, "credential", source.name, "verified",
                      f"{identity.kind} {identity.subject!r}, roles {sorted(identity.roles)}")
                return identity
            _note(trace, "credential", source.name, "not present")
        return ANONYMOUS

    def _grant(self, view: View, identity: Identity, trace: Trace | None, would_deny: list[str]) -> str | None:
        policy = self.policy
        for role in sorted(identity.roles):
            for index, permission in enumerate(policy.roles.get(role, ())):
                matched, note = permission.matches(view, fail_closed=False)
                _note(trace, "permission", f"{role}[{index}]", "matched" if matched else "no match", note)
                if matched:
                    return role
        for rule in policy.allow_rules:
            if not rule.anonymous and not identity.authenticated:
                _note(trace, "allow rule", rule.name, "skipped", "needs an authenticated caller")
                continue
            matched, note = rule.matcher.matches(view, fail_closed=False)
            if trace is not None:
                _note(trace, "allow rule", rule.name, "matched" if matched else "no match", note or _when(rule.matcher))
            if matched:
                if rule.dry_run:
                    continue
                return rule.name
        return None

    def _deny(
        self,
        reason: Reason,
        identity: Identity,
        *,
        rule: str | None = None,
        detail: str | None = None,
        trace: Trace | None = None,
        would_deny: list[str] | None = None,
        cacheable: bool = True,
    ) -> Decision:
        _note(trace, "decision", reason.value, "deny", rule)
        return Decision(
            allowed=False,
            reason=reason,
            rule=rule,
            identity=identity,
            detail=detail,
            valid_until=identity.expires_at,
            cacheable=cacheable and not self.policy.reads.now,
            dry_run_denials=tuple(would_deny or ()),
        )


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _until(decision: Decision, data_until: float | None) -> Decision:
    """``decision``, cached no longer than the data it read."""
    if data_until is None:
        return decision
    return decision._replace(valid_until=_earliest(decision.valid_until, data_until))


def _when(matcher: Matcher) -> str | None:
    return f"when {matcher.when.source}" if matcher.when is not None else None


def _note(trace: Trace | None, phase: str, subject: str, result: str, note: str | None = None) -> None:
    if trace is not None:
        trace.append(Step(phase, subject, result, note))

