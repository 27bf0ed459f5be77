"""The in-process bus of the embedded mode: order, batches, dead letters, request ids; and the
failure handling both buses share (bisection, database outages, poison messages, metrics)."""

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from services.common import bus as bus_module
from services.common.bus import (
    REQUEST_ID_HEADER,
    MemoryBus,
    Message,
    PoisonMessage,
    Subscription,
    run_with_retries,
)
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


async def test_failing_batch_is_split_and_each_message_dead_lettered_alone_after_max_attempts() -> None:
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

    # The batch once, then each message alone exactly max_attempts times.
    assert attempts == [[b"a", b"b"], [b"a"], [b"a"], [b"b"], [b"b"]]
    assert [(m.topic, m.value, m.key) for m in dead.messages] == [(DLQ, b"a", b"k1"), (DLQ, b"b", b"k2")]
    assert dead.messages[0].headers["dlq-reason"] == "RuntimeError: boom"


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


def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus_module, "RETRY_FIRST_DELAY_S", 0.001)
    monkeypatch.setattr(bus_module, "OUTAGE_FIRST_DELAY_S", 0.001)
    monkeypatch.setattr(bus_module, "OUTAGE_MAX_DELAY_S", 0.002)


async def test_one_poison_message_in_a_batch_goes_alone_and_the_others_are_handled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast_retries(monkeypatch)
    handled: list[bytes] = []
    poison_attempts_alone = 0

    async def handler(batch: Sequence[Message]) -> None:
        nonlocal poison_attempts_alone
        if any(m.value == b"m5" for m in batch):
            poison_attempts_alone += len(batch) == 1
            raise ValueError("m5 is not storable\x00" + "x" * 2000)
        handled.extend(m.value for m in batch)

    dead: list[tuple[Message, BaseException]] = []

    async def dead_letter(message: Message, exc: BaseException) -> None:
        dead.append((message, exc))

    batch = [Message("t.work", f"m{i}".encode(), partition=2, offset=100 + i) for i in range(12)]
    await run_with_retries(Subscription(["t.work"], handler, group="g", max_attempts=3), batch, dead_letter)

    assert handled == [m.value for m in batch if m.value != b"m5"]  # in order, the poison one left out
    assert [m.value for m, _ in dead] == [b"m5"]
    assert poison_attempts_alone == 3
    letter = bus_module.dead_letter_of(Subscription(["t.work"], handler, group="g"), DLQ, *dead[0])
    assert letter.topic == DLQ and letter.value == b"m5"
    assert letter.headers["dlq-source"] == "t.work"
    assert letter.headers["dlq-group"] == "g"
    assert (letter.headers["dlq-partition"], letter.headers["dlq-offset"]) == ("2", "105")
    assert letter.headers["dlq-reason"].startswith("ValueError: m5 is not storable")
    assert len(letter.headers["dlq-reason"]) == bus_module.DLQ_REASON_MAX


async def test_database_outage_is_waited_out_without_counting_attempts_or_dead_lettering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast_retries(monkeypatch)
    calls = 0

    async def handler(batch: Sequence[Message]) -> None:
        nonlocal calls
        calls += 1
        if calls <= 50:  # far more than max_attempts: an outage is not a reason to give up
            raise ConnectionRefusedError("database is starting up")

    async def dead_letter(message: Message, exc: BaseException) -> None:
        raise AssertionError(f"dead-lettered during an outage: {exc}")

    batch = [Message("t.work", b"a"), Message("t.work", b"b")]
    await run_with_retries(Subscription(["t.work"], handler, group="g", max_attempts=2), batch, dead_letter)
    assert calls == 51  # the whole batch each time: an outage does not split it either


async def test_poison_message_named_by_the_handler_is_dead_lettered_at_once() -> None:
    seen: list[list[bytes]] = []

    async def handler(batch: Sequence[Message]) -> None:
        seen.append([m.value for m in batch])
        for message in batch:
            if message.value == b"garbage":
                raise PoisonMessage(message, "does not decode")

    dead: list[tuple[bytes, str]] = []

    async def dead_letter(message: Message, exc: BaseException) -> None:
        dead.append((message.value, str(exc)))

    batch = [Message("t.work", v) for v in (b"a", b"garbage", b"b")]
    await run_with_retries(Subscription(["t.work"], handler, group="g", max_attempts=5), batch, dead_letter)
    assert seen == [[b"a", b"garbage", b"b"], [b"a", b"b"]]
    assert dead == [(b"garbage", "does not decode")]


async def test_a_consumer_of_the_dead_letter_topic_never_dead_letters_into_it(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_retries(monkeypatch)
    registry = CollectorRegistry()
    bus = MemoryBus(DLQ, registry=registry)
    calls = 0
    done = asyncio.Event()

    async def fails_seven_times(batch: Sequence[Message]) -> None:
        nonlocal calls
        calls += 1
        if calls <= 7:
            raise RuntimeError("dead-letter store broken")
        done.set()

    bus.subscribe(Subscription(topics=[DLQ], handler=fails_seven_times, group="dlq-store", max_attempts=2))
    await bus.start()
    try:
        await bus.publish(Message(DLQ, b"letter"))
        await asyncio.wait_for(done.wait(), TIMEOUT)
    finally:
        await bus.stop()
    assert calls == 8  # retried past max_attempts: there is nowhere further to send it
    assert registry.get_sample_value("tongban_bus_dead_letters_total", {"topic": DLQ, "group": "dlq-store"}) is None


async def test_metrics_count_dead_letters_per_topic_and_show_queued_messages_as_lag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast_retries(monkeypatch)
    registry = CollectorRegistry()
    bus = MemoryBus(DLQ, registry=registry)
    release = asyncio.Event()

    async def blocked(batch: Sequence[Message]) -> None:
        await release.wait()

    async def always_fails(batch: Sequence[Message]) -> None:
        raise RuntimeError("boom")

    dead = Collector(expected=2)
    bus.subscribe(Subscription(topics=["t.slow"], handler=blocked, group="slow"))
    bus.subscribe(Subscription(topics=["t.bad"], handler=always_fails, group="bad", max_attempts=1))
    bus.subscribe(Subscription(topics=[DLQ], handler=dead, group="dlq-reader"))
    await bus.start()
    try:
        await bus.publish(Message("t.slow", b"first"))
        await asyncio.sleep(0.01)  # taken by the consumer, which now waits
        await bus.publish_many([Message("t.slow", b"2"), Message("t.slow", b"3")])
        await bus.publish_many([Message("t.bad", b"x"), Message("t.bad", b"y")])
        await dead.wait()
        lag = registry.get_sample_value(
            "tongban_bus_consumer_lag", {"group": "slow", "topic": "t.slow", "partition": "0"}
        )
        assert lag == 2
        release.set()
    finally:
        await bus.stop()
    assert registry.get_sample_value("tongban_bus_dead_letters_total", {"topic": "t.bad", "group": "bad"}) == 2


async def failing_then_handled(failures: list[Exception], max_attempts: int) -> tuple[int, list[bytes], list[Message]]:
    """Publish one message to a handler that raises ``failures`` one by one, then handles it;
    (calls, values handled, dead letters)."""
    bus = MemoryBus(DLQ)
    calls = 0
    handled = Collector(expected=1)

    async def flaky(batch: Sequence[Message]) -> None:
        nonlocal calls
        calls += 1
        if calls <= len(failures):
            raise failures[calls - 1]
        await handled(batch)

    dead = Collector(expected=1)
    bus.subscribe(Subscription(topics=["t.work"], handler=flaky, group="g", max_attempts=max_attempts))
    bus.subscribe(Subscription(topics=[DLQ], handler=dead, group="dlq-reader"))
    await bus.start()
    try:
        await bus.publish(Message("t.work", b"a"))
        await handled.wait()
        await asyncio.sleep(0.01)
    finally:
        await bus.stop()
    return calls, [m.value for m in handled.messages], dead.messages


async def test_handler_that_recovers_is_not_dead_lettered() -> None:
    calls, handled, dead = await failing_then_handled([RuntimeError("transient")], max_attempts=2)
    assert (calls, handled, dead) == (2, [b"a"], [])


async def test_a_broker_outage_is_waited_out_not_dead_lettered() -> None:
    """A handler that publishes (the connector's replies) fails while Kafka is down: more failures
    than ``max_attempts`` allows, yet nothing is dead-lettered, and the message goes through."""
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    outage = [KafkaConnectionError("down"), KafkaTimeoutError("down")] * 2
    calls, handled, dead = await failing_then_handled(outage, max_attempts=2)
    assert (calls, handled, dead) == (5, [b"a"], [])
