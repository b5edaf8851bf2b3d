"""Policy directories: a root file and team files, each team confined to
what it owns (docs/policy.md, "Policy directories"; docs/security.md 58)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.cli import main
from authz.config import load_policy
from authz.config.teams import PolicyDirError, globs_may_meet, host_within, hosts_meet
from authz.engine import Engine
from authz.errors import ConfigError
from authz.request import Request

ROOT = """\
version: 1
api_keys:
  keys:
    - {subject: partner, sha256: "507636717dd889c4aca6e55fac6880c0e096f0160c1c940da0564f39301c6537", \
       roles: [orders-reader]}
roles:
  platform-admin:
    - {paths: ["/**"]}
rules:
  - {name: public, effect: allow, paths: [/healthz], anonymous: true}
  - {name: no-debug, effect: deny, paths: ["/api/*/debug/**"]}
"""

ORDERS = """\
version: 1
team: orders
owns:
  hosts: [shop.example.com]
  paths: [/api/orders]
roles:
  orders-reader:
    - {methods: [GET], paths: [/api/orders, /api/orders/*]}
rules:
  - {name: orders-open, effect: allow, anonymous: true, methods: [OPTIONS]}
"""

PAYMENTS = """\
version: 1
owns:
  paths: [/api/payments]
  destination_principals: ["spiffe://cluster.local/ns/payments/sa/*"]
rules:
  - {name: payments-status, effect: allow, paths: [/api/payments/status], anonymous: true}
"""

KEY = "demo-key-0123456789"


def make(tmp_path: Path, root: str = ROOT, **teams: str) -> Path:
    (tmp_path / "teams").mkdir(exist_ok=True)
    (tmp_path / "policy.yaml").write_text(root)
    for name, text in teams.items():
        (tmp_path / "teams" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return tmp_path


def problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_policy(str(directory))
    return [str(p) for p in caught.value.problems]


def decide(directory: Path, method: str, path: str, *, host: str = "shop.example.com", destination: str = "",
           headers: dict[str, str] | None = None) -> tuple[bool, str, str | None]:
    decision = Engine(load_policy(str(directory))).decide(
        Request(method=method, path=path, host=host, headers=headers or {}, destination_principal=destination))
    return decision.allowed, decision.reason.value, decision.rule


def test_a_directory_is_one_policy_with_each_team_confined(tmp_path: Path) -> None:
    d = make(tmp_path, orders=ORDERS, payments=PAYMENTS)
    policy = load_policy(str(d))
    assert set(policy.roles) == {"platform-admin", "orders-reader"}
    assert policy.origin("orders-reader") == (f"{d}/teams/orders.yaml", 8, "orders")
    assert policy.origin("payments-status") == (f"{d}/teams/payments.yaml", 6, "payments")
    assert policy.origin("public") == (f"{d}/policy.yaml", 9, None)
    # The root's API key grants a team's role, which allows only inside the team's scope.
    key = {"x-api-key": KEY}
    assert decide(d, "GET", "/api/orders/7", headers=key) == (True, "allowed", "orders-reader")
    assert decide(d, "GET", "/api/orders/7", host="admin.example.com", headers=key)[:2] == (False, "no_permission")
    # A team rule with no paths or hosts covers its whole scope, and nothing beyond it.
    assert decide(d, "OPTIONS", "/api/orders/7") == (True, "allowed", "orders-open")
    assert decide(d, "OPTIONS", "/api/other")[:2] == (False, "missing_credential")
    assert decide(d, "OPTIONS", "/api/orders/7", host="evil.example.com")[:2] == (False, "missing_credential")
    # Destination principals: the payments workload only.
    mine = "spiffe://cluster.local/ns/payments/sa/api"
    assert decide(d, "GET", "/api/payments/status", destination=mine) == (True, "allowed", "payments-status")
    assert decide(d, "GET", "/api/payments/status", destination="spiffe://cluster.local/ns/shop/sa/x")[0] is False
    assert decide(d, "GET", "/api/payments/status")[0] is False
    # The root's own rules and roles are global.
    assert decide(d, "GET", "/healthz", host="anything.example") == (True, "allowed", "public")


def test_global_deny_rules_apply_first(tmp_path: Path) -> None:
    d = make(tmp_path, orders=ORDERS.replace("[OPTIONS]", "[GET]").replace(
        "anonymous: true,", "anonymous: true, paths: ['/api/orders/**'],"))
    assert decide(d, "GET", "/api/orders/7") == (True, "allowed", "orders-open")
    assert decide(d, "GET", "/api/orders/debug/vars") == (False, "denied_by_rule", "no-debug")
    policy = load_policy(str(d))
    assert [r.name for r in policy.deny_rules] == ["no-debug"]


def test_a_team_may_deny_inside_its_scope_only(tmp_path: Path) -> None:
    d = make(tmp_path, orders=ORDERS + "  - {name: orders-no-delete, effect: deny, methods: [DELETE]}\n")
    admin = load_policy(str(d))
    engine = Engine(admin)
    inside = Request(method="DELETE", path="/api/orders/1", host="shop.example.com")
    outside = Request(method="DELETE", path="/api/users/1", host="shop.example.com")
    assert engine.decide(inside).rule == "orders-no-delete"
    assert engine.decide(outside).rule is None


ROOT_PLAIN = """\
version: 1
roles:
  platform-admin:
    - {paths: ["/**"]}
rules:
  - {name: public, effect: allow, paths: [/healthz], anonymous: true}
"""


def team(name: str, prefix: str) -> str:
    return f"""\
version: 1
team: {name}
owns:
  hosts: [shop.example.com]
  paths: [{prefix}]
roles:
  {name}-reader:
    - {{methods: [GET], paths: [{prefix}/*]}}
rules:
  - {{name: {name}-open, effect: allow, anonymous: true, methods: [OPTIONS]}}
"""


OUTSIDE = "teams/orders.yaml:{line}: {where}: {what} reaches outside what the team owns ({owned})"
ROOT_ONLY = ("teams/orders.yaml:11: {key}: a team file may not define {key}: it belongs to the root "
             "{d}/policy.yaml; a team adds roles and rules inside what it owns")
OVERLAP = ("teams/{later}.yaml:3: owns: team '{later}' claims requests team '{earlier}' already owns "
           "({d}/teams/{earlier}.yaml:3); two teams may not own the same host, path and destination")


@pytest.mark.parametrize(("files", "expected"), [
    pytest.param({"orders": team("orders", "/api/orders")
                  + "issuers:\n  - {name: c, issuer: https://i.example, audiences: [a]}\n"},
                 [ROOT_ONLY.format(key="issuers", d="{d}")], id="issuer"),
    pytest.param({"orders": team("orders", "/api/orders") + "peers:\n  'spiffe://x/y': [orders-reader]\n"},
                 [ROOT_ONLY.format(key="peers", d="{d}")], id="peers"),
    pytest.param({"orders": team("orders", "/api/orders") + "response: {}\n"},
                 [ROOT_ONLY.format(key="response", d="{d}")], id="response"),
    pytest.param({"orders": team("orders", "/api/orders")
                  + "  - {name: public, effect: allow, paths: [/api/orders/x]}\n"},
                 ["teams/orders.yaml:11: rules[1].name: rule 'public' is already defined by {d}/policy.yaml:6; "
                  "a team may only add rules"], id="global-rule"),
    pytest.param({"orders": team("orders", "/api/orders").replace("orders-reader:", "platform-admin:")},
                 ["teams/orders.yaml:7: roles.platform-admin: role 'platform-admin' is already defined by "
                  "{d}/policy.yaml:3; a team may only add roles"], id="root-role"),
    pytest.param({"orders": team("orders", "/api/orders"),
                  "more": team("more", "/api/more").replace("more-reader:", "orders-reader:")},
                 ["teams/orders.yaml:7: roles.orders-reader: role 'orders-reader' is already defined by "
                  "{d}/teams/more.yaml:7; a team may only add roles"], id="other-team-role"),
    pytest.param({"orders": team("orders", "/api/orders").replace("[/api/orders/*]", "[/api/orders/*, /api/*]")},
                 [OUTSIDE.format(line=8, where="roles.orders-reader[0].paths[1]", what="path '/api/*'",
                                 owned="paths ['/api/orders']")], id="path-outside"),
    pytest.param({"orders": team("orders", "/api/orders").replace("[/api/orders/*]", "[/api/ordersx]")},
                 [OUTSIDE.format(line=8, where="roles.orders-reader[0].paths[0]", what="path '/api/ordersx'",
                                 owned="paths ['/api/orders']")], id="path-sibling"),
    pytest.param({"orders": team("orders", "/api/orders").replace("methods: [OPTIONS]", "hosts: ['*.example.com']")},
                 [OUTSIDE.format(line=10, where="rules[0].hosts[0]", what="host '*.example.com'",
                                 owned="hosts ['shop.example.com']")], id="host-outside"),
    pytest.param({"orders": team("orders", "/api/orders"),
                  "shop": "version: 1\nteam: shop\nowns:\n  hosts: ['*.example.com']\n"},
                 [OVERLAP.format(later="shop", earlier="orders", d="{d}")], id="overlap"),
    pytest.param({"orders": team("orders", "/api/orders"), "search": team("search", "/api/orders/search")},
                 [OVERLAP.format(later="search", earlier="orders", d="{d}")], id="overlap-nested-prefix"),
    pytest.param({"orders": team("orders", "/api/orders"), "again": team("orders", "/api/again").replace(
                  "orders-reader", "again-reader").replace("orders-open", "again-open")},
                 ["teams/orders.yaml:2: team: team 'orders' is already defined by {d}/teams/again.yaml"],
                 id="team-name-twice"),
    pytest.param({"orders": "version: 1\nowns: {}\n"},
                 ["teams/orders.yaml:2: owns: a team must own something: give hosts, paths or "
                  "destination_principals"], id="owns-nothing"),
    pytest.param({"orders": "version: 1\nowns:\n  paths: ['/api/*/x']\n"},
                 ["teams/orders.yaml:3: owns.paths[0]: owned paths are prefixes, without wildcards: '/api/*/x'"],
                 id="owned-wildcard"),
    pytest.param({"orders": "version: 1\nowns:\n  hosts: ['*']\n"},
                 ["teams/orders.yaml:3: owns.hosts[0]: '*' owns every host: omit hosts instead"], id="owns-any-host"),
    pytest.param({"orders": team("orders", "/api/orders").replace("team: orders", "tema: orders")},
                 ["teams/orders.yaml:2: tema: unknown field (did you mean 'team'?)"], id="schema"),
])
def test_each_refusal_names_the_file_and_line_that_did_it(tmp_path: Path, files: dict[str, str],
                                                           expected: list[str]) -> None:
    d = make(tmp_path, root=ROOT_PLAIN, **files)
    assert problems(d) == [f"{d}/{line}".replace("{d}", str(d)) for line in expected]


def test_a_broken_team_file_names_its_team(tmp_path: Path) -> None:
    d = make(tmp_path, orders=ORDERS.replace("[/api/orders, /api/orders/*]", "[/x]"), payments=PAYMENTS,
             search="version: 1\nteam: [\n")
    with pytest.raises(PolicyDirError) as caught:
        load_policy(str(d))
    # A file that does not parse is named by its file name.
    assert caught.value.teams == {f"{d}/teams/orders.yaml": "orders", f"{d}/teams/payments.yaml": "payments",
                                  f"{d}/teams/search.yaml": "search"}
    assert {p.file for p in caught.value.problems} == {f"{d}/teams/orders.yaml", f"{d}/teams/search.yaml"}


def test_root_problems_are_reported_with_the_teams(tmp_path: Path) -> None:
    d = make(tmp_path, root=ROOT.replace("version: 1", "version: 2"), orders=ORDERS + "cache: {}\n")
    assert problems(d) == [
        f"{d}/policy.yaml:1: version: unsupported policy version 2: this authz reads version 1",
        f"{d}/teams/orders.yaml:11: cache: a team file may not define cache: it belongs to the root "
        f"{d}/policy.yaml; a team adds roles and rules inside what it owns",
    ]


def test_a_directory_without_policy_yaml_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path) == [f"{tmp_path}/policy.yaml:1: cannot read the file: no such file or directory"]


def test_every_file_is_watched(tmp_path: Path) -> None:
    d = make(tmp_path, orders=ORDERS, payments=PAYMENTS)
    files = load_policy(str(d)).files
    assert f"{d}/teams" in files and f"{d}/teams/orders.yaml" in files and f"{d}/teams/payments.yaml" in files


def test_explain_and_validate_accept_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make(tmp_path, orders=ORDERS)
    request = tmp_path / "request.json"
    request.write_text('{"attributes": {"request": {"http": {"method": "OPTIONS", "path": "/api/orders",'
                       ' "host": "shop.example.com"}}}}')
    assert main(["explain", "--config", str(d), "--request", str(request)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"=> ALLOW 200 allowed (rule orders-open) from {d}/teams/orders.yaml:10 (team orders)"
    assert main(["validate", "--config", str(d)]) == 0
    assert capsys.readouterr().out == f"{d}: valid (0 issuer(s), 2 role(s), 3 rule(s), 1 team file(s))\n"
    assert main(["check", "--config", str(d), "--request", str(request)]) == 0


# -- the containment helpers ------------------------------------------------------


@pytest.mark.parametrize(("pattern", "owned", "inside"), [
    ("shop.example.com", "shop.example.com", True), ("shop.example.com:8443", "shop.example.com", True),
    ("shop.example.com", "shop.example.com:8443", False), ("a.shop.example.com", "*.example.com", True),
    ("*.shop.example.com", "*.example.com", True), ("*.example.com", "*.shop.example.com", False),
    ("example.com", "*.example.com", False), ("*", "shop.example.com", False), ("other.com", "shop.example.com", False),
])
def test_host_within(pattern: str, owned: str, inside: bool) -> None:
    assert host_within(pattern, owned) is inside


@pytest.mark.parametrize(("a", "b", "meet"), [
    ("a.com", "a.com", True), ("a.com", "b.com", False), ("x.a.com", "*.a.com", True), ("a.com", "*.a.com", False),
    ("*.a.com", "*.b.a.com", True), ("*.a.com", "*.b.com", False), ("a.com:80", "a.com:81", False),
    ("a.com:80", "a.com", True),
])
def test_hosts_meet(a: str, b: str, meet: bool) -> None:
    assert hosts_meet(a, b) is meet and hosts_meet(b, a) is meet


@pytest.mark.parametrize(("a", "b", "meet"), [
    ("spiffe://c/ns/a/sa/x", "spiffe://c/ns/a/sa/*", True), ("spiffe://c/ns/b/sa/x", "spiffe://c/ns/a/sa/*", False),
    ("spiffe://c/ns/a/**", "spiffe://c/ns/a/sa/*", True), ("spiffe://c/ns/a/*", "spiffe://c/ns/b/*", False),
])
def test_globs_may_meet(a: str, b: str, meet: bool) -> None:
    assert globs_may_meet(a, b) is meet and globs_may_meet(b, a) is meet


# -- the property: a team never allows outside what it owns ---------------------------

_SEGMENTS = st.sampled_from(["api", "orders", "payments", "x", "debug"])
_PATHS = st.lists(_SEGMENTS, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
_HOSTS = st.sampled_from(["shop.example.com", "a.shop.example.com", "admin.example.com", "shop.example.com:8443", ""])
_DESTINATIONS = st.sampled_from(["", "spiffe://c/ns/pay/sa/api", "spiffe://c/ns/shop/sa/api"])
_METHODS = st.sampled_from(["GET", "POST", "DELETE"])


def _in_scope(path: str, host: str, destination: str, prefix: str, owned_host: str | None, owned_dest: bool) -> bool:
    """An oracle written apart from the compiled scope."""
    segments = [s for s in path.split("/") if s]
    owned = [s for s in prefix.split("/") if s]
    if segments[: len(owned)] != owned:
        return False
    if owned_host is not None and host.split(":")[0] != owned_host:
        return False
    return not owned_dest or destination == "spiffe://c/ns/pay/sa/api"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=_PATHS, owned_host=st.sampled_from([None, "shop.example.com"]), owned_dest=st.booleans(),
    permission=st.fixed_dictionaries({}, optional={"methods": st.lists(_METHODS, min_size=1, max_size=2),
                                                   "when": st.sampled_from(["true", "request.method != 'DELETE'"])}),
    requests=st.lists(st.tuples(_METHODS, _PATHS, _HOSTS, _DESTINATIONS), min_size=1, max_size=8),
)
def test_sec_58_a_team_never_allows_outside_its_scope(
    tmp_path: Path, prefix: str, owned_host: str | None, owned_dest: bool, permission: dict[str, object],
    requests: list[tuple[str, str, str, str]],
) -> None:
    owns = [f"  paths: ['{prefix}']"]
    if owned_host:
        owns.append(f"  hosts: [{owned_host}]")
    if owned_dest:
        owns.append("  destination_principals: ['spiffe://c/ns/pay/sa/*']")
    fields = ", ".join(f"{k}: {v!r}" if k == "when" else f"{k}: [{', '.join(v)}]"  # type: ignore[arg-type]
                       for k, v in permission.items())
    team = "\n".join(["version: 1", "owns:", *owns, "rules:",
                      f"  - {{name: anything, effect: allow, anonymous: true{', ' if fields else ''}{fields}}}",
                      "roles:", f"  team-role: [{{{fields}}}]", ""])
    root = "version: 1\napi_keys:\n  keys:\n    - {subject: p, sha256: " \
           "'507636717dd889c4aca6e55fac6880c0e096f0160c1c940da0564f39301c6537', roles: [team-role]}\n"
    d = make(tmp_path, root=root, team=team)
    engine = Engine(load_policy(str(d)))
    for method, path, host, destination in requests:
        for headers in ({}, {"x-api-key": KEY}):
            decision = engine.decide(Request(method=method, path=path, host=host, headers=headers,
                                             destination_principal=destination))
            if decision.allowed:
                assert _in_scope(path, host, destination, prefix, owned_host, owned_dest), (method, path, host)


def test_validate_warns_under_the_file_each_warning_is_about(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    d = make(tmp_path, root=ROOT_PLAIN + "  - {name: root-internal, effect: deny, paths: [/internal]}\n",
             orders=team("orders", "/api/orders")
             + "  - {name: orders-admin, effect: deny, paths: [/api/orders/admin]}\n")
    assert main(["validate", "--config", str(d)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": warning: ")[0] for line in err] == [f"{d}/policy.yaml:7", f"{d}/teams/orders.yaml:11"]
    assert "'root-internal'" in err[0] and "'orders-admin'" in err[1]


def test_a_teams_scope_is_part_of_what_the_decision_cache_keys_on(tmp_path: Path) -> None:
    assert not load_policy(str(make(tmp_path, root=ROOT_PLAIN))).reads.destination_principal
    policy = load_policy(str(make(tmp_path, root=ROOT_PLAIN, payments=PAYMENTS)))
    assert policy.reads.destination_principal
    assert not policy.reads.host
    assert load_policy(str(make(tmp_path, root=ROOT_PLAIN, orders=team("orders", "/api/orders")))).reads.host
