"""A policy directory served and reloaded: every file is watched, a team
file arriving, changing or leaving reloads the whole policy, and a broken
team file keeps the last good policy, named with its team in the log and
the metrics."""

from __future__ import annotations

import os
import re
from pathlib import Path

from testkit.procs import Authz
from testkit.requests import check_request_json

ROOT = """\
version: 1
api_keys:
  keys:
    - {subject: partner, sha256: "507636717dd889c4aca6e55fac6880c0e096f0160c1c940da0564f39301c6537", \
       roles: [orders-reader]}
rules:
  - {name: public, effect: allow, paths: [/healthz], anonymous: true}
"""
ORDERS = """\
version: 1
team: orders
owns: {paths: [/api/orders]}
roles:
  orders-reader: [{methods: [GET], paths: ["/api/orders/**"]}]
"""
SEARCH = """\
version: 1
team: search
owns: {paths: [/api/search]}
rules:
  - {name: search-open, effect: allow, anonymous: true, paths: [SEARCH_PATH]}
"""


def _write(path: Path, text: str) -> None:
    """Atomic replace, as editors and Kubernetes volume updates do."""
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def _code(authz: Authz, path: str, headers: dict[str, str] | None = None) -> int:
    return int(authz.check(check_request_json("GET", path, headers=headers)).status.code)


def _error_gauges(authz: Authz) -> list[str]:
    _s, _h, body = authz.get("/metrics")
    return [line for line in body.decode().splitlines() if line.startswith("authz_config_reload_error{")]


def test_a_policy_directory_reloads_per_file_and_keeps_the_last_good_policy(tmp_path: Path) -> None:
    (tmp_path / "teams").mkdir()
    (tmp_path / "policy.yaml").write_text(ROOT)
    (tmp_path / "teams" / "orders.yaml").write_text(ORDERS)
    search = tmp_path / "teams" / "search.yaml"
    key = {"x-api-key": "demo-key-0123456789"}
    with Authz(tmp_path, workers=2) as authz:
        assert _code(authz, "/api/orders/1", key) == 0
        assert _code(authz, "/api/search/q") == 16

        # A team file arrives: the directory's listing changed.
        mark = authz.proc.mark()
        _write(search, SEARCH.replace("SEARCH_PATH", "/api/search/**"))
        authz.proc.wait_for("policy reloaded", since=mark)
        assert _code(authz, "/api/search/q") == 0

        # A broken team file: refused, named with its team; the last good policy stays.
        mark = authz.proc.mark()
        _write(search, SEARCH.replace("SEARCH_PATH", "/api/**"))
        authz.proc.wait_for(re.escape(f"policy reload failed in {search} (team search)"), since=mark)
        authz.proc.wait_for(re.escape(f"{search}:5: rules[0].paths[0]: path '/api/**' reaches outside"), since=mark)
        assert _error_gauges(authz) == [f'authz_config_reload_error{{file="{search}",team="search"}} 1.0']
        assert _code(authz, "/api/search/q") == 0
        assert _code(authz, "/api/orders/1", key) == 0

        # Fixed: reloaded, and the gauge is gone.
        mark = authz.proc.mark()
        _write(search, SEARCH.replace("SEARCH_PATH", "/api/search/public/**"))
        authz.proc.wait_for("policy reloaded", since=mark)
        assert _error_gauges(authz) == []
        assert _code(authz, "/api/search/q") == 16
        assert _code(authz, "/api/search/public/q") == 0

        # The root changes too: the team's role loses its API key.
        mark = authz.proc.mark()
        _write(tmp_path / "policy.yaml", ROOT.replace("roles: [orders-reader]", "roles: []"))
        authz.proc.wait_for("policy reloaded", since=mark)
        assert _code(authz, "/api/orders/1", key) == 7

        # The team file leaves: its rules leave with it.
        mark = authz.proc.mark()
        search.unlink()
        authz.proc.wait_for("policy reloaded", since=mark)
        assert _code(authz, "/api/search/public/q") == 16
