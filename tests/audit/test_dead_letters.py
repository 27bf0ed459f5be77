"""Dead letters (死信) are visible and replayable: the audit service keeps what reaches the
platform's dead-letter topic, shows it to auditors only, and the replay command sends each back
once. Real PostgreSQL and Kafka; the audit application runs in this process."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from services.audit.models import DeadLetter
from services.audit.service import not_the_same
from services.common.bus import (
    DLQ_WITHHELD,
    WITHHELD_BECAUSE,
    KafkaBus,
    Message,
    NotRetained,
    PoisonMessage,
    Subscription,
    dead_letter_of,
)
from services.common.pb import audit_pb2
from tests.audit.conftest import Audit
from tests.integration.helpers import eventually, started, unique


def event(event_id: str, **fields: Any) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(event_id=event_id, occurred_unix_ms=int(time.time() * 1000), **fields)


async def test_an_undecodable_event_is_dead_lettered_alone_and_shown_to_auditors_only(audit: Audit) -> None:
    topic = audit.settings.topic("audit.events")
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    garbage = b"\x5a\x05a\xed\xa0\x80b"  # resource_code with a surrogate in CESU-8: not UTF-8
    await audit.producer.publish_many(
        [
            Message(topic, event(first).SerializeToString(), b"k"),
            Message(topic, garbage, b"k"),
            Message(topic, event(second).SerializeToString(), b"k"),
        ]
    )

    async def both_stored() -> bool:
        return {first, second} <= {r["event_id"] for r in await audit.records(limit="1000")}

    async def dead_lettered() -> bool:
        return any(base64.b64decode(d["value_base64"]) == garbage for d in await audit.dead_letters())

    await eventually(both_stored, 60, "the decodable events of the batch to be stored")
    await eventually(dead_lettered, 60, "the undecodable event to be kept as a dead letter")
    [letter] = [d for d in await audit.dead_letters() if base64.b64decode(d["value_base64"]) == garbage]
    assert letter["source_topic"] == topic
    assert letter["consumer_group"] == audit.settings.topic("audit")
    assert letter["reason"].startswith("undecodable audit event:")
    assert letter["key"] == "k" and letter["replayed_at"] is None
    assert letter["source_offset"] is not None and letter["headers"]["dlq-source"] == topic
    await eventually(lambda: audit.unreplayed_gauge() == 1, 10, "the unreplayed gauge to count it")

    for headers, status in [
        (audit.token(["data_admin", "approver", "platform_admin"]), 403),
        (audit.token(["consumer", "provider"], kind="system"), 403),
        ({}, 401),
    ]:
        response = await audit.client.get("/v1/audit/dead-letters", headers=headers)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"


async def test_cursor_and_filter_are_validated_and_paging_works(audit: Audit) -> None:
    # Beyond BIGINT: a bad request, not a 500 (the audit search's cursors are opaque and signed).
    for path, code in (("/v1/audit/dead-letters", "validation"), ("/v1/audit/events", "invalid-cursor")):
        response = await audit.client.get(path, params={"cursor": str(2**63)}, headers=audit.auditor)
        assert response.status_code == 422, response.text
        assert response.json()["type"].endswith("/" + code)
    response = await audit.client.get("/v1/audit/dead-letters", params={"replayed": "perhaps"}, headers=audit.auditor)
    assert response.status_code == 422
    response = await audit.client.get(
        "/v1/audit/events", params={"subject": "110106197509161951"}, headers=audit.auditor
    )
    assert response.status_code == 422 and response.json()["type"].endswith("/invalid-subject")

    topic = audit.settings.topic("exchange.dlq")
    ids = [uuid.uuid4().hex for _ in range(3)]
    await audit.producer.publish_many(
        [Message(topic, b"v", None, {"dlq-id": i, "dlq-source": "elsewhere", "dlq-reason": "why"}) for i in ids]
    )

    async def all_kept() -> bool:
        return sum(d["headers"].get("dlq-id") in ids for d in await audit.dead_letters(limit="1000")) == 3

    await eventually(all_kept, 60, "three dead letters")
    response = await audit.client.get("/v1/audit/dead-letters", params={"limit": "2"}, headers=audit.auditor)
    page = response.json()
    assert len(page["items"]) == 2 and page["next_cursor"] is not None
    rest = await audit.dead_letters(cursor=page["next_cursor"], limit="1000")
    assert {d["id"] for d in rest}.isdisjoint(d["id"] for d in page["items"])
    assert max(d["id"] for d in rest) < min(d["id"] for d in page["items"])
    assert await audit.dead_letters(replayed="true") == []


async def test_a_dead_letter_is_replayed_once_by_the_command(audit: Audit) -> None:
    """A valid event the old store could not keep (an X-Request-Id of 300 characters) was
    dead-lettered; once the store accepts it, the command sends it back and it is recorded."""
    source = audit.settings.topic("audit.events")
    event_id = uuid.uuid4().hex
    letter = Message(
        audit.settings.topic("exchange.dlq"),
        event(event_id, request_id="r" * 300, outcome="denied").SerializeToString(),
        event_id.encode(),
        {
            "dlq-id": uuid.uuid4().hex,
            "dlq-source": source,
            "dlq-reason": "StringDataRightTruncationError: value too long for type character varying(64)",
            "dlq-group": audit.settings.topic("audit"),
            "dlq-partition": "2",
            "dlq-offset": "41",
            "request-id": "rid-of-the-original",
        },
    )
    await audit.producer.publish_many([letter, letter])  # delivered twice: kept once

    seen: list[Message] = []

    async def watch(batch: Sequence[Message]) -> None:
        seen.extend(m for m in batch if m.key == event_id.encode())

    watcher = await started(audit.settings.kafka_bootstrap, Subscription([source], watch, group=unique("watch")))
    try:

        async def kept() -> list[dict[str, Any]]:
            return [d for d in await audit.dead_letters(limit="1000") if d["key"] == event_id]

        await eventually(lambda: _nonempty(kept()), 60, "the dead letter to be kept")
        await asyncio.sleep(1)
        [row] = await kept()
        assert (row["source_partition"], row["source_offset"]) == (2, 41)

        code, output = await audit.replay("--id", str(row["id"]))
        assert code == 0, output
        assert f"死信 {row['id']}: replayed to {source}" in output and "replayed 1 dead letter(s)" in output

        async def recorded() -> list[dict[str, Any]]:
            return [r for r in await audit.records(limit="1000") if r["event_id"] == event_id]

        await eventually(lambda: _nonempty(recorded()), 60, "the replayed event to be recorded")
        [record] = await recorded()
        assert record["request_id"] == "r" * 63 + "…" and record["outcome"] == "denied"
        [row] = await kept()
        assert row["replayed_at"] is not None

        code, output = await audit.replay("--id", str(row["id"]))  # again: nothing is sent twice
        assert code == 0, output
        assert "already replayed, skipped" in output and "replayed 0 dead letter(s)" in output
        code, output = await audit.replay("--id", "999999999")
        assert code == 1 and "not found" in output

        await asyncio.sleep(2)  # time for a second copy to arrive, were one sent
        assert len(seen) == 1
        assert seen[0].headers.get("request-id") == "rid-of-the-original"
        assert not any(k.startswith("dlq-") for k in seen[0].headers)
        response = await audit.client.get("/v1/audit/verify", headers=audit.auditor)
        assert response.json()["ok"] is True
    finally:
        await watcher.stop()

    # --all sends back what is left. The undecodable event of the first test fails again: it
    # comes back as a new dead letter, not replayed, while the old one is marked replayed.
    before = {d["id"] for d in await audit.dead_letters(replayed="false", limit="1000")}
    code, output = await audit.replay("--all")
    assert code == 0, output
    assert f"replayed {len(before)} dead letter(s)" in output

    async def only_the_undecodable_one_is_back() -> bool:
        left = await audit.dead_letters(replayed="false", limit="1000")
        return len(left) == 1 and left[0]["id"] not in before and left[0]["reason"].startswith("undecodable")

    await eventually(only_the_undecodable_one_is_back, 60, "the undecodable event to come back")
    await eventually(lambda: audit.unreplayed_gauge() == 1, 10, "the gauge to follow")


async def _nonempty(rows: Any) -> bool:
    return bool(await rows)


async def test_a_letter_the_bus_withheld_is_kept_as_withheld_and_its_gone_source_refuses_replay(
    audit: Audit,
) -> None:
    """Dead letters as a ``personal_data`` subscription makes them (an empty value, ``dlq-withheld``):
    audit keeps where the message is and why, takes the bus's reason as its own — also for a topic
    it has no rule for. ``--all`` leaves them alone; by id, the replay re-reads the source topic,
    which here does not exist: refused, nothing changes. Runs after the ``--all`` above, which
    counts what it sends."""
    dlq = audit.settings.topic("exchange.dlq")
    failed = [
        Message(audit.settings.topic("exchange.requests.11110000000000001X"), b"id_card 11010619750916195X", b"q-1"),
        Message(audit.settings.topic("elsewhere"), b"v", b"q-2"),
    ]
    failed = [dataclasses.replace(m, partition=n, offset=40 + n) for n, m in enumerate(failed)]
    letters = [
        dead_letter_of(
            Subscription([m.topic], _never, group="g", personal_data=True), dlq, m, RuntimeError(repr(m.value))
        )
        for m in failed
    ]
    assert all(letter.value == b"" and letter.headers[DLQ_WITHHELD] == WITHHELD_BECAUSE for letter in letters)
    before = audit.unreplayed_gauge()
    await audit.producer.publish_many(letters)
    ids = [letter.headers["dlq-id"] for letter in letters]

    async def kept() -> list[dict[str, Any]]:
        rows = {d["headers"].get("dlq-id"): d for d in await audit.dead_letters(limit="1000")}
        return [rows[i] for i in ids if i in rows]

    await eventually(lambda: _all(kept(), len(ids)), 60, "the withheld dead letters to be kept")
    code, output = await audit.replay("--all")
    assert code == 0, output
    for row in await kept():
        assert f"死信 {row['id']}: withheld (its message is personal data, not kept), skipped" in output, output
        assert f"dead-letters replay --id {row['id']}" in output
    for row, message in zip(await kept(), failed, strict=True):
        assert row["value_base64"] is None and row["withheld"] == WITHHELD_BECAUSE, row
        assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
            message.topic,
            message.partition,
            message.offset,
        )
        assert row["reason"] == "RuntimeError" and row["key"] == message.key.decode()  # type: ignore[union-attr]
        code, output = await audit.replay("--id", str(row["id"]))
        assert code == 1 and "replayed 0 dead letter(s)" in output, output
        assert (
            f"原消息已不在源主题中，无法重放 (the original message is no longer retained): {message.topic} " in output
        )
        assert f"partition {message.partition} offset {message.offset}; the topic or partition does not exist" in output
    assert all(row["replayed_at"] is None for row in await kept())
    await eventually(lambda: audit.unreplayed_gauge() == before, 10, "the gauge not to count them")


async def test_a_withheld_letter_replayed_by_id_is_re_read_from_its_source_and_handled(audit: Audit) -> None:
    """End to end: a reply carrying personal data fails its consumer, which dead-letters it
    withheld; audit keeps it without the message. Once the cause is fixed, ``replay --id`` re-reads
    it from the source topic at the recorded offset, checks it is the same message and publishes
    it again: the consumer handles it, the letter is marked replayed, and the message is never
    printed nor kept by audit."""
    clear = b"11010619750916195X"
    source, dlq = audit.settings.topic(f"exchange.replies.{uuid.uuid4().hex[:8]}"), audit.settings.topic("exchange.dlq")
    value, key = b"\x12\x07id_card\x1a\x12" + clear, f"q-{uuid.uuid4().hex}".encode()
    broken, handled = True, []

    async def consume(batch: Sequence[Message]) -> None:
        for message in batch:
            if broken:
                raise PoisonMessage(message, "undecodable reply: the test's consumer is broken")
            handled.append(message)

    consumer = await started(
        audit.settings.kafka_bootstrap,
        Subscription([source], consume, group=unique("replies"), dlq=dlq, personal_data=True),
    )
    try:
        await consumer.publish(Message(source, value, key, {"request-id": "rid-of-the-reply"}))

        async def kept() -> list[dict[str, Any]]:
            return [d for d in await audit.dead_letters(limit="1000") if d["source_topic"] == source]

        await eventually(lambda: _nonempty(kept()), 60, "the withheld dead letter to be kept")
        [row] = await kept()
        assert row["value_base64"] is None and row["withheld"] == WITHHELD_BECAUSE
        assert row["key"] == key.decode() and row["headers"]["dlq-timestamp"].isdigit()

        broken = False  # the cause is fixed
        code, output = await audit.replay("--id", str(row["id"]))
        assert code == 0, output
        assert f"死信 {row['id']}: replayed to {source} (re-read from its source offset)" in output, output
        assert "replayed 1 dead letter(s)" in output
        assert clear.decode() not in output and clear[:-1].decode() not in output

        await eventually(lambda: len(handled) == 1, 60, "the replayed reply to be handled")
        assert (handled[0].value, handled[0].key) == (value, key)
        assert handled[0].headers.get("request-id") == "rid-of-the-reply"
        assert not any(k.startswith("dlq-") for k in handled[0].headers)
        [row] = await kept()  # still one letter (handled, not dead-lettered again), replayed, no value
        assert row["replayed_at"] is not None and row["value_base64"] is None

        code, output = await audit.replay("--id", str(row["id"]))  # again: nothing is sent twice
        assert code == 0 and "already replayed, skipped" in output, output
        await asyncio.sleep(2)
        assert len(handled) == 1
    finally:
        await consumer.stop()


async def test_a_withheld_letter_whose_offset_expired_or_never_was_is_refused_and_nothing_changes(
    audit: Audit,
) -> None:
    """Retention removed the message (here: its records deleted, as retention does), the offset
    was never written, or the message now at the offset is another one: each replay is refused
    with where it looked and the topic's retention, exit 1; the letter stays unreplayed and
    nothing is published to the source topic."""
    source, dlq = audit.settings.topic(f"exchange.replies.{uuid.uuid4().hex[:8]}"), audit.settings.topic("exchange.dlq")
    where = TopicPartition(source, 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=audit.settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(source, 1, 1, topic_configs={"retention.ms": "86400000"})])
        await audit.producer.publish_many([Message(source, b"first", b"q-1"), Message(source, b"second", b"q-2")])
        await admin.delete_records({where: RecordsToDelete(before_offset=1)})  # offset 0: past retention
    finally:
        await admin.close()

    def withheld(offset: int, message_key: bytes) -> Message:
        failed = Message(source, b"", message_key, partition=0, offset=offset)
        subscription = Subscription([source], _never, group="g", personal_data=True)
        return dead_letter_of(subscription, dlq, failed, RuntimeError("boom"))

    letters = [withheld(0, b"q-1"), withheld(7, b"q-7"), withheld(1, b"q-other")]
    await audit.producer.publish_many(letters)
    ids = [letter.headers["dlq-id"] for letter in letters]

    async def kept() -> list[dict[str, Any]]:
        rows = {d["headers"].get("dlq-id"): d for d in await audit.dead_letters(limit="1000")}
        return [rows[i] for i in ids if i in rows]

    await eventually(lambda: _all(kept(), len(ids)), 60, "the withheld dead letters to be kept")
    expired, absent, other = await kept()
    expected = {
        expired["id"]: f"原消息已不在源主题中，无法重放 (the original message is no longer retained): {source} "
        "partition 0 offset 0; offsets 1..1 retained, retention.ms=86400000 (24 h); nothing was replayed",
        absent["id"]: f"原消息已不在源主题中，无法重放 (the original message is no longer retained): {source} "
        "partition 0 offset 7; offsets 1..1 retained, retention.ms=86400000 (24 h); nothing was replayed",
        other["id"]: f"源主题该位置的消息不是死信所指的消息 (not the dead-lettered message): {source} "
        "partition 0 offset 1: key differs; nothing was replayed",
    }
    for letter_id, line in expected.items():
        code, output = await audit.replay("--id", str(letter_id))
        assert code == 1, output
        assert f"死信 {letter_id}: {line}" in output and "replayed 0 dead letter(s)" in output, output
    assert all(row["replayed_at"] is None for row in await kept())
    reader = KafkaBus(audit.settings.kafka_bootstrap, unique("reader"), unique("dlq"))
    with pytest.raises(NotRetained) as nothing_more:  # nothing was published to the source topic
        await reader.read_at(source, 0, 2)
    assert (nothing_more.value.first, nothing_more.value.end) == (1, 2)


def test_the_same_message_is_told_by_key_timestamp_and_kept_headers() -> None:
    """What a re-read must match before a withheld letter is replayed (no broker needed)."""
    letter = DeadLetter(
        key=b"q-1",
        headers={"dlq-timestamp": "1790000000000", "dlq-id": "x", "request-id": "r-1", "note": "…withheld"},
    )
    same = Message("t", b"v", b"q-1", {"request-id": "r-1", "note": "110106197509161951"}, 0, 5, 1790000000000)
    assert not_the_same(letter, same) is None  # a withheld header value is not compared
    assert not_the_same(letter, dataclasses.replace(same, key=b"q-2")) == "key differs"
    assert not_the_same(letter, dataclasses.replace(same, timestamp=1790000000001)) == "timestamp differs"
    assert not_the_same(letter, dataclasses.replace(same, headers={"request-id": "r-2"})) == "header request-id differs"
    # A request id or trace the bus added when it published the dead letter is not the message's own.
    letter.headers = {"dlq-timestamp": "1790000000000", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    assert not_the_same(letter, dataclasses.replace(same, headers={})) is None
    letter.headers = {"note": "n"}
    assert not_the_same(letter, dataclasses.replace(same, headers={})) == "header note differs"


async def _never(batch: Sequence[Message]) -> None:
    raise AssertionError("not consumed")


async def _all(rows: Any, count: int) -> bool:
    return len(await rows) == count
