"""The message bus: one interface, two implementations.

* :class:`KafkaBus` — Apache Kafka through aiokafka: an idempotent producer with ``acks=all``;
  consumers that commit ``offset + 1`` per partition only after the handler has processed the
  batch (at-least-once; handlers are idempotent by message id).
* :class:`MemoryBus` — in-process queues for the embedded single-process mode.

Handlers receive a batch of messages from one partition, in order, so that a consumer that writes
to the database can do it in one transaction; batches of different partitions may be handled
concurrently. A handler that keeps failing is retried with backoff;
after ``max_attempts`` its batch goes to the dead-letter topic and the partition moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.common.logs import (
    REQUEST_ID_HEADER,
    TRACEPARENT_HEADER,
    bound_context,
    continue_trace,
    parse_traceparent,
    request_id_var,
    restored_context,
    trace_var,
)

log = logging.getLogger("tongban.bus")

# Every producer of the platform (and the benchmark's raw-Kafka baseline, to compare like with
# like). linger_ms=0: send at once; under load records still batch while a request is in flight.
PRODUCER_SETTINGS: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 0}


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Sequence[Message]], Awaitable[None]]


@dataclass(slots=True)
class Subscription:
    topics: list[str]
    handler: Handler
    group: str | None  # None: every instance sees every message, from the latest offset
    dlq: str | None = None
    max_attempts: int = 5
    # Throughput consumers (audit) wait for fuller batches; latency consumers answer at once.
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 100


class Bus(Protocol):
    def subscribe(self, subscription: Subscription) -> None: ...
    async def start(self, topics: Sequence[str] = ()) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, message: Message) -> None:
        """Return once the broker has acknowledged the message (``acks=all``)."""

    async def publish_many(self, messages: Sequence[Message]) -> None: ...
    async def ping(self) -> None: ...


def outgoing_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers with the current request id and ``traceparent`` added (unless the message has its
    own), so the logs of sender and consumer join up."""
    added: dict[str, str] = {}
    if (rid := request_id_var.get()) is not None and REQUEST_ID_HEADER not in headers:
        added[REQUEST_ID_HEADER] = rid
    if (trace := trace_var.get()) is not None and TRACEPARENT_HEADER not in headers:
        added[TRACEPARENT_HEADER] = trace.traceparent
    return {**headers, **added} if added else headers


def as_message(record: Any) -> Message:
    """A consumed aiokafka record as a :class:`Message`. Header values are not ours to trust:
    undecodable bytes are replaced (restoring the context then drops them), never raised on."""
    headers = {str(k): v.decode(errors="replace") for k, v in (record.headers or ()) if v is not None}
    return Message(topic=record.topic, value=record.value, key=record.key, headers=headers)


@contextlib.contextmanager
def handling(batch: Sequence[Message]) -> Iterator[None]:
    """Handle ``batch`` in the request id and trace its messages were sent in, and log that it was
    handled. A batch of one trace (a latency consumer's usual batch of one) continues that trace;
    a batch that mixes traces gets a trace of its own, and its log line lists the ones it served."""
    parsed = [parse_traceparent(m.headers.get(TRACEPARENT_HEADER)) for m in batch]
    traces = sorted({p[0] for p in parsed if p is not None})
    one_trace = len(traces) == 1 and all(p is not None for p in parsed)
    extra: dict[str, object] = {"ctx_topic": batch[0].topic, "ctx_count": len(batch)}
    if not one_trace and traces:
        extra["ctx_trace_ids"] = traces
    started = time.perf_counter()
    with restored_context(batch[0].headers) if one_trace else bound_context(None, continue_trace(None)):
        yield
        log.info("batch handled", extra={**extra, "ctx_ms": round((time.perf_counter() - started) * 1000, 1)})


def dead_letter_of(sub: Subscription, default_topic: str, message: Message) -> Message:
    """The dead-letter copy of ``message``: same key and value, its source topic in a header."""
    return Message(
        sub.dlq or default_topic, message.value, message.key, {**message.headers, "dlq-source": message.topic}
    )


async def run_with_retries(sub: Subscription, batch: Sequence[Message], dead_letter: Handler) -> None:
    delay = 0.2
    for attempt in range(1, sub.max_attempts + 1):
        try:
            with handling(batch):
                await sub.handler(batch)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed", extra={"ctx_topic": batch[0].topic, "ctx_attempt": attempt})
            if attempt < sub.max_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
    log.error("moving batch to dead-letter topic", extra={"ctx_topic": batch[0].topic, "ctx_count": len(batch)})
    await dead_letter(batch)


class KafkaBus:
    def __init__(self, bootstrap: str, client_id: str, dlq_topic: str) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._dlq_topic = dlq_topic
        self._subscriptions: list[Subscription] = []
        self._producer: Any = None
        self._consumers: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []

    def subscribe(self, subscription: Subscription) -> None:
        self._subscriptions.append(subscription)

    async def start(self, topics: Sequence[str] = ()) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        await self.ensure_topics([*topics, self._dlq_topic, *(t for s in self._subscriptions for t in s.topics)])
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            request_timeout_ms=15000,
            **PRODUCER_SETTINGS,
        )
        await self._producer.start()
        for sub in self._subscriptions:
            consumer = AIOKafkaConsumer(
                *sub.topics,
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                group_id=sub.group,
                enable_auto_commit=False,
                auto_offset_reset="earliest" if sub.group else "latest",
                fetch_min_bytes=sub.fetch_min_bytes,
                fetch_max_wait_ms=sub.fetch_max_wait_ms,
                max_poll_records=500,
            )
            await consumer.start()
            self._consumers.append(consumer)
            self._tasks.append(asyncio.create_task(self._consume(consumer, sub), name=f"consume:{sub.topics}"))

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create missing topics up front so consumers never subscribe to a void."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        wanted = sorted(set(topics))
        if not wanted:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=self._client_id)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [NewTopic(t, num_partitions=4, replication_factor=1) for t in wanted if t not in existing]
            if missing:
                with contextlib.suppress(Exception):  # a replica may have created them meanwhile
                    await admin.create_topics(missing)
        finally:
            await admin.close()

    async def _consume(self, consumer: Any, sub: Subscription) -> None:
        from aiokafka import TopicPartition

        dead_letter = self._dead_letter(sub)
        while True:
            try:
                records = await consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("poll failed; retrying", extra={"ctx_topics": sub.topics})
                await asyncio.sleep(1.0)
                continue
            if not records:
                continue
            # Partitions are independent: handle their batches concurrently (each still in order),
            # so one partition's slow batch does not hold up the others' latency.
            await asyncio.gather(
                *(run_with_retries(sub, [as_message(r) for r in batch], dead_letter) for batch in records.values())
            )
            if sub.group is not None:
                offsets = {
                    TopicPartition(tp.topic, tp.partition): batch[-1].offset + 1 for tp, batch in records.items()
                }
                await self._commit(consumer, offsets)

    async def _commit(self, consumer: Any, offsets: dict[Any, int]) -> None:
        # A failed commit (e.g. during a rebalance) only means redelivery; handlers are idempotent.
        try:
            await consumer.commit(offsets)
        except Exception:
            log.warning("offset commit failed; messages may be redelivered", exc_info=True)

    def _dead_letter(self, sub: Subscription) -> Handler:
        async def send(batch: Sequence[Message]) -> None:
            await self.publish_many([dead_letter_of(sub, self._dlq_topic, m) for m in batch])

        return send

    async def publish(self, message: Message) -> None:
        await self.publish_many([message])

    async def publish_many(self, messages: Sequence[Message]) -> None:
        futures = [
            await self._producer.send(
                m.topic,
                m.value,
                key=m.key,
                headers=[(k, v.encode()) for k, v in outgoing_headers(m.headers).items()],
            )
            for m in messages
        ]
        await asyncio.gather(*futures)

    async def ping(self) -> None:
        if self._producer is None:
            raise RuntimeError("bus not started")
        await self._producer.client.fetch_all_metadata()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for consumer in self._consumers:
            await consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        self._tasks.clear()
        self._consumers.clear()


class MemoryBus:
    """In-process bus for the embedded mode: same semantics, no durability beyond the process."""

    def __init__(self, dlq_topic: str) -> None:
        self._dlq_topic = dlq_topic
        self._queues: dict[str, list[asyncio.Queue[Message]]] = defaultdict(list)
        self._subscriptions: list[tuple[Subscription, asyncio.Queue[Message]]] = []
        self._groups: set[tuple[str | None, tuple[str, ...]]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0  # subscriptions already consuming: services of one process share this bus

    def subscribe(self, subscription: Subscription) -> None:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        key = (subscription.group, tuple(subscription.topics))
        # Two subscribers in one group share messages in Kafka; here one process owns the group.
        if subscription.group is not None and key in self._groups:
            raise ValueError(f"group {subscription.group} already subscribed in this process")
        self._groups.add(key)
        for topic in subscription.topics:
            self._queues[topic].append(queue)
        self._subscriptions.append((subscription, queue))

    async def start(self, topics: Sequence[str] = ()) -> None:
        for sub, queue in self._subscriptions[self._started :]:
            self._tasks.append(asyncio.create_task(self._consume(sub, queue), name=f"memory:{sub.topics}"))
        self._started = len(self._subscriptions)

    async def _consume(self, sub: Subscription, queue: asyncio.Queue[Message]) -> None:
        async def dead_letter(batch: Sequence[Message]) -> None:
            await self.publish_many([dead_letter_of(sub, self._dlq_topic, m) for m in batch])

        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < 500:
                batch.append(queue.get_nowait())
            await run_with_retries(sub, batch, dead_letter)

    async def publish(self, message: Message) -> None:
        await self.publish_many([message])

    async def publish_many(self, messages: Sequence[Message]) -> None:
        for m in messages:
            m = Message(m.topic, m.value, m.key, outgoing_headers(m.headers))
            for queue in self._queues.get(m.topic, []):
                queue.put_nowait(m)

    async def ping(self) -> None:
        return None

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
