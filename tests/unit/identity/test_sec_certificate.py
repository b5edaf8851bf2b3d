"""Client certificates as a credential (docs/security.md 75-79): real
certificates from a test CA (testkit/pki.py), through the engine, each
refusal with its reason beside a positive control."""

from __future__ import annotations

import base64
import datetime
import hashlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authz.config import load_policy
from authz.decision import Decision
from authz.engine import Engine
from authz.identity import certificate as certificate_module
from authz.request import Request
from authz.server.cache import VerifiedTokenCache
from testkit.pki import MeshCA
from testkit.requests import request

SHOP = "spiffe://cluster.local/ns/shop/sa/web"
OTHER = "spiffe://cluster.local/ns/other/sa/job"
XFCC = "x-forwarded-client-cert"

POLICY = """\
version: 1
certificates:
  ca_file: {ca}
  from: [peer, xfcc, client-cert]
  subject: {subject}
{pins}  roles:
    "spiffe://cluster.local/ns/shop/sa/*": [orders-reader]
roles:
  orders-reader:
    - {{methods: [GET], paths: [/api/orders]}}
rules:
  - {{name: only-web, effect: deny, paths: [/api/orders], when: 'identity.kind == "certificate" &&
      !identity.certificate.uri_sans.exists(u, u.endsWith("/sa/web"))'}}
"""


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def sf_binary(cert: x509.Certificate) -> str:
    return ":" + base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii") + ":"


def xfcc_element(cert: x509.Certificate, uri: str = SHOP) -> str:
    return f'By=spiffe://cluster.local/ns/edge/sa/gw;Hash=00;Cert="{quote(pem(cert))}";URI={uri}'


class Certs:
    def __init__(self, directory: Path) -> None:
        self.ca = MeshCA(directory, "clients-ca")
        self.other_ca = MeshCA(directory, "other-ca")
        self.web = self.ca.client("web", uris=(SHOP,), dns=("web.shop.example",), emails=("web@shop.example",))[0]
        self.other = self.ca.client("other", uris=(OTHER,))[0]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


def engine_for(tmp_path: Path, certs: Certs, *, subject: str = "uri_san", pins: tuple[str, ...] = (),
               cache: bool = False) -> Engine:
    pin_text = "".join(f"    - {pin}\n" for pin in pins)
    text = POLICY.format(ca=certs.ca.cert_path, subject=subject, pins=f"  pins:\n{pin_text}" if pins else "")
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(str(tmp_path / "policy.yaml"))
    tokens = VerifiedTokenCache(100, time=time.time, monotonic=time.monotonic) if cache else None
    return Engine(policy, token_cache=tokens)


def peer(cert: x509.Certificate | str, **fields: Any) -> Request:
    text = cert if isinstance(cert, str) else pem(cert)
    return request()._replace(source_certificate=quote(text), **fields)


def with_headers(headers: dict[str, str], **fields: Any) -> Request:
    return request(headers=headers)._replace(**fields)


def denied(decision: Decision, reason: str) -> None:
    assert not decision.allowed, decision
    assert decision.status == 401 and decision.reason.value == reason, (decision.reason, decision.detail)


def allowed_as(decision: Decision, subject: str) -> None:
    assert decision.allowed, (decision.reason, decision.detail)
    assert decision.identity.kind == "certificate" and decision.identity.subject == subject


def test_a_verified_certificate_is_the_identity_with_its_fields(tmp_path: Path, certs: Certs) -> None:
    engine = engine_for(tmp_path, certs)
    decision = engine.decide(peer(certs.web))
    allowed_as(decision, SHOP)
    fields = decision.identity.claims
    assert fields["uri_sans"] == [SHOP] and fields["dns_sans"] == ["web.shop.example"]
    assert fields["email_sans"] == ["web@shop.example"] and fields["issuer_dn"] == "CN=clients-ca"
    assert fields["serial"] == format(certs.web.serial_number, "x")
    assert fields["fingerprint"] == hashlib.sha256(certs.web.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert decision.identity.roles == frozenset({"orders-reader"})
    assert decision.identity.cel_value()["certificate"]["uri_sans"] == [SHOP]
    # identity.certificate reaches CEL: the deny rule reads it.
    assert engine.decide(peer(certs.other)).reason.value == "denied_by_rule"


@pytest.mark.parametrize(("subject", "expected"), [("dns_san", "web.shop.example"), ("subject_dn", None)])
def test_the_subject_is_the_san_or_dn_the_policy_names(tmp_path: Path, certs: Certs, subject: str,
                                                       expected: str | None) -> None:
    engine = engine_for(tmp_path, certs, subject=subject)
    named = certs.ca.client("named", uris=(SHOP,), dns=("web.shop.example",), common_name="web")[0]
    decision = engine.decide(peer(named))
    assert decision.identity.kind == "certificate"
    assert decision.identity.subject == (expected or "CN=web")
    # A certificate without the subject the policy names (no DNS SAN; an empty DN) is invalid.
    denied(engine.decide(peer(certs.other)), "invalid_certificate")


def test_sec_75_a_certificate_header_from_an_untrusted_hop_is_refused(tmp_path: Path, certs: Certs) -> None:
    engine = engine_for(tmp_path, certs)
    element = xfcc_element(certs.web)
    denied(engine.decide(with_headers({XFCC: element})), "untrusted_certificate_header")
    denied(engine.decide(with_headers({"client-cert": sf_binary(certs.web)})), "untrusted_certificate_header")
    denied(engine.decide(with_headers({"client-cert-chain": sf_binary(certs.web)})), "untrusted_certificate_header")
    # Positive controls: the same headers through a door that trusts the hop that sets them.
    allowed_as(engine.decide(with_headers({XFCC: element}, trusted_xfcc=-1)), SHOP)
    allowed_as(engine.decide(with_headers({"client-cert": sf_binary(certs.web)}, trusted_client_cert=True)), SHOP)


def test_sec_75_only_the_element_the_trusted_hop_wrote_is_read(tmp_path: Path, certs: Certs) -> None:
    engine = engine_for(tmp_path, certs)
    forged, trusted = xfcc_element(certs.web), xfcc_element(certs.other, OTHER)
    # The client's own element (a real certificate, stolen) comes first; the hop's is the last.
    decision = engine.decide(with_headers({XFCC: f"{forged},{trusted}"}, trusted_xfcc=-1))
    assert decision.identity.subject == OTHER
    # The trusted element without a Cert: no certificate at all, never the one before it.
    decision = engine.decide(with_headers({XFCC: f"{forged},By=x;URI={OTHER}"}, trusted_xfcc=-1))
    assert decision.identity.kind == "anonymous" and decision.reason.value == "missing_credential"
    # Behind authz's own sidecar (-2): its element is last, the client's hop is the one before.
    decision = engine.decide(with_headers({XFCC: f"{trusted},By=authz;URI=caller"}, trusted_xfcc=-2))
    assert decision.identity.subject == OTHER


def test_sec_76_a_malformed_certificate_is_invalid(tmp_path: Path, certs: Certs) -> None:
    engine = engine_for(tmp_path, certs)
    text = pem(certs.web)
    damaged = text.replace(text[100:140], "A" * 40)
    for bad in ("not a certificate", damaged, text[: len(text) // 2]):
        denied(engine.decide(peer(bad)), "invalid_certificate")
    for value in (":not base64!:", "MIIB", ":" + base64.b64encode(b"not DER").decode() + ":"):
        denied(engine.decide(with_headers({"client-cert": value}, trusted_client_cert=True)), "invalid_certificate")
    denied(engine.decide(with_headers({XFCC: 'Cert="unterminated'}, trusted_xfcc=-1)), "invalid_certificate")
    allowed_as(engine.decide(peer(certs.web)), SHOP)


def test_sec_76_two_certificates_where_one_is_expected(tmp_path: Path, certs: Certs) -> None:
    engine = engine_for(tmp_path, certs)
    one = quote(pem(certs.web))
    two_certs = f'Cert="{one}";Cert="{quote(pem(certs.other))}";URI={SHOP}'
    denied(engine.decide(with_headers({XFCC: two_certs}, trusted_xfcc=-1)), "invalid_certificate")
    # Two client-cert headers: Envoy joins them with ','.
    joined = f"{sf_binary(certs.web)}, {sf_binary(certs.other)}"
    denied(engine.decide(with_headers({"client-cert": joined}, trusted_client_cert=True)), "invalid_certificate")
    denied(engine.decide(peer(pem(certs.web) + pem(certs.other))), "invalid_certificate")
    allowed_as(engine.decide(with_headers({XFCC: f'Cert="{one}";URI={SHOP}'}, trusted_xfcc=-1)), SHOP)


def test_sec_77_an_expired_or_not_yet_valid_certificate(tmp_path: Path, certs: Certs) -> None:
    engine = engine_for(tmp_path, certs)
    now = datetime.datetime.now(datetime.UTC)
    hour = datetime.timedelta(hours=1)
    expired = certs.ca.client("expired", uris=(SHOP,), not_before=now - 2 * hour, not_after=now - hour)[0]
    early = certs.ca.client("early", uris=(SHOP,), not_before=now + hour, not_after=now + 2 * hour)[0]
    denied(engine.decide(peer(expired)), "expired_certificate")
    denied(engine.decide(peer(early)), "expired_certificate")
    allowed_as(engine.decide(peer(certs.web)), SHOP)


def test_sec_78_a_certificate_from_another_ca_is_untrusted(tmp_path: Path, certs: Certs) -> None:
    engine = engine_for(tmp_path, certs)
    stranger = certs.other_ca.client("stranger", uris=(SHOP,))[0]
    denied(engine.decide(peer(stranger)), "untrusted_certificate")
    # Its CA offered as the chain changes nothing: the anchors are the policy's.
    chained = with_headers({"client-cert": sf_binary(stranger), "client-cert-chain": sf_binary(certs.other_ca.cert)},
                           trusted_client_cert=True)
    denied(engine.decide(chained), "untrusted_certificate")
    allowed_as(engine.decide(peer(certs.web)), SHOP)


def test_sec_78_a_certificate_not_for_client_authentication_is_invalid(tmp_path: Path, certs: Certs) -> None:
    engine = engine_for(tmp_path, certs)
    server_only = certs.ca.client("server-only", uris=(SHOP,), client_auth=False)[0]
    denied(engine.decide(peer(server_only)), "invalid_certificate")
    allowed_as(engine.decide(peer(certs.web)), SHOP)


def test_sec_78_a_pin_mismatch_is_untrusted(tmp_path: Path, certs: Certs) -> None:
    pin = hashlib.sha256(certs.web.public_bytes(serialization.Encoding.DER)).hexdigest()
    engine = engine_for(tmp_path, certs, pins=(pin,))
    denied(engine.decide(peer(certs.other)), "untrusted_certificate")
    allowed_as(engine.decide(peer(certs.web)), SHOP)


def test_sec_79_a_repeated_certificate_costs_a_lookup(tmp_path: Path, certs: Certs,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_for(tmp_path, certs, cache=True)
    verified: list[str] = []
    real = certificate_module.CertificateSource._verify

    def counting(self: certificate_module.CertificateSource, source: str, text: str, chain: str,
                 now: float) -> object:
        verified.append(source)
        return real(self, source, text, chain, now)

    monkeypatch.setattr(certificate_module.CertificateSource, "_verify", counting)
    for _ in range(3):
        allowed_as(engine.decide(peer(certs.web)), SHOP)
    assert verified == ["peer"]
    # A refused certificate is never remembered: each presentation is verified again.
    stranger = certs.other_ca.client("stranger2", uris=(SHOP,))[0]
    for _ in range(2):
        denied(engine.decide(peer(stranger)), "untrusted_certificate")
    assert verified == ["peer", "peer", "peer"]


def test_sec_79_a_cached_certificate_is_never_used_past_its_expiry(tmp_path: Path, certs: Certs) -> None:
    engine = engine_for(tmp_path, certs, cache=True)
    assert engine.token_cache is not None
    now = datetime.datetime.now(datetime.UTC)
    short = certs.ca.client("short", uris=(SHOP,), not_after=now + datetime.timedelta(minutes=1))[0]
    allowed_as(engine.decide(peer(short)), SHOP)

    class Later:
        @staticmethod
        def time() -> float:
            return now.timestamp() + 120

        @staticmethod
        def monotonic() -> float:
            return time.monotonic()

    engine.clock = Later()
    denied(engine.decide(peer(short)), "expired_certificate")


# -- the command line: authz check/explain --client-cert, validate --door http ---------------


def test_check_and_explain_take_the_client_certificate(tmp_path: Path, certs: Certs,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from authz.cli import main
    from testkit.requests import check_request_json

    engine_for(tmp_path, certs)  # writes policy.yaml
    (tmp_path / "request.json").write_text(json.dumps(check_request_json("GET", "/api/orders")))
    web = tmp_path / "web.pem"
    web.write_text(pem(certs.web))
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(pem(certs.other_ca.client("cli-stranger", uris=(SHOP,))[0]))
    base = ["--config", str(tmp_path / "policy.yaml"), "--request", str(tmp_path / "request.json")]
    assert main(["check", *base, "--client-cert", str(web)]) == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "allowed"
    assert main(["check", *base, "--client-cert", str(stranger)]) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "untrusted_certificate"
    assert main(["check", *base]) == 1  # no certificate: anonymous
    assert json.loads(capsys.readouterr().out)["reason"] == "missing_credential"
    assert main(["explain", *base, "--client-cert", str(web)]) == 0
    out = capsys.readouterr().out
    assert f"certificate '{SHOP}'" in out and "=> ALLOW" in out


def test_validate_door_http_says_which_certificate_sources_it_cannot_read(tmp_path: Path, certs: Certs,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from authz.cli import main

    engine_for(tmp_path, certs)  # from: [peer, xfcc, client-cert]
    policy = str(tmp_path / "policy.yaml")
    assert main(["validate", "--config", policy, "--door", "http"]) == 0
    warnings = capsys.readouterr().err
    assert "reads xfcc, trusted only with --trust-xfcc" in warnings
    assert "reads client-cert, trusted only with --trust-client-cert" in warnings
    assert main(["validate", "--config", policy, "--door", "http", "--trust-xfcc", "--trust-client-cert"]) == 0
    assert "certificates" not in capsys.readouterr().err


def test_deny_with_unauthenticated_shapes_a_refused_certificate(tmp_path: Path, certs: Certs) -> None:
    engine_for(tmp_path, certs)
    path = tmp_path / "policy.yaml"
    path.write_text(path.read_text() + 'deny_with:\n  unauthenticated:\n    status: 302\n'
                                       '    location: "https://login.example.com/start"\n')
    engine = Engine(load_policy(str(path)))
    stranger = certs.other_ca.client("deny-with-stranger", uris=(SHOP,))[0]
    decision = engine.decide(peer(stranger))
    assert decision.reason.value == "untrusted_certificate" and decision.status == 302
    allowed_as(engine.decide(peer(certs.web)), SHOP)
