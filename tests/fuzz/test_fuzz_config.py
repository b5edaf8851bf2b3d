"""The policy loader (authz.config.load_policy) on arbitrary text, random
YAML trees and mutations of a valid policy: it returns a compiled policy or
raises ConfigError whose every problem is ``FILE:LINE: message`` with a line
of the file; never another exception."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from authz.config import load_policy
from authz.errors import ConfigError
from authz.policy import Policy
from tests.fuzz import budget
from tests.fuzz.strategies import POLICY, write_policy

#: Every field name of the policy format (authz/config/schema.py), and a few that are not.
KEYS = ["version", "issuers", "name", "issuer", "audiences", "jwks_uri", "jwks_file", "algorithms", "leeway",
        "roles_claim", "scopes_claim", "from", "header", "prefix", "cookie", "token_types", "max_token_size", "jwks",
        "refresh_interval", "min_refetch_interval", "max_stale", "fetch_timeout", "api_keys", "keys", "subject",
        "sha256", "roles", "keys_file", "peers", "rules", "effect", "anonymous", "dry_run", "hosts", "methods", "paths",
        "source_ips", "principals", "when", "response", "headers", "remove", "identity_token", "audience", "ttl",
        "signing_key", "extra_public_keys", "cache", "decisions", "tokens", "max_entries", "deny_ttl", "from_", "<<"]
#: Values that mean something somewhere in a policy, valid in some places.
WORDS = ["RS256", "ES256", "HS256", "none", "30s", "1h30m", "500ms", "-1s", "allow", "deny", "/api/**", "/a/*/b",
         "/{id}", "**", "*.example.com", "10.0.0.0/8", "::1/129", "300.0.0.0/8", "https://idp.example.com",
         "http://169.254.169.254/", "corp.jwks.json", "identity-es256.pem", "missing.pem", "x-user-id", "Host",
         ":path", "orders-reader", "spiffe://cluster.local/ns/*/sa/**", "identity.subject", 'request.method == "GET"',
         "identity.claims.tenant", "has(request.query.x)", "1 +", "size(", "now > timestamp('2020-01-01T00:00:00Z')",
         "request.headers['x'] + 1", "a" * 70, ""]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.sampled_from(WORDS))
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5)), max_leaves=25)

VALID = yaml.safe_load(POLICY)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            out += _paths(value, (*prefix, index))
    return out


PATHS = _paths(VALID)[1:]


def _holds(container: Any, key: Any) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(container, list) and isinstance(key, int) and key < len(container)


@st.composite
def mutated_trees(draw: st.DrawFn) -> Any:
    """The fuzz policy with one to three values replaced, removed, or given a sibling."""
    document = yaml.safe_load(POLICY)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = document
        for part in path[:-1]:
            if not _holds(parent, part):
                parent = None  # an earlier mutation removed or replaced the path
                break
            parent = parent[part]
        last = path[-1]
        if not _holds(parent, last):
            continue
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[last] = draw(st.one_of(scalars, trees))
        elif action == "remove":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(trees)
        else:
            parent.append(draw(trees))
    return document


#: Text that means something to YAML: anchors, aliases, tags, flow and block syntax, odd characters.
YAML_PIECES = ["&a ", "*a", "<<: *a", "!!binary ", "!!python/name:os.system ", "!!int ", "!!timestamp ", "!custom ",
               "? ",
               "- ", ": ", "{", "}", "[", "]", ",", "'", '"', "|\n", ">-\n", "#", "\t", "\x00", "\ufeff", "\r", "\x85",
               "\n", "\n  ", "%YAML 1.1\n---\n", "---\n", "...\n", "0x1F", "1e400", ".nan", "~", "yes", "2026-13-45"]


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    """The fuzz policy's text with lines removed, repeated or re-indented,
    and YAML syntax or random text spliced in."""
    lines = POLICY.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "repeat", "indent", "dedent", "splice"]))
        if action == "delete":
            del lines[index]
        elif action == "repeat":
            lines.insert(index, lines[index])
        elif action == "indent":
            lines[index] = " " * draw(st.integers(1, 3)) + lines[index]
        elif action == "dedent":
            lines[index] = lines[index].lstrip(" ")
        else:
            line = lines[index]
            at = draw(st.integers(0, len(line)))
            piece = draw(st.one_of(st.sampled_from(YAML_PIECES), st.text(max_size=4)))
            lines[index] = line[:at] + piece + line[at + draw(st.integers(0, 2)):]
        if not lines:
            break
    return "".join(lines)


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the key files the fuzz policy names."""
    path = tmp_path_factory.mktemp("fuzz-config")
    write_policy(path)
    return path


def load(directory: Path, text: str) -> Policy | ConfigError:
    """Load ``text`` as a policy file; a ConfigError must list only
    ``FILE:LINE: message`` problems, each at a line of the file."""
    path = directory / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        policy = load_policy(str(path))
    except ConfigError as error:
        assert error.problems
        last = len(text.splitlines()) + 1
        shape = re.compile(rf"{re.escape(str(path))}:(\d+): \S")
        for problem in error.problems:
            match = shape.match(str(problem))
            assert match, str(problem)
            assert 1 <= int(match.group(1)) <= last, str(problem)
        return error
    return policy


@budget(400)
@given(text=st.text(max_size=200))
def test_random_text(directory: Path, text: str) -> None:
    event(type(load(directory, text)).__name__)


@budget(300)
@given(tree=trees)
def test_random_yaml_trees(directory: Path, tree: Any) -> None:
    document = {"version": 1, **tree} if isinstance(tree, dict) else tree
    event(type(load(directory, yaml.safe_dump(document, allow_unicode=True))).__name__)


@budget(300)
@given(tree=mutated_trees())
def test_mutations_of_a_valid_policy(directory: Path, tree: Any) -> None:
    event(type(load(directory, yaml.safe_dump(tree, allow_unicode=True, sort_keys=False))).__name__)


@budget(300)
@given(text=mutated_texts())
def test_mutations_of_a_valid_policy_file(directory: Path, text: str) -> None:
    event(type(load(directory, text)).__name__)


def test_the_unmutated_policy_compiles(directory: Path) -> None:
    assert isinstance(load(directory, POLICY), Policy)
    assert isinstance(load(directory, yaml.safe_dump(VALID, sort_keys=False)), Policy)
