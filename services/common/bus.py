"""The message bus: one interface, two implementations.

* :class:`KafkaBus` — Apache Kafka through aiokafka: an idempotent producer with ``acks=all``;
  consumers that commit ``offset + 1`` per partition only after the handler has processed the
  batch (at-least-once; handlers are idempotent by message id).
* :class:`MemoryBus` — in-process queues for the embedded single-process mode.

Handlers receive a batch of messages from one partition, in order, so that a consumer that writes
to the database can do it in one transaction; batches of different partitions may be handled
concurrently. What happens when a handler fails (:func:`run_with_retries`):

* the database or the broker is out of reach (:func:`services.common.db.database_unavailable`,
  :func:`broker_unavailable`): the same batch is tried again, with capped backoff, for as long as
  the outage lasts — an outage is never a reason to dead-letter, and nothing is committed meanwhile;
* the handler names one message it can never handle (:class:`PoisonMessage`): that message goes
  to the dead-letter topic at once and the rest of the batch is handled;
* anything else: the batch is split in halves until the failing message stands alone (the good
  messages of the batch are handled); a message that still fails ``max_attempts`` times on its
  own goes to the dead-letter topic, with headers saying why, and the partition moves on.

A subscription whose messages carry personal data in clear (``Subscription.personal_data``: the
exchange's requests and replies) dead-letters them *withheld*: the dead letter says where the
message is (source topic, partition, offset, and its timestamp) and why it failed, but holds no
value — the audit service's replay command re-reads the message from its source topic, by offset
(:meth:`KafkaBus.read_at`), while that topic still retains it.

A Kafka consumer that has stopped consuming for good — after a broker restart aiokafka has been
seen to mark its coordinator dead and never find it again — is closed and made anew by a watchdog
(:class:`StallWatch`); the new one resumes from the group's committed offsets (or, without a
group, where the old one was), so at most an uncommitted batch is delivered again.

Metrics (in the registry the bus is given): ``tongban_bus_dead_letters_total{topic,group}``,
``tongban_bus_consumer_lag{group,topic,partition}`` and
``tongban_bus_consumer_restarts_total{group,reason}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.common.db import database_unavailable
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


# Headers of a dead letter (死信). ``dlq-id`` names one dead-lettering, so that a redelivered copy
# of the same dead letter is recognised; the others say where it came from and why.
DLQ_ID = "dlq-id"
DLQ_SOURCE = "dlq-source"
DLQ_REASON = "dlq-reason"
DLQ_GROUP = "dlq-group"
DLQ_PARTITION = "dlq-partition"
DLQ_OFFSET = "dlq-offset"
DLQ_TIMESTAMP = "dlq-timestamp"  # the source record's timestamp (ms): a re-read checks it is the same message
DLQ_WITHHELD = "dlq-withheld"  # present on a dead letter whose message was left out: says why
DLQ_HEADER_PREFIX = "dlq-"
DLQ_REASON_MAX = 500  # characters: enough for a type and a message, not for a whole traceback
WITHHELD_BECAUSE = (
    "personal data in clear (个人信息): the message is not copied; "
    "re-read it from dlq-source at dlq-partition/dlq-offset within that topic's retention"
)

# Waiting out a database outage: first retry soon, then every OUTAGE_MAX_DELAY_S at most, and one
# warning per OUTAGE_WARN_EVERY_S rather than one per retry.
OUTAGE_FIRST_DELAY_S = 0.1
OUTAGE_MAX_DELAY_S = 2.0
OUTAGE_WARN_EVERY_S = 5.0
# Retrying a message that fails on its own (not the database).
RETRY_FIRST_DELAY_S = 0.2
RETRY_MAX_DELAY_S = 5.0

# A consumer that shows one of the stall symptoms (:class:`StallWatch`) this long without receiving
# anything is made anew: longer than a session timeout (10 s) and a rebalance, which it recovers
# from by itself; a broker restart that needs longer is an outage, and it is retried at this pace.
STALL_AFTER_S = 60.0
STALL_CHECK_EVERY_S = 5.0  # the lag check asks the broker for the end offsets: not on every poll
CONSUMER_START_TIMEOUT_S = 30.0
STALLED_STOP_TIMEOUT_S = 5.0
POLL_TIMEOUT_S = 5.0  # a poll asks for at most 1 s of waiting for records


class Stall(StrEnum):
    """Why a consumer was made anew (``reason`` of ``tongban_bus_consumer_restarts_total``)."""

    NO_COORDINATOR = "no-coordinator"  # the group's coordinator marked dead and not found again
    NOT_IN_GROUP = "not-in-group"  # no assignment, a rejoin pending, and it does not happen
    LAG_NOT_FETCHED = "lag-not-fetched"  # its partitions have messages its polls never return
    POLL_FAILING = "poll-failing"  # every poll raises (e.g. its coordination task ended)
    UNRESPONSIVE = "unresponsive"  # the broker does not answer it about its own partitions


# Every producer of the platform (and the benchmark's raw-Kafka baseline, to compare like with
# like). linger_ms=0: send at once; under load records still batch while a request is in flight.
PRODUCER_SETTINGS: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 0}
# A topic the bus creates itself (where no operator made it, as Strimzi's KafkaTopics do) is
# replicated on up to this many brokers; the brokers' min.insync.replicas applies to it.
TOPIC_REPLICATION = 3


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Where a consumed message was read from, and the record's timestamp (ms since the epoch), when
    # the bus knows (Kafka); None when publishing.
    partition: int | None = None
    offset: int | None = None
    timestamp: int | None = None


Handler = Callable[[Sequence[Message]], Awaitable[None]]
DeadLetter = Callable[[Message, BaseException], Awaitable[None]]


class QuotableError(Exception):
    """An exception whose text names no personal data — written from codes, addresses and ids,
    never from a message's content — so that a withheld dead letter keeps it as its reason
    (:func:`dead_letter_of`); of any other exception only the type is kept there."""


class PoisonMessage(QuotableError):
    """Raised by a handler: ``message`` can never be handled (e.g. it does not decode). The bus
    dead-letters it at once, without retries, and handles the rest of the batch. Its reason is
    the handler's own words (:class:`QuotableError`): never quote the message in it."""

    def __init__(self, message: Message, reason: str) -> None:
        super().__init__(reason)
        self.message = message


@dataclass(slots=True)
class Subscription:
    topics: list[str]
    handler: Handler
    group: str | None  # None: every instance sees every message, from the latest offset
    dlq: str | None = None
    max_attempts: int = 5
    # The messages carry personal data in clear (个人信息: a request's subject identifier, a
    # reply's data): their dead letters are withheld (:func:`dead_letter_of`), so that the
    # dead-letter topic, kept longer and read more widely, never holds them.
    personal_data: bool = False
    # Throughput consumers (audit) wait for fuller batches; latency consumers answer at once.
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 100


class BusMetrics:
    """The bus's Prometheus metrics. Made unregistered, then :meth:`export`-ed into the registry of
    the service that reports them (exactly one, so that no count is scraped twice)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.dead_letters = Counter(
            "tongban_bus_dead_letters",
            "Messages moved to the dead-letter topic, by source topic and consumer group",
            ["topic", "group"],
            registry=None,
        )
        self.consumer_lag = Gauge(
            "tongban_bus_consumer_lag",
            "Messages not yet consumed: highwater minus position (Kafka) or queued (in-process)",
            ["group", "topic", "partition"],
            registry=None,
        )
        self.consumer_restarts = Counter(
            "tongban_bus_consumer_restarts",
            "Kafka consumers closed and made anew after they stopped consuming, by group and symptom",
            ["group", "reason"],
            registry=None,
        )
        if registry is not None:
            self.export(registry)

    def export(self, registry: CollectorRegistry) -> None:
        registry.register(self.dead_letters)
        registry.register(self.consumer_lag)
        registry.register(self.consumer_restarts)


class Bus(Protocol):
    metrics: BusMetrics

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


def group_label(sub: Subscription) -> str:
    return sub.group or "-"


def failure_reason(exc: BaseException) -> str:
    """``Type: message``, bounded, for the ``dlq-reason`` header."""
    text = str(exc) if isinstance(exc, PoisonMessage) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= DLQ_REASON_MAX else text[: DLQ_REASON_MAX - 1] + "…"


def safe_reason(sub: Subscription, exc: BaseException) -> str:
    """:func:`failure_reason`, or only the exception's type where the text may quote personal data
    (a ``personal_data`` subscription's exception that is no :class:`QuotableError`)."""
    if sub.personal_data and not isinstance(exc, QuotableError):
        return type(exc).__name__
    return failure_reason(exc)


def dead_letter_of(sub: Subscription, default_topic: str, message: Message, exc: BaseException) -> Message:
    """The dead-letter copy of ``message``: same key and value; its own headers (without those of
    an earlier dead-lettering), plus where it came from and why.

    Withheld when ``sub.personal_data``: an empty value and a ``dlq-withheld`` header instead of
    the message, and as reason only the exception's type — an exception's text may quote what it
    failed on (a database error quotes its parameters) — unless the exception is a
    :class:`QuotableError`. The key stays: on the data plane it is the query id."""
    headers = {k: v for k, v in message.headers.items() if not k.startswith(DLQ_HEADER_PREFIX)}
    withheld = sub.personal_data
    headers |= {
        DLQ_ID: uuid.uuid4().hex,
        DLQ_SOURCE: message.topic,
        DLQ_REASON: safe_reason(sub, exc),
        DLQ_GROUP: sub.group or "",
    }
    if message.partition is not None:
        headers[DLQ_PARTITION] = str(message.partition)
    if message.offset is not None:
        headers[DLQ_OFFSET] = str(message.offset)
    if message.timestamp is not None:
        headers[DLQ_TIMESTAMP] = str(message.timestamp)
    if withheld:
        headers[DLQ_WITHHELD] = WITHHELD_BECAUSE
    return Message(sub.dlq or default_topic, b"" if withheld else message.value, message.key, headers)


def broker_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the broker cannot be reached right now (a handler
    that publishes, such as the connector's, fails so while Kafka is down)."""
    from aiokafka import errors  # the bus's own dependency, imported where it is used

    unreachable = (
        errors.KafkaConnectionError,
        errors.KafkaTimeoutError,
        errors.NodeNotReadyError,
        errors.RequestTimedOutError,
        errors.LeaderNotAvailableError,
        errors.NotLeaderForPartitionError,
    )
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, unreachable):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Outage:
    """Waits out an outage of the database or the broker: capped exponential backoff, one warning
    every few seconds.
    One per consumer, shared by the batches of its partitions, so the warnings do not multiply."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.delay = OUTAGE_FIRST_DELAY_S
        self.since: float | None = None
        self.warned_at = 0.0

    async def wait(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if self.since == now or now - self.warned_at >= OUTAGE_WARN_EVERY_S:
            self.warned_at = now
            log.warning(
                "database or broker unavailable; the batch waits (not dead-lettered, offsets not committed)",
                extra={"ctx_topic": self.topic, "ctx_down_s": round(now - self.since, 1), "ctx_error": repr(exc)},
            )
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, OUTAGE_MAX_DELAY_S)

    def over(self) -> None:
        if self.since is not None:
            log.warning(
                "outage over; the batch went through",
                extra={"ctx_topic": self.topic, "ctx_down_s": round(time.monotonic() - self.since, 1)},
            )
            self.since = None
            self.delay = OUTAGE_FIRST_DELAY_S


async def _attempt(sub: Subscription, batch: Sequence[Message], outage: Outage) -> Exception | None:
    """One handler call, waiting out database outages (which count as no attempt). The failure
    that is not an outage, or None."""
    while True:
        try:
            with handling(batch):
                await sub.handler(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if database_unavailable(exc) or broker_unavailable(exc):
                await outage.wait(exc)
                continue
            return exc
        outage.over()
        return None


async def run_with_retries(
    sub: Subscription, batch: Sequence[Message], dead_letter: DeadLetter | None, outage: Outage | None = None
) -> None:
    """Handle ``batch`` as the module docstring says. ``dead_letter`` None: never give up on a
    message (a consumer of the dead-letter topic itself), retry it until it goes through."""
    if batch:
        await _handle(sub, list(batch), dead_letter, outage or Outage(batch[0].topic))


async def _handle(sub: Subscription, batch: list[Message], dead_letter: DeadLetter | None, outage: Outage) -> None:
    while batch:
        exc = await _attempt(sub, batch, outage)
        if exc is None:
            return
        if isinstance(exc, PoisonMessage) and dead_letter is not None and any(m is exc.message for m in batch):
            log.error("message cannot be handled; dead-lettered", extra=_context(sub, exc.message, exc))
            await dead_letter(exc.message, exc)
            batch = [m for m in batch if m is not exc.message]
            continue
        if len(batch) == 1:
            await _retry_alone(sub, batch[0], exc, dead_letter, outage)
            return
        log.warning(
            "batch failed; splitting it to isolate the message at fault",
            extra={"ctx_topic": batch[0].topic, "ctx_count": len(batch), "ctx_error": safe_reason(sub, exc)},
        )
        middle = len(batch) // 2
        await _handle(sub, batch[:middle], dead_letter, outage)
        batch = batch[middle:]


async def _retry_alone(
    sub: Subscription, message: Message, exc: Exception, dead_letter: DeadLetter | None, outage: Outage
) -> None:
    """``message`` failed on its own once: retry with backoff until ``max_attempts``, then dead-letter."""
    delay, attempt = RETRY_FIRST_DELAY_S, 1
    while True:
        # No traceback where the exception's text may quote personal data: the reason says its type.
        quotable = not sub.personal_data or isinstance(exc, QuotableError)
        log.error(
            "handler failed",
            exc_info=exc if quotable else None,
            extra={**_context(sub, message, exc), "ctx_attempt": attempt},
        )
        if dead_letter is not None and (attempt >= sub.max_attempts or isinstance(exc, PoisonMessage)):
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_DELAY_S)
        attempt += 1
        failed = await _attempt(sub, [message], outage)
        if failed is None:
            return
        exc = failed
    log.error("moving message to the dead-letter topic", extra=_context(sub, message, exc))
    await dead_letter(message, exc)


def _context(sub: Subscription, message: Message, exc: BaseException) -> dict[str, Any]:
    return {
        "ctx_topic": message.topic,
        "ctx_partition": message.partition,
        "ctx_offset": message.offset,
        "ctx_reason": safe_reason(sub, exc),
    }


async def _publish_dead_letter(
    bus: Bus, sub: Subscription, default_topic: str, message: Message, exc: BaseException
) -> None:
    """Publish the dead letter, waiting out a broker outage: it is the message's last home."""
    letter = dead_letter_of(sub, default_topic, message, exc)
    delay = RETRY_FIRST_DELAY_S
    while True:
        try:
            await bus.publish(letter)
            break
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("dead-letter publish failed; retrying", exc_info=True, extra={"ctx_topic": letter.topic})
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY_S)
    bus.metrics.dead_letters.labels(message.topic, group_label(sub)).inc()


def _dead_letter_handler(bus: Bus, sub: Subscription, default_topic: str) -> DeadLetter | None:
    """How ``sub`` dead-letters; None for a subscription to its own dead-letter topic, which would
    otherwise feed its failures back to itself for ever."""
    if (sub.dlq or default_topic) in sub.topics:
        return None

    async def send(message: Message, exc: BaseException) -> None:
        await _publish_dead_letter(bus, sub, default_topic, message, exc)

    return send


def _consumed(record: Any) -> Message:
    """A consumed aiokafka record as a :class:`Message` that knows its partition, offset and timestamp."""
    return dataclasses.replace(
        as_message(record), partition=record.partition, offset=record.offset, timestamp=record.timestamp
    )


class NotRetained(Exception):
    """No message at ``offset`` of ``topic``'s ``partition``: retention removed it (``first`` is
    past it), it was never written (``end`` is not past it), or the topic or partition does not
    exist (``first`` and ``end`` None). ``retention_ms``: the topic's ``retention.ms`` when it
    could be read (-1: kept for ever)."""

    def __init__(
        self, topic: str, partition: int, offset: int, first: int | None, end: int | None, retention_ms: int | None
    ) -> None:
        super().__init__(f"{topic} partition {partition} offset {offset}: not retained")
        self.topic, self.partition, self.offset = topic, partition, offset
        self.first, self.end, self.retention_ms = first, end, retention_ms


def kafka_ssl_context(cafile: str, certfile: str | None = None, keyfile: str | None = None) -> ssl.SSLContext:
    """TLS to the brokers: their certificates checked against ``cafile`` (host names included), and
    the client's own certificate presented when given (mutual TLS, as Strimzi's ``tls`` users)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context


class StallWatch:
    """Whether a Kafka consumer has stopped consuming for good: a :class:`Stall` symptom, seen at
    every check for ``after_s`` while its polls bring nothing.

    A member that merely has nothing to do shows none — one left without partitions because its
    group has more members than the topics have partitions, or one whose partitions have no lag:
    it has a coordinator and an assignment not waiting for a rejoin. So it is never churned.

    The coordinator's state is read from aiokafka's internals (0.14; it has no public health
    check): ``tests/integration/test_bus_stall.py`` pins what is read."""

    def __init__(self, grouped: bool, after_s: float, check_every_s: float = STALL_CHECK_EVERY_S) -> None:
        self.grouped = grouped
        self.after_s = after_s
        self.check_every_s = min(check_every_s, after_s)
        self.since: float | None = None  # when the symptom was first seen, None while well
        self.checked = float("-inf")

    async def stalled(self, consumer: Any, *, received: bool, failed: bool) -> Stall | None:
        """The symptom once it has lasted ``after_s``; None while the consumer is well, or not yet."""
        now = time.monotonic()
        if received:
            self.since = None
            return None
        if now - self.checked < self.check_every_s:
            return None
        self.checked = now
        symptom = Stall.POLL_FAILING if failed else await self.symptom(consumer)
        if symptom is None:
            self.since = None
            return None
        if self.since is None:
            self.since = now
        return symptom if now - self.since >= self.after_s else None

    async def symptom(self, consumer: Any) -> Stall | None:
        if self.grouped:
            coordinator = consumer._coordinator
            if coordinator.coordinator_id is None:
                return Stall.NO_COORDINATOR
            subscription = consumer._subscription.subscription
            if subscription is not None and coordinator.need_rejoin(subscription):
                return Stall.NOT_IN_GROUP
        assigned = sorted(consumer.assignment())
        if not assigned:
            return None
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(assigned), self.check_every_s)
            positions = [await asyncio.wait_for(consumer.position(tp), self.check_every_s) for tp in assigned]
        except asyncio.CancelledError:
            raise
        except Exception:
            return Stall.UNRESPONSIVE
        return Stall.LAG_NOT_FETCHED if any(ends[tp] > at for tp, at in zip(assigned, positions, strict=True)) else None


class KafkaBus:
    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        dlq_topic: str,
        *,
        registry: CollectorRegistry | None = None,
        ssl_context: ssl.SSLContext | None = None,
        stall_after_s: float = STALL_AFTER_S,
    ) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        # Every client of the bus (producer, consumers, admin) connects the same way.
        self._connection: dict[str, Any] = (
            {"security_protocol": "SSL", "ssl_context": ssl_context} if ssl_context is not None else {}
        )
        self._dlq_topic = dlq_topic
        self._stall_after_s = stall_after_s
        self._subscriptions: list[Subscription] = []
        self._producer: Any = None
        self._consumers: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = BusMetrics(registry)

    def subscribe(self, subscription: Subscription) -> None:
        self._subscriptions.append(subscription)

    async def start(self, topics: Sequence[str] = ()) -> None:
        from aiokafka import AIOKafkaProducer

        await self.ensure_topics([*topics, self._dlq_topic, *(t for s in self._subscriptions for t in s.topics)])
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            **self._connection,
            request_timeout_ms=15000,
            **PRODUCER_SETTINGS,
        )
        await self._producer.start()
        for sub in self._subscriptions:
            consumer = self._new_consumer(sub)
            await consumer.start()
            self._consumers.append(consumer)
            self._tasks.append(asyncio.create_task(self._consume(consumer, sub), name=f"consume:{sub.topics}"))

    def _new_consumer(self, sub: Subscription) -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(
            *sub.topics,
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            **self._connection,
            group_id=sub.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if sub.group else "latest",
            fetch_min_bytes=sub.fetch_min_bytes,
            fetch_max_wait_ms=sub.fetch_max_wait_ms,
            max_poll_records=500,
        )

    async def _remade(self, consumer: Any, sub: Subscription, why: Stall, resume: dict[Any, int]) -> Any:
        """A new consumer for ``sub`` in place of the stalled ``consumer`` (closed, as far as it
        still can be). A group's new member starts from the group's committed offsets; without
        a group — which would start at the latest offset — it resumes at ``resume``, the next
        offset of each partition the old one handled. A new consumer that cannot start (the
        broker is still away) is tried again until it does."""
        log.warning(
            "Kafka consumer stalled (%s) for %.0f s; closing it and starting a new one",
            why,
            self._stall_after_s,
            extra={"ctx_topics": sub.topics, "ctx_group": sub.group},
        )
        self.metrics.consumer_restarts.labels(group_label(sub), why).inc()
        with contextlib.suppress(Exception):  # a stalled consumer may not close cleanly: not waited for long
            await asyncio.wait_for(consumer.stop(), STALLED_STOP_TIMEOUT_S)
        while True:
            fresh = self._new_consumer(sub)
            self._consumers[self._consumers.index(consumer)] = fresh  # stop() closes the current one
            consumer = fresh
            try:
                await asyncio.wait_for(fresh.start(), CONSUMER_START_TIMEOUT_S)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("new Kafka consumer did not start; trying again", exc_info=True)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(fresh.stop(), CONSUMER_START_TIMEOUT_S)
                await asyncio.sleep(STALL_CHECK_EVERY_S)
        if sub.group is None:
            for tp in fresh.assignment():
                if tp in resume:
                    fresh.seek(tp, resume[tp])
        return fresh

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create missing topics up front so consumers never subscribe to a void."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        wanted = sorted(set(topics))
        if not wanted:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=self._client_id, **self._connection)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            brokers = len((await admin.describe_cluster())["brokers"])
            replication = max(1, min(TOPIC_REPLICATION, brokers))
            missing = [
                NewTopic(t, num_partitions=4, replication_factor=replication) for t in wanted if t not in existing
            ]
            if missing:
                with contextlib.suppress(Exception):  # a replica may have created them meanwhile
                    await admin.create_topics(missing)
        finally:
            await admin.close()

    async def read_at(self, topic: str, partition: int, offset: int, timeout_s: float = 30.0) -> Message:
        """The message at ``offset`` of ``topic``'s ``partition`` (knowing its partition, offset and
        timestamp), read by a consumer of its own: assigned, no group, nothing committed, stopped
        at once. :class:`NotRetained` when there is none — never the next message instead; a Kafka
        error (``aiokafka.errors.KafkaError``) when the topic may not be read."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import OffsetOutOfRangeError

        partitions, retention_ms = await self._topic_facts(topic)
        if partition not in partitions:  # beginning_offsets would wait for ever on it
            raise NotRetained(topic, partition, offset, None, None, retention_ms)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            **self._connection,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",  # an offset out of range is an error, not another message
            max_poll_records=1,
        )
        await consumer.start()
        try:
            where = TopicPartition(topic, partition)
            consumer.assign([where])
            first = (await consumer.beginning_offsets([where]))[where]
            end = (await consumer.end_offsets([where]))[where]
            if not first <= offset < end:
                raise NotRetained(topic, partition, offset, first, end, retention_ms)
            consumer.seek(where, offset)
            try:
                records = await consumer.getmany(where, timeout_ms=int(timeout_s * 1000), max_records=1)
            except OffsetOutOfRangeError:  # retention removed it between the check and the fetch
                raise NotRetained(topic, partition, offset, None, end, retention_ms) from None
            found = records.get(where, [])
            # A compacted or transactional log may hold no record at the offset itself: the fetch
            # then starts at the next one, which is not the message asked for.
            if not found or found[0].offset != offset:
                raise NotRetained(topic, partition, offset, first, end, retention_ms)
            return _consumed(found[0])
        finally:
            await consumer.stop()

    async def _topic_facts(self, topic: str) -> tuple[set[int], int | None]:
        """The topic's partitions (none: no such topic) and its ``retention.ms`` — None when it
        cannot be read (no DescribeConfigs right): used only to explain, never to decide."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
        from aiokafka.errors import UnknownTopicOrPartitionError, for_code

        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=self._client_id, **self._connection)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
            if described["error_code"] == UnknownTopicOrPartitionError.errno:
                return set(), None
            if described["error_code"] != 0:  # e.g. no right to describe it: not the same as absent
                raise for_code(described["error_code"])()
            partitions = {p["partition"] for p in described["partitions"]}
            try:
                [response] = await admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})]
                )
                for error, _, _, _, entries in response.resources:
                    for name, value, *_ in entries if error == 0 else ():
                        if name == "retention.ms" and value is not None:
                            return partitions, int(value)
            except Exception:
                log.debug("retention.ms not readable", exc_info=True, extra={"ctx_topic": topic})
            return partitions, None
        finally:
            await admin.close()

    async def _consume(self, consumer: Any, sub: Subscription) -> None:
        from aiokafka import TopicPartition

        dead_letter = _dead_letter_handler(self, sub, self._dlq_topic)
        outage = Outage(",".join(sub.topics))
        lagging: set[tuple[str, str, str]] = set()
        watch = StallWatch(sub.group is not None, self._stall_after_s)
        resume: dict[Any, int] = {}  # the next offset of each partition handled (see _remade)
        while True:
            try:
                # Bounded: aiokafka's getmany waits without limit for an assignment while a
                # rebalance is in progress — for ever, when the rejoin never completes.
                records = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), POLL_TIMEOUT_S)
            except TimeoutError:
                records = {}
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("poll failed; retrying", extra={"ctx_topics": sub.topics})
                if (why := await watch.stalled(consumer, received=False, failed=True)) is not None:
                    consumer = await self._remade(consumer, sub, why, resume)
                await asyncio.sleep(1.0)
                continue
            if (why := await watch.stalled(consumer, received=bool(records), failed=False)) is not None:
                consumer = await self._remade(consumer, sub, why, resume)
                continue
            if records:
                # Partitions are independent: handle their batches concurrently (each still in
                # order), so one partition's slow batch does not hold up the others' latency.
                await asyncio.gather(
                    *(
                        run_with_retries(sub, [_consumed(r) for r in batch], dead_letter, outage)
                        for batch in records.values()
                    )
                )
                offsets = {
                    TopicPartition(tp.topic, tp.partition): batch[-1].offset + 1 for tp, batch in records.items()
                }
                resume.update(offsets)
                if sub.group is not None:
                    await self._commit(consumer, offsets)
            lagging = await self._record_lag(consumer, sub, lagging)

    async def _record_lag(
        self, consumer: Any, sub: Subscription, before: set[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        """Set the lag of every assigned partition whose highwater is known; drop the labels of
        partitions no longer assigned (after a rebalance). Never fails the consumer."""
        now: set[tuple[str, str, str]] = set()
        try:
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is None:  # not fetched yet
                    continue
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
                labels = (group_label(sub), tp.topic, str(tp.partition))
                self.metrics.consumer_lag.labels(*labels).set(max(highwater - position, 0))
                now.add(labels)
        except asyncio.CancelledError:
            raise
        except Exception:  # e.g. a partition revoked meanwhile: the next poll tries again
            log.debug("consumer lag not updated", exc_info=True)
            return before
        for labels in before - now:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(*labels)
        return now

    async def _commit(self, consumer: Any, offsets: dict[Any, int]) -> None:
        # A failed commit (e.g. during a rebalance) only means redelivery; handlers are idempotent.
        try:
            await consumer.commit(offsets)
        except Exception:
            log.warning("offset commit failed; messages may be redelivered", exc_info=True)

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
    """In-process bus for the embedded mode: same semantics, no durability beyond the process.

    The services of the embedded process share one MemoryBus, so its metrics are exported once:
    by ``registry`` here, or later with ``bus.metrics.export(registry)``. Its consumer lag is the
    queue length of each subscription (label ``partition`` is "0"), read at scrape time.
    """

    def __init__(self, dlq_topic: str, *, registry: CollectorRegistry | None = None) -> None:
        self._dlq_topic = dlq_topic
        self._queues: dict[str, list[asyncio.Queue[Message]]] = defaultdict(list)
        self._subscriptions: list[tuple[Subscription, asyncio.Queue[Message]]] = []
        self._groups: set[tuple[str | None, tuple[str, ...]]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0  # subscriptions already consuming: services of one process share this bus
        self.metrics = BusMetrics(registry)

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
        self.metrics.consumer_lag.labels(group_label(subscription), ",".join(subscription.topics), "0").set_function(
            queue.qsize
        )

    async def start(self, topics: Sequence[str] = ()) -> None:
        for sub, queue in self._subscriptions[self._started :]:
            self._tasks.append(asyncio.create_task(self._consume(sub, queue), name=f"memory:{sub.topics}"))
        self._started = len(self._subscriptions)

    async def _consume(self, sub: Subscription, queue: asyncio.Queue[Message]) -> None:
        dead_letter = _dead_letter_handler(self, sub, self._dlq_topic)
        outage = Outage(",".join(sub.topics))
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < 500:
                batch.append(queue.get_nowait())
            await run_with_retries(sub, batch, dead_letter, outage)

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
