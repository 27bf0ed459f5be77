"""The platform's bus on a three-node KRaft cluster (``deploy/local/infra.py cluster-up``: replication
3, ``min.insync.replicas`` 2, as deploy/k8s runs Kafka), with a partition leader SIGKILLed under load.

Producers publish through :class:`KafkaBus` (``acks=all``, idempotent) while a consumer group reads.
After the kill: no acknowledged message is lost, publishing completes again (another replica leads),
and the group goes on consuming.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.common.bus import Message, Subscription
from tests.integration.helpers import eventually, started, unique
from tests.stack import infra

# Three JVMs start on two shared cores: about half a minute, more under load.
pytestmark = pytest.mark.timeout(420)

LOAD_BEFORE_KILL = 300  # messages acknowledged before the leader dies
LOAD_AFTER_KILL = 300  # and after, to show publishing completes again
PRODUCERS = 4


async def partitions(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
        return sorted(described["partitions"], key=lambda p: p["partition"])
    finally:
        await admin.close()


async def topic_config(bootstrap: str, topic: str, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        # DescribeConfigs: resources → (error code, message, type, name, [(name, value, …)])
        [(_, _, _, _, entries)] = response.resources
        return next(str(entry[1]) for entry in entries if entry[0] == name)
    finally:
        await admin.close()


async def test_the_bus_replicates_its_topics_three_times_with_two_in_sync(kafka_cluster: str) -> None:
    cluster = kafka_cluster
    topic = unique("replicated")
    bus = await started(cluster, topics=[topic])  # the bus creates the topic (ensure_topics)
    await bus.stop()
    found = await partitions(cluster, topic)
    assert found and all(len(p["replicas"]) == 3 for p in found), found
    assert await topic_config(cluster, topic, "min.insync.replicas") == "2"


async def test_killing_a_partition_leader_under_load_loses_no_acknowledged_message(kafka_cluster: str) -> None:
    cluster = kafka_cluster
    topic = unique("leader-kill")
    received: Counter[bytes] = Counter()

    async def collect(batch: Sequence[Message]) -> None:
        received.update(m.value for m in batch)

    consumer = await started(cluster, Subscription([topic], collect, group=unique("g")), topics=[topic])
    producer = await started(cluster, topics=[topic])
    acked: list[bytes] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def produce(worker: int) -> None:
        n = 0
        while not stop.is_set():
            value = f"{worker}:{n}".encode()
            n += 1
            try:
                await producer.publish(Message(topic, value, key=value))  # keys spread over the partitions
            except Exception as exc:  # not acknowledged: allowed, counted, and not expected back
                failures.append(type(exc).__name__)
                await asyncio.sleep(0.1)
            else:
                acked.append(value)

    victim = (await partitions(cluster, topic))[0]["leader"]
    workers = [asyncio.create_task(produce(w)) for w in range(PRODUCERS)]
    try:
        await eventually(lambda: len(acked) >= LOAD_BEFORE_KILL, 120, "load before the kill")
        acked_before, consumed_before = len(acked), sum(received.values())
        await asyncio.to_thread(infra, "cluster-kill", str(victim))
        killed_at = time.monotonic()
        await eventually(
            lambda: len(acked) >= acked_before + LOAD_AFTER_KILL, 120, "publishing to complete again after the kill"
        )
        recovered_s = time.monotonic() - killed_at
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await producer.stop()
    try:
        await eventually(lambda: set(acked) <= received.keys(), 120, "every acknowledged message to be consumed")
        after = await partitions(cluster, topic)
    finally:
        await consumer.stop()
        await asyncio.to_thread(infra, "cluster-start", str(victim))  # whole again, for the next test
    lost = set(acked) - received.keys()
    duplicates = sum(count - 1 for count in received.values())
    print(
        f"\nkafka cluster, node {victim} (leader of partition 0) killed: {len(acked)} acknowledged "
        f"({acked_before} before the kill), {len(lost)} lost, {len(failures)} publishes failed "
        f"({sorted(Counter(failures).items())}), {duplicates} delivered twice, "
        f"{LOAD_AFTER_KILL} acknowledged again within {recovered_s:.1f} s"
    )
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {sorted(lost)[:5]}"
    assert sum(received.values()) > consumed_before, "the group stopped consuming after the kill"
    assert after[0]["leader"] not in (victim, -1), after[0]
    assert all(victim not in p["isr"] and len(p["isr"]) == 2 for p in after), after
