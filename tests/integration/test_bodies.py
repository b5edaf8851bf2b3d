"""Request bodies through a real Envoy, on both doors, with the configs
``authz envoy-config --config`` writes: a JSON rule allows and denies on a
field, a form rule, and each bad body refused with its reason; a policy
that reads no body gets no buffering (docs/security.md 70-74)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.config import load_policy
from authz.tools.envoy_config import EnvoyOptions
from authz.tools.policy_headers import PolicyHeaders
from testkit.procs import Authz, Echo, Envoy, free_port, http_get

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
body: {max_bytes: 2KiB}
rules:
  - {name: big-orders, effect: deny, methods: [POST], paths: [/api/orders], when: 'request.body_json.amount > 1000'}
  - {name: orders, effect: allow, anonymous: true, methods: [POST], paths: [/api/orders],
     when: 'request.body_json.item != ""'}
  - {name: login, effect: allow, anonymous: true, methods: [POST], paths: [/login],
     when: 'request.form.user == "alice"'}
  - {name: public, effect: allow, anonymous: true, paths: [/public]}
"""
NO_BODY = "version: 1\nrules:\n  - {name: public, effect: allow, anonymous: true, paths: ['/**']}\n"
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _options(policy: Path, protocol: str, address: str, upstream: str) -> EnvoyOptions:
    """What ``authz envoy-config --shape edge --config POLICY`` builds (authz/cli.py)."""
    headers = PolicyHeaders.of(load_policy(str(policy)))
    return EnvoyOptions(shape="edge", authz=[address], upstream=upstream, protocol=protocol, path_prefix="/authz",
                        upstream_headers=headers.upstream, metadata_keys=headers.metadata,
                        owned_headers=headers.owned, body=headers.body, policy=str(policy))


@pytest.fixture(scope="module", params=["grpc", "http"])
def envoy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    tmp = tmp_path_factory.mktemp(f"body-{request.param}")
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    grpc, door = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    extra = ["--grpc-address", grpc, "--http-authz-address", door, "--http-authz-prefix", "/authz"]
    address = grpc if request.param == "grpc" else door
    with Echo() as echo, Authz(policy, workers=1, extra=extra), \
            Envoy(tmp, _options(policy, request.param, address, echo.address)) as proxy:
        yield proxy


def _post(envoy: Envoy, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
    status, _headers, text = http_get(envoy.url + path, headers, method="POST", body=body)
    reason = json.loads(text).get("reason") if text.startswith(b"{") else None
    return status, reason


def test_the_generated_config_buffers_bodies_within_the_policys_limit(envoy: Envoy) -> None:
    text = envoy.config.read_text()
    assert "withRequestBody:\n                maxRequestBytes: 2048" in text and "allowPartialMessage: false" in text
    assert ("packAsBytes: true" in text) == ("protocol http" not in text)


def test_a_json_rule_allows_and_denies_on_a_field(envoy: Envoy) -> None:
    status, _headers, text = http_get(envoy.url + "/api/orders", JSON, method="POST",
                                      body=b'{"amount": 5, "item": "book"}')
    assert status == 200 and json.loads(text)["path"] == "/api/orders"  # the upstream's answer
    assert _post(envoy, "/api/orders", b'{"amount": 5000, "item": "book"}', JSON) == (403, "denied_by_rule")
    assert _post(envoy, "/api/orders", b'{"amount": 5, "item": ""}', JSON) == (401, "missing_credential")


def test_a_form_rule(envoy: Envoy) -> None:
    assert _post(envoy, "/login", b"user=alice&remember=1", FORM)[0] == 200
    assert _post(envoy, "/login", b"user=bob", FORM) == (401, "missing_credential")


def test_sec_70_an_oversized_body_is_refused(envoy: Envoy) -> None:
    big = b'{"amount": 5, "item": "book", "pad": "' + b"x" * 3000 + b'"}'
    status, _reason = _post(envoy, "/api/orders", big, JSON)
    assert status == 413  # Envoy's own (allow_partial_message: false): it never reaches authz cut
    assert _post(envoy, "/api/orders", big[:1000] + b'"}', JSON)[0] == 200  # the control


def test_sec_70_a_chunked_body_is_buffered_and_read_whole(envoy: Envoy) -> None:
    host, port = envoy.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", "/api/orders", body=iter([b'{"amount": 5000,', b' "item": "book"}']),
                           headers={**JSON, "transfer-encoding": "chunked"}, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 403 and json.loads(response.read())["reason"] == "denied_by_rule"
    finally:
        connection.close()


@pytest.mark.parametrize(("body", "headers", "status", "reason"), [
    (b'{"amount": 5,', JSON, 400, "body_invalid"),
    (b'{"amount": 5, "amount": 5000, "item": "book"}', JSON, 400, "body_duplicate_key"),
    (b'{"amount": 5, "item": "book", "d": ' + b"[" * 40 + b"]" * 40 + b"}", JSON, 400, "body_too_complex"),
    (b'{"amount": 5, "item": "book"}', {"content-type": "text/plain"}, 415, "body_content_type"),
    (b'{"amount": 5, "item": "book"}', {**JSON, "content-encoding": "gzip"}, 415, "body_encoding"),
    (b"user=alice&user=mallory", FORM, 400, "body_duplicate_key"),
])
def test_sec_71_to_74_a_bad_body_is_refused_with_its_reason(envoy: Envoy, body: bytes, headers: dict[str, str],
                                                            status: int, reason: str) -> None:
    path = "/login" if headers is FORM else "/api/orders"
    assert _post(envoy, path, body, headers) == (status, reason)


def test_a_request_without_a_body_on_a_route_no_body_rule_reads(envoy: Envoy) -> None:
    assert http_get(envoy.url + "/public")[0] == 200


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_policy_that_reads_no_body_sends_none_to_authz(tmp_path: Path, protocol: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(NO_BODY)
    grpc, door = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    extra = ["--grpc-address", grpc, "--http-authz-address", door, "--http-authz-prefix", "/authz"]
    with Echo() as echo, Authz(policy, workers=1, extra=extra), \
            Envoy(tmp_path, _options(policy, protocol, grpc if protocol == "grpc" else door, echo.address)) as envoy:
        assert "withRequestBody" not in envoy.config.read_text()
        # No buffering: a body far over any limit streams to the upstream as before.
        status, _headers, text = http_get(envoy.url + "/upload", {"content-type": "application/octet-stream"},
                                          method="POST", body=b"x" * 200_000)
        assert status == 200 and json.loads(text)["method"] == "POST"
