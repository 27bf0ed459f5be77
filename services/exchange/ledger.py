"""The exchange's ledger (台账): every ``ledger_window_s`` it publishes, on ``exchange.ledger``,
the ids of the queries closed in the window that just ended — no personal data — for the audit
service's completeness check (``services.audit.completeness``). Messages go through the outbox:
the ledger is as durable as the audit events it is checked against.

Stateless on purpose: a window is published by every replica (the audit service keeps the union),
and a replica that starts publishes the windows of the last ``LOOKBACK`` again, so a restart leaves
no window unpublished. A query closed in a transaction that commits more than ``SETTLE`` after its
``completed_at`` would be missed by its window's ledger: no closing transaction takes that long.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from services.common.contracts.ledger import LedgerWindow, window_starts
from services.common.outbox import Outbox
from services.exchange.models import Query, QueryStatus

log = logging.getLogger("tongban.exchange.ledger")

SETTLE = timedelta(seconds=10)  # a window is published this long after it ends
LOOKBACK = timedelta(hours=1)  # windows published again by a replica that starts
CATCH_UP_MAX = 120  # windows per round, so one round after a long outage stays short


class Ledger:
    """Publishes the ledger of each closed window once per replica (a lifespan task: :meth:`run`)."""

    def __init__(self, outbox: Outbox, topic: str, window: timedelta) -> None:
        self.outbox = outbox
        self.topic = topic
        self.window = window
        self.next_start: datetime | None = None  # the first window this replica has not published

    async def closed_in(self, start: datetime, end: datetime) -> LedgerWindow:
        """The queries closed (no longer pending) with ``completed_at`` in [start, end)."""
        async with self.outbox.sessions() as session:
            ids = (
                await session.scalars(
                    select(Query.id).where(
                        Query.completed_at >= start, Query.completed_at < end, Query.status != QueryStatus.PENDING
                    )
                )
            ).all()
        return LedgerWindow(start, end, tuple(str(i) for i in ids))

    async def publish_closed(self, now: datetime) -> int:
        """Publish every window that ended by ``now - SETTLE`` and was not yet published by this
        replica (at most :data:`CATCH_UP_MAX`); returns how many."""
        after = self.next_start or now - LOOKBACK
        starts = window_starts(after, now - SETTLE, self.window)[:CATCH_UP_MAX]
        for start in starts:
            window = await self.closed_in(start, start + self.window)
            async with self.outbox.unit_of_work(wait_for_publish=False) as uow:
                for message in window.messages(self.topic):
                    uow.emit(message)
            self.next_start = start + self.window
        return len(starts)

    async def run(self) -> None:
        while True:
            try:
                await self.publish_closed(datetime.now(UTC))
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: the next round publishes what this one missed
                log.warning("could not publish the query ledger", exc_info=True)
            await asyncio.sleep(min(self.window.total_seconds(), 60.0))
