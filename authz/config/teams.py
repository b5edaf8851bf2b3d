"""Policy directories: one policy from a root file and one file per team.

``DIR/policy.yaml`` is the root, owned by the platform team: issuers, API
keys, peers, global rules, the response, caches, path settings. Every
``DIR/teams/*.yaml`` is a team file::

    version: 1
    team: payments                      # default: the file name
    owns:                               # at least one; a request is the team's when it matches each given
      hosts: [pay.example.com]
      paths: [/api/payments]            # prefixes: the path itself and everything below it
      destination_principals: ["spiffe://cluster.local/ns/payments/sa/*"]
    roles: {...}                        # new roles only
    rules: [...]                        # new rules only

Refused at load, with ``FILE:LINE`` in the file that did it: a team file
writing anything but roles and rules (an issuer, peers, ...), a role or rule
named like one of the root or of another team, a permission or rule whose
``paths`` or ``hosts`` reach outside what the team owns, and two teams whose
scopes overlap. Beyond those checks, every permission and rule of a team
carries the team's :class:`authz.scope.Scope`, which the matcher checks
first: a team can never allow outside what it owns, whatever it writes
(docs/security.md 58). Global deny rules come first.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from authz import matchers
from authz.config import schema
from authz.config.compile import PolicyCompiler, policy_reads
from authz.config.deny_with import deny_reads, rule_shapes
from authz.config.messages import read_yaml, validate
from authz.config.source import Located
from authz.denials import Shape
from authz.errors import ConfigError, Problem
from authz.identity.jwks import KeyRegistry
from authz.identity.peer import PeerRoles
from authz.metadata import BUILTIN
from authz.policy import Matcher, Policy, Rule
from authz.response_plan import ResponsePlan
from authz.scope import Scope

ROOT_FILE = "policy.yaml"
TEAMS_DIR = "teams"
#: What only the root may say.
ROOT_ONLY = ("issuers", "api_keys", "peers", "response", "cache", "paths", "callers", "deny_with", "data",
             "body")


class OwnsSpec(schema.Model):
    hosts: list[str] | None = None
    paths: list[str] | None = None
    destination_principals: list[str] | None = None


class TeamSpec(schema.Model):
    version: Literal[1]
    team: schema.Name | None = None
    owns: OwnsSpec
    roles: dict[str, list[schema.PermissionSpec]] = Field(default_factory=dict)
    rules: list[schema.RuleSpec] = Field(default_factory=list)


class PolicyDirError(ConfigError):
    """A policy directory that does not load; ``teams`` maps each team
    file (as named in the problems) to its team, for logs and metrics."""

    def __init__(self, problems: list[Problem], teams: dict[str, str]) -> None:
        super().__init__(problems)
        self.teams = teams


@dataclass
class _Team:
    located: Located
    spec: TeamSpec
    name: str
    scope: Scope | None = None
    roles: dict[str, tuple[Matcher, ...]] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    denials: dict[str, Shape] = field(default_factory=dict)


def load_policy_dir(directory: str, *, registry: KeyRegistry) -> Policy:
    """The one policy of a policy directory; raises :class:`PolicyDirError`."""
    root_path = os.path.join(directory, ROOT_FILE)
    located = read_yaml(root_path, root_path)
    model = validate(located, schema.PolicySpec) if not located.problems else None
    problems: list[Problem] = []
    names: dict[str, str] = {}
    teams = _read_teams(directory, problems, names)
    if model is None or located.problems:
        raise PolicyDirError([*located.problems, *problems], names)
    compiler = PolicyCompiler(located, os.path.dirname(os.path.abspath(root_path)), registry,
                         fold_case=not model.paths.case_sensitive)
    compiler.extra_roles = {name for team in teams for name in team.spec.roles}
    policy = compiler.compile(model)
    problems.extend(located.problems)
    roles_at = {name: f"{located.file}:{located.line(('roles', name), key=True)}" for name in model.roles}
    rules_at = {rule.name: f"{located.file}:{located.line(('rules', i, 'name'))}" for i, rule in enumerate(model.rules)}
    for team in teams:
        already = len(team.located.problems)  # reported by _read_teams
        _compile_team(team, compiler, roles_at, rules_at, policy.response.metadata)
        problems.extend(team.located.problems[already:])
    _overlaps(teams, problems, compiler.fold_case)
    if problems:
        raise PolicyDirError(list(problems), names)
    roles = dict(policy.roles)
    rules = [*policy.deny_rules, *policy.allow_rules]
    by_rule = dict(policy.deny_with.by_rule)
    for team in teams:
        roles.update(team.roles)
        rules.extend(team.rules)
        by_rule.update(team.denials)
    deny_with = dataclasses.replace(policy.deny_with, by_rule=by_rule)
    teams_dir = os.path.abspath(os.path.join(directory, TEAMS_DIR))
    files = (*policy.files, teams_dir, *(os.path.abspath(t.located.file) for t in teams))
    return dataclasses.replace(
        policy,
        files=tuple(dict.fromkeys(files)),
        roles=roles,
        # Global deny rules first: the root's, then each team's.
        deny_rules=tuple(r for r in rules if r.effect == "deny"),
        allow_rules=tuple(r for r in rules if r.effect == "allow"),
        reads=policy_reads(roles, rules, policy.response, peers=bool(policy.peers), denials=deny_reads(deny_with)),
        deny_with=deny_with,
    )


def by_file(policy: Policy, directory: str) -> list[tuple[str, Policy]]:
    """The policy of ``directory`` as one part per file it was written in
    (as named in messages), for advice given ``FILE:LINE``: the root keeps
    its peers and response, a team file only its rules and roles."""
    root = os.path.join(directory, ROOT_FILE)
    files = dict.fromkeys([root, *(m.file for m in _matchers(policy))])
    out = []
    for file in files:
        team = file != root
        out.append((file, dataclasses.replace(
            policy,
            deny_rules=tuple(r for r in policy.deny_rules if r.matcher.file == file),
            allow_rules=tuple(r for r in policy.allow_rules if r.matcher.file == file),
            roles={name: ms for name, ms in policy.roles.items() if ms and ms[0].file == file},
            peers=PeerRoles() if team else policy.peers,
            response=ResponsePlan() if team else policy.response,
        )))
    return out


def _matchers(policy: Policy) -> list[Matcher]:
    return [*(r.matcher for r in (*policy.deny_rules, *policy.allow_rules)),
            *(m for ms in policy.roles.values() for m in ms)]


def _read_teams(directory: str, problems: list[Problem], names: dict[str, str]) -> list[_Team]:
    """The team files that fit the schema; ``names`` gets the team of every
    file (its file name when the file does not say, or cannot be read)."""
    teams: list[_Team] = []
    seen: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(directory, TEAMS_DIR, "*.yaml"))):
        located = read_yaml(path, path)
        names[path] = os.path.splitext(os.path.basename(path))[0]
        if not located.problems and isinstance(located.data, dict):
            for key in ROOT_ONLY:
                if key in located.data:
                    located.problem((key,), f"a team file may not define {key}: it belongs to the root "
                                            f"{os.path.join(directory, ROOT_FILE)}; a team adds roles and rules "
                                            "inside what it owns", key=True)
                    del located.data[key]
        spec = validate(located, TeamSpec) if located.data is not None else None
        if spec is not None:
            name = spec.team or os.path.splitext(os.path.basename(path))[0]
            if name in seen:
                where = ("team",) if spec.team else ()
                located.problem(where, f"team {name!r} is already defined by {seen[name]}")
            seen.setdefault(name, path)
            names[path] = name
            teams.append(_Team(located, spec, name))
        problems.extend(located.problems)
    return teams


def _compile_team(team: _Team, root: PolicyCompiler, roles_at: dict[str, str], rules_at: dict[str, str],
                  root_metadata: Iterable[tuple[str, object]] = ()) -> None:
    located, spec = team.located, team.spec
    compiler = PolicyCompiler(located, os.path.dirname(os.path.abspath(located.file)), root.registry,
                         fold_case=root.fold_case)
    compiler.extra_roles = root.extra_roles
    team.scope = _scope(compiler, spec.owns, team.name)
    if team.scope is None:
        return
    compiler.scope = team.scope
    for name, permissions in spec.roles.items():
        if name in roles_at:
            located.problem(("roles", name), f"role {name!r} is already defined by {roles_at[name]}; a team "
                                             "may only add roles", key=True)
            continue
        roles_at[name] = f"{located.file}:{located.line(('roles', name), key=True)}"
        for index, permission in enumerate(permissions):
            _inside(compiler, spec.owns, permission, ("roles", name, index))
        team.roles[name] = tuple(m for i, p in enumerate(permissions)
                                 if (m := compiler.matcher(p, ("roles", name, i))) is not None)
    for index, rule in enumerate(spec.rules):
        if rule.name in rules_at:
            located.problem(("rules", index, "name"), f"rule {rule.name!r} is already defined by "
                                                      f"{rules_at[rule.name]}; a team may only add rules")
        else:
            rules_at[rule.name] = f"{located.file}:{located.line(('rules', index, 'name'))}"
        _inside(compiler, spec.owns, rule, ("rules", index))
    team.rules = compiler.rules(spec.rules)
    team.denials = rule_shapes(compiler, spec.rules, set(BUILTIN) | {key for key, _ in root_metadata})


def _scope(compiler: PolicyCompiler, owns: OwnsSpec, team: str) -> Scope | None:
    """The compiled scope; None, with problems, when it is not one."""
    located = compiler.located
    if owns.hosts is None and owns.paths is None and owns.destination_principals is None:
        located.problem(("owns",), "a team must own something: give hosts, paths or destination_principals", key=True)
        return None
    before = len(located.problems)
    for index, host in enumerate(owns.hosts or ()):
        if host == "*":
            located.problem(("owns", "hosts", index), "'*' owns every host: omit hosts instead")
    for index, prefix in enumerate(owns.paths or ()):
        if "*" in prefix:
            located.problem(("owns", "paths", index), f"owned paths are prefixes, without wildcards: {prefix!r}")
    empty = [name for name in ("hosts", "paths", "destination_principals") if getattr(owns, name) == []]
    for name in empty:
        located.problem(("owns", name), "an empty list owns nothing; omit the field instead")
    if len(located.problems) > before:
        return None
    hosts = paths = destinations = None
    if owns.hosts is not None:
        hosts = compiler.attempt(("owns", "hosts"), lambda: matchers.compile_hosts(owns.hosts or ()))
    if owns.paths is not None:
        patterns = [p for prefix in owns.paths for p in (_trim(prefix), _trim(prefix).rstrip("/") + "/**")]
        paths = compiler.attempt(("owns", "paths"),
                                 lambda: matchers.compile_paths(patterns, fold_case=compiler.fold_case))
    if owns.destination_principals is not None:
        destinations = compiler.attempt(("owns", "destination_principals"),
                                        lambda: matchers.compile_globs(owns.destination_principals or ()))
    if len(located.problems) > before:
        return None
    return Scope(team, located.file, hosts, paths, destinations)


def _trim(prefix: str) -> str:
    return prefix.rstrip("/") or "/"


# -- containment: what a team writes must lie inside what it owns ----------------


def _inside(compiler: PolicyCompiler, owns: OwnsSpec, permission: schema.PermissionSpec,
            path: tuple[str | int, ...]) -> None:
    located = compiler.located
    if owns.paths is not None:
        owned = [_segments(_trim(p), compiler.fold_case) for p in owns.paths]
        for index, pattern in enumerate(permission.paths or ()):
            if not any(_is_prefix(o, _literal_segments(pattern, compiler.fold_case)) for o in owned):
                located.problem((*path, "paths", index), f"path {pattern!r} reaches outside what the team owns "
                                                         f"(paths {owns.paths})")
    if owns.hosts is not None:
        for index, host in enumerate(permission.hosts or ()):
            if not any(host_within(host, o) for o in owns.hosts):
                located.problem((*path, "hosts", index), f"host {host!r} reaches outside what the team owns "
                                                         f"(hosts {owns.hosts})")


def _segments(path: str, fold: bool) -> list[str]:
    path = path.lower() if fold else path
    return [] if path == "/" else path.split("/")[1:]


def _literal_segments(pattern: str, fold: bool) -> list[str]:
    """The segments every path the pattern matches starts with."""
    out = []
    for segment in _segments(pattern, fold):
        if "*" in segment:
            break
        out.append(segment)
    return out


def _is_prefix(prefix: list[str], segments: list[str]) -> bool:
    return segments[: len(prefix)] == prefix


def host_within(pattern: str, owned: str) -> bool:
    """Whether every authority ``pattern`` matches is matched by ``owned``."""
    if pattern == "*" or owned == "*":
        return owned == "*"
    name, port = matchers.split_host(pattern)
    owned_name, owned_port = matchers.split_host(owned)
    if owned_port is not None and port != owned_port:
        return False
    if owned_name.startswith("*."):
        suffix = owned_name[1:]
        if name.startswith("*."):
            return name[1:].endswith(suffix)
        return name.endswith(suffix) and len(name) > len(suffix)
    return name == owned_name


def hosts_meet(a: str, b: str) -> bool:
    """Whether some authority is matched by both host patterns."""
    name_a, port_a = matchers.split_host(a)
    name_b, port_b = matchers.split_host(b)
    if port_a is not None and port_b is not None and port_a != port_b:
        return False
    wild_a, wild_b = name_a.startswith("*."), name_b.startswith("*.")
    if wild_a and wild_b:
        return name_a[1:].endswith(name_b[1:]) or name_b[1:].endswith(name_a[1:])
    if wild_a or wild_b:
        wild, exact = (name_a, name_b) if wild_a else (name_b, name_a)
        return exact.endswith(wild[1:]) and len(exact) > len(wild) - 1
    return name_a == name_b


def globs_may_meet(a: str, b: str) -> bool:
    """Whether two principal globs may match a common principal: exactly
    for an exact one, and conservatively (their text before the first
    wildcard agrees) for two globs."""
    if "*" not in a:
        return matchers.compile_globs([b]).matches(a)
    if "*" not in b:
        return matchers.compile_globs([a]).matches(b)
    head_a, head_b = a.split("*", 1)[0], b.split("*", 1)[0]
    return head_a.startswith(head_b) or head_b.startswith(head_a)


def _overlaps(teams: list[_Team], problems: list[Problem], fold: bool) -> None:
    """Two teams may not own the same request: refused in the later file."""
    placed = [t for t in teams if t.scope is not None]
    for index, team in enumerate(placed):
        for earlier in placed[:index]:
            if _meet(team.spec.owns, earlier.spec.owns, fold):
                where = f"{earlier.located.file}:{earlier.located.line(('owns',), key=True)}"
                message = (f"team {team.name!r} claims requests team {earlier.name!r} already owns ({where}); "
                           "two teams may not own the same host, path and destination")
                problems.append(Problem(team.located.file, team.located.line(("owns",), key=True), f"owns: {message}"))


def _meet(a: OwnsSpec, b: OwnsSpec, fold: bool) -> bool:
    """Whether some request is in both scopes (each field given by both must meet)."""
    if a.paths is not None and b.paths is not None:
        ours = [_segments(_trim(p), fold) for p in a.paths]
        theirs = [_segments(_trim(p), fold) for p in b.paths]
        if not any(_is_prefix(x, y) or _is_prefix(y, x) for x in ours for y in theirs):
            return False
    hosts = (a.hosts or (), b.hosts or ())
    if a.hosts is not None and b.hosts is not None and not any(hosts_meet(x, y) for x in hosts[0] for y in hosts[1]):
        return False
    ours_d, theirs_d = a.destination_principals, b.destination_principals
    return ours_d is None or theirs_d is None or any(globs_may_meet(x, y) for x in ours_d for y in theirs_d)
