"""The acceptance fixtures are exactly what their generator makes from the
committed keys and case table, and the forged-token cases test what they say."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from authz.config import load_policy
from authz.engine import Engine
from authz.wire.grpc import parse_json_request, to_request
from testkit.paths import ACCEPTANCE

GENERATOR = ACCEPTANCE / "generate.py"


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _key(name: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key((ACCEPTANCE / name).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _bearer(case: str) -> str:
    document = json.loads((ACCEPTANCE / "requests" / f"{case}.json").read_text())
    value: str = document["attributes"]["request"]["http"]["headers"]["authorization"]
    return value.removeprefix("Bearer ")


def _allowed(case: str, bearer: str) -> bool:
    text = (ACCEPTANCE / "requests" / f"{case}.json").read_text().replace(_bearer(case), bearer)
    decision = Engine(load_policy(str(ACCEPTANCE / "policy.yaml"))).decide(to_request(parse_json_request(text)))
    return bool(decision.to_json()["allowed"])


def test_the_generator_reproduces_every_generated_file(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    generated = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(["corp.jwks.json"] + [f"requests/{p.name}" for p in (ACCEPTANCE / "requests").iterdir()])
    assert generated == committed, "a request file is not in generate.py's table (or the reverse)"
    drifted = [name for name in generated if (tmp_path / name).read_bytes() != (ACCEPTANCE / name).read_bytes()]
    assert not drifted, f"edited by hand or out of date; run {GENERATOR.relative_to(ACCEPTANCE.parents[2])}: {drifted}"


def test_check_mode_reports_drift(tmp_path: Path) -> None:
    assert subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], timeout=120).returncode == 0
    check = [sys.executable, str(GENERATOR), "--check", "--out", str(tmp_path)]
    assert subprocess.run(check, capture_output=True, timeout=120).returncode == 0
    (tmp_path / "requests" / "no-exp.json").write_text("{}\n")
    run = subprocess.run(check, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "no-exp.json" in run.stderr


def test_every_request_has_an_expected_decision() -> None:
    expected = json.loads((ACCEPTANCE / "expected.json").read_text())
    assert sorted(case["request"] for case in expected["cases"]) == sorted(
        f"requests/{p.name}" for p in (ACCEPTANCE / "requests").iterdir()
    )


def test_the_forged_token_is_signed_by_the_attacker_under_the_corp_kid() -> None:
    """wrong-key-same-kid is refused for its signature alone: the attacker's key
    made it, and the same header and claims signed by the corp key are allowed."""
    header, claims, signature = _bearer("wrong-key-same-kid").split(".")
    signing_input = f"{header}.{claims}".encode()
    assert json.loads(_b64decode(header))["kid"] == "corp-2026"
    _key("attacker-signing-key.pem").public_key().verify(
        _b64decode(signature), signing_input, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        _key("corp-signing-key.pem").public_key().verify(
            _b64decode(signature), signing_input, padding.PKCS1v15(), hashes.SHA256())
    assert not _allowed("wrong-key-same-kid", _bearer("wrong-key-same-kid"))
    genuine = _key("corp-signing-key.pem").sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    assert _allowed("wrong-key-same-kid", f"{header}.{claims}.{_b64encode(genuine)}")


def test_the_unknown_kid_is_absent_from_the_corp_key_set() -> None:
    header, _, _ = _bearer("unknown-kid").split(".")
    kid = json.loads(_b64decode(header))["kid"]
    assert kid not in {key["kid"] for key in json.loads((ACCEPTANCE / "corp.jwks.json").read_text())["keys"]}
