"""`authz check` and `authz explain` on a policy's own denials (`deny_with`,
tests/fixtures/deny_with/policy.yaml): both show the status, the headers and
the body the client gets, the same as the doors send."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from authz.cli import main
from authz.config import load_policy
from authz.engine import Engine
from authz.wire.grpc import parse_json_request, to_request
from authz.wire.http import to_reply
from testkit.paths import REPO
from testkit.requests import check_request_json

POLICY = REPO / "tests" / "fixtures" / "deny_with" / "policy.yaml"
# The API key "password" is svc's: it may read /api/*, not delete, and /admin/* is a deny rule's.
SVC = {"x-api-key": "password"}
LOGIN = "https://login.example.com/start?rd=https%3A%2F%2Fapi.example.com%2Fapi%2Forders%3Fpage%3D2%26q%3Da%20b"


def _request(tmp_path: Path, method: str, path: str, headers: dict[str, str]) -> Path:
    file = tmp_path / "request.json"
    file.write_text(json.dumps(check_request_json(method, path, headers=headers)))
    return file


def _check(policy: Path, request: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["check", "--config", str(policy), "--request", str(request)])
    return code, json.loads(capsys.readouterr().out)


def _explain(policy: Path, request: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["explain", "--config", str(policy), "--request", str(request)])
    return code, capsys.readouterr().out.splitlines()


CASES = [
    pytest.param("GET", "/api/orders?page=2&q=a b", {"x-request-id": "r-1"}, 302, "missing_credential", {
        "content-type": "application/json", "cache-control": "no-store", "location": LOGIN},
        '{"error":"unauthenticated","reason":"missing_credential","request_id":"r-1"}', id="redirect-top-level"),
    pytest.param("DELETE", "/api/orders", {**SVC, "x-request-id": "r-2"}, 403, "no_permission", {
        "content-type": "application/json", "cache-control": "no-store", "x-denied-by": "no_permission"},
        '{"error":"forbidden","code":"no_permission","rule":"","request_id":"r-2"}', id="json-top-level"),
    pytest.param("GET", "/admin/users", {**SVC, "x-request-id": "r-3"}, 404, "denied_by_rule", {
        "content-type": "text/plain; charset=utf-8", "cache-control": "no-store"},
        "nothing at /admin/users (r-3)", id="text-per-rule"),
]


@pytest.mark.parametrize(("method", "path", "headers", "status", "reason", "client", "body"), CASES)
def test_check_shows_the_reply_the_client_gets(tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str,
                                               path: str, headers: dict[str, str], status: int, reason: str,
                                               client: dict[str, str], body: str) -> None:
    request = _request(tmp_path, method, path, headers)
    code, shown = _check(POLICY, request, capsys)
    assert code == 1
    assert (shown["allowed"], shown["status"], shown["reason"]) == (False, status, reason)
    assert shown["denial"] == {"status": status, "headers": client, "body": body}
    # What the HTTP door sends for the same decision (gRPC sends the same: tests/unit/test_deny_with.py).
    check = parse_json_request(request.read_text())
    sent_status, sent_headers, sent_body = to_reply(Engine(load_policy(str(POLICY))).decide(to_request(check)),
                                                    headers.get("x-request-id"))
    sent = {name.decode(): value.decode() for name, value in sent_headers}
    assert (sent_status, sent_body.decode()) == (status, body)
    assert {name: sent[name] for name in client} == client


@pytest.mark.parametrize(("method", "path", "headers", "status", "reason", "client", "body"), CASES)
def test_explain_shows_the_reply_the_client_gets(tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str,
                                                 path: str, headers: dict[str, str], status: int, reason: str,
                                                 client: dict[str, str], body: str) -> None:
    code, lines = _explain(POLICY, _request(tmp_path, method, path, headers), capsys)
    assert code == 1
    verdict = lines.index(next(line for line in lines if line.startswith("=> ")))
    assert lines[verdict].startswith(f"=> DENY {status} {reason}")
    assert f"[deny_with] {reason}: status {status}" in "\n".join(lines[:verdict])
    assert lines[verdict + 1:] == [f"   deny_with: the client gets {status}",
                                   *(f"     {name}: {value}" for name, value in client.items()),
                                   f"     body: {body}"]


def test_a_custom_401_shows_its_challenge_and_a_default_denial_shows_no_reply(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.read_text().replace(
        '    status: 302\n    location: "https://login.example.com/start?rd={request.url}"\n',
        '    status: 401\n    headers: {x-sign-in: "https://login.example.com/"}\n'))
    code, shown = _check(policy, _request(tmp_path, "GET", "/api/orders", {}), capsys)
    assert code == 1
    assert shown["denial"]["status"] == 401
    assert shown["denial"]["headers"]["www-authenticate"] == 'Bearer realm="authz"'
    assert shown["denial"]["headers"]["x-sign-in"] == "https://login.example.com/"
    # Without deny_with the output is as before: no reply shown.
    plain = tmp_path / "plain.yaml"
    plain.write_text(POLICY.read_text().partition("deny_with:\n  unauthenticated")[0].replace(
        "    deny_with:\n      status: 404\n      body: {text: \"nothing at {request.path} ({request_id})\"}\n", ""))
    code, shown = _check(plain, _request(tmp_path, "GET", "/admin/users", SVC), capsys)
    assert (code, shown["status"], shown["reason"]) == (1, 403, "denied_by_rule")
    assert "denial" not in shown
