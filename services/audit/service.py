"""Audit rules: append events once each, in one hash chain; let auditors search and verify; keep
the platform's dead letters (死信) and send them back when asked."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.models import AuditRecord, ChainHead, DeadLetter
from services.common.bus import (
    DLQ_GROUP,
    DLQ_HEADER_PREFIX,
    DLQ_ID,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_SOURCE,
    Bus,
    Message,
)
from services.common.contracts.audit import (
    OCCURRED_MAX_MS,
    OCCURRED_MIN_MS,
    TEXT_LIMITS,
    bounded,
    bounded_fields,
    storable,
)
from services.common.pagination import one_more, page
from services.common.pb import audit_pb2
from services.common.security import Principal, Role, forbidden

GENESIS = "0" * 64
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The canonical form (规范形式) that the chain hashes, by version. Version 1 is what records were
# written with before versions existed: it must keep hashing exactly as it did, or old chains
# stop verifying. A new field means a new version; old records keep theirs.
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
CHAINED_FIELDS_BY_VERSION: dict[int, tuple[str, ...]] = {
    1: CHAINED_FIELDS,
    2: (*CHAINED_FIELDS, "occurred_unix_ms_raw"),
}
CANONICAL_VERSION = 2  # what new records are written with
STRING_FIELDS = tuple(TEXT_LIMITS)


def event_id_of(event: audit_pb2.AuditEvent) -> str:
    """The event's id, or — when it has none that can be stored as it is — the SHA-256 of its
    deterministic encoding: the same event delivered again gets the same id, so stays one record."""
    given = event.event_id
    if 0 < len(given) <= TEXT_LIMITS["event_id"] and storable(given) == given:
        return given
    return hashlib.sha256(event.SerializeToString(deterministic=True)).hexdigest()


def occurred_of(event: audit_pb2.AuditEvent, received_at: datetime) -> tuple[datetime, int | None]:
    """(occurred_at, raw value kept): the producer's time, or — out of range — when it was received."""
    ms = event.occurred_unix_ms
    if OCCURRED_MIN_MS <= ms <= OCCURRED_MAX_MS:
        return EPOCH + timedelta(milliseconds=ms), None  # exact, unlike a float division
    return received_at, ms


def record_values(event: audit_pb2.AuditEvent, received_at: datetime | None = None) -> dict[str, Any]:
    """The storable values of any decodable event, in the current canonical version: no NUL, no
    unpaired surrogate, each text within its column (cut with a visible marker), a time that
    exists, an id that is never empty."""
    occurred_at, raw = occurred_of(event, received_at or datetime.now(UTC))
    values: dict[str, Any] = {f: bounded(getattr(event, f), TEXT_LIMITS[f]) for f in STRING_FIELDS}
    values |= {
        "canonical_version": CANONICAL_VERSION,
        "event_id": event_id_of(event),
        "occurred_at": occurred_at,
        "occurred_unix_ms_raw": raw,
        "fields": bounded_fields(list(event.fields)),
    }
    return values


def canonical(values: dict[str, Any]) -> bytes:
    """The bytes the chain hashes for a record, in the version ``values["canonical_version"]``."""
    version = values["canonical_version"]
    chained = [values[f] for f in CHAINED_FIELDS_BY_VERSION[version]]
    if version == 1:
        return orjson.dumps(chained, default=lambda v: v.isoformat())
    return orjson.dumps([version, *chained])  # the version is hashed too: forms never collide


def chain_hash(prev_hash: str, values: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(values)).hexdigest()


async def append(session: AsyncSession, events: Sequence[audit_pb2.AuditEvent]) -> int:
    """Append the events not yet recorded (redelivery is normal); returns how many were new."""
    head = await session.get(ChainHead, 1, with_for_update=True)
    if head is None:
        await session.execute(insert(ChainHead).values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing())
        head = await session.get(ChainHead, 1, with_for_update=True)
        assert head is not None
    received_at = datetime.now(UTC)
    batch = [record_values(e, received_at) for e in events]
    ids = [v["event_id"] for v in batch]
    known = set((await session.scalars(select(AuditRecord.event_id).where(AuditRecord.event_id.in_(ids)))).all())
    added = 0
    for values in batch:
        if values["event_id"] in known:
            continue
        known.add(values["event_id"])
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
    query = one_more(select(AuditRecord).order_by(AuditRecord.seq.desc()), limit)
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
    return page(rows, limit, lambda r: r.seq)


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
            fields = CHAINED_FIELDS_BY_VERSION.get(row.canonical_version)
            if fields is None:
                return {
                    "ok": False,
                    "checked": checked,
                    "first_bad_seq": row.seq,
                    "first_bad_event_id": row.event_id,
                    "detail": f"unknown canonical version {row.canonical_version}",
                }
            values = {"canonical_version": row.canonical_version} | {f: getattr(row, f) for f in fields}
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


# ----------------------------------------------------------------------------- dead letters

HEADER_MAX = 1024  # characters per header name or value kept


def _int_or_none(value: str | None) -> int | None:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and 0 <= number < 2**63 else None


def letter_id_of(message: Message) -> str:
    """Names one dead-lettering: its ``dlq-id``, or — from a producer that sets none — a digest of
    the dead letter as consumed, so that a redelivered copy is still recognised."""
    given = message.headers.get(DLQ_ID, "")
    if 0 < len(given) <= 64 and storable(given) == given:
        return given
    digest = hashlib.sha256(
        orjson.dumps([message.topic, message.partition, message.offset, sorted(message.headers.items())])
    )
    digest.update(message.key or b"")
    digest.update(message.value)
    return "sha256:" + digest.hexdigest()[:57]


def dead_letter_values(message: Message) -> dict[str, Any]:
    """The row of a message consumed from the dead-letter topic (all text made storable)."""
    headers = {bounded(k, HEADER_MAX): bounded(v, HEADER_MAX) for k, v in message.headers.items()}
    return {
        "letter_id": letter_id_of(message),
        "source_topic": bounded(message.headers.get(DLQ_SOURCE, ""), 255),
        "source_partition": _int_or_none(message.headers.get(DLQ_PARTITION)),
        "source_offset": _int_or_none(message.headers.get(DLQ_OFFSET)),
        "consumer_group": bounded(message.headers.get(DLQ_GROUP, ""), 255),
        "key": message.key,
        "value": message.value,
        "headers": headers,
        "reason": bounded(message.headers.get(DLQ_REASON, ""), 2000),
    }


async def store_dead_letters(session: AsyncSession, messages: Sequence[Message]) -> int:
    """Keep each dead letter once (redelivery is normal); returns how many were new."""
    if not messages:
        return 0
    result = await session.execute(
        insert(DeadLetter)
        .values([dead_letter_values(m) for m in messages])
        .on_conflict_do_nothing(index_elements=[DeadLetter.letter_id])
        .returning(DeadLetter.id)
    )
    return len(result.all())


async def count_unreplayed(session: AsyncSession) -> int:
    count = await session.scalar(select(func.count()).select_from(DeadLetter).where(DeadLetter.replayed_at.is_(None)))
    return int(count or 0)


async def list_dead_letters(
    session: AsyncSession, limit: int, cursor: int | None, replayed: bool | None
) -> tuple[list[DeadLetter], str | None]:
    """Newest first; ``replayed`` True/False filters, None lists both."""
    query = one_more(select(DeadLetter).order_by(DeadLetter.id.desc()), limit)
    if cursor is not None:
        query = query.where(DeadLetter.id < cursor)
    if replayed is not None:
        query = query.where(DeadLetter.replayed_at.is_not(None) if replayed else DeadLetter.replayed_at.is_(None))
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda d: d.id)


def replay_message(letter: DeadLetter) -> Message:
    """The message as it was before it was dead-lettered: its topic, key, value and own headers."""
    headers = {k: v for k, v in letter.headers.items() if not k.startswith(DLQ_HEADER_PREFIX)}
    return Message(letter.source_topic, letter.value, letter.key, headers)


async def replay_dead_letters(
    sessions: async_sessionmaker[AsyncSession], bus: Bus, ids: Sequence[int] | None, say: Callable[[str], None]
) -> tuple[int, list[int]]:
    """Send dead letters back to their source topic — ``ids``, or every one not yet replayed — and
    mark them replayed, one at a time (a crash loses no progress; consumers are idempotent, so a
    letter sent twice by a crash between publish and commit does no harm). Letters already replayed
    are skipped, so running it twice replays nothing twice. Returns (replayed, ids not found)."""
    missing: list[int] = []
    if ids is not None:
        async with sessions() as session:
            found = set((await session.scalars(select(DeadLetter.id).where(DeadLetter.id.in_(ids)))).all())
        missing = [i for i in ids if i not in found]
        for i in missing:
            say(f"死信 {i}: not found")
    async with sessions() as session:
        query = select(DeadLetter.id).where(DeadLetter.replayed_at.is_(None)).order_by(DeadLetter.id)
        todo = list((await session.scalars(query if ids is None else query.where(DeadLetter.id.in_(ids)))).all())
    if ids is not None:
        for i in sorted(set(ids) - set(todo) - set(missing)):
            say(f"死信 {i}: already replayed, skipped")
    replayed = 0
    for n, letter_id in enumerate(todo, 1):
        async with sessions.begin() as session:
            letter = (
                await session.scalars(
                    select(DeadLetter)
                    .where(DeadLetter.id == letter_id, DeadLetter.replayed_at.is_(None))
                    .with_for_update(skip_locked=True)
                )
            ).first()
            if letter is None:  # replayed meanwhile by another run
                say(f"死信 {letter_id}: replayed meanwhile, skipped")
                continue
            if not letter.source_topic:
                say(f"死信 {letter_id}: no source topic recorded, cannot replay")
                continue
            await bus.publish(replay_message(letter))
            await session.execute(update(DeadLetter).where(DeadLetter.id == letter_id).values(replayed_at=func.now()))
        replayed += 1
        say(f"死信 {letter_id}: replayed to {letter.source_topic} ({n}/{len(todo)})")
    return replayed, missing
