"""Connector message handler: requests in, signed replies out; offsets commit after the replies
are acknowledged, so a crash means the requests are delivered again — and answered from the reply
store (:meth:`Responder.answer_once`), the backend being asked once per query."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import Bus, Handler, Message, PoisonMessage, outgoing_headers
from services.common.db import driver_connection
from services.common.logs import restored_context
from services.common.pb import exchange_pb2
from services.connector.service import Responder, purge_replies

log = logging.getLogger("tongban.connector")


def on_requests(responder: Responder, engine: AsyncEngine, bus: Bus, replies_topic: str) -> Handler:
    async def handle(batch: Sequence[Message]) -> None:
        requests = []
        for message in batch:
            request = exchange_pb2.ExchangeRequest()
            try:
                request.ParseFromString(message.value)
            except DecodeError as err:
                # Dead-lettered, never dropped; the subscription withholds its value (个人信息).
                raise PoisonMessage(message, f"undecodable request: {err}") from err
            requests.append((message, request))
        if not requests:
            return
        async with driver_connection(engine) as db:
            replies = await responder.answer_once(db, [(m.value, r) for m, r in requests])
        delivered = {request.query_id: message for message, request in requests}
        outgoing = []
        for reply in replies:
            # Each reply continues its own request's trace, whatever else shared the batch.
            with restored_context(delivered[reply.query_id].headers):
                headers = outgoing_headers({})
            outgoing.append(Message(replies_topic, reply.value, reply.query_id.encode(), headers))
        await bus.publish_many(outgoing)

    return handle


async def purge_old_replies(engine: AsyncEngine, retention_s: float) -> None:
    """Delete stored replies past their retention, every tenth of it (at most hourly): a lifespan task."""
    while True:
        await asyncio.sleep(min(retention_s / 10, 3600.0))
        try:
            async with driver_connection(engine) as db:
                if purged := await purge_replies(db, retention_s):
                    log.info("stored replies purged", extra={"ctx_count": purged})
        except Exception:
            log.warning("purge of stored replies failed; will retry", exc_info=True)
