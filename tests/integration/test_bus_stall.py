"""The bus's stall watchdog against the real broker: a consumer that has stopped consuming for
good is made anew and nothing is lost, and a member that merely has nothing to do is left alone.

A stall seen in CI (after a broker restart, aiokafka marked its coordinator dead and the
consumer received nothing more) cannot be produced on demand; these tests break a live
consumer's parts the way that stall leaves them — its fetching stopped, its coordinator marked
dead and never found again — and check what the watchdog reads of aiokafka's internals
(:class:`services.common.bus.StallWatch`) against the version the lock file pins."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from services.common.bus import KafkaBus, Message, Stall, Subscription
from tests.integration.helpers import collector, eventually, started, unique

# Short, for the tests; still longer than a group's rebalance, which a member notices at its next
# heartbeat (every 3 s): shorter, a member waiting for the others to rejoin would be made anew,
# making them rebalance again, for ever (a CI run showed it with 2 s).
STALL_AFTER_S = 5.0
IDLE_STALL_AFTER_S = 10.0  # two members of one group, so a rebalance with another member in it


async def watched(
    bootstrap: str, sub: Subscription, registry: CollectorRegistry, stall_after_s: float = STALL_AFTER_S
) -> KafkaBus:
    bus = KafkaBus(
        bootstrap, client_id=unique("client"), dlq_topic=unique("dlq"), registry=registry, stall_after_s=stall_after_s
    )
    bus.subscribe(sub)
    await bus.start()
    return bus


def restarts(registry: CollectorRegistry, group: str, reason: Stall) -> float:
    return registry.get_sample_value("tongban_bus_consumer_restarts_total", {"group": group, "reason": reason}) or 0.0


def only_consumer(bus: KafkaBus) -> Any:
    [consumer] = bus._consumers
    return consumer


async def test_a_consumer_whose_fetching_stopped_is_made_anew_and_what_came_meanwhile_is_handled(
    bootstrap: str,
) -> None:
    topic, group, registry = unique("stall"), unique("g"), CollectorRegistry()
    handled, handler = collector()

    producer = await started(bootstrap, topics=[topic])
    bus = await watched(bootstrap, Subscription([topic], handler, group=group), registry)
    try:
        await producer.publish(Message(topic, b"before", key=b"k"))
        await eventually(lambda: handled == [b"before"], 30, "the first message")
        broken = only_consumer(bus)
        broken.pause(*broken.assignment())  # it polls on, and never gets a record again
        await producer.publish(Message(topic, b"meanwhile", key=b"k"))
        await eventually(lambda: handled == [b"before", b"meanwhile"], 60, "the message sent during the stall")
        assert only_consumer(bus) is not broken
        assert restarts(registry, group, Stall.LAG_NOT_FETCHED) == 1
    finally:
        await bus.stop()
        await producer.stop()


async def test_a_consumer_left_without_its_coordinator_is_made_anew(bootstrap: str) -> None:
    topic, group, registry = unique("stall"), unique("g"), CollectorRegistry()
    handled, handler = collector()

    producer = await started(bootstrap, topics=[topic])
    bus = await watched(bootstrap, Subscription([topic], handler, group=group), registry)
    try:
        broken = only_consumer(bus)
        coordinator = broken._coordinator
        await eventually(lambda: coordinator.coordinator_id is not None and bool(broken.assignment()), 30, "a member")

        async def lost() -> None:  # the look-up that never ends
            await asyncio.Event().wait()

        coordinator.ensure_coordinator_known = lost
        coordinator.coordinator_dead()
        await eventually(lambda: restarts(registry, group, Stall.NO_COORDINATOR) == 1, 60, "the watchdog")
        await producer.publish(Message(topic, b"after", key=b"k"))
        await eventually(lambda: handled == [b"after"], 60, "a message to the new member")
        assert only_consumer(bus) is not broken
    finally:
        await bus.stop()
        await producer.stop()


async def test_a_consumer_without_a_group_resumes_where_it_was(bootstrap: str) -> None:
    """Without a group a new consumer would start at the latest offset: the message published
    while the old one was stalled would be skipped. It resumes where the old one was."""
    topic, registry = unique("stall"), CollectorRegistry()
    handled, handler = collector()

    producer = await started(bootstrap, topics=[topic])
    bus = await watched(bootstrap, Subscription([topic], handler, group=None), registry)
    try:
        await eventually(lambda: bool(only_consumer(bus).assignment()), 30, "the partitions")
        await producer.publish(Message(topic, b"before", key=b"k"))
        await eventually(lambda: handled == [b"before"], 30, "the first message")
        stalled = only_consumer(bus)
        stalled.pause(*stalled.assignment())
        await producer.publish(Message(topic, b"meanwhile", key=b"k"))
        await eventually(lambda: handled == [b"before", b"meanwhile"], 60, "the message sent during the stall")
        assert restarts(registry, "-", Stall.LAG_NOT_FETCHED) == 1
    finally:
        await bus.stop()
        await producer.stop()


async def test_a_member_without_partitions_is_not_churned(bootstrap: str) -> None:
    """Two members, one partition: one of them has nothing to do, for ever. It has a coordinator
    and an assignment (an empty one) and is not made anew, however long it idles; the other
    handles each message once."""
    topic, group = unique("one-partition"), unique("g")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    handled, handler = collector()

    registries = [CollectorRegistry(), CollectorRegistry()]
    buses = [
        await watched(bootstrap, Subscription([topic], handler, group=group), r, IDLE_STALL_AFTER_S) for r in registries
    ]
    producer = await started(bootstrap)
    try:
        members = [only_consumer(bus) for bus in buses]
        await eventually(
            lambda: sorted(len(m.assignment()) for m in members) == [0, 1], 60, "one member with the partition"
        )
        for n in range(3):
            await producer.publish(Message(topic, f"m{n}".encode(), key=b"k"))
        await eventually(lambda: handled == [b"m0", b"m1", b"m2"], 30, "the messages")
        await asyncio.sleep(2 * IDLE_STALL_AFTER_S + 1)  # idle for two stall periods, checked at each
        assert [only_consumer(bus) for bus in buses] == members
        for registry in registries:
            assert all(restarts(registry, group, reason) == 0 for reason in Stall)
        assert handled == [b"m0", b"m1", b"m2"]
    finally:
        for bus in buses:
            await bus.stop()
        await producer.stop()
