"""The in-process bus of the embedded mode: order, batches, dead letters, request ids."""

import asyncio
from collections.abc import Sequence

import pytest

from services.common.bus import REQUEST_ID_HEADER, MemoryBus, Message, Subscription
from services.common.logs import request_id_var

DLQ = "test.dlq"
TIMEOUT = 5.0


class Collector:
    """A handler that records the batches it is given and signals once ``expected`` messages arrived."""

    def __init__(self, expected: int) -> None:
        self.batches: list[list[Message]] = []
        self.expected = expected
        self.done = asyncio.Event()

    async def __call__(self, batch: Sequence[Message]) -> None:
        self.batches.append(list(batch))
        if sum(len(b) for b in self.batches) >= self.expected:
            self.done.set()

    @property
    def messages(self) -> list[Message]:
        return [m for b in self.batches for m in b]

    async def wait(self) -> None:
        await asyncio.wait_for(self.done.wait(), TIMEOUT)


async def test_subscription_receives_messages_in_order_as_one_batch() -> None:
    bus = MemoryBus(DLQ)
    collector = Collector(expected=3)
    bus.subscribe(Subscription(topics=["t.orders"], handler=collector, group="g"))
    await bus.start()
    try:
        await bus.publish_many([Message("t.orders", f"m{i}".encode(), key=b"k") for i in range(3)])
        await collector.wait()
    finally:
        await bus.stop()

    assert [m.value for m in collector.messages] == [b"m0", b"m1", b"m2"]
    assert [len(b) for b in collector.batches] == [3]  # published together → handled together
    assert all(m.topic == "t.orders" and m.key == b"k" for m in collector.messages)


async def test_messages_published_one_by_one_keep_their_order() -> None:
    bus = MemoryBus(DLQ)
    collector = Collector(expected=20)
    bus.subscribe(Subscription(topics=["t.seq"], handler=collector, group="g"))
    await bus.start()
    try:
        for i in range(20):
            await bus.publish(Message("t.seq", str(i).encode()))
            if i % 3 == 0:
                await asyncio.sleep(0)  # let the consumer take partial batches
        await collector.wait()
    finally:
        await bus.stop()

    assert [int(m.value) for m in collector.messages] == list(range(20))


async def test_only_subscribed_topics_are_delivered() -> None:
    bus = MemoryBus(DLQ)
    collector = Collector(expected=1)
    bus.subscribe(Subscription(topics=["t.a"], handler=collector, group="g"))
    await bus.start()
    try:
        await bus.publish(Message("t.b", b"other"))
        await bus.publish(Message("t.a", b"mine"))
        await collector.wait()
        await asyncio.sleep(0.01)
    finally:
        await bus.stop()

    assert [m.value for m in collector.messages] == [b"mine"]


async def test_every_subscription_sees_every_message() -> None:
    bus = MemoryBus(DLQ)
    first, second = Collector(expected=1), Collector(expected=1)
    bus.subscribe(Subscription(topics=["t.fan"], handler=first, group="g1"))
    bus.subscribe(Subscription(topics=["t.fan"], handler=second, group=None))
    await bus.start()
    try:
        await bus.publish(Message("t.fan", b"x"))
        await first.wait()
        await second.wait()
    finally:
        await bus.stop()

    assert [m.value for m in first.messages] == [m.value for m in second.messages] == [b"x"]


def test_same_group_cannot_subscribe_twice_in_one_process() -> None:
    bus = MemoryBus(DLQ)
    bus.subscribe(Subscription(topics=["t.a"], handler=Collector(1), group="g"))
    with pytest.raises(ValueError, match="group g already subscribed"):
        bus.subscribe(Subscription(topics=["t.a"], handler=Collector(1), group="g"))


async def test_failing_handler_moves_batch_to_dead_letter_topic_after_max_attempts() -> None:
    bus = MemoryBus(DLQ)
    attempts: list[list[bytes]] = []

    async def always_fails(batch: Sequence[Message]) -> None:
        attempts.append([m.value for m in batch])
        raise RuntimeError("boom")

    dead = Collector(expected=2)
    bus.subscribe(Subscription(topics=["t.work"], handler=always_fails, group="g", max_attempts=2))
    bus.subscribe(Subscription(topics=[DLQ], handler=dead, group="dlq-reader"))
    await bus.start()
    try:
        await bus.publish_many([Message("t.work", b"a", key=b"k1"), Message("t.work", b"b", key=b"k2")])
        await dead.wait()
    finally:
        await bus.stop()

    assert attempts == [[b"a", b"b"], [b"a", b"b"]]  # tried exactly max_attempts times
    assert [(m.topic, m.value, m.key) for m in dead.messages] == [(DLQ, b"a", b"k1"), (DLQ, b"b", b"k2")]


async def test_subscription_dead_letter_topic_overrides_the_bus_default() -> None:
    bus = MemoryBus(DLQ)

    async def always_fails(batch: Sequence[Message]) -> None:
        raise RuntimeError("boom")

    own_dlq, default_dlq = Collector(expected=1), Collector(expected=1)
    bus.subscribe(Subscription(topics=["t.work"], handler=always_fails, group="g", dlq="t.work.dlq", max_attempts=1))
    bus.subscribe(Subscription(topics=["t.work.dlq"], handler=own_dlq, group="r1"))
    bus.subscribe(Subscription(topics=[DLQ], handler=default_dlq, group="r2"))
    await bus.start()
    try:
        await bus.publish(Message("t.work", b"a"))
        await own_dlq.wait()
        await asyncio.sleep(0.01)
    finally:
        await bus.stop()

    assert [m.value for m in own_dlq.messages] == [b"a"]
    assert default_dlq.messages == []


async def test_handler_that_recovers_is_not_dead_lettered() -> None:
    bus = MemoryBus(DLQ)
    calls = 0
    handled = Collector(expected=1)

    async def fails_once(batch: Sequence[Message]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("transient")
        await handled(batch)

    dead = Collector(expected=1)
    bus.subscribe(Subscription(topics=["t.work"], handler=fails_once, group="g", max_attempts=2))
    bus.subscribe(Subscription(topics=[DLQ], handler=dead, group="dlq-reader"))
    await bus.start()
    try:
        await bus.publish(Message("t.work", b"a"))
        await handled.wait()
        await asyncio.sleep(0.01)
    finally:
        await bus.stop()

    assert calls == 2
    assert [m.value for m in handled.messages] == [b"a"]
    assert dead.messages == []


async def test_dead_letter_message_records_its_source_topic() -> None:
    # KafkaBus adds ``dlq-source`` so a dead letter can be traced and replayed; the embedded bus
    # promises the same semantics.
    bus = MemoryBus(DLQ)

    async def always_fails(batch: Sequence[Message]) -> None:
        raise RuntimeError("boom")

    dead = Collector(expected=1)
    bus.subscribe(Subscription(topics=["t.work"], handler=always_fails, group="g", max_attempts=1))
    bus.subscribe(Subscription(topics=[DLQ], handler=dead, group="dlq-reader"))
    await bus.start()
    try:
        await bus.publish(Message("t.work", b"a", headers={"x": "1"}))
        await dead.wait()
    finally:
        await bus.stop()

    assert dead.messages[0].headers.get("x") == "1"
    assert dead.messages[0].headers.get("dlq-source") == "t.work"


async def test_request_id_travels_in_the_request_id_header() -> None:
    bus = MemoryBus(DLQ)
    collector = Collector(expected=3)
    bus.subscribe(Subscription(topics=["t.rid"], handler=collector, group="g"))
    await bus.start()
    try:
        token = request_id_var.set("req-123")
        try:
            await bus.publish(Message("t.rid", b"with-rid", headers={"other": "v"}))
            await bus.publish(Message("t.rid", b"explicit", headers={REQUEST_ID_HEADER: "upstream"}))
        finally:
            request_id_var.reset(token)
        await bus.publish(Message("t.rid", b"without-rid"))
        await collector.wait()
    finally:
        await bus.stop()

    headers = {m.value: m.headers for m in collector.messages}
    assert headers[b"with-rid"] == {"other": "v", "request-id": "req-123"}
    assert headers[b"explicit"] == {"request-id": "upstream"}  # an id already set is not overwritten
    assert "request-id" not in headers[b"without-rid"]


async def test_subscriptions_added_after_start_begin_consuming_on_next_start() -> None:
    bus = MemoryBus(DLQ)
    first, second = Collector(expected=2), Collector(expected=2)
    bus.subscribe(Subscription(topics=["t.a"], handler=first, group="g1"))
    await bus.start()
    try:
        bus.subscribe(Subscription(topics=["t.a"], handler=second, group="g2"))
        await bus.start()  # a second service of the same process starting on the shared bus
        await bus.publish(Message("t.a", b"x"))
        await bus.publish(Message("t.a", b"y"))
        await first.wait()
        await second.wait()
    finally:
        await bus.stop()

    assert [m.value for m in first.messages] == [b"x", b"y"]
    assert [m.value for m in second.messages] == [b"x", b"y"]
