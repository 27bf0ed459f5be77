"""A reply the exchange cannot handle is dead-lettered once and withheld: the exchange's reply
subscriptions (``reply_subscriptions``, as the application makes them) over real Kafka. Every
replica's waiters skip an undecodable reply; the late-reply group dead-letters it to
``exchange.dlq`` without the provider's data, with where to re-read it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import KafkaBus, MemoryBus, Message, Subscription
from services.common.db import session_factory
from services.common.outbox import Outbox
from services.common.pb import exchange_pb2
from services.exchange.app import reply_subscriptions
from services.exchange.config import ExchangeSettings
from services.exchange.models import Outbox as OutboxModel
from services.exchange.service import Exchange
from tests.integration.helpers import eventually, reread, started, unique
from tests.stack import infra_env


async def test_an_undecodable_reply_is_dead_lettered_once_without_the_providers_data(
    tier_engine: AsyncEngine,
) -> None:
    bootstrap = infra_env()["TONGBAN_KAFKA_BOOTSTRAP"]
    settings = ExchangeSettings(topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
    replies, dlq = settings.topic("exchange.replies"), settings.topic("exchange.dlq")
    sessions = session_factory(tier_engine)
    exchange = Exchange(settings, tier_engine, Outbox(OutboxModel, sessions, MemoryBus("unused")))
    name, address = "王芳", "北京市东城区建国路1号"
    reply = exchange_pb2.ExchangeReply(
        query_id=str(uuid.uuid4()), status=exchange_pb2.ExchangeReply.OK, data={"姓名": name, "户籍地址": address}
    )
    bad = b"\xff" + reply.SerializeToString()
    dead: list[Message] = []

    async def collect(batch: Sequence[Message]) -> None:
        dead.extend(batch)

    # Two replicas' consumers, as two exchange processes run them: one dead letter between them.
    replicas = []
    for _ in range(2):
        bus = KafkaBus(bootstrap, unique("exchange"), dlq)
        for subscription in reply_subscriptions(settings, exchange, sessions):
            bus.subscribe(subscription)
        await bus.start()
        replicas.append(bus)
    reader = await started(bootstrap, Subscription([dlq], collect, group=unique("g")))
    try:
        await replicas[0].publish(Message(replies, bad, reply.query_id.encode(), {"request-id": "r-1"}))
        await eventually(lambda: bool(dead), 60, "the reply to be dead-lettered")
        await asyncio.sleep(2)  # time for a second copy to arrive, were one sent
    finally:
        await reader.stop()
        for bus in replicas:
            await bus.stop()
    [letter] = dead
    assert letter.value == b"" and letter.key == reply.query_id.encode()
    assert letter.headers["dlq-withheld"].startswith("personal data in clear")
    assert letter.headers["dlq-source"] == replies
    assert letter.headers["dlq-group"] == settings.topic("exchange.late-replies")
    assert letter.headers["dlq-reason"].startswith("undecodable reply:")
    for part in (letter.value, letter.key or b"", *(f"{k}={v}".encode() for k, v in letter.headers.items())):
        assert name.encode() not in part and address.encode() not in part, part
    again = await reread(bootstrap, replies, int(letter.headers["dlq-partition"]), int(letter.headers["dlq-offset"]))
    assert again.value == bad
