"""Private keys at rest (静态加密): sealed with AES-256-GCM under a key-encryption key (KEK) that
comes from the environment, never from the database that holds the sealed keys.

A KEK is 32 random bytes, written as unpadded base64url (``python -m services.common.keywrap``
prints a new one). Each sealed value is ``nonce (12 bytes) || ciphertext+tag``; the associated
data names what is sealed (e.g. the key id), so a sealed key copied onto another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

KEK_BYTES = 32
NONCE_BYTES = 12


class KeyWrapError(ValueError):
    """A KEK that is not 32 bytes of base64url, or a sealed value that does not open with it."""


def new_kek() -> str:
    """A fresh key-encryption key, as it is written into the environment."""
    return base64.urlsafe_b64encode(os.urandom(KEK_BYTES)).rstrip(b"=").decode()


def decode_kek(kek: str) -> bytes:
    """The 32 bytes of a KEK as written in the environment (unpadded base64url)."""
    try:
        raw = base64.urlsafe_b64decode(kek + "=" * (-len(kek) % 4))
    except (binascii.Error, ValueError) as err:
        raise KeyWrapError("the key-encryption key is not base64url") from err
    if len(raw) != KEK_BYTES:
        raise KeyWrapError(f"the key-encryption key must be {KEK_BYTES} bytes, not {len(raw)}")
    return raw


class KeyWrap:
    """Seals and opens private keys with one KEK."""

    def __init__(self, kek: str) -> None:
        self._aead = AESGCM(decode_kek(kek))

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode())
        except InvalidTag as err:
            raise KeyWrapError(f"{context}: does not open with this key-encryption key (wrong KEK?)") from err


def required(kek: SecretStr | None, service: str) -> KeyWrap:
    """The wrapper of the configured KEK; a service that keeps private keys does not start without one."""
    if kek is None:
        raise RuntimeError(
            f"TONGBAN_KEY_ENCRYPTION_KEY is not set: the {service} seals its private keys with it. "
            "Generate one with `python -m services.common.keywrap` and keep it in your secret store."
        )
    return KeyWrap(kek.get_secret_value())


if __name__ == "__main__":
    print(new_kek())
