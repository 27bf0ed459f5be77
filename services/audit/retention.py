"""Retention (保留期) of the audit records: a closed month older than the policy is exported as a
signed archive — its records with the signed checkpoint that covers them, in the export format
(``export.py``) that ``python -m services.audit verify`` checks offline — the archive written is
verified, and only then is the month's partition dropped, the cut recorded (``RetentionCut``).

The chain stays verifiable across the cut: the live chain starts at the cut's first kept leaf,
whose prev_hash is the recorded hash of the last dropped record, and the Merkle tree over every
leaf since genesis is rebuilt from the cut's frontier (the hashes of the complete subtrees left of
it). The tree's stored hashes are never dropped (32 bytes per node), so inclusion and consistency
proofs for every kept leaf are the same as before the cut.

Months are dropped oldest first and only as a prefix of the leaves: a month whose first leaf is
not where the live chain starts is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import export, merkle, notes
from services.audit.models import AuditRecord, RetentionCut
from services.audit.service import (
    CheckpointSigner,
    ensure_partition,
    latest_checkpoint,
    latest_cut,
    load_frontier,
    month_of,
    next_month,
    partition_name,
    read_stored,
    served_note,
    take_checkpoint,
)

log = logging.getLogger("tongban.audit.retention")

PAGE = 5000  # records per read while an archive is written
PARTITION_MONTH = "records_%Y_%m"


def months_back(month: date, n: int) -> date:
    total = month.year * 12 + month.month - 1 - n
    return date(total // 12, total % 12 + 1, 1)


def due_before(now: datetime, retention_months: int) -> date:
    """Months before this one may be archived and dropped: the current month and the
    ``retention_months`` before it are kept (so a month is always closed when it is due)."""
    utc = now.astimezone(UTC)
    return months_back(date(utc.year, utc.month, 1), retention_months)


async def partition_months(session: AsyncSession) -> list[date]:
    """The months that have a partition of ``audit.records``, oldest first."""
    names = await session.scalars(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'audit.records'::regclass"
        )
    )
    return sorted(datetime.strptime(name, PARTITION_MONTH).date() for name in names)


async def live_start(session: AsyncSession) -> int:
    """The first leaf the database still holds (0 until a month is dropped)."""
    cut = await latest_cut(session)
    return 0 if cut is None else cut.end_leaf


def archive_name(month: date) -> str:
    return f"audit-{month:%Y-%m}.ndjson"


@dataclass(frozen=True, slots=True)
class Archived:
    month: date
    records: int
    archive: Path | None  # None: the month's partition was empty, nothing to archive
    sha256: str | None


async def archive_month(
    sessions: async_sessionmaker[AsyncSession],
    month: date,
    directory: Path,
    origin: str,
    signer: CheckpointSigner,
    say: Callable[[str], None],
) -> Archived:
    """Archive one month (written, then verified), then drop its partition and record the cut."""
    async with sessions() as session:
        start = await live_start(session)
        low, high, count = (
            await session.execute(
                select(func.min(AuditRecord.leaf_index), func.max(AuditRecord.leaf_index), func.count()).where(
                    AuditRecord.month == month
                )
            )
        ).one()
    if count == 0:
        async with sessions.begin() as session:
            await session.execute(text(f"DROP TABLE IF EXISTS audit.{partition_name(month)}"))
        say(f"{month:%Y-%m}: no records; its empty partition was dropped")
        return Archived(month, 0, None, None)
    if low != start or high - low + 1 != count:
        raise RetentionError(
            f"{month:%Y-%m} holds leaves {low}…{high} ({count} records), but the live chain starts at leaf {start}: "
            "months are dropped oldest first, as a prefix of the tree"
        )
    end = high + 1
    async with sessions.begin() as session:
        checkpoint = await latest_checkpoint(session)
        if checkpoint is None or checkpoint.tree_size < end:
            checkpoint = await take_checkpoint(session, origin, signer)
        assert checkpoint is not None and checkpoint.tree_size >= end
        size, note = checkpoint.tree_size, await served_note(session, checkpoint)
    key = notes.parse_verifier_key(signer.verifier_key, notes.ED25519)

    # The command's own process: nothing else runs on its loop, but the checks stay off it anyway.
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    path = directory / archive_name(month)
    partial_path = path.with_name(path.name + ".partial")
    digest = await _write_archive(sessions, partial_path, start, end, size, note, month, say)
    report = await asyncio.to_thread(_verify_file, partial_path, key)  # as written, as an auditor checks it
    if not report["ok"] or report["checked"] != count:
        raise RetentionError(
            f"the archive {partial_path.name} does not verify: {report.get('detail')}; nothing dropped"
        )
    os.replace(partial_path, path)
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    say(f"{month:%Y-%m}: archive {path.name} verified ({count} records, checkpoint of {size}), sha256 {digest}")

    async with sessions.begin() as session:
        # The lock DROP TABLE needs anyway, taken first: a lock upgraded later (from the reads
        # below) could deadlock with a search that then appends its own record.
        await session.execute(text("LOCK TABLE audit.records IN ACCESS EXCLUSIVE MODE"))
        last = (await session.scalars(select(AuditRecord.hash).where(AuditRecord.leaf_index == end - 1))).one()
        frontier = await load_frontier(session, end)
        session.add(
            RetentionCut(
                month=month,
                start_leaf=start,
                end_leaf=end,
                last_hash=last,
                frontier=frontier.hashes(),
                checkpoint_size=size,
                archive=path.name,
                archive_sha256=digest,
                records=count,
            )
        )
        await session.flush()
        await session.execute(text(f"DROP TABLE audit.{partition_name(month)}"))
    log.info(
        "month archived and dropped",
        extra={"ctx_month": f"{month:%Y-%m}", "ctx_records": count, "ctx_archive": path.name, "ctx_sha256": digest},
    )
    say(f"{month:%Y-%m}: partition dropped; the live chain now starts at leaf {end}")
    return Archived(month, count, path, digest)


def _verify_file(path: Path, key: notes.VerifierKey) -> dict[str, Any]:
    with path.open("rb") as lines:
        return export.verify_export(lines, key)


async def _write_archive(
    sessions: async_sessionmaker[AsyncSession],
    path: Path,
    start: int,
    end: int,
    size: int,
    note: str,
    month: date,
    say: Callable[[str], None],
) -> str:
    """Write leaves [start, end) with the checkpoint of ``size`` to ``path`` page by page (memory
    stays flat); the file's SHA-256."""
    digest = hashlib.sha256()
    async with sessions() as session:
        left = [merkle.stored_hash_index(level, n) for level, n in merkle.aligned_blocks(0, start)]
        right = [merkle.stored_hash_index(level, n) for level, n in merkle.aligned_blocks(end, size)]
        stored = await read_stored(session, left + right)
        with path.open("wb") as out:

            def write(line: bytes) -> None:
                out.write(line + b"\n")
                digest.update(line + b"\n")

            write(export.header(start, end, size, note, [stored[i] for i in left], [stored[i] for i in right]))
            position = start
            while position < end:
                rows = (
                    await session.scalars(
                        select(AuditRecord)
                        .where(AuditRecord.leaf_index >= position, AuditRecord.leaf_index < min(end, position + PAGE))
                        .order_by(AuditRecord.leaf_index)
                    )
                ).all()
                for row in rows:
                    write(export.record_line(partial(getattr, row)))
                position += PAGE
                session.expunge_all()
                say(f"{month:%Y-%m}: {min(position, end) - start}/{end - start} records written")
            out.flush()
            os.fsync(out.fileno())
    return digest.hexdigest()


class RetentionError(Exception):
    """The retention run stopped: nothing of the month it names was dropped."""


async def run(
    sessions: async_sessionmaker[AsyncSession],
    *,
    retention_months: int,
    directory: Path,
    origin: str,
    signer: CheckpointSigner | None,
    now: datetime,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> list[Archived]:
    """Archive and drop every month due (older than ``retention_months`` closed months), oldest
    first. ``signer`` signs the checkpoint an archive needs; only a dry run may go without it."""
    cutoff = due_before(now, retention_months)
    async with sessions() as session:
        due = [m for m in await partition_months(session) if m < cutoff]
    if not due:
        say(f"nothing due: no partition before {cutoff:%Y-%m}")
        return []
    say(f"due: {', '.join(f'{m:%Y-%m}' for m in due)} (kept: {cutoff:%Y-%m} and after)")
    if dry_run:
        return []
    if signer is None:
        raise RetentionError("archiving needs the checkpoint key (TONGBAN_KEY_ENCRYPTION_KEY unseals it)")
    return [await archive_month(sessions, month, directory, origin, signer, say) for month in due]


class RetentionMetrics:
    """``tongban_audit_retention_*``: months archived, the last archive's time, and closed months
    past the policy still in the database (the alert: retention is overdue)."""

    def __init__(self, registry: CollectorRegistry | None, retention_months: int) -> None:
        self.retention_months = retention_months
        self.archived = Gauge(
            "tongban_audit_retention_archived_months", "Months of audit records archived and dropped", registry=registry
        )
        self.last_archive = Gauge(
            "tongban_audit_retention_last_archive_timestamp_seconds",
            "When the last month was archived (0: never)",
            registry=registry,
        )
        self.overdue = Gauge(
            "tongban_audit_retention_overdue_months",
            "Months past the retention policy still in the database (run the retention command)",
            registry=registry,
        )

    async def refresh(self, session: AsyncSession, now: datetime) -> None:
        cutoff = due_before(now, self.retention_months)
        self.overdue.set(sum(m < cutoff for m in await partition_months(session)))
        count, last = (await session.execute(select(func.count(), func.max(RetentionCut.archived_at)))).one()
        self.archived.set(count)
        self.last_archive.set(last.timestamp() if last is not None else 0)


RETENTION_EVERY_S = 300.0  # months change slowly: the gauges are refreshed this often


async def watch(sessions: async_sessionmaker[AsyncSession], metrics: RetentionMetrics) -> None:
    """Keep the retention gauges current, and this month's and next month's partitions made ahead
    of time (a lifespan task; the command runs in another process). Made here, in a transaction
    of their own, the append rarely has to make one: making a partition locks the whole table,
    which the append would do while it holds the chain head."""
    while True:
        try:
            now = datetime.now(UTC)
            async with sessions.begin() as session:
                for month in (month_of(now), next_month(month_of(now))):
                    await ensure_partition(session, month)
            async with sessions() as session:
                await metrics.refresh(session, now)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is away: the next round counts again
            log.warning("could not read the retention state", exc_info=True)
        await asyncio.sleep(RETENTION_EVERY_S)
