"""Subject privacy (数据主体隐私): subjects reach audit only as HMAC-SHA256 under a subject key that
has an id; the key is rotated and records made under the old one stay searchable; and the clear
identifier is found nowhere the audit service writes — any text or bytes column of its database
(dead letters included, which is what reached the dead-letter topic), nor its logs — after events
are ingested from Kafka through the producers' own ``audit_message``, searched for in clear (also
with a wrong check character) and a poison event dead-lettered."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from alembic import command
from sqlalchemy import select, text

from services.audit.app import MIGRATIONS
from services.audit.models import AuditRecord
from services.common.bus import Message, PoisonMessage, Subscription, dead_letter_of
from services.common.contracts.audit import AuditAction, AuditContext, audit_message
from services.common.db import alembic_config, create_engine
from services.common.pb import exchange_pb2
from services.common.subjects import subject_hash
from tests.audit.conftest import Audit
from tests.integration.helpers import eventually

CLEAR = "11010619750916195X"  # a valid 居民身份证号码 (check character X)
FORMS = (CLEAR, CLEAR.lower(), CLEAR[:-1])  # as given, lower-case x, and without the check character


async def ingest(audit: Audit, key: str, key_id: str) -> tuple[str, str]:
    """One query event about CLEAR, made as the exchange makes it, consumed from Kafka: its event
    id and query id."""
    query_id = uuid.uuid4().hex
    ctx = AuditContext(
        query_id=query_id,
        actor="sys-a",
        consumer_dept="11110000000000001X",
        resource="RES-1",
        purpose="ZDSHBZ-SP",
        subject_type="id_card",
        subject_hash=subject_hash(key, "id_card", CLEAR),
        subject_key_id=key_id,
    )
    message = audit_message(
        audit.settings.topic("audit.events"), "exchange", AuditAction.EXCHANGE_QUERY, ctx, outcome="completed"
    )
    await audit.producer.publish(message)
    event_id = message.key.decode() if message.key else ""

    async def stored() -> bool:
        return event_id in {r["event_id"] for r in await audit.records(limit="1000")}

    await eventually(stored, 60, "the event to be stored")
    return event_id, query_id


async def dead_letter_requests(audit: Audit, caplog: pytest.LogCaptureFixture) -> dict[str, tuple[str, int | None]]:
    """Dead letters about CLEAR as the platform's consumers make them (``dead_letter_of``): an
    exchange request its connector could not handle, one it could not decode, and a message of
    another topic holding the identifier. Waits until audit kept them: dlq-id → (source, offset)."""
    request = exchange_pb2.ExchangeRequest(
        query_id=str(uuid.uuid4()), subject_type="id_card", subject_value=CLEAR, purpose="ZDSHBZ-SP"
    ).SerializeToString()
    requests = audit.settings.topic("exchange.requests.11110000000000001X")
    failed = [
        Message(requests, request, b"q-1", partition=0, offset=7),
        Message(requests, b"\xff" + request, b"q-2", partition=0, offset=8),  # undecodable
        Message(audit.settings.topic("registry.events"), b"note " + CLEAR.encode(), None, partition=1, offset=9),
    ]
    dlq = audit.settings.topic("exchange.dlq")
    letters = [
        dead_letter_of(Subscription([m.topic], _never, group="g"), dlq, m, PoisonMessage(m, "why")) for m in failed
    ]
    # The test's own producer logs what it sends at DEBUG (aiokafka): the caller's log, not audit's.
    with caplog.at_level(logging.INFO, logger="aiokafka"):
        await audit.producer.publish_many(letters)
    ids = {m.headers["dlq-id"]: (f.topic, f.offset) for m, f in zip(letters, failed, strict=True)}

    async def all_kept() -> bool:
        return set(ids) <= {d["headers"].get("dlq-id") for d in await audit.dead_letters(limit="1000")}

    await eventually(all_kept, 60, "the dead letters about the subject to be kept")
    return ids


async def _never(batch: object) -> None:
    raise AssertionError("not consumed")


async def found(audit: Audit, path: str, param: str) -> list[dict[str, Any]]:
    response = await audit.client.get(path, params={param: CLEAR}, headers=audit.auditor)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_a_rotated_subject_key_keeps_old_records_searchable(
    audit: Audit, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = audit.app.state.runtime.settings
    old_key, old_id = settings.subject_hash_key, settings.subject_hash_key_id
    before = await ingest(audit, old_key, old_id)

    # Rotation: a new key with a new id; the old one is kept, retired, for searching.
    monkeypatch.setattr(settings, "subject_hash_key", "rotated-subject-key-2026")
    monkeypatch.setattr(settings, "subject_hash_key_id", "k2")
    monkeypatch.setattr(settings, "subject_hash_retired_keys", {old_id: old_key})
    after = await ingest(audit, "rotated-subject-key-2026", "k2")

    searched = await found(audit, "/v1/audit/events", "subject")
    assert [(r["event_id"], r["subject_key_id"]) for r in searched if r["event_id"] in (before[0], after[0])] == [
        (after[0], "k2"),
        (before[0], old_id),
    ]
    report = await found(audit, "/v1/audit/subjects/accesses", "value")  # the citizen's report
    assert [r["query_id"] for r in report if r["query_id"] in (before[1], after[1])] == [after[1], before[1]]
    # Without the retired key, the old records are no longer found: the key is what keeps them.
    monkeypatch.setattr(settings, "subject_hash_retired_keys", {})
    assert {r["event_id"] for r in await found(audit, "/v1/audit/events", "subject")} & {before[0], after[0]} == {
        after[0]
    }


async def test_the_clear_identifier_is_in_no_table_and_no_log(audit: Audit, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    await ingest(audit, audit.settings.subject_hash_key, audit.settings.subject_hash_key_id)
    assert await found(audit, "/v1/audit/events", "subject")
    for wrong in (CLEAR[:-1] + "1", CLEAR[:-1]):  # a wrong check character, a short one: refused
        response = await audit.client.get("/v1/audit/events", params={"subject": wrong}, headers=audit.auditor)
        assert response.status_code == 422 and CLEAR[:-1] not in response.text
    poison = uuid.uuid4().hex.encode()  # an undecodable event: dead-lettered, then kept by audit
    await audit.producer.publish(Message(audit.settings.topic("audit.events"), b"\xff" + poison, None))
    withheld = await dead_letter_requests(audit, caplog)

    sessions = audit.app.state.runtime.sessions

    async def kept() -> bool:
        async with sessions() as session:
            query = text("SELECT count(*) FROM audit.dead_letters WHERE position(:p IN value) > 0")
            return bool(await session.scalar(query, {"p": poison}))

    await eventually(kept, 60, "the poison event to be kept as a dead letter")
    letters = {d["headers"].get("dlq-id"): d for d in await audit.dead_letters(limit="1000")}
    for letter_id, (source, offset) in withheld.items():
        letter = letters[letter_id]
        # Where it came from, at which offset and why are kept; the message is not.
        assert letter["value_base64"] is None and letter["withheld"], letter
        assert (letter["source_topic"], letter["source_offset"], letter["reason"]) == (source, offset, "why")
    # Nothing to send back: the replay re-reads a withheld letter from its source (here gone) and
    # never prints what it finds.
    code, output = await audit.replay("--id", str(letter["id"]))
    assert code == 1 and "nothing was replayed" in output and "replayed 0 dead letter(s)" in output, output
    assert CLEAR[:-1] not in output

    async with sessions() as session:
        assert (
            await session.scalars(select(AuditRecord.subject_hash).where(AuditRecord.subject_hash != "").limit(1))
        ).first()  # there is data
        columns = (
            await session.execute(
                text(
                    "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
                    "AND data_type IN ('text', 'character varying', 'ARRAY', 'jsonb', 'bytea')"
                )
            )
        ).all()
        assert {c[2] for c in columns} >= {"subject_hash", "value", "headers", "fields", "line", "note"}
        for schema, table, column, kind in columns:
            target = f'"{schema}"."{table}"'
            if kind == "bytea":
                condition = f"position(convert_to(:needle, 'UTF8') IN \"{column}\") > 0"
            else:
                condition = f"\"{column}\"::text ILIKE '%' || :needle || '%'"
            for needle in FORMS:
                query = text(f"SELECT count(*) FROM {target} WHERE {condition}")  # noqa: S608
                count = await session.scalar(query, {"needle": needle})
                assert count == 0, f"{schema}.{table}.{column} holds the clear identifier"

    # The test's own HTTP client logs the URLs it asks for (httpx): the caller's log, not audit's.
    # aiokafka.conn dumps the wire protocol at DEBUG: the dead-letter topic's bytes as the broker
    # holds them (the dead letters above were made with the identifier in them), not audit's log.
    lines = [
        " ".join([record.getMessage(), str(record.__dict__), record.exc_text or ""])
        for record in caplog.records
        if record.name.partition(".")[0] not in ("httpx", "httpcore") and record.name != "aiokafka.conn"
    ]
    assert any("request handled" in line for line in lines)  # the logs were captured
    for needle in FORMS:
        assert not [line for line in lines if needle.lower() in line.lower()], needle


async def test_the_upgrade_withholds_dead_letters_kept_before_with_the_identifier(empty_database: str) -> None:
    """Dead letters kept by an older audit service (the message whole) lose what carries the
    identifier when the database is upgraded: the same rule as new ones, applied to old rows."""
    engine = create_engine(empty_database, pool_size=2)

    def upgrade(connection: object, revision: str) -> None:
        command.upgrade(alembic_config(connection, "audit", MIGRATIONS), revision)

    request = exchange_pb2.ExchangeRequest(query_id="q", subject_type="id_card", subject_value=CLEAR)
    rows = [  # (letter id, source topic, key, value, headers)
        ("request", "t.exchange.requests.11110000000000001X", b"q", request.SerializeToString(), {}),
        ("reply", "t.exchange.replies", b"q", b"data", {}),
        ("elsewhere", "t.registry.events", b"k", b"\xff\x00" + CLEAR.encode(), {"note": CLEAR}),
        ("in-key", "t.registry.events", CLEAR.encode(), b"v", {}),
        ("harmless", "t.audit.events", b"k", b"\xff poison", {"request-id": "r-1"}),
    ]
    try:
        async with engine.begin() as conn:
            await conn.execute(text('CREATE SCHEMA "audit"'))
            await conn.run_sync(upgrade, "b6a2ea781a3f")  # the revision before dead letters withheld
            for letter_id, topic, key, value, headers in rows:
                await conn.execute(
                    text(
                        "INSERT INTO audit.dead_letters (letter_id, source_topic, consumer_group, key, value, "
                        "headers, reason) VALUES (:i, :t, 'g', :k, :v, CAST(:h AS jsonb), 'why')"
                    ),
                    {"i": letter_id, "t": topic, "k": key, "v": value, "h": json.dumps(headers)},
                )
        async with engine.begin() as conn:
            await conn.run_sync(upgrade, "head")
        async with engine.connect() as conn:
            kept = {
                r.letter_id: r
                for r in await conn.execute(
                    text("SELECT letter_id, key, value, withheld, headers FROM audit.dead_letters")
                )
            }
    finally:
        await engine.dispose()
    assert {i for i, r in kept.items() if r.value is None and r.withheld} == {"request", "reply", "elsewhere", "in-key"}
    assert (kept["harmless"].value, kept["harmless"].withheld) == (b"\xff poison", None)
    assert kept["elsewhere"].headers == {"note": "…withheld"} and kept["in-key"].key is None
    assert kept["request"].key == b"q"  # a query id is no identifier: where it came from stays
