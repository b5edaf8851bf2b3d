"""The acceptance fixtures (tests/fixtures/acceptance), as they are: through
`authz check` and the Python API."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from authz.config import load_policy
from authz.engine import Engine
from authz.wire.grpc import parse_json_request, to_request, to_response
from testkit.paths import ACCEPTANCE

EXPECTED = json.loads((ACCEPTANCE / "expected.json").read_text())
CASES = EXPECTED["cases"]
POLICY = ACCEPTANCE / EXPECTED["policy"]


def _ids(case: dict[str, Any]) -> str:
    return str(case["request"]).rsplit("/", 1)[-1].removesuffix(".json")


def _assert_matches(result: dict[str, Any], case: dict[str, Any]) -> None:
    assert result["allowed"] is case["allowed"]
    assert result["status"] == case["status"]
    assert result["reason"] == case["reason"]
    for name, value in case.get("upstream_headers", {}).items():
        assert result["headers"].get(name) == value


def test_there_are_23_cases() -> None:
    assert len(CASES) == 23


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_cli_check(case: dict[str, Any]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "authz", "check", "--config", str(POLICY), "--request",
         str(ACCEPTANCE / case["request"])],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == (0 if case["allowed"] else 1), run.stderr
    _assert_matches(json.loads(run.stdout), case)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_policy(str(POLICY)))


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_python_api(case: dict[str, Any], engine: Engine) -> None:
    check = parse_json_request((ACCEPTANCE / case["request"]).read_text())
    request = to_request(check)
    decision = engine.decide(request)
    _assert_matches(decision.to_json(), case)
    response = to_response(decision, request.headers.get("x-request-id"))
    # Envoy reads an empty CheckResponse as allow: a denial must say so.
    assert response.status.code == (0 if case["allowed"] else (16 if case["status"] == 401 else 7))
    if case["allowed"]:
        assert response.HasField("ok_response")
        set_headers = {h.header.key: h for h in response.ok_response.headers}
        for name, value in case.get("upstream_headers", {}).items():
            assert set_headers[name].header.value == value
            assert set_headers[name].append.value is False and set_headers[name].HasField("append")
    else:
        denied = response.denied_response
        assert denied.status.code == case["status"]
        body = json.loads(denied.body)
        assert body == {"error": "unauthenticated" if case["status"] == 401 else "forbidden",
                        "reason": case["reason"], "request_id": request.headers.get("x-request-id")}
        names = {h.header.key for h in denied.headers}
        assert ("www-authenticate" in names) is (case["status"] == 401)


def test_cli_stdin_and_bad_input(tmp_path: Any) -> None:
    request = (ACCEPTANCE / "requests/health-anonymous.json").read_text()
    run = subprocess.run([sys.executable, "-m", "authz", "check", "--config", str(POLICY), "--request", "-"],
                         input=request, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and json.loads(run.stdout)["reason"] == "allowed"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    run = subprocess.run([sys.executable, "-m", "authz", "check", "--config", str(POLICY), "--request", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "not a CheckRequest" in run.stderr
