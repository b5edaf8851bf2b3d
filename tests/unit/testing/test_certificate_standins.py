"""`authz test` with client certificates: each case's certificate is minted
by a CA made for the run, which the stand-in policy's certificates section
trusts in place of its ca_file; the verification (chain, validity at --now,
key usage, subjectAltName) and the identity mapping are the server's own
(docs/policy.md, "Testing a policy"; docs/security.md 59)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest

from authz.config.load import load_policy
from authz.errors import CertificateError, Reason
from authz.identity.certificate import CertificateSource
from authz.request import Request
from authz.testing.standin import stand_in
from testkit.pki import MeshCA
from tests.unit.testing.cli import run

BILLING = "spiffe://cluster.local/ns/shop/sa/billing"


def write_policy(tmp_path: Path, sources: str = "[peer]", extra: str = "") -> str:
    ca = MeshCA(tmp_path)
    (tmp_path / "policy.yaml").write_text(f"""\
version: 1
certificates:
  ca_file: {ca.cert_path.name}
  from: {sources}
  roles:
    "spiffe://cluster.local/ns/shop/sa/*": [orders-reader]
{extra}response:
  headers:
    x-user-id: identity.subject
    x-kind: identity.kind
roles:
  orders-reader:
    - {{methods: [GET], paths: [/api/orders]}}
rules:
  - name: partners-read-reports
    effect: allow
    methods: [GET]
    paths: [/api/reports]
    when: 'identity.certificate.dns_sans.exists(d, d.endsWith(".partners.example.com"))'
""")
    return str(tmp_path / "policy.yaml")


CASES = f"""\
cases:
  - name: a workload's SPIFFE ID is the subject, its roles from the section
    request: {{method: GET, path: /api/orders}}
    certificate: {{uri_sans: ["{BILLING}"]}}
    expect: {{allowed: true, status: 200, reason: allowed, rule: orders-reader,
             headers: {{x-user-id: "{BILLING}", x-kind: certificate}}}}
  - name: another namespace has no role
    request: {{method: GET, path: /api/orders}}
    certificate: {{uri_sans: ["spiffe://cluster.local/ns/other/sa/billing"]}}
    expect: {{allowed: false, status: 403, reason: no_permission}}
  - name: a rule reads the certificate's names
    request: {{method: GET, path: /api/reports}}
    certificate: {{uri_sans: ["spiffe://partners/acme"], dns_sans: [api.acme.partners.example.com],
                   subject: "CN=acme,O=Acme"}}
    expect: {{allowed: true, rule: partners-read-reports}}
  - name: an expired certificate
    request: {{method: GET, path: /api/orders}}
    certificate: {{uri_sans: ["{BILLING}"], expired: true}}
    expect: {{allowed: false, status: 401, reason: expired_certificate}}
  - name: a certificate that expired a second ago
    request: {{method: GET, path: /api/orders}}
    certificate: {{uri_sans: ["{BILLING}"], not_before: -3600, not_after: -1}}
    expect: {{allowed: false, reason: expired_certificate}}
  - name: a certificate not valid yet
    request: {{method: GET, path: /api/orders}}
    certificate: {{uri_sans: ["{BILLING}"], not_before: 60}}
    expect: {{allowed: false, reason: expired_certificate}}
  - name: a server's certificate is not a client's
    request: {{method: GET, path: /api/orders}}
    certificate: {{uri_sans: ["{BILLING}"], client_auth: false}}
    expect: {{allowed: false, status: 401, reason: invalid_certificate}}
  - name: two URI SANs where the subject needs one
    request: {{method: GET, path: /api/orders}}
    certificate: {{uri_sans: ["{BILLING}", "spiffe://cluster.local/ns/shop/sa/orders"]}}
    expect: {{allowed: false, reason: invalid_certificate}}
  - name: no subjectAltName
    request: {{method: GET, path: /api/orders}}
    certificate: {{subject: "CN=billing"}}
    expect: {{allowed: false, reason: invalid_certificate}}
  - name: no certificate
    request: {{method: GET, path: /api/orders}}
    expect: {{allowed: false, status: 401, reason: missing_credential}}
"""


@pytest.mark.parametrize("sources", ["[peer]", "[xfcc]", "[client-cert]", "[xfcc, peer]"])
def test_certificates_are_minted_by_the_stand_in_ca_and_verified_as_the_server_does(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, sources: str) -> None:
    code, out, err = run(capsys, tmp_path, write_policy(tmp_path, sources), CASES)
    assert (code, out, err) == (0, [f"{CASES.count('- name:')} passed, 0 failed"], "")


def test_a_case_that_expects_what_the_certificate_does_not_give_fails(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = f"""\
cases:
  - name: an expired certificate is not allowed
    request: {{method: GET, path: /api/orders}}
    certificate: {{uri_sans: ["{BILLING}"], expired: true}}
    expect: {{allowed: true}}
  - name: the subject is the URI SAN
    request: {{method: GET, path: /api/orders}}
    certificate: {{uri_sans: ["{BILLING}"]}}
    expect: {{headers: {{x-user-id: someone-else}}}}
"""
    code, out, _err = run(capsys, tmp_path, write_policy(tmp_path), cases)
    assert code == 1
    assert out[-1] == "0 passed, 2 failed"
    assert "  decision: DENY 401 expired_certificate" in out
    assert f"  header x-user-id: expected 'someone-else', got '{BILLING}'" in out


PIN = "ab" * 32


@pytest.mark.parametrize(("extra", "certificate", "expected"), [
    pytest.param("", "{subject: 'not a DN'}",
                 ["{f}:4: cases[0].certificate.subject: not an RFC 4514 distinguished name (CN=billing,O=Example)"],
                 id="subject"),
    pytest.param("", "{uri_sans: [a], not_before: 60, not_after: 60}",
                 ["{f}:4: cases[0].certificate.not_after: not_after is not after not_before"], id="times"),
    pytest.param(f"  pins: ['{PIN}']\n", "{uri_sans: [a]}",
                 ["{f}:4: cases[0].certificate: the policy pins certificates by SHA-256 (certificates.pins): a "
                  "certificate minted for the run is never one it pins, so authz test cannot present one"],
                 id="pins"),
    pytest.param("", "{uri_sans: [a], dns_sans: [bücher.example]}",
                 ["{f}:4: cases[0].certificate.dns_sans[0]: 'bücher.example' is not ASCII: write an IDN as its "
                  "A-label (xn--...), as a certificate holds it"], id="idn"),
])
def test_a_bad_certificate_case_is_file_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                        extra: str, certificate: str, expected: list[str]) -> None:
    cases = ("cases:\n  - name: x\n    request: {path: /api/orders}\n"
             f"    certificate: {certificate}\n    expect: {{allowed: true}}\n")
    code, out, err = run(capsys, tmp_path, write_policy(tmp_path, extra=extra), cases)
    assert (code, out) == (2, [])
    assert err.splitlines() == [line.format(f=tmp_path / "cases.yaml") for line in expected]


def test_a_certificate_for_a_policy_without_the_section_is_file_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("version: 1\nroles:\n  r:\n    - {paths: [/a]}\n")
    cases = ("cases:\n  - name: x\n    request: {path: /a}\n"
             "    certificate: {uri_sans: [a]}\n    expect: {allowed: true}\n")
    code, out, err = run(capsys, tmp_path, str(tmp_path / "policy.yaml"), cases)
    assert (code, out) == (2, [])
    assert err.splitlines() == [f"{tmp_path / 'cases.yaml'}:4: cases[0].certificate: the policy has no certificates "
                                "section: a client certificate authenticates nothing"]


def test_sec_59_the_stand_in_trusts_only_its_own_ca(tmp_path: Path) -> None:
    """A certificate of the policy's own CA, verified by the stand-in
    section, is refused: in a test run only the run's CA is trusted."""
    write_policy(tmp_path)
    real = MeshCA(tmp_path, "real-ca")
    (tmp_path / "policy.yaml").write_text((tmp_path / "policy.yaml").read_text().replace("mesh-ca.pem", "real-ca.pem"))
    policy = load_policy(str(tmp_path / "policy.yaml"))
    _cert, cert_path, _key = real.client("billing", uris=(BILLING,))
    request = Request(method="GET", path="/api/orders", source_certificate=quote(cert_path.read_text()))
    original = next(s for s in policy.credential_sources if isinstance(s, CertificateSource))
    assert original.authenticate(request, now=time.time(), cache=None) is not None  # the server's section: valid
    stand_ins = stand_in(policy)
    assert stand_ins.certificates is not None
    with pytest.raises(CertificateError) as refused:
        stand_ins.certificates.authenticate(request, now=time.time(), cache=None)
    assert refused.value.reason is Reason.UNTRUSTED_CERTIFICATE
