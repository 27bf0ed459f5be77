"""Retention (保留期): records live in monthly partitions; a closed month past the policy is
archived — its records with the signed checkpoint covering them, verified offline as an auditor
would — and only then dropped, the cut recorded. The chain stays verifiable across the cut, the
Merkle tree still covers every leaf since genesis (proofs of kept leaves verify with Go's tlog),
and what was dropped is a 410 that names its archive. Real PostgreSQL, a database of its own."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic import command
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import retention, service
from services.audit.app import MIGRATIONS
from services.audit.cli import verify_offline
from services.audit.models import AuditRecord, RetentionCut
from services.audit.service import CheckpointSigner
from services.common.db import alembic_config, create_engine, migrate, session_factory
from services.common.errors import Problem
from services.common.pb import audit_pb2
from tests.audit.conftest import KEK, run_go, signer
from tests.audit.test_proofs import ORIGIN, go_document

NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
MONTHS = {date(2026, 1, 1): 5, date(2026, 2, 1): 4, date(2026, 10, 1): 2, date(2026, 11, 1): 3}


@pytest.fixture
async def sessions(empty_database: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(empty_database, pool_size=2)
    try:
        await migrate(engine, "audit", MIGRATIONS)
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def sealed_key(sessions: async_sessionmaker[AsyncSession]) -> CheckpointSigner:
    async with sessions.begin() as session:
        return await signer(session, ORIGIN)


async def fill(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    """Records appended in four months (a checkpoint after each month): their event ids."""
    ids = []
    for month, n in MONTHS.items():
        batch = [
            audit_pb2.AuditEvent(event_id=f"{month:%Y%m}-{i}", occurred_unix_ms=1_795_000_000_000 + i) for i in range(n)
        ]
        async with sessions.begin() as session:
            assert await service.append(session, batch, now=datetime(month.year, month.month, 15, tzinfo=UTC)) == n
            assert await service.take_checkpoint(session, ORIGIN, await signer(session, ORIGIN)) is not None
        ids += [e.event_id for e in batch]
    return ids


async def test_closed_months_past_the_policy_are_archived_verified_then_dropped(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path, tlogverify: Path
) -> None:
    await fill(sessions)
    async with sessions() as session:
        assert await retention.partition_months(session) == list(MONTHS)
        before = await service.verify(session)
        first_cp = await service.latest_checkpoint(session)
    assert before["ok"] and before["tree_size"] == 14
    lines: list[str] = []

    # Keep the current month and the one before: January and February are due (oldest first).
    done = await retention.run(
        sessions,
        signer=await sealed_key(sessions),
        retention_months=1,
        directory=tmp_path,
        origin=ORIGIN,
        now=NOW,
        say=lines.append,
    )

    assert [(a.month, a.records) for a in done] == [(date(2026, 1, 1), 5), (date(2026, 2, 1), 4)]
    assert any("5/5 records written" in line for line in lines)  # progress is told
    async with sessions() as session:
        assert await retention.partition_months(session) == [date(2026, 10, 1), date(2026, 11, 1)]
        assert await session.scalar(select(func.count()).select_from(AuditRecord)) == 5
        cuts = (await session.scalars(select(RetentionCut).order_by(RetentionCut.end_leaf))).all()
        key = (await signer(session, ORIGIN)).verifier_key
    assert [(c.start_leaf, c.end_leaf, c.records, c.archive) for c in cuts] == [
        (0, 5, 5, "audit-2026-01.ndjson"),
        (5, 9, 4, "audit-2026-02.ndjson"),
    ]
    for cut in cuts:  # each archive is on disk, with its checksum, and verifies offline
        archive = tmp_path / cut.archive
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == cut.archive_sha256
        assert (tmp_path / (cut.archive + ".sha256")).read_text().split()[0] == cut.archive_sha256
        assert verify_offline(archive, key, []) == 0
    assert sorted(os.listdir(tmp_path)) == [  # and nothing else (no .partial left)
        "audit-2026-01.ndjson",
        "audit-2026-01.ndjson.sha256",
        "audit-2026-02.ndjson",
        "audit-2026-02.ndjson.sha256",
    ]

    # The live chain verifies from the cut, over the same tree as before (every leaf since genesis).
    async with sessions() as session:
        after = await service.verify(session)
    assert after["ok"] is True, after
    assert (after["start_leaf"], after["checked"], after["tree_size"], after["root"]) == (9, 5, 14, before["root"])

    # Appends go on; proofs of kept leaves still verify with Go's tlog, across the cut.
    async with sessions.begin() as session:
        await service.append(session, [audit_pb2.AuditEvent(event_id="after-cut", occurred_unix_ms=1)], now=NOW)
        new_cp = await service.take_checkpoint(session, ORIGIN, await signer(session, ORIGIN))
    assert first_cp is not None and new_cp is not None
    async with sessions() as session:
        for kept in ("202610-0", "after-cut"):
            result = run_go(tlogverify, await go_document(session, kept, first_cp, new_cp))
            assert result.returncode == 0, result.stderr
        assert (await service.verify(session))["ok"] is True

        # What was dropped: a 410 naming the archive, or a 404 saying where to look.
        with pytest.raises(Problem) as gone:
            await service.export_range(session, 3, 10, None)
        assert gone.value.status == 410 and "audit-2026-02.ndjson" in str(gone.value.body()["detail"])
        with pytest.raises(Problem) as unknown:
            await service.inclusion(session, "202601-0", None)
        assert unknown.value.status == 404 and "archived" in str(unknown.value.body()["detail"])
        kept_export = await service.export_range(session, 9, None, None)
    assert len(kept_export) == 1 + 6

    # Nothing more is due; a second run changes nothing.
    assert (
        await retention.run(
            sessions, signer=await sealed_key(sessions), retention_months=1, directory=tmp_path, origin=ORIGIN, now=NOW
        )
        == []
    )


async def test_the_cut_is_tamper_evident(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    await fill(sessions)
    await retention.run(
        sessions,
        signer=await sealed_key(sessions),
        retention_months=1,
        directory=tmp_path,
        origin=ORIGIN,
        now=NOW,
        say=lambda _: None,
    )
    async with sessions() as session:
        # The cut's recorded link to the archived chain changed: the first kept record is named.
        await session.execute(text("UPDATE audit.retention_cuts SET last_hash = repeat('0', 64) WHERE end_leaf = 9"))
        report = await service.verify(session)
        assert report["ok"] is False and report["first_bad_leaf"] == 9
        await session.rollback()
        # The cut's frontier changed: the checkpoints after it no longer match the tree.
        await session.execute(
            text("UPDATE audit.retention_cuts SET frontier[1] = :h WHERE end_leaf = 9"), {"h": b"\x00" * 32}
        )
        report = await service.verify(session)
        assert report["ok"] is False and "signed another tree" in report["detail"]
        await session.rollback()
        # The cut's row removed: the first live record links to nothing the chain knows.
        await session.execute(text("DELETE FROM audit.retention_cuts WHERE end_leaf = 9"))
        report = await service.verify(session)
        assert report["ok"] is False


async def test_a_month_is_never_dropped_when_its_archive_does_not_verify(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await fill(sessions)
    async with sessions.begin() as session:  # a record of January changed after its checkpoint
        await session.execute(text("UPDATE audit.records SET actor = 'forged' WHERE event_id = '202601-2'"))
    with pytest.raises(retention.RetentionError, match="does not verify"):
        await retention.run(
            sessions, signer=await sealed_key(sessions), retention_months=1, directory=tmp_path, origin=ORIGIN, now=NOW
        )
    async with sessions() as session:
        assert date(2026, 1, 1) in await retention.partition_months(session)
        assert await session.scalar(select(func.count()).select_from(RetentionCut)) == 0
        assert await session.scalar(select(func.count()).select_from(AuditRecord)) == 14
    assert not (tmp_path / "audit-2026-01.ndjson").exists()


async def test_the_months_due_and_the_gauges(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    assert retention.due_before(NOW, 1) == date(2026, 10, 1)
    assert retention.due_before(datetime(2026, 1, 3, tzinfo=UTC), 13) == date(2024, 12, 1)
    await fill(sessions)
    registry = CollectorRegistry()
    metrics = retention.RetentionMetrics(registry, 1)
    async with sessions() as session:
        await metrics.refresh(session, NOW)
    assert registry.get_sample_value("tongban_audit_retention_overdue_months") == 2
    assert registry.get_sample_value("tongban_audit_retention_archived_months") == 0
    await retention.run(
        sessions,
        signer=await sealed_key(sessions),
        retention_months=1,
        directory=tmp_path,
        origin=ORIGIN,
        now=NOW,
        say=lambda _: None,
    )
    async with sessions() as session:
        await metrics.refresh(session, NOW)
    assert registry.get_sample_value("tongban_audit_retention_overdue_months") == 0
    assert registry.get_sample_value("tongban_audit_retention_archived_months") == 2
    assert (registry.get_sample_value("tongban_audit_retention_last_archive_timestamp_seconds") or 0) > 0

    # The service's watcher makes this month's and next month's partitions ahead of the append.
    this_month = service.month_of(datetime.now(UTC))
    watcher = asyncio.create_task(retention.watch(sessions, metrics))
    try:
        for _ in range(100):
            async with sessions() as session:
                if service.next_month(this_month) in await retention.partition_months(session):
                    break
            await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    async with sessions() as session:
        assert {this_month, service.next_month(this_month)} <= set(await retention.partition_months(session))


async def test_the_migration_partitions_a_populated_table_by_month(
    sessions: async_sessionmaker[AsyncSession], empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records of a table from before partitions (the revision before, with data) get the month
    they were recorded in — never an earlier one than a record before them — and land in one
    partition per month; the chain verifies after the upgrade and after the downgrade."""
    ids = await fill(sessions)
    engine = create_engine(empty_database, pool_size=1)
    # Down past the sealing migration: it puts the checkpoint key back in clear with the KEK.
    monkeypatch.setenv("TONGBAN_KEY_ENCRYPTION_KEY", KEK)

    def to(connection: object, revision: str, up: bool) -> None:
        (command.upgrade if up else command.downgrade)(alembic_config(connection, "audit", MIGRATIONS), revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(to, "b6a2ea781a3f", False)
            # recorded_at as an older version wrote it, in the month of each batch; and leaf 6
            # recorded before leaf 5 (two appends' transaction times), across a month boundary.
            await conn.execute(
                text("UPDATE audit.records SET recorded_at = to_timestamp(left(event_id, 6) || '15', 'YYYYMMDD')")
            )
            for leaf, when in ((0, "2025-12-31T23:00:00Z"), (5, "2026-02-01T00:00:01Z"), (6, "2026-01-31T23:59:59Z")):
                await conn.execute(
                    text("UPDATE audit.records SET recorded_at = :t WHERE leaf_index = :l"),
                    {"t": datetime.fromisoformat(when), "l": leaf},
                )
        async with engine.begin() as conn:
            await conn.run_sync(to, "head", True)
        async with session_factory(engine)() as session:
            months = dict((await session.execute(select(AuditRecord.leaf_index, AuditRecord.month))).all())
            assert months[0] == date(2025, 12, 1) and months[1] == date(2026, 1, 1)
            assert months[5] == months[6] == date(2026, 2, 1)  # never back in leaf order
            assert [months[i] for i in range(14)] == sorted(months[i] for i in range(14))
            partitions = await retention.partition_months(session)
            assert set(months.values()) <= set(partitions)
            report = await service.verify(session)
            assert report["ok"] is True and report["checked"] == len(ids), report
        async with session_factory(engine).begin() as session:  # appends go on into the partitions
            assert await service.append(session, [audit_pb2.AuditEvent(event_id="post", occurred_unix_ms=1)]) == 1
        async with session_factory(engine)() as session:
            assert (await service.verify(session))["ok"] is True
    finally:
        await engine.dispose()
