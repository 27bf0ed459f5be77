"""Transactional outbox: a state change and the events it causes commit in one transaction.

Usage (routes get the same through ``UnitOfWorkDep``, see :mod:`services.common.uow`)::

    async with outbox.unit_of_work() as uow:
        ...                                        # change state through uow.session
        uow.emit(Message(topic, value, key))
    # committed; the messages were then published eagerly (low latency on the happy path)

Each row carries a claim: its owner (the process that wrote or swept it, :attr:`Outbox.owner`) and
a lease expiry. The writer owns its rows while it publishes them eagerly, and renews the lease as
long as that publish is in flight (a broker outage can block it for many seconds). The relay
publishes only rows whose lease has expired — another replica's, once that replica is dead — and
this process's own rows whose eager publish failed; it claims them with ``FOR UPDATE SKIP LOCKED``
and a new lease before publishing, so two relays never take the same row. A row published is
marked published in this process at once and deleted by the next relay round; while the database
cannot be reached the mark keeps the relay from publishing it again, and the lease keeps other
replicas from it. A message is still published twice when its publisher dies between the broker's
acknowledgement and the delete (or the database is out of reach for longer than the lease):
consumers stay idempotent by key.

Metric: ``tongban_outbox_backlog``, the rows not yet published, counted by each relay round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import DateTime, LargeBinary, String, delete, func, insert, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from services.common.bus import Bus, Message
from services.common.uow import Staged, UnitOfWork, stage

log = logging.getLogger("tongban.outbox")


class OutboxRow:
    """Columns of every service's ``outbox`` table (mixed into the service's own Base)."""

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
    # The claim: who publishes the row, and until when no one else may.
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


def process_owner() -> str:
    """An owner id unique to this process (and this start of it): host, pid, random suffix."""
    return f"{socket.gethostname()[:48]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_expiry(lease_s: float) -> Any:
    """``now() + lease_s`` on the database's clock (replicas' clocks may differ; its does not)."""
    return func.now() + func.make_interval(0, 0, 0, 0, 0, 0, literal_column(repr(float(lease_s))))


class Outbox:
    def __init__(
        self,
        model: type[Any],
        sessions: async_sessionmaker[AsyncSession],
        bus: Bus,
        *,
        sweep_after_s: float = 2.0,
        sweep_every_s: float = 1.0,
        lease_s: float = 10.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._model = model  # the service's Outbox table class (OutboxRow + its Base)
        self._sessions = sessions
        self._bus = bus
        self._sweep_after_s = sweep_after_s
        self._sweep_every_s = sweep_every_s
        self.lease_s = lease_s
        # False where a service emits only audit events: its requests then do not wait for the broker.
        self.waits_for_publish = True
        self.owner = process_owner()
        self._published: list[uuid.UUID] = []  # published, not yet deleted
        self._in_flight: dict[uuid.UUID, int] = {}  # being published now (a count: sweeps may overlap)
        self._task: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Grows while the broker is out of reach: the relay cannot keep up or cannot publish.
        self.backlog = Gauge("tongban_outbox_backlog", "Outbox rows committed but not yet published", registry=registry)

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self._sessions

    @asynccontextmanager
    async def unit_of_work(self, *, wait_for_publish: bool | None = None) -> AsyncIterator[UnitOfWork]:
        """A unit of work that commits on success — its events as outbox rows in the same
        transaction — then publishes what it emitted. On an exception nothing is committed.

        ``wait_for_publish=False`` publishes in the background: use it when the caller needs the
        messages durable (committed) but not yet on the broker, e.g. audit events. Unset, it is
        :attr:`waits_for_publish` (the routes' units of work take that).
        """
        if wait_for_publish is None:
            wait_for_publish = self.waits_for_publish
        async with self._sessions.begin() as session:
            uow = UnitOfWork(session)
            try:
                yield uow
            finally:
                uow.open = False
            if uow.staged:
                rows = [
                    {"id": row_id, "topic": m.topic, "key": m.key, "value": m.value, "headers": m.headers}
                    for row_id, m in uow.staged
                ]
                # Core: cheaper than the ORM. Written claimed by this process, for its eager publish.
                claimed = insert(self._model.__table__).values(
                    claimed_by=self.owner, lease_until=lease_expiry(self.lease_s)
                )
                await session.execute(claimed, rows)
        await self.committed(uow.staged, wait_for_publish=wait_for_publish)

    @staticmethod
    def stage(message: Message) -> Staged:
        """An outbox row id for ``message``; code that writes the row with its own SQL passes
        :meth:`row_parameters` to it, then hands the staged pair to :meth:`committed`."""
        return stage(message)

    def row_parameters(self, staged: Staged) -> tuple[uuid.UUID, str, bytes | None, bytes, str, str, float]:
        """The outbox row of ``staged`` as statement parameters: (id, topic, key, value, headers,
        claimed_by, lease seconds), headers as JSON text (asyncpg takes JSONB as ``str``). The
        statement sets ``lease_until`` to ``now() + make_interval(secs => <lease seconds>)``."""
        row_id, m = staged
        return row_id, m.topic, m.key, m.value, orjson.dumps(m.headers).decode(), self.owner, self.lease_s

    async def committed(self, staged: Sequence[Staged], *, wait_for_publish: bool) -> None:
        """The rows of ``staged`` have committed: publish them now, or in the background."""
        if not staged:
            return
        ids = [row_id for row_id, _ in staged]
        self._hold(ids)  # before the background task starts: the relay must not take them meanwhile
        if wait_for_publish:
            await self._publish_held(ids, [m for _, m in staged])
        else:
            self._in_background(self._publish_held(ids, [m for _, m in staged]))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)  # referenced until done (the loop keeps only weak references)
        task.add_done_callback(self._background.discard)

    async def publish(self, *pending: Staged) -> None:
        """Publish rows this process wrote; on failure the relay will retry (the caller need not care)."""
        ids = [row_id for row_id, _ in pending]
        self._hold(ids)
        await self._publish_held(ids, [m for _, m in pending])

    async def _publish_held(self, ids: list[uuid.UUID], messages: list[Message]) -> None:
        try:
            await self._publish_owned(ids, messages)
        except Exception:
            log.warning("eager publish failed; the outbox relay will retry", exc_info=True)

    def _hold(self, ids: list[uuid.UUID]) -> None:
        """Mark rows as being published by this process: its relay skips them, its lease renewer keeps them."""
        for row_id in ids:
            self._in_flight[row_id] = self._in_flight.get(row_id, 0) + 1

    def _release(self, ids: list[uuid.UUID]) -> None:
        for row_id in ids:
            if (left := self._in_flight.pop(row_id, 1) - 1) > 0:
                self._in_flight[row_id] = left

    async def _publish_owned(self, ids: list[uuid.UUID], messages: list[Message]) -> None:
        """Publish rows held (:meth:`_hold`) by this process; released whatever the outcome."""
        try:
            await self._bus.publish_many(messages)
            self._published.extend(ids)
        finally:
            self._release(ids)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._relay(), name="outbox-relay")
        self._renewer = asyncio.create_task(self._renew_leases(), name="outbox-lease")

    async def stop(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        for task in (self._task, self._renewer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await self._forget_published()

    async def _renew_leases(self) -> None:
        """Keep the lease of rows whose publish is in flight (blocked by a broker outage, say)."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            if not self._in_flight:
                continue
            try:
                async with self._sessions.begin() as session:
                    await session.execute(
                        update(self._model)
                        .where(self._model.id.in_(list(self._in_flight)), self._model.claimed_by == self.owner)
                        .values(lease_until=lease_expiry(self.lease_s))
                    )
            except Exception:
                log.warning("outbox lease renewal failed; retrying", exc_info=True)

    async def _relay(self) -> None:
        while True:
            try:
                await self._forget_published()
                while await self.sweep() > 0:
                    pass
                await self._count_backlog()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("outbox relay round failed; retrying", exc_info=True)
            await asyncio.sleep(self._sweep_every_s)

    async def _count_backlog(self) -> None:
        async with self._sessions() as session:
            left = await session.scalar(select(func.count()).select_from(self._model))
        # Rows published eagerly but not yet deleted are not backlog.
        self.backlog.set(max(int(left or 0) - len(self._published), 0))

    async def _forget_published(self) -> None:
        """Delete the rows published; if that fails they stay marked here, to be deleted later."""
        if not self._published:
            return
        ids = list(self._published)
        async with self._sessions.begin() as session:
            await session.execute(delete(self._model).where(self._model.id.in_(ids)))
        done = set(ids)
        self._published = [i for i in self._published if i not in done]

    async def sweep(self, older_than_s: float | None = None, limit: int = 500) -> int:
        """Publish rows left unsent: another replica's whose lease expired (it died), and this
        process's own whose eager publish failed. Returns how many were published."""
        age = self._sweep_after_s if older_than_s is None else older_than_s
        busy = list(self._in_flight) + self._published  # this process publishes or published them
        table = self._model
        orphaned = table.lease_until < func.now()
        failed_here = (table.claimed_by == self.owner) & (
            table.created_at < func.now() - text(f"interval '{float(age)} seconds'")
        )
        candidates = (
            select(table.id)
            .where(orphaned | failed_here)
            .order_by(table.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if busy:
            candidates = candidates.where(table.id.not_in(busy))
        async with self._sessions.begin() as session:
            # Claimed in a short transaction of its own: no row lock is held while publishing.
            rows: Sequence[OutboxRow] = (
                await session.scalars(
                    update(table)
                    .where(table.id.in_(candidates.scalar_subquery()))
                    .values(claimed_by=self.owner, lease_until=lease_expiry(self.lease_s))
                    .returning(table)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            messages = [Message(r.topic, r.value, r.key, dict(r.headers)) for r in rows]
            ids = [r.id for r in rows]
        if not ids:
            return 0
        self._hold(ids)
        await self._publish_owned(ids, messages)
        await self._forget_published()
        log.info("outbox relay published leftover messages", extra={"ctx_count": len(ids)})
        return len(ids)
