"""KafkaBus against the real broker: retries, the dead-letter topic, offsets committed only after
a batch was handled, and acknowledged messages surviving a killed broker."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from services.common.bus import Message, Subscription
from tests.integration.helpers import eventually, started, unique, written_env
from tests.stack import infra


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
    finally:
        await worker.stop()
        await reader.stop()


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
