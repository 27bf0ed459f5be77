"""The connector's reply-signing key (Ed25519) is kept sealed under the key-encryption key, as the
gateway's are: made sealed on a fresh database, a key from before sealing is sealed at start, and
it opens with no other KEK. Real PostgreSQL, rolled back per test."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.keywrap import KeyWrap, KeyWrapError, new_kek
from services.connector import service
from services.connector.models import SigningKey

WRAP = KeyWrap(new_kek())


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@pytest.fixture(autouse=True)
async def no_keys_yet(session: AsyncSession) -> None:
    """A database without a signing key (another test's connector may have made one and
    committed it): deleted in the test's transaction, so back after its rollback."""
    await session.execute(delete(SigningKey))


async def test_a_new_key_is_sealed_at_rest_and_used_again(session: AsyncSession) -> None:
    key_id, key = await service.signing_key(session, WRAP)
    row = await session.get(SigningKey, key_id)
    assert row is not None and row.private_key is None and row.sealed_private_key is not None
    assert raw(key) not in row.sealed_private_key
    again_id, again = await service.signing_key(session, WRAP)
    assert again_id == key_id and raw(again) == raw(key)
    with pytest.raises(KeyWrapError):
        await service.signing_key(session, KeyWrap(new_kek()))  # another KEK opens nothing


async def test_a_key_kept_in_clear_is_sealed_at_start_and_still_signs(session: AsyncSession) -> None:
    legacy = Ed25519PrivateKey.generate()
    session.add(SigningKey(key_id="legacy0123456789", private_key=raw(legacy)))
    await session.flush()

    key_id, key = await service.signing_key(session, WRAP)

    assert key_id == "legacy0123456789" and raw(key) == raw(legacy)
    [row] = (await session.scalars(select(SigningKey))).all()
    assert row.private_key is None and row.sealed_private_key is not None
