"""Token signing keys (签名密钥): ES256 with a kid, sealed at rest under the key-encryption key,
rotated with an overlap — the JWKS shows next, current and previous — and a rotation that would
drop a key whose tokens may still be valid is refused. Real PostgreSQL, rolled back per test."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Problem
from services.common.keywrap import KeyWrap, KeyWrapError, new_kek
from services.common.security import PrincipalType, TokenVerifier
from services.gateway import keys, service
from services.gateway.models import KeyState, SigningKey
from tests.gateway.support import SETTINGS, WRAP


def token(ring: keys.KeyRing) -> str:
    signed, _, _ = service.issue_token(
        ring.current, SETTINGS, kind=PrincipalType.SYSTEM, sub="sys-0123456789abcdef", dept="D", roles=["consumer"]
    )
    return signed


def verifier(jwks: dict[str, object]) -> TokenVerifier:
    """A service that fetched this JWKS."""
    return TokenVerifier(SETTINGS.jwt_issuer, SETTINGS.jwt_audience, keys=KeySet.import_key_set(jwks))  # type: ignore[arg-type]


async def states(session: AsyncSession) -> dict[str, str]:
    return {r.kid: r.state for r in (await session.scalars(select(SigningKey))).all()}


async def age_the_rotation(session: AsyncSession, seconds: float) -> None:
    """As if the last rotation happened ``seconds`` ago."""
    await session.execute(update(SigningKey).values(state_since=SigningKey.state_since - timedelta(seconds=seconds)))
    session.expire_all()


async def test_a_fresh_gateway_has_a_current_and_a_next_key_sealed_at_rest(session: AsyncSession) -> None:
    ring = await keys.prepare_ring(session, WRAP)
    assert sorted((await states(session)).values()) == ["current", "next"]
    assert ring.current.kid and ring.current.as_dict()["alg"] == "ES256"
    for row in (await session.scalars(select(SigningKey))).all():
        assert row.private_jwk is None and row.sealed_private_jwk is not None
        assert "d" not in row.public_jwk
        # The private scalar is nowhere in clear.
        private_d = json.loads(WRAP.open(row.sealed_private_jwk, keys.context(row.kid)))["d"]
        assert private_d.encode() not in row.sealed_private_jwk
    # The JWKS publishes public halves only: next and current.
    published = ring.jwks()["keys"]
    assert isinstance(published, list) and len(published) == 2
    assert all("d" not in k for k in published)


async def test_a_sealed_key_opens_only_with_its_kek_and_on_its_own_row(session: AsyncSession) -> None:
    await keys.prepare_ring(session, WRAP)
    row = (await session.scalars(select(SigningKey).where(SigningKey.state == KeyState.CURRENT))).one()
    assert row.sealed_private_jwk is not None
    with pytest.raises(KeyWrapError):
        KeyWrap(new_kek()).open(row.sealed_private_jwk, keys.context(row.kid))
    with pytest.raises(KeyWrapError):
        WRAP.open(row.sealed_private_jwk, keys.context("another-kid"))
    with pytest.raises(KeyWrapError):
        KeyWrap("too-short")


async def test_a_key_kept_in_clear_by_an_earlier_gateway_is_sealed_at_start(session: AsyncSession) -> None:
    legacy = keys.new_key(WRAP, KeyState.CURRENT, datetime.now(UTC))
    clear = json.loads(WRAP.open(legacy.sealed_private_jwk or b"", keys.context(legacy.kid)))
    legacy.sealed_private_jwk, legacy.private_jwk = None, clear
    session.add(legacy)
    await session.flush()

    ring = await keys.prepare_ring(session, WRAP)

    await session.refresh(legacy)
    assert legacy.private_jwk is None and legacy.sealed_private_jwk is not None
    assert ring.current.kid == legacy.kid  # still the key that signs: tokens it signed stay valid


async def test_rotation_overlaps_next_current_previous_and_tokens_of_each_stay_valid(session: AsyncSession) -> None:
    first = await keys.prepare_ring(session, WRAP)
    before = token(first)
    next_kid = next(k for k, s in first.states.items() if s is KeyState.NEXT)
    # A service that fetched the JWKS before the rotation knows the key that signs after it.
    old_service = verifier(first.jwks())

    second = await keys.rotate(session, WRAP, SETTINGS.token_ttl_s)

    assert second.current.kid == next_kid
    assert second.states[first.current.kid] is KeyState.PREVIOUS
    assert sorted(s.value for s in second.states.values()) == ["current", "next", "previous"]
    assert [k["kid"] for k in second.jwks()["keys"]][1] == next_kid  # type: ignore[index]
    after = token(second)
    assert (await old_service.verify(after)).sub == "sys-0123456789abcdef"
    new_service = verifier(second.jwks())
    assert (await new_service.verify(before)).sub == "sys-0123456789abcdef"  # the previous key still verifies


async def test_a_rotation_within_the_token_lifetime_is_refused_and_changes_nothing(session: AsyncSession) -> None:
    await keys.prepare_ring(session, WRAP)
    await keys.rotate(session, WRAP, SETTINGS.token_ttl_s)
    before = await states(session)

    with pytest.raises(Problem) as raised:
        async with session.begin_nested():
            await keys.rotate(session, WRAP, SETTINGS.token_ttl_s)
    assert raised.value.status == 409 and raised.value.code == "rotation-too-soon"
    assert int(raised.value.headers["Retry-After"]) > SETTINGS.token_ttl_s - 60
    assert await states(session) == before

    await age_the_rotation(session, SETTINGS.token_ttl_s + 60)
    third = await keys.rotate(session, WRAP, SETTINGS.token_ttl_s)
    dropped = [k for k, s in before.items() if s == "previous"]
    assert dropped and not set(dropped) & third.kids  # the oldest key is gone from the JWKS
    assert len(third.kids) == 3


async def test_a_token_signed_by_a_dropped_key_is_refused(session: AsyncSession) -> None:
    first = await keys.prepare_ring(session, WRAP)
    old = token(first)
    await keys.rotate(session, WRAP, SETTINGS.token_ttl_s)
    await age_the_rotation(session, SETTINGS.token_ttl_s + 60)
    third = await keys.rotate(session, WRAP, SETTINGS.token_ttl_s)
    assert first.current.kid not in third.kids
    with pytest.raises(Problem) as raised:
        await verifier(third.jwks()).verify(old)
    assert raised.value.status == 401


async def test_another_replica_loads_the_rotated_ring(session: AsyncSession) -> None:
    await keys.prepare_ring(session, WRAP)
    rotated = await keys.rotate(session, WRAP, SETTINGS.token_ttl_s)
    loaded = await keys.load_ring(session, WRAP)
    assert loaded.current.kid == rotated.current.kid and loaded.kids == rotated.kids
    claims = jwt.decode(token(loaded), KeySet(list(rotated.published))).claims
    assert claims["sub"] == "sys-0123456789abcdef"
