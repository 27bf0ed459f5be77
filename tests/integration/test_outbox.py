"""The transactional outbox against the real PostgreSQL and broker: what a transaction committed
while the broker was down is published by the relay once the broker is back, then removed."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import DeclarativeBase

from services.common.bus import MemoryBus, Message, Subscription
from services.common.db import create_engine, schema_metadata, session_factory
from services.common.outbox import Outbox, OutboxRow
from services.common.uow import UnitClosed
from tests.integration.helpers import eventually, started, unique
from tests.stack import create_database, infra, infra_env


class Base(DeclarativeBase):
    metadata = schema_metadata("it_outbox")


class OutboxTable(OutboxRow, Base):
    pass


async def test_committed_while_the_broker_is_down_is_published_when_it_is_back(bootstrap: str) -> None:
    engine = create_engine(await create_database(infra_env()["TONGBAN_DATABASE_URL"]), pool_size=2)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SCHEMA it_outbox"))
        await conn.run_sync(Base.metadata.create_all)
    sessions = session_factory(engine)
    topic = unique("outbox")
    received: list[bytes] = []

    async def collect(batch: Sequence[Message]) -> None:
        received.extend(m.value for m in batch)

    async def left_in_outbox() -> int:
        async with sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(OutboxTable)) or 0)

    async def outbox_empty() -> bool:
        return await left_in_outbox() == 0

    bus = await started(bootstrap, Subscription([topic], collect, group=unique("g")), topics=[topic])
    outbox = Outbox(OutboxTable, sessions, bus, sweep_after_s=0.5, sweep_every_s=0.2)
    await outbox.start()
    try:
        infra("kafka-stop", "--kill")
        try:
            for n in range(20):  # twenty units of work, each committed; the broker is gone
                async with outbox.unit_of_work(wait_for_publish=False) as uow:
                    uow.emit(Message(topic, f"event-{n}".encode(), key=str(n % 3).encode()))
            assert await left_in_outbox() == 20
        finally:
            infra("kafka-start")
        await eventually(lambda: len(set(received)) == 20, 120, "the relay to publish every committed event")
        assert set(received) == {f"event-{n}".encode() for n in range(20)}
        # Published rows are deleted by the relay's next round.
        await eventually(outbox_empty, 10, "published rows to be removed from the outbox")
    finally:
        await outbox.stop()
        await bus.stop()
        await engine.dispose()


async def test_an_event_emitted_after_its_unit_ended_is_refused_not_lost(bootstrap: str) -> None:
    """Before, ``Outbox.add`` on a session the outbox did not open dropped the event silently."""
    engine = create_engine(infra_env()["TONGBAN_DATABASE_URL"], pool_size=1)
    try:
        outbox = Outbox(OutboxTable, session_factory(engine), MemoryBus("dlq"))
        async with outbox.unit_of_work() as uow:
            pass
        with pytest.raises(UnitClosed):
            uow.emit(Message("t", b"late"))
    finally:
        await engine.dispose()
