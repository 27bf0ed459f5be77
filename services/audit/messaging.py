"""Audit message handler: a batch of events is appended in one transaction, then offsets commit."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.service import append
from services.common.bus import Handler, Message
from services.common.pb import audit_pb2

log = logging.getLogger("tongban.audit")


def on_audit_events(sessions: async_sessionmaker[AsyncSession]) -> Handler:
    async def handle(batch: Sequence[Message]) -> None:
        events = []
        for message in batch:
            event = audit_pb2.AuditEvent()
            try:
                event.ParseFromString(message.value)
            except DecodeError:
                log.error("undecodable audit event; sent to the dead-letter topic", extra={"ctx_key": message.key})
                raise
            events.append(event)
        async with sessions.begin() as session:
            await append(session, events)

    return handle
