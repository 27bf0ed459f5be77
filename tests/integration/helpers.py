"""Helpers of the integration tests."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.bus import KafkaBus, Message, Subscription

ROOT = Path(__file__).resolve().parents[2]


def unique(name: str) -> str:
    """A topic or group name no other test (or earlier run) uses."""
    return f"it-{name}-{uuid.uuid4().hex[:8]}"


async def eventually(condition: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll ``condition`` (plain or async) until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await holds(condition):
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.1)


async def holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = condition()
    return await result if inspect.isawaitable(result) else result


async def started(bootstrap: str, *subscriptions: Subscription, topics: Sequence[str] = ()) -> KafkaBus:
    """A started KafkaBus of its own (client id, dead-letter topic) with ``subscriptions``."""
    bus = KafkaBus(bootstrap, client_id=unique("client"), dlq_topic=unique("dlq"))
    for subscription in subscriptions:
        bus.subscribe(subscription)
    await bus.start(topics)
    return bus


async def reread(bootstrap: str, topic: str, partition: int, offset: int) -> Message:
    """The message at ``offset`` of ``topic``'s ``partition``, read as docs/operations.md tells an
    operator to re-read a withheld dead letter's message (no group, nothing committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="none")
    await consumer.start()
    try:
        where = TopicPartition(topic, partition)
        consumer.assign([where])
        consumer.seek(where, offset)
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    return Message(record.topic, record.value, record.key, partition=record.partition, offset=record.offset)


def written_env() -> dict[str, str]:
    """The addresses infra.py wrote last (they change only if a restart had to take a new port)."""
    lines = (ROOT / "var" / "infra.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)
