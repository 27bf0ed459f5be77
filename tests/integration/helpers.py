"""Helpers of the integration tests."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from services.common.bus import Handler, KafkaBus, Message, Subscription

ROOT = Path(__file__).resolve().parents[2]


def unique(name: str) -> str:
    """A topic or group name no other test (or earlier run) uses."""
    return f"it-{name}-{uuid.uuid4().hex[:8]}"


def collector() -> tuple[list[bytes], Handler]:
    """The values a subscription received, and the handler that collects them."""
    received: list[bytes] = []

    async def collect(batch: Sequence[Message]) -> None:
        received.extend(m.value for m in batch)

    return received, collect


async def eventually(condition: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll ``condition`` (plain or async) until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await holds(condition):
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.1)


async def holds(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = condition()
    return await result if inspect.isawaitable(result) else result


# The tests that kill the broker wait for its return for less than a minute: a consumer that
# stalls then (services/common/bus.py: StallWatch) is made anew sooner than the platform's 60 s.
STALL_AFTER_S = 15.0


async def started(bootstrap: str, *subscriptions: Subscription, topics: Sequence[str] = ()) -> KafkaBus:
    """A started KafkaBus of its own (client id, dead-letter topic) with ``subscriptions``."""
    bus = KafkaBus(bootstrap, client_id=unique("client"), dlq_topic=unique("dlq"), stall_after_s=STALL_AFTER_S)
    for subscription in subscriptions:
        bus.subscribe(subscription)
    await bus.start(topics)
    return bus


async def reread(bootstrap: str, topic: str, partition: int, offset: int) -> Message:
    """The message at ``offset`` of ``topic``'s ``partition``, read as the audit service's replay
    command re-reads a withheld dead letter's message (``KafkaBus.read_at``: no group, nothing
    committed)."""
    return await KafkaBus(bootstrap, client_id=unique("reread"), dlq_topic=unique("dlq")).read_at(
        topic, partition, offset
    )


def written_env() -> dict[str, str]:
    """The addresses infra.py wrote last (they change only if a restart had to take a new port)."""
    lines = (ROOT / "var" / "infra.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)
