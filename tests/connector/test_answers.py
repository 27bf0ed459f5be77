"""可验证应答 — the connector answers as an SD-JWT (RFC 9901) signed with its sealed key: one
disclosure per item asked, the signed claims binding the query, the request hash, the resource,
the provider and the time; and it publishes the public key that verifies it. Checked with the
OpenWallet Foundation reference implementation (``sd-jwt``), not with our own verifier."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from jwcrypto.jwk import JWK  # type: ignore[import-untyped]
from sd_jwt.verifier import SDJWTVerifier  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.common.db import driver_connection
from services.common.keywrap import KeyWrap, new_kek
from services.common.pb import exchange_pb2
from services.connector import service
from services.connector.models import SigningKey

WRAP = KeyWrap(new_kek())
DEPT = "111101000000198608"
RESIDENT = service.synthetic_residents(1, seed=5)[0]
RECORD = {
    "id_number": RESIDENT.id_number,
    "name": RESIDENT.name,
    "gender": RESIDENT.gender,
    "birth_date": RESIDENT.birth_date,
    "address": RESIDENT.address,
}


def request(fields: list[str]) -> exchange_pb2.ExchangeRequest:
    return exchange_pb2.ExchangeRequest(
        query_id=str(uuid.uuid4()),
        resource_code="101010/000001",
        provider_dept=DEPT,
        subject_type="id_card",
        subject_value=RESIDENT.id_number,
        fields=fields,
    )


@pytest.fixture
async def engine(tier_engine: AsyncEngine) -> AsyncEngine:
    """The tier's engine with the resident in the demo backend (committed: answer_once runs in
    its own transaction on its own connection)."""
    async with driver_connection(tier_engine) as db:
        await db.execute(
            "INSERT INTO connector.residents VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            RESIDENT.id_number,
            RESIDENT.name,
            RESIDENT.gender,
            RESIDENT.birth_date,
            RESIDENT.address,
        )
    return tier_engine


async def test_the_answer_is_an_sd_jwt_the_published_key_verifies(engine: AsyncEngine, session: AsyncSession) -> None:
    key_id, key = await service.signing_key(session, WRAP)  # rolled back after the test
    jwks = await service.public_jwks(session, WRAP)
    jwk = next(k for k in jwks["keys"] if k["kid"] == key_id)
    assert "d" not in jwk  # public only
    asked = request(["姓名", "出生日期"])
    raw = asked.SerializeToString()
    async with driver_connection(engine) as db:
        [sent] = await service.Responder(DEPT, key_id, key).answer_once(db, [(raw, asked)])
    reply = exchange_pb2.ExchangeReply.FromString(sent.value)

    assert reply.status == exchange_pb2.ExchangeReply.OK
    assert reply.sd_jwt.count("~") == 3  # <jwt>~<姓名>~<出生日期>~ : one disclosure per item asked
    verifier = SDJWTVerifier(reply.sd_jwt, lambda issuer, header: JWK(**jwk))
    signed = verifier.get_verified_payload()
    assert signed["姓名"] == RESIDENT.name and signed["出生日期"] == RESIDENT.birth_date.isoformat()
    assert "户籍地址" not in signed  # not asked, not signed
    assert signed["query_id"] == asked.query_id and signed["resource"] == "101010/000001"
    assert signed["provider"] == DEPT == signed["iss"]
    assert signed["request_hash"] == hashlib.sha256(raw).hexdigest() == reply.request_hash
    assert abs(signed["iat"] - time.time()) < 60


async def test_every_key_signed_with_stays_published(session: AsyncSession) -> None:
    """A newer key does not orphan the answers signed with the older one: both are published,
    newest first."""
    first_id, _ = await service.signing_key(session, WRAP)
    newer = Ed25519PrivateKey.generate()
    raw = newer.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    session.add(
        SigningKey(
            key_id="newer01234567890",
            sealed_private_key=WRAP.seal(raw, service.sealing_context("newer01234567890")),
            created_at=datetime.now(UTC) + timedelta(minutes=1),
        )
    )
    await session.flush()
    jwks = await service.public_jwks(session, WRAP)
    assert [k["kid"] for k in jwks["keys"]] == ["newer01234567890", first_id]


async def test_no_record_means_no_sd_jwt(engine: AsyncEngine) -> None:
    asked = request(["姓名"])
    asked.subject_value = service.synthetic_residents(2, seed=6)[1].id_number  # nobody in the backend
    async with driver_connection(engine) as db:
        [sent] = await service.Responder(DEPT, "k1", Ed25519PrivateKey.generate()).answer_once(
            db, [(asked.SerializeToString(), asked)]
        )
    reply = exchange_pb2.ExchangeReply.FromString(sent.value)
    assert reply.status == exchange_pb2.ExchangeReply.NOT_FOUND and reply.sd_jwt == ""
