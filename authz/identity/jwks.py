"""Key sets of JWT issuers: local files, and remote sets cached in memory.

A remote set (``jwks_uri`` or OIDC discovery) is an outside call
(:class:`authz.outside.fetcher.Fetcher`, on the process's
:class:`authz.outside.loop.FetchLoop` thread), so a slow or dead issuer never
holds up a decision for another issuer, nor the thread that serves checks.
The decision side only ever reads the current set, or is handed a
``concurrent.futures.Future`` to wait on within its own deadline
(docs/security.md D and E):

- background refresh every ``refresh_interval``, with backoff on failure;
- an unknown ``kid`` starts at most one refetch per ``min_refetch_interval``,
  and every concurrent caller shares the one in flight;
- each fetch is bounded in time (``fetch_timeout``) and size (1 MiB);
- when fetches fail the last good set keeps serving until ``max_stale``;
- keys that leave the set stop verifying at once, and listeners are told so
  that decisions cached for their tokens are dropped.

A :class:`KeyRegistry` keeps the remote sets across policy reloads, and hands
every set it makes its one key-change listener when the set is made: no set
can exist without it, and none holds it twice (docs/security.md 52).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from authz.identity.keys import KeySet, parse_jwks
from authz.outside.fetcher import Fetcher
from authz.outside.http import MAX_DOCUMENT_BYTES, FetchError, check_url, fetch_json
from authz.outside.loop import FetchLoop, default_fetch_loop

__all__ = ["FetchLoop", "FileKeys", "JwksSettings", "KeyListener", "KeyRegistry", "RemoteKeys", "default_fetch_loop"]

log = logging.getLogger("authz.jwks")


@dataclass(frozen=True, slots=True)
class JwksSettings:
    refresh_interval: float = 600.0
    min_refetch_interval: float = 30.0
    max_stale: float = 86400.0
    fetch_timeout: float = 2.0
    max_bytes: int = MAX_DOCUMENT_BYTES


class FileKeys:
    """A key set read from a local file when the policy was compiled; the
    policy reload that watches the file replaces it."""

    def __init__(self, keyset: KeySet, path: str) -> None:
        self.keyset = keyset
        self.path = path

    def current(self) -> KeySet:
        return self.keyset

    def wait_for_keys(self) -> None:
        return None

    def refetch_unknown_kid(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"source": "file", "state": "ok", "keys": len(self.keyset.keys), "path": self.path}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


#: ``listener(issuer_name, removed_thumbprints)``, run on the fetch thread
#: after a new set without those keys is in place.
KeyListener = Callable[[str, frozenset[str]], None]


class RemoteKeys(Fetcher[KeySet]):
    """The cached key set of one remote issuer: a :class:`Fetcher` whose
    value is the set. Its ``listeners`` are fixed when it is made."""

    what = "issuer"

    def __init__(
        self,
        name: str,
        issuer: str,
        jwks_uri: str | None,
        algorithms: frozenset[str],
        settings: JwksSettings,
        *,
        loop: FetchLoop | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        listeners: Iterable[KeyListener] = (),
    ) -> None:
        super().__init__(name, settings, loop=loop, monotonic=monotonic)
        self.settings: JwksSettings = settings
        self.issuer = issuer
        self.configured_jwks_uri = jwks_uri
        self.algorithms = algorithms
        self.listeners: tuple[KeyListener, ...] = tuple(listeners)
        self._discovered_uri: str | None = None

    # -- the decision side (any thread) -------------------------------------

    def current(self) -> KeySet | None:
        return self.value()

    def wait_for_keys(self) -> concurrent.futures.Future[bool] | None:
        return self.wait_for_value()

    def refetch_unknown_kid(self) -> concurrent.futures.Future[bool] | None:
        return self.refetch()

    def status(self) -> dict[str, Any]:
        keyset = self._state.value
        counts = self.counts()
        return {
            "source": "remote",
            "state": self.state_label(),
            "keys": len(keyset.keys) if keyset else 0,
            "age_seconds": counts["age_seconds"],
            "fetches": counts["fetches"],
            "successes": counts["successes"],
            "failures_total": counts["failures_total"],
            "fetch_seconds": counts["fetch_seconds"],
            "last_error": counts["last_error"],
            "jwks_uri": self._discovered_uri or self.configured_jwks_uri,
        }

    # -- fetching (the loop thread) -------------------------------------------

    def accepted(self, old: KeySet | None, new: KeySet) -> None:
        if new.skipped:
            log.warning("issuer %s: skipped keys: %s", self.name, "; ".join(new.skipped))
        if old is None:
            return
        removed = old.thumbprints - new.thumbprints
        if removed:
            log.info("issuer %s: %d key(s) left the key set", self.name, len(removed))
            for listener in self.listeners:
                try:
                    listener(self.name, frozenset(removed))
                except Exception:
                    log.exception("key-change listener failed")

    async def download(self) -> KeySet:
        session = await self._loop.session()
        jwks_uri = self.configured_jwks_uri
        if jwks_uri is None:
            discovery_url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = await fetch_json(session, discovery_url, self.settings.max_bytes)
            if not isinstance(document, dict):
                raise FetchError("discovery document is not a JSON object")
            if document.get("issuer") != self.issuer:
                raise FetchError("discovery document names a different issuer")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise FetchError("discovery document has no jwks_uri")
            problem = check_url(jwks_uri)
            if problem:
                raise FetchError(f"discovery jwks_uri {problem}")
            self._discovered_uri = jwks_uri
        document = await fetch_json(session, jwks_uri, self.settings.max_bytes)
        return parse_jwks(document, self.algorithms, allow_symmetric=False)


class KeyRegistry:
    """Remote key sets that outlive a policy: a reload that keeps an issuer
    keeps its cached keys instead of fetching them again.

    ``on_change`` is the key-change listener of every set the registry makes,
    given to each when it is made: whatever reloads come and go, each set has
    it exactly once, and a set made later can never be mistaken for one made
    earlier."""

    def __init__(self, loop: FetchLoop | None = None, *, on_change: KeyListener | None = None) -> None:
        self.loop = loop
        self.on_change = on_change
        self._sets: dict[tuple[Any, ...], RemoteKeys] = {}

    def get(self, name: str, issuer: str, jwks_uri: str | None, algorithms: frozenset[str],
            settings: JwksSettings) -> RemoteKeys:
        key = (name, issuer, jwks_uri, algorithms, settings)
        found = self._sets.get(key)
        if found is None:
            listeners = () if self.on_change is None else (self.on_change,)
            found = RemoteKeys(name, issuer, jwks_uri, algorithms, settings, loop=self.loop, listeners=listeners)
            self._sets[key] = found
        return found

    def retain(self, keep: Iterable[RemoteKeys]) -> None:
        """Stop and forget the sets no longer in use (compared as objects,
        never by ``id``, which a later object may reuse)."""
        kept = list(keep)
        for key, keys in list(self._sets.items()):
            if not any(keys is k for k in kept):
                keys.stop()
                del self._sets[key]
