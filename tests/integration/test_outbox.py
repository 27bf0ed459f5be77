"""The transactional outbox against the real PostgreSQL and broker: what a transaction committed
while the broker was down is published once the broker is back — exactly once, the relay never
racing the blocked eager publish — then removed; a dead replica's rows are published by a
survivor only after their lease has expired."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase

from services.common.bus import MemoryBus, Message, Subscription
from services.common.db import create_engine, schema_metadata, session_factory
from services.common.outbox import Outbox, OutboxRow
from services.common.uow import UnitClosed
from tests.integration.helpers import collector, eventually, started, unique
from tests.stack import create_database, drop_database, infra, infra_env


class Base(DeclarativeBase):
    metadata = schema_metadata("it_outbox")


class OutboxTable(OutboxRow, Base):
    pass


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    """A database of the test's own with an outbox table, dropped at the end."""
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    engine = create_engine(url, pool_size=2)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE SCHEMA it_outbox"))
            await conn.run_sync(Base.metadata.create_all)
        yield engine
    finally:
        await engine.dispose()
        await drop_database(url)


async def test_committed_while_the_broker_is_down_is_published_when_it_is_back(
    bootstrap: str, engine: AsyncEngine
) -> None:
    sessions = session_factory(engine)
    topic = unique("outbox")
    received, collect = collector()

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
        # Published rows are deleted by the relay's next round.
        await eventually(outbox_empty, 10, "published rows to be removed from the outbox")
        await asyncio.sleep(1.0)  # a second publish by the relay would have arrived by now
        # Once each: the relay left the rows to the eager publish blocked by the outage.
        assert sorted(received) == sorted(f"event-{n}".encode() for n in range(20))
    finally:
        await outbox.stop()
        await bus.stop()


async def test_an_event_emitted_after_its_unit_ended_is_refused_not_lost(engine: AsyncEngine) -> None:
    """Before, ``Outbox.add`` on a session the outbox did not open dropped the event silently."""
    outbox = Outbox(OutboxTable, session_factory(engine), MemoryBus("dlq"))
    async with outbox.unit_of_work() as uow:
        pass
    with pytest.raises(UnitClosed):
        uow.emit(Message("t", b"late"))


async def test_a_dead_replicas_rows_are_published_by_a_survivor_only_after_their_lease(
    bootstrap: str, engine: AsyncEngine
) -> None:
    """Replica A commits a row and dies before publishing it (its eager publish never ran).
    Replica B's relay leaves the row alone while A's lease lasts, then publishes it, once."""
    sessions = session_factory(engine)
    topic = unique("lease")
    received, collect = collector()

    bus = await asyncio.wait_for(
        started(bootstrap, Subscription([topic], collect, group=unique("g")), topics=[topic]), 60
    )
    dead = Outbox(OutboxTable, sessions, bus, lease_s=2.0)
    survivor = Outbox(OutboxTable, sessions, bus, lease_s=2.0)
    try:
        # Once, in a CI run, this test hung past pytest-timeout, whose dump shows threads, not
        # asyncio tasks: a timeout of its own makes the traceback name the await that hangs.
        async with asyncio.timeout(90):
            staged = dead.stage(Message(topic, b"in flight when A died", key=uuid.uuid4().bytes))
            async with engine.connect() as conn:  # the row as the exchange's hot path writes it
                raw = (await conn.get_raw_connection()).driver_connection
                await raw.execute(
                    "INSERT INTO it_outbox.outbox (id, topic, key, value, headers, claimed_by, lease_until) "
                    "VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
                    *dead.row_parameters(staged),
                )
            assert await survivor.sweep(older_than_s=0) == 0  # A's lease still holds
            await asyncio.sleep(2.2)
            assert await survivor.sweep(older_than_s=0) == 1
            assert await survivor.sweep(older_than_s=0) == 0  # published and deleted: not again
            await eventually(lambda: received == [b"in flight when A died"], 30, "the survivor's publish")
            async with sessions() as session:
                assert await session.scalar(select(func.count()).select_from(OutboxTable)) == 0
    finally:
        await bus.stop()


async def test_a_row_published_while_its_delete_fails_is_not_published_again(
    bootstrap: str, engine: AsyncEngine
) -> None:
    """PostgreSQL crashes after the eager publish and before the relay deleted the row: the row is
    still there when the database is back, its lease long expired, yet the relay does not publish
    it again (this process marked it published), and deletes it."""
    sessions = session_factory(engine)
    topic = unique("marked")
    received, collect = collector()

    async def left_in_outbox() -> int:
        async with sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(OutboxTable)) or 0)

    bus = await started(bootstrap, Subscription([topic], collect, group=unique("g")), topics=[topic])
    # A short lease and sweep age: only the mark can keep the relay from publishing the row again.
    outbox = Outbox(OutboxTable, sessions, bus, sweep_after_s=0.2, sweep_every_s=0.2, lease_s=0.3)
    try:
        async with outbox.unit_of_work() as uow:
            uow.emit(Message(topic, b"published once", key=b"k"))
        await eventually(lambda: received == [b"published once"], 30, "the eager publish")
        infra("pg-stop", "--kill")  # before the relay's first round deletes the row
        try:
            await outbox.start()
            await asyncio.sleep(1.0)  # relay rounds fail: the database is down
        finally:
            infra("pg-start")
        await eventually(lambda: left_in_outbox_is_zero(left_in_outbox), 60, "the published row to be deleted")
        await asyncio.sleep(1.0)
        assert received == [b"published once"]
    finally:
        await outbox.stop()
        await bus.stop()


async def left_in_outbox_is_zero(count: Callable[[], Awaitable[int]]) -> bool:
    return await count() == 0
