"""Connector message handler: requests in, signed replies out; offsets commit after the replies
are acknowledged, so a crash means the requests are answered again (the exchange ignores dupes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import Bus, Handler, Message, outgoing_headers
from services.common.db import driver_connection
from services.common.logs import restored_context
from services.common.pb import exchange_pb2
from services.connector.service import Responder

log = logging.getLogger("tongban.connector")


def on_requests(responder: Responder, engine: AsyncEngine, bus: Bus, replies_topic: str) -> Handler:
    async def handle(batch: Sequence[Message]) -> None:
        requests = []
        for message in batch:
            request = exchange_pb2.ExchangeRequest()
            try:
                request.ParseFromString(message.value)
            except DecodeError:
                log.error("undecodable request dropped", extra={"ctx_key": message.key})
                continue
            requests.append((message, request))
        if not requests:
            return
        async with driver_connection(engine) as db:
            replies = await responder.answer(db, [(m.value, r) for m, r in requests])
        now = int(time.time() * 1000)
        outgoing = []
        for (message, request), reply in zip(requests, replies, strict=True):
            reply.answered_unix_ms = now
            reply.deadline_unix_ms = request.deadline_unix_ms
            # Each reply continues its own request's trace, whatever else shared the batch.
            with restored_context(message.headers):
                headers = outgoing_headers({})
            outgoing.append(Message(replies_topic, reply.SerializeToString(), reply.query_id.encode(), headers))
        await bus.publish_many(outgoing)

    return handle
