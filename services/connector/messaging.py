"""Connector message handler: requests in, signed replies out; offsets commit after the replies
are acknowledged, so a crash means the requests are answered again (the exchange ignores dupes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import Bus, Handler, Message
from services.common.db import driver_connection
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
            requests.append((message.value, request))
        async with driver_connection(engine) as db:
            replies = await responder.answer(db, requests)
        now = int(time.time() * 1000)
        for (_, request), reply in zip(requests, replies, strict=True):
            reply.answered_unix_ms = now
            reply.deadline_unix_ms = request.deadline_unix_ms
        await bus.publish_many(
            [Message(topic=replies_topic, key=r.query_id.encode(), value=r.SerializeToString()) for r in replies]
        )

    return handle
