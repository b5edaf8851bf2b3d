"""One policy generation for every worker.

The supervisor validates a policy and numbers it; that number and the
digests of the files it was compiled from are the *target* every worker must
run. A worker compiles the policy itself (its key sets are its own), and
accepts the result only when it read exactly the supervisor's files: their
digests before and after its own load equal the target's. Otherwise (a file
edited meanwhile, broken since, unreadable) the worker cannot run the
supervisor's generation and reports itself not ready until it can; the
supervisor asks again until it does or a newer generation replaces it.
Nothing here depends on how a worker process was started.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from typing import Any

from authz.config import KeyRegistry, load_policy
from authz.errors import AuthzError
from authz.policy import Policy


def file_digests(files: tuple[str, ...]) -> dict[str, str | None]:
    """SHA-256 of each file's bytes (of a directory's sorted listing: a
    policy directory's teams/, where a file arriving or leaving is a change);
    None for one that cannot be read."""
    out: dict[str, str | None] = {}
    for name in files:
        try:
            if os.path.isdir(name):
                out[name] = hashlib.sha256("\n".join(sorted(os.listdir(name))).encode()).hexdigest()
                continue
            with open(name, "rb") as handle:
                out[name] = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            out[name] = None
    return out


@dataclass(frozen=True)
class Target:
    """The generation the supervisor runs: its number and the digests of
    the files it was compiled from. Sent to workers over their pipe."""

    generation: int
    digests: dict[str, str | None]

    def as_message(self) -> dict[str, Any]:
        return {"generation": self.generation, "digests": dict(self.digests)}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Target:
        return cls(int(message["generation"]), dict(message["digests"]))


class NotThisGeneration(AuthzError):
    """The files on disk are not the ones the target was compiled from."""


def load_consistent(config: str, *, attempts: int = 3) -> tuple[Policy, dict[str, str | None]]:
    """The supervisor's load: the policy and the digests of the files it
    read, retried while the policy file changes under it. Raises
    :class:`authz.errors.ConfigError`."""
    name = os.path.abspath(config)  # as Policy.files names it
    for _ in range(attempts - 1):
        before = file_digests((name,))[name]
        policy = load_policy(config)
        digests = file_digests(policy.files)
        if digests.get(name) == before:
            return policy, digests
    policy = load_policy(config)
    return policy, file_digests(policy.files)


def load_target(config: str, target: Target, registry: KeyRegistry) -> Policy:
    """A worker's load of ``target``: the policy compiled from exactly the
    target's files, numbered as the supervisor numbered it. Raises
    :class:`authz.errors.ConfigError` or :class:`NotThisGeneration`."""
    files = tuple(target.digests)
    if file_digests(files) != target.digests:
        raise NotThisGeneration(f"the policy files changed since generation {target.generation} was validated")
    policy = load_policy(config, registry=registry)
    if file_digests(policy.files) != target.digests:
        raise NotThisGeneration(f"the policy files changed while generation {target.generation} was loaded")
    return replace(policy, generation=target.generation)
