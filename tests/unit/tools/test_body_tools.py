"""Request bodies beside the server: ``authz envoy-config --config`` turns
body buffering on only for a policy that reads a body (Envoy, Istio and
Emissary outputs, valid against Envoy and the vendored schemas), and
``authz check``/``explain`` take a body."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from authz.cli import main
from testkit.procs import envoy_validate
from testkit.requests import check_request_json
from tests.deploy.manifests import crd_errors, mesh_config_errors

READS_BODY = """\
version: 1
body: {max_bytes: 16KiB}
rules:
  - {name: big, effect: deny, methods: [POST], paths: [/api/orders], when: 'request.body_json.amount > 1000'}
  - {name: orders, effect: allow, anonymous: true, methods: [POST], paths: [/api/orders],
     when: 'has(request.body_json.item)'}
"""
NO_BODY = ("version: 1\nrules:\n"
           "  - {name: a, effect: allow, anonymous: true, when: 'request.headers[\"x-a\"] == \"1\"'}\n")


@pytest.fixture()
def policies(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "body.yaml").write_text(READS_BODY)
    (tmp_path / "plain.yaml").write_text(NO_BODY)
    return tmp_path / "body.yaml", tmp_path / "plain.yaml"


def _generate(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["envoy-config", *args]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("shape", ["edge", "sidecar"])
def test_envoy_buffers_bodies_only_for_a_policy_that_reads_one(
        capsys: pytest.CaptureFixture[str], policies: tuple[Path, Path], tmp_path: Path, shape: str,
        protocol: str) -> None:
    body, plain = policies
    common = ["--shape", shape, "--authz", "127.0.0.1:9191", "--protocol", protocol, "--config"]
    text = _generate(capsys, *common, str(body))
    (filters,) = [f for f in _ext_authz_filters(yaml.safe_load(text))]
    assert filters["withRequestBody"] == {"maxRequestBytes": 16384, "allowPartialMessage": False,
                                          **({"packAsBytes": True} if protocol == "grpc" else {})}
    if shape == "edge":
        config = tmp_path / "envoy.yaml"
        config.write_text(text)
        envoy_validate(config)
    other = _generate(capsys, *common, str(plain))
    assert "withRequestBody" not in other and "request bodies buffered" not in other


def _ext_authz_filters(node: object) -> list[dict[str, object]]:
    if isinstance(node, dict):
        if str(node.get("@type", "")).endswith("ext_authz.v3.ExtAuthz"):
            return [node]
        return [f for value in node.values() for f in _ext_authz_filters(value)]
    if isinstance(node, list):
        return [f for value in node for f in _ext_authz_filters(value)]
    return []


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_istio_and_emissary_include_the_body_only_when_read(
        capsys: pytest.CaptureFixture[str], policies: tuple[Path, Path], protocol: str) -> None:
    body, plain = policies
    istio = yaml.safe_load(_generate(capsys, "--format", "istio", "--authz", "authz.authz:9191", "--protocol", protocol,
                                     "--config", str(body)))
    assert mesh_config_errors(istio) == []
    (entry,) = istio["extensionProviders"]
    provider = entry["envoyExtAuthzGrpc" if protocol == "grpc" else "envoyExtAuthzHttp"]
    assert provider["includeRequestBodyInCheck"]["maxRequestBytes"] == 16384
    assert provider["includeRequestBodyInCheck"]["allowPartialMessage"] is False
    if protocol == "http":  # what tells authz how to read the body reaches the HTTP door
        assert {"content-type", "content-encoding", "x-envoy-auth-partial-body"} <= set(
            provider["includeRequestHeadersInCheck"])
    emissary = yaml.safe_load(_generate(capsys, "--format", "emissary", "--authz", "authz.authz:9191",
                                        "--protocol", protocol, "--config", str(body)))
    assert crd_errors(emissary) == []
    assert emissary["spec"]["include_body"] == {"max_bytes": 16384, "allow_partial": False}
    for kind in ("istio", "emissary"):
        text = _generate(capsys, "--format", kind, "--authz", "authz.authz:9191", "--protocol", protocol,
                         "--config", str(plain))
        assert "includeRequestBodyInCheck" not in text and "include_body" not in text


def test_check_and_explain_take_a_body(capsys: pytest.CaptureFixture[str], policies: tuple[Path, Path],
                                       tmp_path: Path) -> None:
    body, _plain = policies
    request = tmp_path / "request.json"
    request.write_text(json.dumps(check_request_json("POST", "/api/orders")))
    base = ["--config", str(body), "--request", str(request)]
    assert main(["check", *base, "--body-json", '{"amount": 5, "item": "x"}']) == 0
    assert json.loads(capsys.readouterr().out)["rule"] == "orders"
    assert main(["check", *base, "--body-json", '{"amount": 5000, "item": "x"}']) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "denied_by_rule"
    file = tmp_path / "body.bin"
    file.write_bytes(b'{"amount": 5, "amount": 5000}')
    assert main(["explain", *base, "--body", str(file), "--content-type", "application/json"]) == 1
    out = capsys.readouterr().out
    assert "body_duplicate_key" in out and "=> DENY 400 body_duplicate_key" in out
    assert main(["check", *base, "--body", str(file)]) == 1  # no content-type: not JSON
    assert json.loads(capsys.readouterr().out)["reason"] == "body_content_type"
    for bad in (["--body-json", "{bad"], ["--body", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit) as exited:  # a usage error, as argparse's
            main(["check", *base, *bad])
        assert exited.value.code == 2
    assert "--body-json: not JSON" in capsys.readouterr().err


def test_authz_test_cases_may_carry_a_body(capsys: pytest.CaptureFixture[str], policies: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    body, _plain = policies
    cases = tmp_path / "orders.cases.yaml"
    cases.write_text("""\
cases:
  - name: a small order
    request: {method: POST, path: /api/orders, body_json: {amount: 5, item: book}}
    expect: {allowed: true, rule: orders}
  - name: a large order
    request: {method: POST, path: /api/orders, body_json: {amount: 5000, item: book}}
    expect: {allowed: false, reason: denied_by_rule}
  - name: a form is not JSON
    request: {method: POST, path: /api/orders, body: "amount=5",
              headers: {content-type: application/x-www-form-urlencoded}}
    expect: {status: 415, reason: body_content_type}
""")
    assert main(["test", "--config", str(body), str(cases)]) == 0, capsys.readouterr().out
    cases.write_text(cases.read_text().replace("reason: denied_by_rule", "reason: allowed"))
    assert main(["test", "--config", str(body), str(cases)]) == 1


def test_validate_warns_of_a_body_rule_on_every_method(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n"
                      "  - {name: big, effect: deny, paths: ['/api/**'], when: 'request.body_json.amount > 1000'}\n"
                      "  - {name: form, effect: allow, anonymous: true, methods: [POST],\n"
                      "     when: 'request.form.a == \"1\"'}\n"
                      "  - {name: raw, effect: allow, anonymous: true, when: 'size(request.body) < 10'}\n")
    assert main(["validate", "--config", str(policy)]) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [f"{policy}:3: warning: rule 'big' reads request.body_json on every method: a request without "
                        "such a body (a GET) fails the read (a deny rule denies it, body_content_type); name the "
                        "methods that carry one (methods: [POST, PUT, PATCH])"]
