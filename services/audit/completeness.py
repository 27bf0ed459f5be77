"""Completeness (完整性核对): every query the exchange closed has its audit record.

The exchange publishes its ledger (``exchange.ledger``, :mod:`services.common.contracts.ledger`):
per time window, the ids of the queries it closed — no personal data, and without this service
reading the exchange's schema. Each window is kept (:class:`LedgerWindow`, the union of every copy
received) and, once ``completeness_grace_s`` has passed since it ended (the audit events of its
queries travel through another outbox and topic, and may lag), checked against the
``exchange.query`` records by query id. Ids without a record are kept in ``missing`` and
rechecked each round (a late event clears them); the gauge ``tongban_audit_missing_records``
counts them, and the alert ``TongbanAuditRecordsMissing`` fires while it is above zero.
A reconciled window is forgotten ``completeness_keep_days`` after it was reconciled: longer than
the ledger topic keeps its messages (30 days), so no copy of a forgotten window can still come.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import Boolean, ColumnElement, delete, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.models import AuditRecord, LedgerWindow
from services.common.bus import Handler, Message, PoisonMessage
from services.common.contracts.audit import AuditAction
from services.common.contracts.ledger import BadLedger, parse

log = logging.getLogger("tongban.audit.completeness")

CHECK_MAX = 200  # windows per round, oldest first
KEEP = timedelta(days=31)  # reconciled windows are forgotten after this (the ledger topic keeps 30 days)


class CompletenessMetrics:
    """``tongban_audit_missing_records``: query ids of the exchange's ledger with no audit record
    after the grace period; ``tongban_audit_ledger_windows_open``: windows not yet reconciled."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.missing = Gauge(
            "tongban_audit_missing_records",
            "Queries the exchange closed that have no audit record after the grace period",
            registry=registry,
        )
        self.open = Gauge(
            "tongban_audit_ledger_windows_open",
            "Windows of the exchange's ledger received and not yet reconciled with the audit records",
            registry=registry,
        )


async def keep_ledger(session: AsyncSession, messages: Sequence[Message]) -> int:
    """Keep each ledger message's window, merged with what is already kept of it (a window comes
    in parts, and once from each exchange replica); a window that gains ids is checked again.
    Returns how many windows were touched. An unreadable message is :class:`PoisonMessage`."""
    touched = 0
    for message in messages:
        try:
            window = parse(message.value)
        except BadLedger as err:
            raise PoisonMessage(message, str(err)) from err
        ids = sorted(set(window.query_ids))
        stmt = insert(LedgerWindow).values(window_start=window.start, window_end=window.end, query_ids=ids, missing=[])
        merged: ColumnElement[Any] = literal_column(
            "ARRAY(SELECT DISTINCT i FROM unnest(audit.ledger_windows.query_ids || excluded.query_ids) AS i ORDER BY i)"
        )
        grows = literal_column("NOT (audit.ledger_windows.query_ids @> excluded.query_ids)", Boolean)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[LedgerWindow.window_start],
                set_={"query_ids": merged, "reconciled_at": None},
                where=grows,
            )
        )
        touched += 1
    return touched


async def reconcile(session: AsyncSession, now: datetime, grace: timedelta) -> int:
    """Check the open windows that ended ``grace`` before ``now`` against the records; returns how
    many query ids of the checked windows have no record (the gauge's value)."""
    windows = (
        await session.scalars(
            select(LedgerWindow)
            .where(LedgerWindow.reconciled_at.is_(None), LedgerWindow.window_end <= now - grace)
            .order_by(LedgerWindow.window_end)
            .limit(CHECK_MAX)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for window in windows:
        recorded = set(
            (
                await session.scalars(
                    select(AuditRecord.query_id).where(
                        AuditRecord.query_id.in_(window.query_ids),
                        AuditRecord.query_id != "",
                        AuditRecord.action == AuditAction.EXCHANGE_QUERY,
                    )
                )
            ).all()
        )
        missing = sorted(set(window.query_ids) - recorded)
        if missing and missing != window.missing:
            log.error(
                "queries closed by the exchange have no audit record",
                extra={
                    "ctx_window_start": window.window_start.isoformat(),
                    "ctx_missing": len(missing),
                    "ctx_query_ids": missing[:20],  # random ids, no personal data
                },
            )
        window.missing = missing
        window.checked_at = now
        window.reconciled_at = None if missing else now
    await session.flush()
    total = await session.scalar(
        select(func.coalesce(func.sum(func.cardinality(LedgerWindow.missing)), 0)).where(
            LedgerWindow.reconciled_at.is_(None), LedgerWindow.checked_at.is_not(None)
        )
    )
    return int(total or 0)


async def forget_reconciled(session: AsyncSession, before: datetime) -> int:
    """Delete the windows reconciled before ``before``; returns how many (their ids were checked,
    and each has its audit record, which the audit keeps on its own retention)."""
    result = await session.execute(delete(LedgerWindow).where(LedgerWindow.reconciled_at < before))
    return int(getattr(result, "rowcount", 0) or 0)


async def count_open(session: AsyncSession) -> int:
    return int(
        await session.scalar(select(func.count()).select_from(LedgerWindow).where(LedgerWindow.reconciled_at.is_(None)))
        or 0
    )


def on_ledger(sessions: async_sessionmaker[AsyncSession]) -> Handler:
    async def handle(batch: Sequence[Message]) -> None:
        async with sessions.begin() as session:
            await keep_ledger(session, batch)

    return handle


async def check_once(
    sessions: async_sessionmaker[AsyncSession],
    grace: timedelta,
    metrics: CompletenessMetrics,
    now: datetime,
    keep: timedelta = KEEP,
) -> int:
    async with sessions.begin() as session:
        missing = await reconcile(session, now, grace)
        await forget_reconciled(session, now - keep)
        metrics.open.set(await count_open(session))
    metrics.missing.set(missing)
    return missing


async def watch(
    sessions: async_sessionmaker[AsyncSession],
    grace: timedelta,
    every_s: float,
    metrics: CompletenessMetrics,
    keep: timedelta = KEEP,
) -> None:
    """Reconcile every ``every_s`` seconds (a lifespan task)."""
    while True:
        try:
            await check_once(sessions, grace, metrics, datetime.now(UTC), keep)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is away: the next round checks what this one missed
            log.warning("could not reconcile the exchange's ledger", exc_info=True)
        await asyncio.sleep(every_s)
