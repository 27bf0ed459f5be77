"""What the exchange's service tier shares: the provider and the key its connector signs answers
with, the consumer system, a published resource and its grants, an exchange replica, and playing
the provider (its reply to the request the exchange sent). Fixtures are in ``conftest.py``."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import sdjwt
from services.common.bus import MemoryBus
from services.common.db import session_factory
from services.common.outbox import Outbox
from services.common.pb import audit_pb2, exchange_pb2
from services.common.security import Principal, PrincipalType, Role
from services.connector.service import Responder, synthetic_residents
from services.exchange.answers import ProviderKeys
from services.exchange.config import ExchangeSettings
from services.exchange.models import GrantView, ResourceView
from services.exchange.models import Outbox as OutboxModel
from services.exchange.service import Exchange, ExchangeMetrics
from tests.factories import HOUSEHOLD_ITEMS, SERVICE_ITEMS, credit_code

PURPOSE = SERVICE_ITEMS[0][0]  # 最低生活保障审批
OTHER_PURPOSE = SERVICE_ITEMS[2][0]  # 住房公积金提取
RESOURCE = "101010/000001"  # 居民户籍信息
# One provider for the whole tier (credit_code() is random per call): the key pinned for it is the
# key its answers are signed with, whichever module asks.
PROVIDER = credit_code("110101")
PROVIDER_KEY = Ed25519PrivateKey.generate()  # the provider connector's answer-signing key
CLIENT = "sys-exchange-tier"
CONSUMER = credit_code("110102")
SUBJECTS = [r.id_number for r in synthetic_residents(40)]


async def publish(
    engine: AsyncEngine, code: str = RESOURCE, name: str = "居民户籍信息", provider: str = PROVIDER
) -> None:
    """A published resource as the registry's events project it (its items: HOUSEHOLD_ITEMS)."""
    async with session_factory(engine).begin() as session:
        session.add(
            ResourceView(
                code=code,
                name=name,
                provider_dept=provider,
                version=1,
                share_type="conditional",
                items=[item.model_dump() for item in HOUSEHOLD_ITEMS],
            )
        )


async def add_grant(engine: AsyncEngine, **overrides: Any) -> uuid.UUID:
    """A live grant of 姓名/户籍地址 of RESOURCE to CLIENT for PURPOSE (100 a day), as overridden."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "resource_code": RESOURCE,
        "provider_dept": PROVIDER,
        "consumer_dept": CONSUMER,
        "client_id": CLIENT,
        "items": ["姓名", "户籍地址"],
        "purpose": PURPOSE,
        "masking": {},
        "valid_until": datetime.now(UTC) + timedelta(days=30),
        "daily_quota": 100,
        "revoked": False,
    }
    grant = GrantView(**(values | overrides))
    async with session_factory(engine).begin() as session:
        session.add(grant)
    return grant.id


def pinned_keys(settings: ExchangeSettings) -> ProviderKeys:
    """The provider's answer-signing key (``k1``) given, never fetched."""
    return ProviderKeys(
        settings, None, pinned={PROVIDER: {"keys": [sdjwt.public_jwk(PROVIDER_KEY.public_key(), "k1")]}}
    )


def replica(
    engine: AsyncEngine,
    metrics: ExchangeMetrics | None = None,
    settings: ExchangeSettings | None = None,
    *,
    callbacks: bool = False,
) -> Exchange:
    """An exchange replica whose outbox relay does not run: its rows stay in ``exchange.outbox``
    for the test to read, and no connector answers (an accepted query runs to its deadline) unless
    the test plays the provider. It knows the provider's key; ``callbacks``: as with a signing key."""
    outbox = Outbox(OutboxModel, session_factory(engine), MemoryBus("dlq"))
    settings = settings or ExchangeSettings()
    exchange = Exchange(settings, engine, outbox, metrics, provider_keys=pinned_keys(settings))
    exchange.callbacks_enabled = callbacks
    return exchange


def consumer() -> Principal:
    """CLIENT's token: a consumer system of CONSUMER."""
    return Principal(
        type=PrincipalType.SYSTEM,
        sub=CLIENT,
        client_id=CLIENT,
        dept=CONSUMER,
        roles=frozenset({Role.CONSUMER}),
        scope=frozenset({Role.CONSUMER}),
        jti="t",
    )


async def written(
    engine: AsyncEngine,
) -> tuple[int, int, list[audit_pb2.AuditEvent], list[exchange_pb2.ExchangeRequest]]:
    """(queries, quota used in total, audit events, provider requests) the exchange has written."""
    async with engine.connect() as db:
        queries = (await db.execute(text("SELECT count(*) FROM exchange.queries"))).scalar_one()
        used = (await db.execute(text("SELECT coalesce(sum(used), 0) FROM exchange.grant_usage"))).scalar_one()
        rows = (await db.execute(text("SELECT topic, value FROM exchange.outbox"))).all()
    audits, requests = [], []
    for topic, value in rows:
        if topic.endswith("audit.events"):
            audits.append(audit_pb2.AuditEvent.FromString(value))
        else:
            requests.append(exchange_pb2.ExchangeRequest.FromString(value))
    return queries, used, audits, requests


async def sent_request(engine: AsyncEngine, query_id: str) -> bytes:
    """The request as the exchange sent it (its outbox row: the relay does not run here)."""
    async with engine.connect() as db:
        sent: bytes = await db.scalar(
            text("SELECT value FROM exchange.outbox WHERE key = :key AND topic LIKE '%exchange.requests.%'"),
            {"key": query_id.encode()},
        )
    return sent


def provider_reply(
    query_id: str, sent: bytes, data: dict[str, str], kid: str = "k1", key: Ed25519PrivateKey = PROVIDER_KEY
) -> exchange_pb2.ExchangeReply:
    """The reply the provider's connector makes to the request ``sent``: an SD-JWT over its hash,
    signed with ``key`` (the connector's registered key unless told)."""
    request = exchange_pb2.ExchangeRequest.FromString(sent)
    request_hash = hashlib.sha256(sent).hexdigest()
    return exchange_pb2.ExchangeReply(
        query_id=query_id,
        provider_dept=PROVIDER,
        status=exchange_pb2.ExchangeReply.OK,
        data=data,
        request_hash=request_hash,
        key_id=kid,
        sd_jwt=Responder(PROVIDER, kid, key).answer_sd_jwt(request, request_hash, data),
    )
