"""Transactional outbox: a state change and the events it causes commit in one transaction.

Usage (routes get the same through ``UnitOfWorkDep``, see :mod:`services.common.uow`)::

    async with outbox.unit_of_work() as uow:
        ...                                        # change state through uow.session
        uow.emit(Message(topic, value, key))
    # committed; the messages were then published eagerly (low latency on the happy path)

Rows are deleted once the broker has acknowledged them. A relay task sweeps rows older than
``sweep_after_s`` — what a crash left unsent — and publishes them, so nothing committed is lost.
Replicas sweep with ``FOR UPDATE SKIP LOCKED``. A message can be published twice (eager publish
racing the sweep, or a crash between publish and delete): consumers are idempotent by key.

Metric: ``tongban_outbox_backlog``, the rows not yet published, counted by each relay round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import DateTime, LargeBinary, String, delete, func, insert, select, text
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


class Outbox:
    def __init__(
        self,
        model: type[Any],
        sessions: async_sessionmaker[AsyncSession],
        bus: Bus,
        *,
        sweep_after_s: float = 2.0,
        sweep_every_s: float = 1.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._model = model  # the service's Outbox table class (OutboxRow + its Base)
        self._sessions = sessions
        self._bus = bus
        self._sweep_after_s = sweep_after_s
        self._sweep_every_s = sweep_every_s
        self._published: list[uuid.UUID] = []
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Grows while the broker is out of reach: the relay cannot keep up or cannot publish.
        self.backlog = Gauge("tongban_outbox_backlog", "Outbox rows committed but not yet published", registry=registry)

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self._sessions

    @asynccontextmanager
    async def unit_of_work(self, *, wait_for_publish: bool = True) -> AsyncIterator[UnitOfWork]:
        """A unit of work that commits on success — its events as outbox rows in the same
        transaction — then publishes what it emitted. On an exception nothing is committed.

        ``wait_for_publish=False`` publishes in the background: use it when the caller needs the
        messages durable (committed) but not yet on the broker, e.g. audit events.
        """
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
                await session.execute(insert(self._model.__table__), rows)  # Core: cheaper than the ORM
        await self.committed(uow.staged, wait_for_publish=wait_for_publish)

    @staticmethod
    def stage(message: Message) -> Staged:
        """An outbox row id for ``message``; code that writes the row with its own SQL passes
        :meth:`row_parameters` to it, then hands the staged pair to :meth:`committed`."""
        return stage(message)

    @staticmethod
    def row_parameters(staged: Staged) -> tuple[uuid.UUID, str, bytes | None, bytes, str]:
        """The outbox row of ``staged`` as statement parameters: (id, topic, key, value, headers),
        headers as JSON text (asyncpg takes JSONB as ``str``)."""
        row_id, m = staged
        return row_id, m.topic, m.key, m.value, orjson.dumps(m.headers).decode()

    async def committed(self, staged: Sequence[Staged], *, wait_for_publish: bool) -> None:
        """The rows of ``staged`` have committed: publish them now, or in the background."""
        if not staged:
            return
        if wait_for_publish:
            await self.publish(*staged)
        else:
            task = asyncio.create_task(self.publish(*staged))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def publish(self, *pending: Staged) -> None:
        """Publish right after commit. On failure the sweep will retry; the caller need not care."""
        try:
            await self._bus.publish_many([m for _, m in pending])
        except Exception:
            log.warning("eager publish failed; the outbox relay will retry", exc_info=True)
            return
        self._published.extend(row_id for row_id, _ in pending)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._relay(), name="outbox-relay")

    async def stop(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._forget_published()

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
        if not self._published:
            return
        ids, self._published = self._published, []
        async with self._sessions.begin() as session:
            await session.execute(delete(self._model).where(self._model.id.in_(ids)))

    async def sweep(self, older_than_s: float | None = None, limit: int = 500) -> int:
        """Publish rows left unsent (e.g. by a crash); returns how many were published."""
        age = self._sweep_after_s if older_than_s is None else older_than_s
        async with self._sessions.begin() as session:
            rows: Sequence[OutboxRow] = (
                await session.scalars(
                    select(self._model)
                    .where(self._model.created_at < func.now() - text(f"interval '{float(age)} seconds'"))
                    .order_by(self._model.created_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            await self._bus.publish_many([Message(r.topic, r.value, r.key, dict(r.headers)) for r in rows])
            await session.execute(delete(self._model).where(self._model.id.in_([r.id for r in rows])))
        log.info("outbox relay published leftover messages", extra={"ctx_count": len(rows)})
        return len(rows)
