"""A key provider that holds a verification still at the one moment a key-change
race needs: after it has read the issuer's key set, before it has used it.

:class:`PausingKeys` wraps a real provider (a :class:`authz.identity.jwks.RemoteKeys`
fetched from a :class:`testkit.idp.FakeIdP`, usually). Once ``arm()``ed, the
next ``current()`` reads the inner key set, sets ``reached``, waits for
``release`` and only then returns the set it read. The test changes the keys
meanwhile, so the verification goes on with a set that is no longer current:
the interleaving is forced, not hoped for.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from authz.identity.jwt import JwtSource, KeyProvider
from authz.identity.keys import KeySet
from authz.policy import Policy

#: Longest a paused verification waits for its release (a test that forgets
#: to release fails instead of hanging).
PAUSE_LIMIT = 30.0


class PausingKeys:
    def __init__(self, inner: KeyProvider) -> None:
        self.inner = inner
        self.reached = threading.Event()
        self.release = threading.Event()
        self.lookups = 0
        self._armed = False

    def arm(self) -> None:
        self.reached.clear()
        self.release.clear()
        self._armed = True

    def current(self) -> KeySet | None:
        self.lookups += 1
        keyset = self.inner.current()
        if self._armed:
            self._armed = False
            self.reached.set()
            if not self.release.wait(PAUSE_LIMIT):
                raise AssertionError("a paused verification was never released")
        return keyset

    def wait_for_keys(self) -> Any:
        return self.inner.wait_for_keys()

    def refetch_unknown_kid(self) -> Any:
        return self.inner.refetch_unknown_kid()

    def status(self) -> dict[str, Any]:
        return self.inner.status()

    def start(self) -> None:
        self.inner.start()

    def stop(self) -> None:
        self.inner.stop()


def pausing(policy: Policy) -> tuple[Policy, dict[str, PausingKeys]]:
    """The same compiled policy, with each issuer's keys behind a :class:`PausingKeys`."""
    wrapped = {issuer.name: PausingKeys(issuer.keys) for issuer in policy.issuers}
    issuers = {issuer.name: dataclasses.replace(issuer, keys=wrapped[issuer.name]) for issuer in policy.issuers}
    sources = tuple(
        JwtSource(source.location, [issuers[i.name] for i in source.issuers.values()],
                  known_issuers=source.known_issuers)
        if isinstance(source, JwtSource) else source
        for source in policy.credential_sources
    )
    return dataclasses.replace(policy, issuers=tuple(issuers.values()), credential_sources=sources), wrapped
