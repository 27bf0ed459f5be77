"""Exchange message handlers: the registry projection, and replies from connectors."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

from google.protobuf.message import DecodeError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import Handler, Message, PoisonMessage
from services.common.contracts.registry import GrantTerms, PublishedResource, ServiceItemSnapshot
from services.common.pb import exchange_pb2, registry_pb2
from services.exchange.models import GrantView, ResourceView, ServiceItemView
from services.exchange.service import Exchange

log = logging.getLogger("tongban.exchange")

# A reply is its waiter's to record until this long past the query's deadline; after that the
# late-reply consumer records it if no one has (see on_late_replies).
WAITER_GRACE_MS = 2000


def decode_reply(message: Message) -> exchange_pb2.ExchangeReply:
    """The reply of ``message``; :class:`PoisonMessage` if it does not decode."""
    reply = exchange_pb2.ExchangeReply()
    try:
        reply.ParseFromString(message.value)
    except DecodeError as err:
        raise PoisonMessage(message, f"undecodable reply: {err}") from err
    return reply


def parse_reply(message: Message) -> exchange_pb2.ExchangeReply | None:
    """The reply of ``message``, or None if it does not decode: every replica's waiters skip it,
    and the late-reply consumer (one group) dead-letters it, once, never dropped."""
    try:
        return decode_reply(message)
    except PoisonMessage:
        log.warning("undecodable reply skipped by the waiters", extra={"ctx_key": message.key})
        return None


def on_replies(exchange: Exchange) -> Handler:
    """Every replica sees every reply and wakes its own waiters (no consumer group)."""

    async def handle(batch: Sequence[Message]) -> None:
        for message in batch:
            if (reply := parse_reply(message)) is not None:
                exchange.dispatch(reply)

    return handle


def on_late_replies(exchange: Exchange, sessions: async_sessionmaker[AsyncSession]) -> Handler:
    """One replica (consumer group) records every reply no waiter recorded: a reply after its
    deadline (the consumer was told 504), one whose waiter died with its replica, and one whose
    waiter could not write it (the database was down: the consumer was told to retry). The
    consumer commits its offsets only after the batch is recorded, so a reply the connector sent
    is never lost, whichever process or outage intervenes.

    Each batch is handled once its queries are :data:`WAITER_GRACE_MS` past their deadlines, so that
    on-time replies are left to their waiters; one statement then finds which of the batch's queries
    are still open, and only those are locked and recorded (the providers' keys are fetched before)."""

    async def handle(batch: Sequence[Message]) -> None:
        replies = [decode_reply(m) for m in batch]
        due_ms = max(r.deadline_unix_ms for r in replies) + WAITER_GRACE_MS
        if (wait_s := due_ms / 1000 - time.time()) > 0:
            await asyncio.sleep(wait_s)  # bounded by the longest timeout a query may have
        for query_id in await exchange.record_late_replies(replies):
            log.info("reply recorded by the late-reply consumer", extra={"ctx_query_id": query_id})

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
    elif kind == "service_item_changed":
        snapshot = ServiceItemSnapshot.from_proto(event.service_item_changed)
        values = {
            "code": snapshot.code,
            "name": snapshot.name,
            "dept": snapshot.dept,
            "version": snapshot.version,
            "withdrawn": snapshot.withdrawn,
            "materials": [{**asdict(m), "id": str(m.id)} for m in snapshot.materials],
        }
        stmt = insert(ServiceItemView).values(**values)
        # Each event is the whole item: the newest version wins, whatever order they arrive in
        # (a withdrawal too, so an older snapshot never revives a withdrawn item).
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["code"], set_=values, where=ServiceItemView.version < stmt.excluded.version
            )
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
