"""The callers matcher (docs/security.md 60): who may ask, about what."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from authz.callers import MEMO_SIZE, Callers
from authz.config import load_policy
from testkit.spiffe import BILLING, CALLERS, GATEWAY, ORDERS, REPORTS

SECTION = f"""\
version: 1
{CALLERS}  - principals: ["{REPORTS}"]
    destinations: ["spiffe://cluster.local/ns/shop/**"]
"""


def _callers(tmp_path: Path, text: str = SECTION) -> Callers:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    callers = load_policy(str(path)).callers
    assert callers is not None
    return callers


def test_a_gateway_admitted_for_any_destination_may_ask_about_every_workload(tmp_path: Path) -> None:
    callers = _callers(tmp_path)
    assert callers.admits(GATEWAY, ORDERS)
    assert callers.admits(GATEWAY, BILLING)
    assert callers.admits(GATEWAY, "")  # a gateway's Check names no destination


def test_a_sidecar_asks_only_about_itself(tmp_path: Path) -> None:
    callers = _callers(tmp_path)
    assert callers.admits(ORDERS, ORDERS)
    assert not callers.admits(ORDERS, BILLING)  # another workload asking about a peer
    assert not callers.admits(ORDERS, "")  # no destination is not itself


def test_destination_globs_bound_what_a_caller_may_ask_about(tmp_path: Path) -> None:
    callers = _callers(tmp_path)
    assert callers.admits(REPORTS, ORDERS)
    assert callers.admits(REPORTS, REPORTS)  # self, through the second entry
    assert not callers.admits(REPORTS, "spiffe://cluster.local/ns/bank/sa/ledger")
    assert not callers.admits(REPORTS, "")


def test_no_caller_identity_is_never_any_caller(tmp_path: Path) -> None:
    callers = _callers(tmp_path)
    assert not callers.admits("", "")
    assert not callers.admits("", ORDERS)
    assert "no caller identity" in callers.refusal("", ORDERS)


def test_a_caller_no_entry_names_is_refused(tmp_path: Path) -> None:
    callers = _callers(tmp_path)
    # '*' stays within one segment: a longer path is not a service account.
    assert not callers.admits("spiffe://cluster.local/ns/shop/sa/orders/extra",
                              "spiffe://cluster.local/ns/shop/sa/orders/extra")
    assert not callers.admits("spiffe://other.domain/ns/shop/sa/orders", ORDERS)
    assert "'spiffe://other.domain/ns/shop/sa/orders'" in callers.refusal("spiffe://other.domain/ns/shop/sa/orders",
                                                                          ORDERS)


def test_remembered_answers_stay_right_past_the_memo_size(tmp_path: Path) -> None:
    callers = _callers(tmp_path)
    for index in range(MEMO_SIZE + 10):
        workload = f"spiffe://cluster.local/ns/n{index}/sa/s"
        assert callers.admits(workload, workload)
        assert not callers.admits(workload, ORDERS)
    assert len(callers._memo) <= MEMO_SIZE
    assert callers.admits(ORDERS, ORDERS) and not callers.admits(ORDERS, BILLING)


def test_doors_are_bound_unless_declared_gateway_only(tmp_path: Path) -> None:
    bound = _callers(tmp_path)
    assert bound.binds("grpc") and bound.binds("http")
    fenced = _callers(tmp_path, SECTION + "  - gateway_only: [http]\n")
    assert fenced.binds("grpc") and not fenced.binds("http")
    assert fenced.line == 2


def test_without_the_section_there_is_no_binding(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\n")
    assert load_policy(str(path)).callers is None


@pytest.mark.parametrize("destinations", ["any", "self"])
def test_an_entry_needs_principals(tmp_path: Path, destinations: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(f"version: 1\ncallers:\n  - destinations: {destinations}\n")
    with pytest.raises(Exception, match=r"policy.yaml:3: callers\[0\]: give 'principals'"):
        load_policy(str(path))


def test_with_both_xfcc_flags_the_http_door_reads_the_client_before_the_caller() -> None:
    from authz.wire.http import HttpDoor, HttpDoorSettings
    from authz.wire.http_call import Call

    client = 'Hash=1;URI=spiffe://cluster.local/ns/shop/sa/billing;Subject="CN=a,URI=spiffe://x/evil"'
    appended = f"By=spiffe://cluster.local/ns/authz/sa/authz;URI={GATEWAY}"
    headers = {b"host": b"api.example.com", b"x-forwarded-client-cert": f"{client},{appended}".encode()}
    call = Call("GET", b"/api/orders", b"", headers)
    both = HttpDoor(HttpDoorSettings(trust_xfcc=True, trust_caller_xfcc=True))
    assert both.to_request(call).source_principal == BILLING
    only_client = HttpDoor(HttpDoorSettings(trust_xfcc=True))
    assert only_client.to_request(call).source_principal == GATEWAY  # without authz's sidecar: the last element
    alone = Call("GET", b"/api/orders", b"", {b"host": b"h", b"x-forwarded-client-cert": appended.encode()})
    assert both.to_request(alone).source_principal == ""  # the client presented no certificate to the gateway


def test_check_and_explain_name_a_caller_offline(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    policy = tmp_path / "policy.yaml"
    policy.write_text(SECTION + 'rules:\n  - {name: public, effect: allow, paths: ["/public/**"], anonymous: true}\n')
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"attributes": {"destination": {"principal": ORDERS}, "request": {"http": {
        "method": "GET", "path": "/public/x", "host": "api.example.com", "headers": {":path": "/public/x"}}}}}))

    def run(command: str, *caller: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "authz", command, "--config", str(policy), "--request",
                               str(request), *caller], capture_output=True, text=True, timeout=60)

    refused = run("check", "--caller", BILLING)
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["reason"] == "untrusted_caller"
    assert run("check", "--caller", ORDERS).returncode == 0
    assert run("check", "--caller", GATEWAY).returncode == 0
    assert run("check").returncode == 0  # no caller named: decided as before
    explained = run("explain", "--caller", BILLING)
    assert explained.returncode == 1
    assert f"[caller] {BILLING}: refused" in explained.stdout
    assert explained.stdout.rstrip().endswith("=> DENY 403 untrusted_caller")
