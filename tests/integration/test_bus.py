"""KafkaBus against the real broker: retries, bisection of a failing batch, the dead-letter topic
and its headers, waiting out a PostgreSQL outage, offsets committed only after a batch was
handled, consumer-lag metrics, and acknowledged messages surviving a killed broker."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from services.common.bus import KafkaBus, Message, QuotableError, Subscription
from services.common.db import create_engine, session_factory
from tests.integration.helpers import eventually, reread, started, unique, written_env
from tests.stack import create_database, infra, infra_env


async def test_failing_handler_is_retried_then_dead_lettered_and_the_partition_moves_on(bootstrap: str) -> None:
    topic, dlq = unique("work"), unique("dead")
    attempts: Counter[bytes] = Counter()
    handled: list[bytes] = []
    dead: list[Message] = []

    async def handler(batch: Sequence[Message]) -> None:
        for message in batch:
            attempts[message.value] += 1
            if message.value == b"poison" or (message.value == b"flaky" and attempts[b"flaky"] < 3):
                raise RuntimeError(f"cannot handle {message.value!r} yet")
        handled.extend(m.value for m in batch)

    async def collect(batch: Sequence[Message]) -> None:
        dead.extend(batch)

    worker = await started(
        bootstrap, Subscription([topic], handler, group=unique("g"), dlq=dlq, max_attempts=3), topics=[dlq]
    )
    reader = await started(bootstrap, Subscription([dlq], collect, group=unique("g")))
    try:
        # One key, so one partition and one order: the poison message must not block what follows.
        # A batch fails or succeeds whole, so each message goes once the one before it was polled.
        for value in (b"poison", b"flaky", b"fine"):
            await worker.publish(Message(topic, value, key=b"one-partition"))
            await eventually(lambda: attempts[value] > 0, 30, f"{value!r} to reach the handler")  # noqa: B023
        await eventually(lambda: b"fine" in handled and bool(dead), 30, "the messages after the poison one")
        assert attempts[b"poison"] == 3  # max_attempts, then the dead-letter topic
        assert attempts[b"flaky"] == 3  # failed twice, handled on the third attempt
        assert handled == [b"flaky", b"fine"]
        assert [(m.value, m.key, m.headers["dlq-source"]) for m in dead] == [(b"poison", b"one-partition", topic)]
        assert dead[0].headers["dlq-reason"] == "RuntimeError: cannot handle b'poison' yet"
    finally:
        await worker.stop()
        await reader.stop()


async def test_one_poison_message_in_a_batch_is_dead_lettered_alone_and_the_others_are_handled(
    bootstrap: str,
) -> None:
    topic, dlq, group = unique("batch"), unique("dead"), unique("g")
    handled: list[bytes] = []
    dead: list[Message] = []
    sent = [f"m{n:02d}".encode() for n in range(60)]
    poison = sent[37]

    async def handler(batch: Sequence[Message]) -> None:
        if any(m.value == poison for m in batch):  # a batch fails or succeeds whole, like a transaction
            raise ValueError("value too long for type character varying(64)")
        handled.extend(m.value for m in batch)

    async def collect(batch: Sequence[Message]) -> None:
        dead.extend(batch)

    producer = await started(bootstrap, topics=[topic, dlq])
    try:
        # Published before the consumer starts, on one partition: they arrive in large batches.
        await producer.publish_many([Message(topic, v, key=b"one-partition") for v in sent])
    finally:
        await producer.stop()
    registry = CollectorRegistry()
    worker = KafkaBus(bootstrap, client_id=unique("client"), dlq_topic=unique("dlq"), registry=registry)
    worker.subscribe(Subscription([topic], handler, group=group, dlq=dlq, max_attempts=2))
    await worker.start()
    reader = await started(bootstrap, Subscription([dlq], collect, group=unique("g")))
    try:
        await eventually(lambda: len(handled) == len(sent) - 1 and bool(dead), 60, "the batch to be handled")
        assert handled == [v for v in sent if v != poison]  # in order, each once
        assert [m.value for m in dead] == [poison]
        headers = dead[0].headers
        assert headers["dlq-source"] == topic
        assert headers["dlq-group"] == group
        assert headers["dlq-reason"] == "ValueError: value too long for type character varying(64)"
        assert headers["dlq-offset"] == "37" and headers["dlq-partition"].isdigit()
        assert registry.get_sample_value("tongban_bus_dead_letters_total", {"topic": topic, "group": group}) == 1
        partition = headers["dlq-partition"]
        lag = {"group": group, "topic": topic, "partition": partition}
        await eventually(lambda: registry.get_sample_value("tongban_bus_consumer_lag", lag) == 0, 30, "lag 0")
    finally:
        await worker.stop()
        await reader.stop()


async def test_a_personal_data_message_is_dead_lettered_withheld_and_re_read_from_its_source(
    bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A request carrying a subject's identifier in clear, which its handler cannot handle, reaches
    the dead-letter topic without the identifier — not in the value, the key, the headers, nor the
    reason (the exception quotes the message), nor the bus's log lines about it (no traceback,
    the reason's type only) — but with where to re-read it; a reason written to
    be quoted (``QuotableError``) is kept; the same failure on a topic without personal data
    dead-letters the message whole, as before."""
    clear = b"11010619750916195X"  # a 居民身份证号码, as a request's subject_value carries it
    requests, other, dlq = unique("exchange.requests.dept"), unique("registry"), unique("dead")
    value = b"\x12\x07id_card\x1a\x12" + clear  # protobuf-like: the identifier as UTF-8 bytes
    dead: list[Message] = []

    async def handler(batch: Sequence[Message]) -> None:
        if batch[0].key == b"query-2":
            raise QuotableError("the keys of provider 111101000000198608 cannot be fetched")
        raise RuntimeError(f"cannot handle {batch[0].value!r}")

    async def collect(batch: Sequence[Message]) -> None:
        dead.extend(batch)

    worker = await started(
        bootstrap,
        Subscription([requests], handler, group=unique("g"), dlq=dlq, max_attempts=1, personal_data=True),
        Subscription([other], handler, group=unique("g"), dlq=dlq, max_attempts=1),
        topics=[dlq],
    )
    reader = await started(bootstrap, Subscription([dlq], collect, group=unique("g")))
    try:
        await worker.publish(Message(requests, value, b"query-1", {"request-id": "r-1"}))
        await worker.publish(Message(other, value, b"k-2"))
        await worker.publish(Message(requests, value, b"query-2"))
        await eventually(lambda: len(dead) == 3, 60, "the three messages to be dead-lettered")
        by_key = {m.key: m for m in dead}
        withheld, whole, quoted = by_key[b"query-1"], by_key[b"k-2"], by_key[b"query-2"]
        assert withheld.headers["dlq-source"] == quoted.headers["dlq-source"] == requests
        assert quoted.value == b"" and "dlq-withheld" in quoted.headers
        assert (
            quoted.headers["dlq-reason"] == "QuotableError: the keys of provider 111101000000198608 cannot be fetched"
        )

        assert withheld.value == b"" and withheld.key == b"query-1"
        assert withheld.headers["dlq-withheld"].startswith("personal data in clear")
        assert withheld.headers["dlq-reason"] == "RuntimeError"  # the type only: its text quotes the value
        assert withheld.headers["request-id"] == "r-1"  # its own headers kept, as before
        for part in (withheld.value, withheld.key or b"", *(f"{k}={v}".encode() for k, v in withheld.headers.items())):
            assert clear not in part and clear[:-1] not in part, part

        # The operator's way back to the message: its source topic, at the partition and offset given.
        again = await reread(
            bootstrap, requests, int(withheld.headers["dlq-partition"]), int(withheld.headers["dlq-offset"])
        )
        assert (again.value, again.key) == (value, b"query-1")
        assert withheld.headers["dlq-timestamp"] == str(again.timestamp)  # so a re-read can tell it is the one

        assert (whole.value, whole.key) == (value, b"k-2")  # not personal data: whole, as before
        assert "dlq-withheld" not in whole.headers
        assert whole.headers["dlq-reason"] == f"RuntimeError: cannot handle {value!r}"
        assert whole.headers["dlq-offset"].isdigit() and whole.headers["dlq-partition"].isdigit()

        about_requests = [r for r in caplog.records if getattr(r, "ctx_topic", None) == requests]
        assert about_requests, "the failures were logged"
        formatter = logging.Formatter()
        for record in about_requests:
            # The message, its context fields and any traceback, as a log handler would write them.
            line = " ".join(
                [
                    record.getMessage(),
                    *(str(v) for k, v in vars(record).items() if k.startswith("ctx_")),
                    formatter.formatException(record.exc_info) if record.exc_info else "",
                ]
            )
            assert clear.decode() not in line and clear.decode()[:-1] not in line, line
    finally:
        await worker.stop()
        await reader.stop()


async def test_handler_failing_during_a_postgresql_outage_waits_for_it_and_dead_letters_nothing(
    bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real crash of PostgreSQL: the handler fails with database-unavailable for as long as it is
    down; the bus waits (far past max_attempts), then every event is stored exactly once."""
    engine = create_engine(await create_database(infra_env()["TONGBAN_DATABASE_URL"]), pool_size=2)
    async with engine.begin() as conn:
        # No unique key on purpose: an event handled twice would show as two rows.
        await conn.execute(text("CREATE TABLE events (value text NOT NULL)"))
    sessions = session_factory(engine)
    topic, dlq = unique("outage"), unique("dead")
    dead: list[Message] = []

    async def store(batch: Sequence[Message]) -> None:
        async with sessions.begin() as session:
            for m in batch:
                await session.execute(text("INSERT INTO events (value) VALUES (:v)"), {"v": m.value.decode()})

    async def collect(batch: Sequence[Message]) -> None:
        dead.extend(batch)

    async def stored() -> Counter[str]:
        async with sessions() as session:
            return Counter((await session.scalars(text("SELECT value FROM events"))).all())

    async def count_is(n: int) -> bool:
        return sum((await stored()).values()) == n

    worker = await started(bootstrap, Subscription([topic], store, group=unique("g"), dlq=dlq, max_attempts=2))
    reader = await started(bootstrap, Subscription([dlq], collect, group=unique("g")))
    try:
        await worker.publish_many([Message(topic, f"before-{n}".encode(), key=str(n).encode()) for n in range(10)])
        await eventually(lambda: count_is(10), 30, "the events before the outage")
        infra("pg-stop", "--kill")  # nothing in flight: the handler is idle
        try:
            await worker.publish_many([Message(topic, f"during-{n}".encode(), key=str(n).encode()) for n in range(20)])
            await asyncio.sleep(8)  # many retries' worth (max_attempts=2, first backoff 0.1 s)
            assert dead == []
            waits = [
                r
                for r in caplog.records
                if r.getMessage().startswith("database or broker unavailable; the batch waits")
            ]
            assert 1 <= len(waits) <= 4  # the handler did fail, and was not logged per retry
        finally:
            infra("pg-start")
        await eventually(lambda: count_is(30), 60, "the events published during the outage")
        counts = await stored()
        assert set(counts) == {f"before-{n}" for n in range(10)} | {f"during-{n}" for n in range(20)}
        assert set(counts.values()) == {1}
        await asyncio.sleep(1)
        assert dead == []
    finally:
        await worker.stop()
        await reader.stop()
        await engine.dispose()


async def test_a_batch_whose_handler_did_not_finish_is_delivered_again(bootstrap: str) -> None:
    """Offsets are committed after the handler: a consumer that dies mid-batch loses nothing."""
    topic, group = unique("redeliver"), unique("g")
    first_seen: list[bytes] = []
    second_seen: list[bytes] = []
    never = asyncio.Event()

    async def dies_on_second(batch: Sequence[Message]) -> None:
        first_seen.extend(m.value for m in batch)
        if b"second" in first_seen:
            await never.wait()  # the process dies here, before the handler returns

    async def records(batch: Sequence[Message]) -> None:
        second_seen.extend(m.value for m in batch)

    first = await started(bootstrap, Subscription([topic], dies_on_second, group=group))
    try:
        await first.publish(Message(topic, b"first", key=b"k"))
        await eventually(lambda: first_seen == [b"first"], 30, "the first message")
        await asyncio.sleep(0.5)  # its offset is committed after the handler returned
        await first.publish(Message(topic, b"second", key=b"k"))
        await eventually(lambda: b"second" in first_seen, 30, "the second message to reach the handler")
    finally:
        await first.stop()  # cancels the handler mid-batch: nothing is committed for "second"
    second = await started(bootstrap, Subscription([topic], records, group=group))
    try:
        await eventually(lambda: b"second" in second_seen, 60, "the unfinished message to be delivered again")
        assert second_seen == [b"second"]  # and not the first, which was handled and committed
    finally:
        await second.stop()


async def test_acknowledged_messages_survive_a_killed_broker(bootstrap: str) -> None:
    """SIGKILL the broker after it acknowledged 300 messages: after a restart all are delivered,
    each key's messages in order."""
    topic = unique("survive")
    producer = await started(bootstrap, topics=[topic])
    sent = [Message(topic, f"{key}:{n}".encode(), key=str(key).encode()) for n in range(30) for key in range(10)]
    try:
        await producer.publish_many(sent)  # returns once the broker acknowledged every one (acks=all)
    finally:
        await producer.stop()

    infra("kafka-stop", "--kill")
    infra("kafka-start")
    assert written_env()["TONGBAN_KAFKA_BOOTSTRAP"] == bootstrap  # the restarted broker kept its address

    received: list[bytes] = []

    async def collect(batch: Sequence[Message]) -> None:
        received.extend(m.value for m in batch)

    consumer = await started(bootstrap, Subscription([topic], collect, group=unique("g")))
    try:
        await eventually(lambda: len(received) >= len(sent), 60, "every acknowledged message")
    finally:
        await consumer.stop()
    assert sorted(received) == sorted(m.value for m in sent)
    for key in range(10):
        mine = [int(v.split(b":")[1]) for v in received if v.startswith(f"{key}:".encode())]
        assert mine == sorted(mine), f"key {key} out of order: {mine}"
