"""The ``api_keys`` section: keys listed in the policy or in a keys file
(reloaded with the policy), stored as SHA-256 digests, each with its
subject and roles; compiled into one :class:`~authz.identity.api_key.ApiKeySource`."""

from __future__ import annotations

import os
import re
from typing import Protocol

from authz.config import schema
from authz.config.compiling import Compiling
from authz.config.messages import read_yaml, validate, yaml_type
from authz.config.source import Located, Path
from authz.errors import Problem
from authz.identity.api_key import ApiKeyEntry, ApiKeySource
from authz.identity.credential import Credential
from authz.identity.introspected import IntrospectedSource
from authz.identity.jwt import JwtSource

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
INVALID_HEADER = "invalid header name {!r}"


class KeysCompiling(Compiling, Protocol):
    problems: list[Problem]
    role_names: set[str]

    def resolve(self, name: str) -> str: ...


def api_key_section(compiler: KeysCompiling, model: schema.PolicySpec, before: list[Credential]) -> list[Credential]:
    """The API-key source, asked after the token sources (``before``), none
    of which may read the same header."""
    if model.api_keys is None:
        return []
    api_keys = compile_api_keys(compiler, model.api_keys, compiler.role_names)
    if api_keys is None:
        return []
    if any(isinstance(s, JwtSource | IntrospectedSource) and s.location.header == api_keys.header for s in before):
        compiler.problem(("api_keys", "header"), f"header {api_keys.header!r} already carries JWTs")
    return [api_keys]


def compile_api_keys(compiler: KeysCompiling, config: schema.ApiKeysSpec, role_names: set[str]) -> ApiKeySource | None:
    header = compiler.header_name(config.header, ("api_keys", "header"), INVALID_HEADER, fold=True)
    entries: list[ApiKeyEntry] = []
    seen: set[str] = set()
    _key_entries(config.keys, ("api_keys", "keys"), compiler.located, role_names, entries, seen)
    if config.keys_file is not None:
        file = compiler.resolve(config.keys_file)
        # Problems in the keys file are reported under its own name, as
        # reachable from where the policy file was named.
        shown = config.keys_file
        if not os.path.isabs(shown):
            shown = os.path.join(os.path.dirname(compiler.located.file), shown)
        located = read_yaml(file, shown)
        if not located.problems:
            if isinstance(located.data, list):
                located.data = {"keys": located.data}
                located.remap(("keys",))
            if isinstance(located.data, dict):
                model = validate(located, schema.ApiKeysFileSpec)
                if model is not None:
                    _key_entries(model.keys, ("keys",), located, role_names, entries, seen)
            else:
                located.problem((), "expected a list of keys (or a mapping with 'keys'), "
                                    f"not {yaml_type(located.data)}")
        compiler.problems.extend(located.problems)
    return None if header is None else ApiKeySource(header, tuple(entries))


def _key_entries(keys: list[schema.ApiKeySpec], path: Path, located: Located, role_names: set[str],
                 entries: list[ApiKeyEntry], seen: set[str]) -> None:
    for index, key in enumerate(keys):
        where: Path = (*path, index)
        digest = key.sha256.lower()
        if not _SHA256_HEX.fullmatch(digest):
            located.problem((*where, "sha256"),
                            "sha256 must be 64 hexadecimal digits (the hash of the key, never the key)")
            continue
        if digest in seen:
            located.problem((*where, "sha256"), "the same key is listed twice")
            continue
        seen.add(digest)
        for i, role in enumerate(key.roles):
            if role not in role_names:
                located.problem((*where, "roles", i), f"unknown role {role!r}")
        entries.append(ApiKeyEntry(key.subject, bytes.fromhex(digest), frozenset(key.roles)))
