"""Audit message handlers: a batch of events is appended in one transaction, then offsets commit;
dead letters of the whole platform are kept for auditors and operators."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.service import (
    CheckpointSigner,
    append,
    count_unreplayed,
    store_dead_letters,
    take_checkpoint,
)
from services.common.bus import Handler, Message, PoisonMessage
from services.common.pb import audit_pb2

log = logging.getLogger("tongban.audit")

UNREPLAYED_EVERY_S = 10.0  # the replay command runs in another process: count again this often


def on_audit_events(sessions: async_sessionmaker[AsyncSession]) -> Handler:
    async def handle(batch: Sequence[Message]) -> None:
        events = []
        for message in batch:
            event = audit_pb2.AuditEvent()
            try:
                event.ParseFromString(message.value)
            except DecodeError as err:
                # Alone to the dead-letter topic: every other event of the batch is stored.
                raise PoisonMessage(message, f"undecodable audit event: {err}") from err
            events.append(event)
        async with sessions.begin() as session:
            await append(session, events)

    return handle


class UnreplayedDeadLetters:
    """The gauge ``tongban_audit_dead_letters_unreplayed``, kept current by :meth:`watch` (and at
    once after dead letters arrive)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], registry: CollectorRegistry | None) -> None:
        self._sessions = sessions
        self.gauge = Gauge(
            "tongban_audit_dead_letters_unreplayed",
            "Dead letters kept by the audit service and not yet replayed",
            registry=registry,
        )

    async def refresh(self) -> None:
        async with self._sessions() as session:
            self.gauge.set(await count_unreplayed(session))

    async def watch(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not count unreplayed dead letters", exc_info=True)
            await asyncio.sleep(UNREPLAYED_EVERY_S)


def on_dead_letters(
    sessions: async_sessionmaker[AsyncSession], unreplayed: UnreplayedDeadLetters, personal_topics: Sequence[str]
) -> Handler:
    """``personal_topics``: prefixes of the topics whose dead letters are kept without their
    message (``service.withheld_because``)."""

    async def handle(batch: Sequence[Message]) -> None:
        async with sessions.begin() as session:
            added = await store_dead_letters(session, batch, personal_topics)
        if added:
            log.error(
                "dead letters received; list them at /v1/audit/dead-letters, replay with "
                "`python -m services.audit dead-letters replay`",
                extra={"ctx_count": added, "ctx_topics": sorted({m.headers.get("dlq-source", "?") for m in batch})},
            )
            try:
                await unreplayed.refresh()
            except Exception:  # stored; the watcher counts again soon
                log.warning("could not count unreplayed dead letters", exc_info=True)

    return handle


async def sign_checkpoints(
    sessions: async_sessionmaker[AsyncSession], origin: str, signer: CheckpointSigner, every_s: float
) -> None:
    """Sign a checkpoint of the tree every ``every_s`` seconds (nothing new: nothing signed)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            async with sessions.begin() as session:
                checkpoint = await take_checkpoint(session, origin, signer)
            if checkpoint is not None:
                log.info("checkpoint", extra={"ctx_tree_size": checkpoint.tree_size})
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is away: the next round signs what this one missed
            log.warning("could not sign a checkpoint", exc_info=True)
