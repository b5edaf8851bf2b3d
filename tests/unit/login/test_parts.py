"""The flow's parts alone: the return-URL check, the cipher and its keys
file, the cookies."""

from __future__ import annotations

import base64
import os

import pytest

from authz.login import cookies
from authz.login.cipher import Cipher, SealError, parse_keys
from authz.login.returns import safe_return


@pytest.mark.parametrize("target", ["/", "/app", "/app/orders?page=2&q=//x", "/app/a%20b", "/app/%7Euser"])
def test_a_path_of_this_origin_is_a_return_url(target: str) -> None:
    assert safe_return(target)


@pytest.mark.parametrize("target", [
    "", "app", "//evil.example", "///evil.example", "https://evil.example/", "http:/evil", "/\\evil.example",
    "\\\\evil.example", "/%2f/evil.example",
    "/%2F/evil.example", "/%5Cevil.example", "/%252F/evil.example", "/%25252F/evil.example",
    "/\t/evil.example", "/\n/evil", "/ /evil", "/app\x00", "/caf\u00e9", "/" + "a" * 3000,
])
def test_anything_a_browser_could_read_as_another_origin_is_not(target: str) -> None:
    assert not safe_return(target)


def key() -> bytes:
    return os.urandom(32)


def text(*keys: bytes) -> bytes:
    return b"# session keys\n\n" + b"\n".join(base64.urlsafe_b64encode(k).rstrip(b"=") for k in keys) + b"\n"


def test_the_first_key_seals_every_key_opens_and_a_removed_one_does_not() -> None:
    old, new = key(), key()
    sealed_old = Cipher([old]).seal(b"hello", "c")
    rotated = Cipher(parse_keys(text(new, old)))
    assert rotated.open(sealed_old, "c") == b"hello"
    sealed_new = rotated.seal(b"again", "c")
    assert Cipher([old]).open(sealed_old, "c") == b"hello"
    with pytest.raises(SealError):
        Cipher([old]).open(sealed_new, "c")  # sealed with the new first key
    with pytest.raises(SealError):
        Cipher(parse_keys(text(new))).open(sealed_old, "c")  # the old key removed


def test_a_tampered_cut_or_other_purpose_value_does_not_open() -> None:
    cipher = Cipher([key()])
    sealed = cipher.seal(b"payload", "session")
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    for bad in (flipped, sealed[:-3], sealed[:10], "not base64!", ""):
        with pytest.raises(SealError):
            cipher.open(bad, "session")
    with pytest.raises(SealError):
        cipher.open(sealed, "state")


@pytest.mark.parametrize(("data", "message"), [
    (b"", "holds no key"), (b"not-base64!\n", "line 1 of the keys file is not base64url"),
    (base64.urlsafe_b64encode(b"x" * 16) + b"\n", "line 1 of the keys file holds 16 bytes, not 32"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_a_bad_keys_file_is_refused_with_its_line(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_keys(data)


def test_cookies_are_read_strictly_and_stripped_for_the_upstream() -> None:
    assert cookies.read("a=1; __Host-s=v; b=2", "__Host-s") == "v"
    assert cookies.read("a=1", "__Host-s") is None
    with pytest.raises(cookies.CookieError):
        cookies.read("__Host-s=v; __Host-s=w", "__Host-s")
    with pytest.raises(cookies.CookieError):
        cookies.read("__Host-s=", "__Host-s")
    assert cookies.strip("a=1; __Host-s=v; __Host-s_login=x; b=2", ("__Host-s", "__Host-s_login")) == "a=1; b=2"
    assert cookies.set_cookie("__Host-s", "v", 60) == "__Host-s=v; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60"
    assert cookies.clear_cookie("__Host-s").endswith("Max-Age=0")
