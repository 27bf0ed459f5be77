"""Audit rules: append events once each, in one hash chain; let auditors search and verify."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.audit.models import AuditRecord, ChainHead
from services.common.pb import audit_pb2
from services.common.security import Principal, Role, forbidden

GENESIS = "0" * 64
CHAINED_FIELDS = (
    "event_id",
    "occurred_at",
    "service",
    "action",
    "outcome",
    "reason",
    "actor",
    "consumer_dept",
    "consumer_client_id",
    "provider_dept",
    "resource_code",
    "purpose",
    "subject_type",
    "subject_hash",
    "fields",
    "query_id",
    "request_id",
)


def record_values(event: audit_pb2.AuditEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "occurred_at": datetime.fromtimestamp(event.occurred_unix_ms / 1000, UTC),
        "service": event.service,
        "action": event.action,
        "outcome": event.outcome,
        "reason": event.reason,
        "actor": event.actor,
        "consumer_dept": event.consumer_dept,
        "consumer_client_id": event.consumer_client_id,
        "provider_dept": event.provider_dept,
        "resource_code": event.resource_code,
        "purpose": event.purpose,
        "subject_type": event.subject_type,
        "subject_hash": event.subject_hash,
        "fields": list(event.fields),
        "query_id": event.query_id,
        "request_id": event.request_id,
    }


def chain_hash(prev_hash: str, values: dict[str, Any]) -> str:
    canonical = orjson.dumps([values[f] for f in CHAINED_FIELDS], default=lambda v: v.isoformat())
    return hashlib.sha256(prev_hash.encode() + canonical).hexdigest()


async def append(session: AsyncSession, events: Sequence[audit_pb2.AuditEvent]) -> int:
    """Append the events not yet recorded (redelivery is normal); returns how many were new."""
    head = await session.get(ChainHead, 1, with_for_update=True)
    if head is None:
        await session.execute(insert(ChainHead).values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing())
        head = await session.get(ChainHead, 1, with_for_update=True)
        assert head is not None
    ids = [e.event_id for e in events]
    known = set((await session.scalars(select(AuditRecord.event_id).where(AuditRecord.event_id.in_(ids)))).all())
    added = 0
    for event in events:
        if event.event_id in known:
            continue
        known.add(event.event_id)
        values = record_values(event)
        digest = chain_hash(head.hash, values)
        session.add(AuditRecord(**values, prev_hash=head.hash, hash=digest))
        head.hash = digest
        added += 1
    await session.flush()
    head.seq = head.seq + added
    return added


def require_auditor(principal: Principal) -> None:
    if not principal.has_role(Role.AUDITOR):
        raise forbidden("Only an auditor may read the audit trail.")


async def search(
    session: AsyncSession, filters: dict[str, Any], limit: int, cursor: int | None
) -> tuple[list[AuditRecord], str | None]:
    query = select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(AuditRecord.seq < cursor)
    columns = {
        "type": AuditRecord.action,
        "consumer": AuditRecord.consumer_dept,
        "provider": AuditRecord.provider_dept,
        "resource": AuditRecord.resource_code,
        "purpose": AuditRecord.purpose,
        "outcome": AuditRecord.outcome,
        "subject_hash": AuditRecord.subject_hash,
        "client_id": AuditRecord.consumer_client_id,
    }
    for key, column in columns.items():
        if filters.get(key) is not None:
            query = query.where(column == filters[key])
    if filters.get("from") is not None:
        query = query.where(AuditRecord.occurred_at >= filters["from"])
    if filters.get("to") is not None:
        query = query.where(AuditRecord.occurred_at < filters["to"])
    rows = list((await session.scalars(query)).all())
    return rows[:limit], str(rows[limit - 1].seq) if len(rows) > limit else None


async def verify(session: AsyncSession, batch: int = 5000) -> dict[str, Any]:
    """Recompute the chain from the start; report the first record that does not match."""
    prev, checked, last_seq = GENESIS, 0, 0
    while True:
        rows = (
            await session.scalars(
                select(AuditRecord).where(AuditRecord.seq > last_seq).order_by(AuditRecord.seq).limit(batch)
            )
        ).all()
        if not rows:
            break
        for row in rows:
            values = {f: getattr(row, f) for f in CHAINED_FIELDS}
            if row.prev_hash != prev or chain_hash(prev, values) != row.hash:
                return {"ok": False, "checked": checked, "first_bad_seq": row.seq, "first_bad_event_id": row.event_id}
            prev, last_seq = row.hash, row.seq
            checked += 1
    head = await session.get(ChainHead, 1)
    if head is not None and head.hash != prev:
        return {
            "ok": False,
            "checked": checked,
            "first_bad_seq": None,
            "detail": "chain head does not match the last record",
        }
    return {"ok": True, "checked": checked, "head": prev}
