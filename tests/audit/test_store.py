"""The audit store accepts every event the platform can produce, and its chain keeps verifying —
including chains written before the canonical form had a version."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import service
from services.audit.app import MIGRATIONS
from services.audit.merkle import Frontier, leaf_hash
from services.audit.models import AuditRecord
from services.audit.service import (
    GENESIS,
    append,
    chain_hash,
    event_id_of,
    record_values,
    take_checkpoint,
    verify,
)
from services.common.contracts.audit import (
    FIELD_NAME_MAX,
    FIELDS_MAX,
    OCCURRED_MAX_MS,
    TEXT_LIMITS,
    TRUNCATED,
    bounded,
)
from services.common.db import alembic_config, create_engine, session_factory
from services.common.pb import audit_pb2
from tests.audit.conftest import Audit, signer

STRING_FIELDS = tuple(TEXT_LIMITS)


def texts(limit: int) -> st.SearchStrategy[str]:
    """Any text protobuf accepts, with the edges: NUL, the bound, one past it, wide characters."""
    return st.one_of(
        st.text(max_size=limit + 8),  # any code point but surrogates (NUL and controls included)
        st.text(alphabet=st.sampled_from("\x00a字𝄞\ufffd…"), max_size=2 * limit),
        st.sampled_from(["", "\x00", "x" * limit, "x" * (limit + 1), "字" * (limit + 1), "\x00" * 4096]),
    )


timestamps = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 1_795_000_000_123, OCCURRED_MAX_MS, OCCURRED_MAX_MS + 1, -(2**63), 2**63 - 1]),
)


@st.composite
def audit_events(draw: st.DrawFn) -> audit_pb2.AuditEvent:
    values: dict[str, Any] = {f: draw(texts(TEXT_LIMITS[f])) for f in STRING_FIELDS}
    values["event_id"] = draw(st.one_of(st.just(""), st.uuids().map(lambda u: u.hex), texts(TEXT_LIMITS["event_id"])))
    values["occurred_unix_ms"] = draw(timestamps)
    values["fields"] = draw(
        st.one_of(
            st.lists(texts(FIELD_NAME_MAX), max_size=8),
            st.integers(FIELDS_MAX - 1, FIELDS_MAX + 40).map(lambda n: [f"item{i}" for i in range(n)]),
        )
    )
    return audit_pb2.AuditEvent(**values)


def test_protobuf_itself_refuses_unpaired_surrogates() -> None:
    """Why no lone surrogate reaches the store in an event: protobuf will neither set one nor
    decode one (an event carrying bad UTF-8 is undecodable: it is dead-lettered alone)."""
    with pytest.raises(UnicodeEncodeError):
        audit_pb2.AuditEvent(resource_code="a\ud800b")
    undecodable = b"\x5a\x05a\xed\xa0\x80b"  # field 11 (resource_code): "a", a CESU-8 surrogate, "b"
    with pytest.raises(Exception, match="UTF-8"):
        audit_pb2.AuditEvent().ParseFromString(undecodable)
    # The bound still makes one storable, should a producer ever find a way.
    assert bounded("a\ud800b\x00", 10) == "a\ufffdb\ufffd"


@settings(max_examples=300, deadline=None)
@given(event=audit_events())
def test_the_fast_path_stores_what_bounding_each_field_would(event: audit_pb2.AuditEvent) -> None:
    """record_values checks an event's texts all at once and keeps them as they are when they
    fit: exactly what bounding each field one by one gives (cut, NUL and surrogates replaced)."""
    values = record_values(event)
    for field in STRING_FIELDS:
        if field != "event_id":  # the id has its own rule (event_id_of)
            assert values[field] == bounded(getattr(event, field), TEXT_LIMITS[field]), field
    assert values["event_id"] == event_id_of(event)
    one_by_one = [bounded(f, FIELD_NAME_MAX) for f in event.fields]
    if len(one_by_one) > FIELDS_MAX:
        one_by_one = [*one_by_one[: FIELDS_MAX - 1], f"{TRUNCATED}+{len(one_by_one) - FIELDS_MAX + 1}"]
    assert values["fields"] == one_by_one


async def test_a_batch_over_many_chunks_is_one_chain_in_its_order(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is written chunk by chunk (each COPY while the next chunk is hashed): the records
    keep the batch's order in seq and in the tree, an id repeated in the batch or already
    recorded is written once, a chunk with nothing new is skipped, and the chain verifies."""
    monkeypatch.setattr(service, "APPEND_CHUNK", 4)
    old = [audit_pb2.AuditEvent(event_id=f"chunked-old-{i}", occurred_unix_ms=1_795_000_000_000 + i) for i in range(5)]
    async with sessions.begin() as session:
        assert await append(session, old) == 5
    new = [audit_pb2.AuditEvent(event_id=f"chunked-new-{i}", occurred_unix_ms=1_795_000_000_100 + i) for i in range(9)]
    # old[0..3] fill one chunk (nothing new in it); new[2] comes again two chunks later.
    batch = [*old[:4], *new[:5], old[4], new[2], *new[5:]]
    async with sessions.begin() as session:
        assert await append(session, batch) == 9
    async with sessions.begin() as session:
        assert await append(session, batch) == 0  # redelivered whole
    async with sessions() as session:
        rows = (
            await session.scalars(
                select(AuditRecord).where(AuditRecord.event_id.like("chunked-new-%")).order_by(AuditRecord.seq)
            )
        ).all()
        report = await verify(session)
    assert [r.event_id for r in rows] == [e.event_id for e in new]
    assert [r.leaf_index for r in rows] == list(range(rows[0].leaf_index, rows[0].leaf_index + 9))
    assert report["ok"] is True, report


@pytest.fixture(scope="module")
def first_of_id() -> dict[str, audit_pb2.AuditEvent]:
    """Examples may repeat an event id with other content: the store keeps the first (the id is
    the idempotency key), so that is what the later ones are compared with."""
    return {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=audit_events())
async def test_any_event_is_appended_once_and_the_chain_verifies(
    event: audit_pb2.AuditEvent,
    sessions: async_sessionmaker[AsyncSession],
    first_of_id: dict[str, audit_pb2.AuditEvent],
) -> None:
    event = first_of_id.setdefault(event_id_of(event), event)
    expected = record_values(event)
    async with sessions.begin() as session:
        await append(session, [event])
    async with sessions.begin() as session:
        assert await append(session, [event]) == 0  # redelivered: stays one record
    async with sessions() as session:
        stored = (await session.scalars(select(AuditRecord).where(AuditRecord.event_id == event_id_of(event)))).one()
        report = await verify(session)
    assert report["ok"] is True, report
    assert stored.canonical_version == 5
    assert stored.disclosed_fields == expected["disclosed_fields"]
    for field in STRING_FIELDS:
        value = getattr(stored, field)
        assert len(value) <= TEXT_LIMITS[field] and "\x00" not in value
        assert value == expected[field]
        if getattr(event, field) != value and field != "event_id":
            assert value.endswith(TRUNCATED) or "\ufffd" in value  # a change is visible
    assert stored.fields == expected["fields"] and len(stored.fields) <= FIELDS_MAX
    if stored.occurred_unix_ms_raw is None:
        assert stored.occurred_at == expected["occurred_at"]
        assert int(stored.occurred_at.timestamp() * 1000) == event.occurred_unix_ms
    else:  # out of range: the raw value kept, the time it was received in its place
        assert stored.occurred_unix_ms_raw == event.occurred_unix_ms
        assert abs((stored.occurred_at - datetime.now(UTC)).total_seconds()) < 60


async def test_a_batch_of_hostile_events_is_stored_whole(sessions: async_sessionmaker[AsyncSession]) -> None:
    """The two examples of issue 7: an X-Request-Id longer than 64 characters, a NUL in a resource."""
    events = [
        audit_pb2.AuditEvent(event_id="long-rid", occurred_unix_ms=1, request_id="r" * 300),
        audit_pb2.AuditEvent(event_id="nul-resource", occurred_unix_ms=1, resource_code="101010/\x00000001"),
        audit_pb2.AuditEvent(occurred_unix_ms=-5),  # no id at all, a time before 1970
    ]
    async with sessions.begin() as session:
        assert await append(session, events) == 3
    async with sessions() as session:
        rows = {
            r.event_id: r
            for r in (
                await session.scalars(
                    select(AuditRecord).where(AuditRecord.event_id.in_([event_id_of(e) for e in events]))
                )
            ).all()
        }
        assert (await verify(session))["ok"] is True
    assert rows["long-rid"].request_id == "r" * 63 + TRUNCATED
    assert rows["nul-resource"].resource_code == "101010/\ufffd000001"
    assert rows[event_id_of(events[2])].occurred_unix_ms_raw == -5


class AppendsBetweenReads:
    """A session in which another writer appends a record, committed, after every read of many
    rows — as the audit consumer does while an auditor verifies a large chain."""

    def __init__(self, session: AsyncSession, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.session, self.sessions, self.appended = session, sessions, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.session.scalars(*args, **kwargs)
        if self.appended == 6:  # enough (a verification that saw them would chase them for ever)
            return result
        async with self.sessions.begin() as other:
            self.appended += await append(other, [audit_pb2.AuditEvent(event_id=uuid.uuid4().hex, occurred_unix_ms=1)])
        return result


async def test_records_appended_while_verifying_are_not_taken_for_tampering(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The verification reads one snapshot: what it checks is the chain as it was when it began,
    whole, not records half-seen beside the tree hashes and head of later ones (which CI once
    reported as "tree hashes are stored beyond the last record")."""
    async with sessions.begin() as session:
        await append(session, [audit_pb2.AuditEvent(event_id=uuid.uuid4().hex, occurred_unix_ms=1) for _ in range(7)])
    async with sessions() as session:
        before = await session.scalar(select(func.count()).select_from(AuditRecord))
    async with sessions() as session:
        racing = AppendsBetweenReads(session, sessions)
        report = await verify(cast(AsyncSession, racing), batch=2)
    assert racing.appended == 6  # appends did land between the batches
    assert report["ok"] is True, report
    assert report["checked"] == before
    async with sessions() as session:
        assert (await verify(session))["checked"] == before + racing.appended  # and the next run sees them


async def test_the_verify_endpoint_reads_one_snapshot_too(
    audit: Audit, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /v1/audit/verify, whose request's unit of work has begun a transaction already, verifies
    in a session of its own, made a snapshot: the records appended between its reads are not
    seen (a CI run's walkthrough got "tree hashes are stored beyond the last record" through it,
    after the service's own reads were made one snapshot)."""
    async with sessions.begin() as session:
        await append(session, [audit_pb2.AuditEvent(event_id=uuid.uuid4().hex, occurred_unix_ms=1) for _ in range(3)])
    runtime = audit.app.state.runtime
    fresh, racing = runtime.sessions, []

    @contextlib.asynccontextmanager
    async def racing_sessions() -> AsyncIterator[Any]:
        async with fresh() as session:
            racing.append(AppendsBetweenReads(session, sessions))
            yield racing[-1]

    monkeypatch.setattr(runtime, "sessions", racing_sessions)
    answer = await audit.client.get("/v1/audit/verify", headers=audit.auditor)
    monkeypatch.undo()
    report = answer.json()
    assert answer.status_code == 200 and report["ok"] is True, report
    [session] = racing
    assert session.appended >= 2  # appends did land between its reads
    async with sessions() as reading:
        now = await reading.scalar(select(func.count()).select_from(AuditRecord))
    assert report["checked"] <= now - session.appended  # none of them was seen


async def test_an_append_is_one_transaction_that_holds_the_chain_head(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An append rolled back leaves nothing behind; appenders in other transactions (the consumer,
    the API recording its own reads, other replicas) wait for the head's lock, so no leaf is
    written twice and the chain verifies."""

    async def rolled_back() -> None:
        async with sessions.begin() as session:
            assert await append(session, [audit_pb2.AuditEvent(event_id="rolled-back", occurred_unix_ms=1)]) == 1
            raise RuntimeError("after the append")

    with pytest.raises(RuntimeError, match="after the append"):
        await rolled_back()

    async def writer(tag: str) -> None:
        for n in range(8):
            batch = [audit_pb2.AuditEvent(event_id=f"{tag}-{n}-{i}", occurred_unix_ms=1) for i in range(3)]
            async with sessions.begin() as session:
                assert await append(session, batch) == 3

    await asyncio.gather(*(writer(tag) for tag in ("concurrent-a", "concurrent-b")))
    async with sessions() as session:
        ids = (await session.scalars(select(AuditRecord.event_id))).all()  # other tests' too
        assert "rolled-back" not in ids
        assert len([i for i in ids if i.startswith("concurrent-")]) == 2 * 8 * 3
        head = (await session.execute(text("SELECT seq FROM audit.chain_head WHERE id = 1"))).scalar_one()
        assert head == len(ids)
        assert (await verify(session))["ok"] is True


# A version-1 record as the code before canonical versions hashed it (computed with that code).
V1_EVENT: dict[str, Any] = {
    "event_id": "0123456789abcdef0123456789abcdef",
    "occurred_at": datetime(2026, 11, 18, 11, 6, 40, 123000, tzinfo=UTC),
    "service": "exchange",
    "action": "exchange.query",
    "outcome": "completed",
    "reason": "",
    "actor": "sys-demo",
    "consumer_dept": "11110000000000001X",
    "consumer_client_id": "sys-demo",
    "provider_dept": "11110000000000002Y",
    "resource_code": "101010/000001",
    "purpose": "ZDSHBZ-SP",
    "subject_type": "id_card",
    "subject_hash": "ab" * 32,
    "fields": ["姓名", "出生日期"],
    "query_id": "q-1",
    "request_id": "r-1",
}
V1_HASH = "05852e789209bc0c1665ee9231cb9549dafdc0afb4ca134155c91fe95be5503a"


def test_version_1_hashes_exactly_as_before_versions_existed() -> None:
    assert chain_hash(GENESIS, {**V1_EVENT, "canonical_version": 1}) == V1_HASH


async def test_a_chain_written_before_the_migration_keeps_verifying_and_grows(empty_database: str) -> None:
    """Migrate a database to the first revision, write a record the old way, migrate to head:
    the record is version 1, and the chain verifies before and after new records join it."""
    engine = create_engine(empty_database, pool_size=2)

    def upgrade(connection: object, revision: str) -> None:
        command.upgrade(alembic_config(connection, "audit", MIGRATIONS), revision)

    try:
        async with engine.begin() as conn:
            await conn.execute(text('CREATE SCHEMA "audit"'))
            await conn.run_sync(upgrade, "f5834a7e44dd")
            columns, params = ", ".join(V1_EVENT), ", ".join(f":{c}" for c in V1_EVENT)
            insert = f"INSERT INTO audit.records ({columns}, prev_hash, hash) VALUES ({params}, :prev, :hash)"  # noqa: S608
            await conn.execute(text(insert), {**V1_EVENT, "prev": GENESIS, "hash": V1_HASH})
            await conn.execute(text("INSERT INTO audit.chain_head (id, seq, hash) VALUES (1, 1, :h)"), {"h": V1_HASH})
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, "head")
        sessions = session_factory(engine)
        async with sessions() as session:
            # The migration made the old record leaf 0 of the Merkle tree: its root is that leaf.
            root = base64.b64encode(leaf_hash(bytes.fromhex(V1_HASH))).decode()
            assert await verify(session) == {
                "ok": True,
                "checked": 1,
                "head": V1_HASH,
                "tree_size": 1,
                "root": root,
                "checkpoints": 0,
                "start_leaf": 0,
            }
            old = (await session.scalars(select(AuditRecord))).one()
            assert old.canonical_version == 1
        async with sessions.begin() as session:
            await append(session, [audit_pb2.AuditEvent(event_id="after", occurred_unix_ms=2, request_id="x" * 99)])
        async with sessions() as session:
            report = await verify(session)
            assert report["ok"] is True and report["checked"] == 2
        async with sessions.begin() as session:  # a verification reads only: the change is another's
            await session.execute(
                text("UPDATE audit.records SET canonical_version = 2 WHERE event_id = :e"), {"e": V1_EVENT["event_id"]}
            )
        async with sessions() as session:
            assert (await verify(session))["first_bad_event_id"] == V1_EVENT["event_id"]  # the version is bound in
    finally:
        await engine.dispose()


async def test_version_4_records_keep_verifying_beside_version_5_which_bind_bundle_and_batch(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written before bundle and batch ids (version 4, their columns "" as the migration
    leaves them) still verify once version-5 records follow; a version-5 record's bundle id is
    bound into its hash."""
    monkeypatch.setattr(service, "CANONICAL_VERSION", 4)
    older = [audit_pb2.AuditEvent(event_id=f"v4-{uuid.uuid4().hex}", occurred_unix_ms=1) for _ in range(2)]
    async with sessions.begin() as session:
        await append(session, older)
    monkeypatch.undo()
    bundled = audit_pb2.AuditEvent(event_id=f"v5-{uuid.uuid4().hex}", occurred_unix_ms=2, bundle_id="b-1", batch_id="")
    async with sessions.begin() as session:
        await append(session, [bundled])
    async with sessions() as session:
        rows = await session.execute(
            select(AuditRecord.event_id, AuditRecord.canonical_version).where(
                AuditRecord.event_id.in_([e.event_id for e in [*older, bundled]])
            )
        )
        versions = {row.event_id: row.canonical_version for row in rows}
        assert versions == {older[0].event_id: 4, older[1].event_id: 4, bundled.event_id: 5}
        assert (await verify(session))["ok"] is True
        await session.execute(
            text("UPDATE audit.records SET bundle_id = 'b-2' WHERE event_id = :e"), {"e": bundled.event_id}
        )
        assert (await verify(session))["first_bad_event_id"] == bundled.event_id
        await session.rollback()


async def test_the_merkle_migration_makes_existing_records_leaves(empty_database: str) -> None:
    """Records written before the Merkle tree existed (with a gap in seq, as a rolled-back
    append leaves) get dense leaf positions and their stored hashes from the data migration: the
    tree verifies, and a checkpoint taken after it covers them."""
    engine = create_engine(empty_database, pool_size=2)

    def upgrade(connection: object, revision: str) -> None:
        command.upgrade(alembic_config(connection, "audit", MIGRATIONS), revision)

    prev, hashes = GENESIS, []
    try:
        async with engine.begin() as conn:
            await conn.execute(text('CREATE SCHEMA "audit"'))
            await conn.run_sync(upgrade, "c153f2c3e0bb")  # the revision before the Merkle tree
            for i in range(11):
                values = record_values(
                    audit_pb2.AuditEvent(event_id=f"pre-{i}", occurred_unix_ms=1_795_000_000_000 + i)
                )
                # as version 2 wrote them then: subject key ids came later (version 3)
                for later in ("subject_key_id", "answer_sha256", "disclosed_fields", "bundle_id", "batch_id"):
                    del values[later]
                values["canonical_version"] = 2
                digest = chain_hash(prev, values)
                columns = ", ".join(values)
                params = ", ".join(f":{c}" for c in values)
                insert = (
                    f"INSERT INTO audit.records (seq, {columns}, prev_hash, hash) VALUES (:seq, {params}, :prev, :hash)"  # noqa: S608
                )
                await conn.execute(text(insert), {**values, "seq": i + 1 + (i >= 4) * 3, "prev": prev, "hash": digest})
                prev = digest
                hashes.append(digest)
            await conn.execute(text("INSERT INTO audit.chain_head (id, seq, hash) VALUES (1, 11, :h)"), {"h": prev})
            # seq given explicitly (for the gap): move the identity past it, as generated values would
            await conn.execute(text("SELECT setval(pg_get_serial_sequence('audit.records', 'seq'), 20)"))
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, "head")
        frontier = Frontier()
        for digest in hashes:
            frontier.append(bytes.fromhex(digest))
        sessions = session_factory(engine)
        async with sessions() as session:
            report = await verify(session)
            assert report["ok"] is True and report["tree_size"] == 11, report
            assert report["root"] == base64.b64encode(frontier.root()).decode()
            leaves = (await session.scalars(select(AuditRecord.leaf_index).order_by(AuditRecord.seq))).all()
            assert list(leaves) == list(range(11))
        async with sessions.begin() as session:
            await append(session, [audit_pb2.AuditEvent(event_id="post", occurred_unix_ms=2)])
            origin = "test.tongban.dev/audit"
            checkpoint = await take_checkpoint(session, origin, await signer(session, origin))
            assert checkpoint is not None and checkpoint.tree_size == 12
        async with sessions() as session:
            report = await verify(session)
            assert report["ok"] is True and report["checkpoints"] == 1, report
    finally:
        await engine.dispose()
