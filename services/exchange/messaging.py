"""Exchange message handlers: the registry projection, and replies from connectors."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.message import DecodeError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import Handler, Message
from services.common.contracts.registry import GrantTerms, PublishedResource
from services.common.pb import exchange_pb2, registry_pb2
from services.exchange.models import GrantView, ResourceView
from services.exchange.service import Exchange

log = logging.getLogger("tongban.exchange")

LATE_GRACE_MS = 500


def parse_reply(message: Message) -> exchange_pb2.ExchangeReply | None:
    reply = exchange_pb2.ExchangeReply()
    try:
        reply.ParseFromString(message.value)
    except DecodeError:
        log.error("undecodable reply dropped", extra={"ctx_key": message.key})
        return None
    return reply


def on_replies(exchange: Exchange) -> Handler:
    """Every replica sees every reply and wakes its own waiters (no consumer group)."""

    async def handle(batch: Sequence[Message]) -> None:
        for message in batch:
            if (reply := parse_reply(message)) is not None:
                exchange.dispatch(reply)

    return handle


def on_late_replies(exchange: Exchange, sessions: async_sessionmaker[AsyncSession]) -> Handler:
    """One replica (consumer group) records replies that came after their deadline."""

    async def handle(batch: Sequence[Message]) -> None:
        # A reply well before its deadline is its waiter's (every replica sees every reply); only
        # ones near or past the deadline can be late, and only those cost a database look-up.
        soon = time.time() * 1000 + LATE_GRACE_MS
        replies = [
            r
            for m in batch
            if (r := parse_reply(m)) is not None and (not r.deadline_unix_ms or r.deadline_unix_ms < soon)
        ]
        if not replies:
            return
        for query_id in await exchange.record_late_replies(replies):
            log.info("late reply recorded", extra={"ctx_query_id": query_id})

    return handle


async def apply_registry_event(session: AsyncSession, event: registry_pb2.RegistryEvent) -> None:
    """Upsert the projection; applying the same event twice, or an older version after a newer
    one, changes nothing (idempotent, order-free)."""
    kind = event.WhichOneof("event")
    if kind == "resource_published":
        values = PublishedResource.from_proto(event.resource_published).values()
        stmt = insert(ResourceView).values(**values)
        # Events are keyed by event id, so two versions' publications may arrive in either order:
        # an older version never replaces a newer one.
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["code"], set_=values, where=ResourceView.version < stmt.excluded.version
            )
        )
    elif kind == "grant_issued":
        terms = GrantTerms.from_proto(event.grant_issued).values()
        stmt = insert(GrantView).values(**terms, revoked=False)
        # Terms never change once issued, so a second delivery changes nothing; a revocation's
        # tombstone (resource_code "") gets the terms it lacked and stays revoked, so that the
        # consumer is told "grant-revoked", not "no-grant".
        await session.execute(
            stmt.on_conflict_do_update(index_elements=["id"], set_=terms, where=GrantView.resource_code == "")
        )
    elif kind == "grant_revoked":
        # A revocation may arrive before its grant (another partition): keep a revoked tombstone
        # that the grant's own event will not overwrite.
        tombstone = GrantTerms(
            id=uuid.UUID(event.grant_revoked.grant_id),
            resource_code="",
            provider_dept="",
            consumer_dept="",
            client_id="",
            items=[],
            purpose="",
            masking={},
            valid_until=datetime.now(UTC),
            daily_quota=0,
        )
        await session.execute(
            insert(GrantView)
            .values(**tombstone.values(), revoked=True)
            .on_conflict_do_update(index_elements=["id"], set_={"revoked": True})
        )


def on_registry_events(exchange: Exchange, sessions: async_sessionmaker[AsyncSession]) -> Handler:
    async def handle(batch: Sequence[Message]) -> None:
        async with sessions.begin() as session:
            for message in batch:
                event = registry_pb2.RegistryEvent()
                try:
                    event.ParseFromString(message.value)
                except DecodeError:
                    log.error("undecodable registry event dropped", extra={"ctx_key": message.key})
                    continue
                await apply_registry_event(session, event)
        exchange.forget_grants()  # committed: what this replica cached may be stale

    return handle
