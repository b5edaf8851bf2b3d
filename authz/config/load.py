"""Loading a policy from its path: one file, or a policy directory."""

from __future__ import annotations

import os

from authz.config import schema
from authz.config.compile import PolicyCompiler
from authz.config.messages import read_yaml, validate
from authz.config.teams import load_policy_dir
from authz.errors import ConfigError
from authz.identity.jwks import KeyRegistry
from authz.policy import Policy


def load_policy(path: str, *, registry: KeyRegistry | None = None) -> Policy:
    """Load, validate and compile the policy at ``path``.

    A directory is a policy directory: its ``policy.yaml`` and every
    ``teams/*.yaml`` (:mod:`authz.config.teams`).

    Raises :class:`ConfigError` listing every problem found.
    """
    if os.path.isdir(path):
        return load_policy_dir(path, registry=registry or KeyRegistry())
    located = read_yaml(path, path)
    if located.problems:
        raise ConfigError(located.problems)
    model = validate(located, schema.PolicySpec)
    if located.problems or model is None:
        raise ConfigError(located.problems)
    compiler = PolicyCompiler(located, os.path.dirname(os.path.abspath(path)), registry or KeyRegistry(),
                              fold_case=not model.paths.case_sensitive)
    policy = compiler.compile(model)
    if compiler.problems:
        raise ConfigError(compiler.problems)
    return policy
