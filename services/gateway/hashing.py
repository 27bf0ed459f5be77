"""Password and client-secret hashes — 口令与客户端密钥的摘要: argon2id, off the event loop.

One hasher for both. Its parameters are OWASP's Password Storage Cheat Sheet's first argon2id
setting (19 MiB, 2 passes, 1 lane): about 25 ms of one core here. argon2-cffi's default (64 MiB,
4 lanes) took 130-180 ms on the 2-core machine that runs every service in the embedded mode.

Hashes written before argon2id (``scrypt$…`` for people, unsalted ``sha256$…`` for client
secrets) still verify, and are flagged for rehashing so that the next successful login or token
request replaces them. A hash made with other argon2 parameters is flagged the same way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# What an unknown user or client is checked against, so that "no such name" costs the same time
# as "wrong password" (the name's existence does not show in the timing). Made with HASHER's
# parameters (tests/gateway/test_hashing.py checks they still match); it is the hash of a random
# value nobody kept, so no input verifies against it.
DUMMY_HASH = "$argon2id$v=19$m=19456,t=2,p=1$WiYrmXBJ4hK8nszkEjT++Q$CigXC7lfvf4UtK82FB5UAB8MOA67hGFR6wHCr3ZFOlE"
LEGACY_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    needs_rehash: bool = False


async def hash_secret(value: str) -> str:
    """argon2id hash of a password or client secret, computed in a worker thread: a hash takes
    tens of milliseconds of CPU that would stall every request of the process."""
    return await asyncio.to_thread(HASHER.hash, value)


async def verify_secret(value: str, stored: str | None) -> Verdict:
    """Does ``value`` match ``stored``? ``None`` (no such user or client) is checked against
    :data:`DUMMY_HASH` and is never a match."""
    return await asyncio.to_thread(_verify, value, stored)


def _verify(value: str, stored: str | None) -> Verdict:
    if stored is None:
        _argon2(value, DUMMY_HASH)
        return Verdict(ok=False)
    if stored.startswith("$argon2"):
        ok = _argon2(value, stored)
        return Verdict(ok=ok, needs_rehash=ok and HASHER.check_needs_rehash(stored))
    if stored.startswith("scrypt$"):
        ok = _scrypt(value, stored)
        return Verdict(ok=ok, needs_rehash=ok)
    if stored.startswith("sha256$"):
        digest = "sha256$" + hashlib.sha256(value.encode()).hexdigest()
        ok = hmac.compare_digest(digest, stored)
        return Verdict(ok=ok, needs_rehash=ok)
    _argon2(value, DUMMY_HASH)  # an unreadable hash is no match, at the usual cost
    return Verdict(ok=False)


def _argon2(value: str, stored: str) -> bool:
    try:
        return HASHER.verify(stored, value)
    except (VerificationError, InvalidHashError):
        return False


def _scrypt(value: str, stored: str) -> bool:
    try:
        _, salt_b64, digest_b64 = stored.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    return hmac.compare_digest(hashlib.scrypt(value.encode(), salt=salt, **LEGACY_SCRYPT), expected)
