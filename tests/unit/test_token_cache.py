"""TokenVerifier remembers tokens it has verified, but never past their expiry or a key change."""

from __future__ import annotations

import asyncio
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from services.common.errors import Problem
from services.common.security import LEEWAY_S, TokenVerifier

ISSUER, AUDIENCE = "https://gateway.test", "tongban"


def new_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": f"k{time.monotonic_ns()}", "alg": "ES256"}, private=True)


def token(key: ECKey, exp: float) -> str:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "sys-1",
        "client_id": "sys-1",
        "dept": "d",
        "exp": int(exp),
        "principal_type": "system",
    }
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


def verifier(key: ECKey) -> TokenVerifier:
    return TokenVerifier(ISSUER, AUDIENCE, keys=KeySet([key]))


async def test_a_verified_token_is_served_from_the_cache_until_it_expires() -> None:
    key = new_key()
    v = verifier(key)
    # Valid for about 1.5 s more, counting the leeway.
    t = token(key, time.time() - LEEWAY_S + 1.5)
    first = await v.verify(t)
    assert (await v.verify(t)) is first  # the same object: no second verification
    await asyncio.sleep(2.0)
    with pytest.raises(Problem) as err:
        await v.verify(t)
    assert err.value.status == 401


async def test_new_keys_drop_what_the_old_ones_vouched_for() -> None:
    key = new_key()
    v = verifier(key)
    t = token(key, time.time() + 300)
    await v.verify(t)
    v.use_keys(KeySet([new_key()]))  # e.g. the old key was withdrawn
    with pytest.raises(Problem) as err:
        await v.verify(t)
    assert err.value.status == 401
