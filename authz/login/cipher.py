"""The session cipher: AES-256-GCM (``cryptography``) with keys from a file.

A key file holds base64url keys of 32 bytes, one a line (blank lines and
``#`` comments aside): the first seals, every one opens, so a new key is
added at the top, and an old one removed once the cookies it sealed have
ended. A sealed value names its key by a 4-byte id (a hash of the key), so
opening tries the one key it names; a value whose key has left the file
does not open. The cookie's name is the associated data: a value sealed
for one cookie (the login state) never opens as another (the session).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_ID_BYTES = 4
_NONCE_BYTES = 12


class SealError(ValueError):
    """A value that does not open: tampered, cut, or sealed with a key no longer in the file."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """``text`` decoded; ValueError when it is not base64url."""
    if not text or any(c not in _ALPHABET for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def parse_keys(data: bytes) -> tuple[bytes, ...]:
    """The keys of a key file, in order; ValueError naming the line of a bad one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the keys file is not UTF-8 text") from None
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = unb64url(line.rstrip("="))
        except ValueError:
            raise ValueError(f"line {number} of the keys file is not base64url") from None
        if len(key) != KEY_BYTES:
            raise ValueError(f"line {number} of the keys file holds {len(key)} bytes, not {KEY_BYTES}")
        keys.append(key)
    if not keys:
        raise ValueError("the keys file holds no key")
    return tuple(keys)


class Cipher:
    """Seals with the first key; opens with whichever key a value names."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("no key")
        self._keys = {hashlib.sha256(key).digest()[:_ID_BYTES]: AESGCM(key) for key in keys}
        self._first = hashlib.sha256(keys[0]).digest()[:_ID_BYTES]

    def seal(self, plaintext: bytes, purpose: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self._first].encrypt(nonce, plaintext, purpose.encode("ascii"))
        return b64url(self._first + nonce + sealed)

    def open(self, text: str, purpose: str) -> bytes:
        try:
            raw = unb64url(text)
        except ValueError:
            raise SealError("not base64url") from None
        if len(raw) < _ID_BYTES + _NONCE_BYTES + 16:
            raise SealError("too short")
        aead = self._keys.get(raw[:_ID_BYTES])
        if aead is None:
            raise SealError("sealed with a key not in the keys file")
        try:
            return aead.decrypt(raw[_ID_BYTES:_ID_BYTES + _NONCE_BYTES], raw[_ID_BYTES + _NONCE_BYTES:],
                                purpose.encode("ascii"))
        except InvalidTag:
            raise SealError("does not authenticate (tampered, or another cookie's)") from None
