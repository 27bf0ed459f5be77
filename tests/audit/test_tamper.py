"""Tampering (篡改) with the audit store is detected: each test changes the database directly, as
someone with write access to it could, and ``verify`` names the first record that is wrong.

The log has ten records t-0…t-9 (after whatever the tier's database already holds), and two
signed checkpoints, after t-4 and after t-9. Each test is rolled back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.audit import chain, merkle, service
from services.audit.models import AuditRecord, ChainHead, TreeHash
from services.common.pb import audit_pb2
from tests.audit.conftest import signer

ORIGIN = "test.tongban.dev/audit"


@dataclass
class Log:
    base: int  # leaves before t-0

    def leaf(self, name: str) -> int:
        return self.base + int(name.removeprefix("t-"))


def event(i: int) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        event_id=f"t-{i}", occurred_unix_ms=1_795_000_000_000 + i, action="exchange.query", purpose="ZDSHBZ-SP"
    )


async def make_log(session: AsyncSession, *, gap_after: int | None = None) -> Log:
    """t-0…t-9 with checkpoints after t-4 and t-9; ``gap_after``: a sequence number skipped after
    that record, as a rolled-back append leaves one."""
    base = await service.tree_size(session)
    for lo, hi in ((0, 5), (5, 10)):
        for i in range(lo, hi):
            assert await service.append(session, [event(i)]) == 1
            if i == gap_after:
                await session.execute(text("SELECT nextval(pg_get_serial_sequence('audit.records', 'seq'))"))
        assert await service.take_checkpoint(session, ORIGIN, await signer(session, ORIGIN)) is not None
    assert (await service.verify(session))["ok"] is True
    return Log(base)


async def record(session: AsyncSession, event_id: str) -> AuditRecord:
    return (await session.scalars(select(AuditRecord).where(AuditRecord.event_id == event_id))).one()


async def verify_after_tampering(session: AsyncSession) -> dict[str, Any]:
    session.expire_all()  # the rows were changed under the session: read them again
    report = await service.verify(session)
    assert report["ok"] is False, report
    return report


def chained(row: AuditRecord) -> dict[str, Any]:
    fields = chain.CHAINED_FIELDS_BY_VERSION[row.canonical_version]
    return {"canonical_version": row.canonical_version} | {f: getattr(row, f) for f in fields}


async def test_a_modified_field_is_named(session: AsyncSession) -> None:
    log = await make_log(session)
    await session.execute(
        update(AuditRecord)
        .where(AuditRecord.event_id == "t-6")
        .values(purpose="另一个目的")
        .execution_options(synchronize_session=False)
    )
    report = await verify_after_tampering(session)
    assert report["first_bad_event_id"] == "t-6" and report["first_bad_leaf"] == log.leaf("t-6")
    assert "content" in report["detail"]


async def test_a_deleted_row_is_named_by_the_record_after_it(session: AsyncSession) -> None:
    log = await make_log(session)
    await session.execute(delete(AuditRecord).where(AuditRecord.event_id == "t-6"))
    report = await verify_after_tampering(session)
    # t-7 no longer follows the record it was chained to: the gap is just before it.
    assert report["first_bad_event_id"] == "t-7" and report["first_bad_leaf"] == log.leaf("t-6")
    assert "prev_hash" in report["detail"]


async def test_an_inserted_row_with_a_valid_link_is_named(session: AsyncSession) -> None:
    """A forged record slipped into a gap of seq, linked correctly to the record before it."""
    log = await make_log(session, gap_after=5)
    before = await record(session, "t-5")
    values = service.record_values(audit_pb2.AuditEvent(event_id="forged", occurred_unix_ms=1_795_000_000_005))
    forged = AuditRecord(
        **values,
        seq=before.seq + 1,
        prev_hash=before.hash,
        hash=service.chain_hash(before.hash, values),
        leaf_index=10**12,  # unique, as the column demands
        month=before.month,  # in the same month's partition
    )
    session.add(forged)
    await session.flush()
    report = await verify_after_tampering(session)
    assert report["first_bad_event_id"] == "forged" and report["first_bad_leaf"] == log.leaf("t-6")


async def test_a_row_appended_with_a_valid_link_and_head_is_named(session: AsyncSession) -> None:
    """A forged last record, chained and counted in the head as a real append would: only the
    Merkle tree's stored hashes (written by the real append) are missing."""
    log = await make_log(session)
    last = await record(session, "t-9")
    values = service.record_values(audit_pb2.AuditEvent(event_id="forged-last", occurred_unix_ms=1_795_000_000_010))
    digest = service.chain_hash(last.hash, values)
    size = log.leaf("t-9") + 1
    session.add(AuditRecord(**values, prev_hash=last.hash, hash=digest, leaf_index=size, month=last.month))
    await session.execute(update(ChainHead).where(ChainHead.id == 1).values(seq=size + 1, hash=digest))
    await session.flush()
    report = await verify_after_tampering(session)
    assert report["first_bad_event_id"] == "forged-last" and report["first_bad_leaf"] == size
    assert "tree hashes" in report["detail"]


async def test_two_reordered_rows_are_named(session: AsyncSession) -> None:
    log = await make_log(session)
    three, four = await record(session, "t-3"), await record(session, "t-4")
    a, b = three.seq, four.seq
    for event_id, seq in (("t-3", -1), ("t-4", a), ("t-3", b)):
        await session.execute(
            update(AuditRecord)
            .where(AuditRecord.event_id == event_id)
            .values(seq=seq)
            .execution_options(synchronize_session=False)
        )
    report = await verify_after_tampering(session)
    assert report["first_bad_event_id"] == "t-4" and report["first_bad_leaf"] == log.leaf("t-3")


async def test_a_tail_truncated_after_a_checkpoint_is_found(session: AsyncSession) -> None:
    """t-7…t-9 removed with every trace: their tree hashes, and the head moved back to t-6. The
    chain alone is whole again; the checkpoint after t-9 is what still counts them."""
    log = await make_log(session)
    keep = log.leaf("t-7")
    six = await record(session, "t-6")
    await session.execute(delete(AuditRecord).where(AuditRecord.leaf_index >= keep))
    await session.execute(delete(TreeHash).where(TreeHash.idx >= merkle.stored_hash_count(keep)))
    await session.execute(update(ChainHead).where(ChainHead.id == 1).values(seq=keep, hash=six.hash))
    report = await verify_after_tampering(session)
    assert report["first_bad_leaf"] == keep and report["first_bad_seq"] is None  # the record is gone
    assert "tail is missing" in report["detail"] and f"signed {keep + 3} records" in report["detail"]


async def test_a_chain_rewritten_after_the_last_checkpoint_breaks_its_root(session: AsyncSession) -> None:
    """t-7 changed, then everything after it recomputed — chain hashes, tree hashes, head — as a
    thorough forger would. Only the signed root of the checkpoint after t-9 disagrees; a root
    cannot say which of its leaves changed, so the first leaf after the last checkpoint that
    still matches (the one after t-4) is named."""
    log = await make_log(session)
    start = log.leaf("t-7")
    rows = list(
        (
            await session.scalars(
                select(AuditRecord).where(AuditRecord.leaf_index >= start - 1).order_by(AuditRecord.seq)
            )
        ).all()
    )
    prev = rows[0].hash
    await session.execute(delete(TreeHash).where(TreeHash.idx >= merkle.stored_hash_index(0, start)))
    frontier = await service.load_frontier(session, start)
    for row in rows[1:]:
        if row.event_id == "t-7":
            row.purpose = "改写"
        row.prev_hash, row.hash = prev, service.chain_hash(prev, chained(row))
        first = merkle.stored_hash_index(0, row.leaf_index)
        for k, h in enumerate(frontier.append(bytes.fromhex(row.hash))):
            session.add(TreeHash(idx=first + k, hash=h))
        prev = row.hash
    await session.execute(update(ChainHead).where(ChainHead.id == 1).values(hash=prev))
    await session.flush()
    report = await verify_after_tampering(session)
    assert report["first_bad_event_id"] == "t-5" and report["first_bad_leaf"] == log.leaf("t-5")
    assert f"another tree of {log.leaf('t-9') + 1} records" in report["detail"]


async def test_a_changed_checkpoint_is_found(session: AsyncSession) -> None:
    """A checkpoint's note edited (its signature no longer verifies), or its row made to say
    another root than the note it keeps."""
    log = await make_log(session)
    latest = await service.latest_checkpoint(session)
    assert latest is not None
    size = log.leaf("t-9") + 1
    original = latest.note
    latest.note = original.replace(f"\n{size}\n", f"\n{size - 1}\n", 1)
    await session.flush()
    assert "signature does not verify" in (await verify_after_tampering(session))["detail"]
    latest.note, latest.root_hash = original, bytes(32)
    await session.flush()
    assert "differs from its signed note" in (await verify_after_tampering(session))["detail"]
