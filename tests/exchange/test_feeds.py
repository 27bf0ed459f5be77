"""库表共享 — change feeds through the exchange, against real PostgreSQL and real Kafka: a page holds
only the granted items, masked; a cursor replays; a long-poll wakes up when a change comes; a
revoked grant is refused at once (even while a page waits); a changed cursor is a problem; each
change a page serves is an audit record with its subject, hashed as a query's, staged before the
page is answered."""

from __future__ import annotations

import asyncio
import base64
import operator
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import KafkaBus, MemoryBus, Message
from services.common.contracts.feeds import Change, ChangeOp, feed_topic_name
from services.common.db import session_factory
from services.common.errors import Problem
from services.common.outbox import Outbox
from services.common.pb import audit_pb2
from services.common.security import Principal, PrincipalType, Role
from services.common.subjects import subject_hash
from services.connector.service import synthetic_residents
from services.exchange.config import ExchangeSettings
from services.exchange.feeds import FeedMetrics, Feeds, KafkaFeedLog, cursor_keys, encode_cursor
from services.exchange.models import GrantView, ResourceView
from services.exchange.models import Outbox as OutboxModel
from services.exchange.service import Exchange
from tests.factories import HOUSEHOLD_ITEMS, SERVICE_ITEMS, credit_code
from tests.stack import infra_env

PURPOSE = SERVICE_ITEMS[0][0]
PROVIDER = credit_code("110101")
CONSUMER = credit_code("110102")
CLIENT = "sys-feeds"
PEOPLE = synthetic_residents(12)


def consumer(client_id: str = CLIENT) -> Principal:
    return Principal(
        type=PrincipalType.SYSTEM,
        sub=client_id,
        client_id=client_id,
        dept=CONSUMER,
        roles=frozenset({Role.CONSUMER}),
        scope=frozenset({Role.CONSUMER}),
        jti=uuid.uuid4().hex,
    )


class Setup:
    """A resource with a feed topic of its own (a fresh prefix per test), a grant, a producer
    standing in for the provider's connector, and the exchange's feeds over real Kafka."""

    def __init__(self, engine: AsyncEngine, settings: ExchangeSettings, bus: KafkaBus, resource: str) -> None:
        self.engine, self.settings, self.bus, self.resource = engine, settings, bus, resource
        self.topic = settings.topic(feed_topic_name(resource))
        outbox = Outbox(OutboxModel, session_factory(engine), MemoryBus("dlq"))  # rows stay for the test
        self.exchange = Exchange(settings, engine, outbox)
        self.feeds = Feeds(settings, self.exchange, KafkaFeedLog(settings), FeedMetrics(None))
        self.grant_id = uuid.uuid4()

    async def publish(self, *people: int, op: ChangeOp = ChangeOp.UPSERT) -> None:
        await self.bus.publish_many([change(self.resource, PEOPLE[i], op).message(self.topic) for i in people])

    async def page(self, cursor: str | None = None, wait: float = 0.0, limit: int = 100, **kw: Any) -> dict[str, Any]:
        return await self.feeds.page(kw.get("who", consumer()), self.resource, PURPOSE, cursor, wait, limit)

    async def set_grant(self, **values: Any) -> None:
        async with session_factory(self.engine).begin() as session:
            await session.execute(update(GrantView).where(GrantView.id == self.grant_id).values(**values))

    async def audits(self) -> list[audit_pb2.AuditEvent]:
        """The audit events staged, in the order they were written (the outbox's ids are random)."""
        async with self.engine.connect() as db:
            rows = (await db.execute(text("SELECT topic, value FROM exchange.outbox ORDER BY created_at"))).all()
        return [audit_pb2.AuditEvent.FromString(v) for t, v in rows if t.endswith("audit.events")]

    async def outbox_holds(self, needle: str) -> int:
        """Outbox rows (what the exchange sends, audit events included) holding ``needle`` anywhere."""
        query = text(
            "SELECT count(*) FROM exchange.outbox WHERE position(convert_to(:n, 'UTF8') IN value) > 0 "
            "OR position(convert_to(:n, 'UTF8') IN coalesce(key, ''::bytea)) > 0 OR headers::text LIKE '%' || :n || '%'"
        )
        async with self.engine.connect() as db:
            return int(await db.scalar(query, {"n": needle}) or 0)

    def hashed(self, person: Any) -> str:
        return subject_hash(self.settings.subject_hash_key, "id_card", person.id_number)


def change(resource: str, person: Any, op: ChangeOp) -> Change:
    return Change(
        resource,
        PROVIDER,
        op,
        "id_card",
        person.id_number,
        {"姓名": person.name, "性别": person.gender, "户籍地址": person.address, "公民身份号码": person.id_number},
        watermark=str(time.time_ns()),
        changed_unix_ms=int(time.time() * 1000),
    )


@pytest.fixture
async def feed(engine: AsyncEngine) -> AsyncIterator[Setup]:
    env = infra_env()
    settings = ExchangeSettings(
        kafka_bootstrap=env["TONGBAN_KAFKA_BOOTSTRAP"], topic_prefix=f"t{uuid.uuid4().hex[:10]}.", feed_max_wait_s=10
    )
    resource = f"101010/{uuid.uuid4().int % 10**6:06d}"
    bus = KafkaBus(env["TONGBAN_KAFKA_BOOTSTRAP"], "test-feeds", settings.topic("exchange.dlq"))
    await bus.start([settings.topic(feed_topic_name(resource))])
    setup = Setup(engine, settings, bus, resource)
    async with session_factory(engine).begin() as session:
        session.add(
            ResourceView(
                code=resource,
                name="居民户籍信息",
                provider_dept=PROVIDER,
                version=1,
                share_type="conditional",
                items=[item.model_dump() for item in HOUSEHOLD_ITEMS],
            )
        )
        session.add(
            GrantView(
                id=setup.grant_id,
                resource_code=resource,
                provider_dept=PROVIDER,
                consumer_dept=CONSUMER,
                client_id=CLIENT,
                # 性别 is not granted; 公民身份号码 is sensitive (masked by its id_card rule)
                items=["姓名", "户籍地址", "公民身份号码"],
                purpose=PURPOSE,
                masking={"姓名": "name"},
                valid_until=datetime.now(UTC) + timedelta(days=30),
                daily_quota=100,
                revoked=False,
            )
        )
    try:
        yield setup
    finally:
        await bus.stop()


def tampered(cursor: str) -> str:
    body, _, mac = cursor.partition(".")
    payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    changed = payload.replace(b'"p":{', b'"p":{"0":0,', 1)  # back to the start of partition 0
    assert changed != payload
    return base64.urlsafe_b64encode(changed).rstrip(b"=").decode() + "." + mac


async def test_a_page_holds_only_granted_items_masked_and_each_change_is_audited(feed: Setup) -> None:
    await feed.publish(0, 1, 2)
    await feed.publish(3, op=ChangeOp.DELETE)
    page = await feed.page(wait=5)
    while page["count"] < 4:  # the four may come over more than one fetch
        more = await feed.page(page["cursor"], wait=5)
        assert more["count"] > 0
        page = {**more, "count": page["count"] + more["count"], "changes": page["changes"] + more["changes"]}
    ids = {p.id_number for p in PEOPLE[:4]}
    assert page["count"] == 4 and page["resource"] == feed.resource and page["provider"] == PROVIDER
    for item in page["changes"]:
        assert set(item["data"]) == {"姓名", "户籍地址", "公民身份号码"}  # 性别 never leaves the exchange
        assert sorted(item["masked"]) == ["公民身份号码", "姓名"]
        assert item["data"]["公民身份号码"] not in ids and "*" in item["data"]["公民身份号码"]
        assert item["subject_type"] == "id_card" and item["changed_at"]
        assert "subject_value" not in item and not any(i in str(item) for i in ids)
    assert sorted(c["op"] for c in page["changes"]) == ["delete", "upsert", "upsert", "upsert"]
    audits = await feed.audits()
    assert len(audits) == 4 and all(a.action == "exchange.feed" and a.outcome == "completed" for a in audits)
    by_position = {c["position"]: c for c in page["changes"]}
    for a in audits:  # one record per change served: its op and position, the items it disclosed
        op, position = a.reason.split("; ")[0].split(" ")
        assert by_position[position]["op"] == op
        assert list(a.fields) == sorted(by_position[position]["data"]) == sorted(["姓名", "户籍地址", "公民身份号码"])
        assert a.consumer_client_id == CLIENT and a.consumer_dept == CONSUMER and a.provider_dept == PROVIDER
        assert (a.resource_code, a.purpose, a.subject_type) == (feed.resource, PURPOSE, "id_card")
        assert a.subject_key_id == feed.settings.subject_hash_key_id
    # Each subject as its keyed hash, the same a query about them is audited with.
    assert sorted(a.subject_hash for a in audits) == sorted(feed.hashed(p) for p in PEOPLE[:4])
    assert await feed.outbox_holds(feed.resource) == 4  # the search finds what the rows hold
    for person in PEOPLE[:4]:
        assert await feed.outbox_holds(person.id_number) == 0  # never the identifier in clear


async def read_to_end(feed: Setup, cursor: str | None, expected: int) -> tuple[list[dict[str, Any]], str]:
    """Every change after ``cursor`` (``expected`` of them), page by page of at most two."""
    changes: list[dict[str, Any]] = []
    while len(changes) < expected:
        page = await feed.page(cursor, limit=2, wait=5)
        assert 0 < page["count"] <= 2
        changes, cursor = changes + page["changes"], page["cursor"]
    assert cursor is not None
    return changes, cursor


async def test_a_cursor_replays_the_same_changes_and_moves_on(feed: Setup) -> None:
    await feed.publish(*range(6))
    first = await feed.page(limit=2, wait=5)
    assert 1 <= first["count"] <= 2
    rest, end = await read_to_end(feed, first["cursor"], 6 - first["count"])
    replayed, end_again = await read_to_end(feed, first["cursor"], 6 - first["count"])
    # Pages may cut the partitions differently; the changes after a cursor are the same ones.
    by_position = operator.itemgetter("position")
    assert sorted(replayed, key=by_position) == sorted(rest, key=by_position) and end_again == end
    everything = first["changes"] + rest
    assert len({c["position"] for c in everything}) == 6  # none twice, none left out
    assert {c["data"]["户籍地址"] for c in everything} == {p.address for p in PEOPLE[:6]}
    empty = await feed.page(end, wait=0.3)
    assert empty["count"] == 0 and empty["cursor"] == end
    # After the end a new change is the next page, and only it.
    await feed.publish(7)
    (latest,), _ = await read_to_end(feed, end, 1)
    assert latest["data"]["户籍地址"] == PEOPLE[7].address


async def test_a_long_poll_wakes_up_when_a_change_comes(feed: Setup) -> None:
    await feed.publish(0)
    head = await feed.page(wait=5)
    audits_before = len(await feed.audits())
    started = time.monotonic()
    waiting = asyncio.create_task(feed.page(head["cursor"], wait=10))
    await asyncio.sleep(1.0)
    assert not waiting.done()  # nothing new yet: it waits
    await feed.publish(5)
    page = await asyncio.wait_for(waiting, 10)
    took = time.monotonic() - started
    assert page["count"] == 1 and page["changes"][0]["data"]["户籍地址"] == PEOPLE[5].address
    assert took < 6, f"woke after {took:.1f} s, not when the change came"
    # A page that waited in vain is empty, discloses nothing and is not audited.
    started = time.monotonic()
    empty = await feed.page(page["cursor"], wait=1.0)
    assert empty["count"] == 0 and 0.9 <= time.monotonic() - started < 5
    assert len(await feed.audits()) == audits_before + 1


async def test_a_revoked_grant_is_refused_at_once_even_while_waiting(feed: Setup) -> None:
    await feed.publish(0)
    head = await feed.page(wait=5)  # the grant is cached by the exchange now: feeds read it afresh
    waiting = asyncio.create_task(feed.page(head["cursor"], wait=10))
    await asyncio.sleep(0.5)
    await feed.set_grant(revoked=True)
    await feed.publish(1)
    with pytest.raises(Problem) as raised:
        await asyncio.wait_for(waiting, 10)
    assert raised.value.status == 403 and raised.value.code == "grant-revoked"
    with pytest.raises(Problem) as again:
        await feed.page(head["cursor"], wait=0)
    assert again.value.code == "grant-revoked"
    denials = [a for a in await feed.audits() if a.outcome == "denied"]
    assert [a.reason for a in denials] == ["grant-revoked", "grant-revoked"]
    assert all(a.action == "exchange.feed" for a in denials)


async def test_a_changed_or_foreign_cursor_is_a_problem_and_discloses_nothing(feed: Setup) -> None:
    await feed.publish(0, 1)
    page = await feed.page(wait=5)
    audits = len(await feed.audits())
    other = encode_cursor(cursor_keys(feed.settings)[0], "sys-other", feed.resource, {0: 0})
    ahead = encode_cursor(cursor_keys(feed.settings)[0], CLIENT, feed.resource, {0: 10**9})
    for bad in (tampered(page["cursor"]), page["cursor"][:-2], "not-a-cursor", other, ahead):
        with pytest.raises(Problem) as raised:
            await feed.page(bad, wait=0)
        assert raised.value.status == 400 and raised.value.code == "feed-cursor-invalid", bad
        body = raised.value.body()
        assert body["type"].endswith("/feed-cursor-invalid") and body["status"] == 400
    assert len(await feed.audits()) == audits  # refused before anything was read


async def test_no_grant_or_another_purpose_is_denied_and_audited(feed: Setup) -> None:
    with pytest.raises(Problem) as raised:
        await feed.page(who=consumer("sys-without-grant"))
    assert raised.value.code == "no-grant"
    await feed.set_grant(valid_until=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(Problem) as expired:
        await feed.page()
    assert expired.value.code == "grant-expired"
    person = Principal(
        type=PrincipalType.PERSON, sub="u", client_id=None, dept=CONSUMER, roles=frozenset(), scope=frozenset(), jti="j"
    )
    with pytest.raises(Problem) as not_system:
        await feed.page(who=person)
    assert not_system.value.code == "not-a-consumer"
    assert sorted(a.reason for a in await feed.audits()) == ["grant-expired", "no-grant", "not-a-consumer"]


async def test_messages_that_are_not_this_resources_changes_are_skipped(feed: Setup) -> None:
    await feed.bus.publish_many(
        [
            Message(feed.topic, b"\xff\x00garbage", b"k"),
            change("101010/999999", PEOPLE[0], ChangeOp.UPSERT).message(feed.topic),
            Change(
                feed.resource, credit_code("110105"), ChangeOp.UPSERT, "id_card", PEOPLE[1].id_number, {"姓名": "x"}
            ).message(feed.topic),  # another department's: not the resource's provider
        ]
    )
    await feed.bus.publish_many(  # an identifier with a wrong check character: its read could not be audited
        [
            Change(feed.resource, PROVIDER, ChangeOp.UPSERT, "id_card", PEOPLE[3].id_number[:-1] + "Z").message(
                feed.topic
            )
        ]
    )
    await feed.publish(2)
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(5):
        page = await feed.page(cursor, wait=2)
        seen += page["changes"]
        cursor = page["cursor"]
        if seen:
            break
    assert [c["data"]["户籍地址"] for c in seen] == [PEOPLE[2].address]


async def test_without_kafka_feeds_are_unavailable_after_the_grant_check(feed: Setup) -> None:
    """The embedded mode runs on an in-process bus: nothing to read a topic from."""
    feeds = Feeds(feed.settings, feed.exchange, None, FeedMetrics(None))
    with pytest.raises(Problem) as raised:
        await feeds.page(consumer(), feed.resource, PURPOSE, None, 0, 10)
    assert raised.value.status == 503 and raised.value.code == "feeds-unavailable"
    with pytest.raises(Problem) as denied:
        await feeds.page(consumer("sys-without-grant"), feed.resource, PURPOSE, None, 0, 10)
    assert denied.value.code == "no-grant"


async def test_past_the_pages_reading_at_once_a_page_is_told_to_retry(feed: Setup) -> None:
    feeds = Feeds(
        feed.settings.model_copy(update={"feed_max_reads": 1}),
        feed.exchange,
        KafkaFeedLog(feed.settings),
        FeedMetrics(None),
    )
    waiting = asyncio.create_task(feeds.page(consumer(), feed.resource, PURPOSE, None, 5, 10))
    await asyncio.sleep(0.5)
    with pytest.raises(Problem) as raised:
        await feeds.page(consumer(), feed.resource, PURPOSE, None, 0, 10)
    assert raised.value.code == "feeds-unavailable" and raised.value.headers == {"Retry-After": "1"}
    await feed.publish(0)
    assert (await asyncio.wait_for(waiting, 10))["count"] == 1
    assert (await feeds.page(consumer(), feed.resource, PURPOSE, None, 0, 10))["count"] == 1  # free again


async def test_a_cursor_past_the_topics_retention_is_410_and_a_fresh_start_works(feed: Setup) -> None:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    await feed.publish(*range(4))
    page = await feed.page(wait=5)  # the changes of at least one partition
    assert page["count"] >= 1
    old = encode_cursor(cursor_keys(feed.settings)[0], CLIENT, feed.resource, dict.fromkeys(range(4), 0))
    # Retention removes the oldest records (here: those of that page) before the consumer came back.
    admin = AIOKafkaAdminClient(bootstrap_servers=feed.settings.kafka_bootstrap)
    await admin.start()
    try:
        read = [tuple(map(int, c["position"].split(":"))) for c in page["changes"]]
        ends = {partition: max(o for p, o in read if p == partition) + 1 for partition, _ in read}
        await admin.delete_records({TopicPartition(feed.topic, p): RecordsToDelete(o) for p, o in ends.items()})
    finally:
        await admin.close()
    with pytest.raises(Problem) as raised:
        await feed.page(old, wait=0)
    assert raised.value.status == 410 and raised.value.code == "feed-cursor-expired"
    await feed.publish(9)
    kept = 4 - page["count"] + 1
    fresh, _ = await read_to_end(feed, None, kept)  # without a cursor: from the oldest change still kept
    assert len(fresh) == kept and PEOPLE[9].address in {c["data"]["户籍地址"] for c in fresh}


async def test_a_page_about_two_people_is_audited_per_person_and_tied_by_its_positions(feed: Setup) -> None:
    await feed.publish(0, 1, 0)  # a person twice (two changes), another once
    changes, _ = await read_to_end(feed, None, 3)
    audits = await feed.audits()
    assert len(audits) == 3
    assert sorted(a.subject_hash for a in audits) == sorted([feed.hashed(PEOPLE[0])] * 2 + [feed.hashed(PEOPLE[1])])
    assert sorted(a.reason.split("; ")[0].split(" ")[1] for a in audits) == sorted(c["position"] for c in changes)
    # The records of one page name the same page: its first and last positions and its size.
    pages: dict[str, list[audit_pb2.AuditEvent]] = {}
    for a in audits:
        pages.setdefault(a.reason.split("; ")[1], []).append(a)
    for name, records in pages.items():
        first, last = name.removeprefix("page ").split(",")[0].split("..")
        assert name.endswith(f", {len(records)} changes")
        positions = sorted(tuple(map(int, a.reason.split("; ")[0].split(" ")[1].split(":"))) for a in records)
        assert (positions[0], positions[-1]) == tuple(tuple(map(int, p.split(":"))) for p in (first, last))
    for person in PEOPLE[:2]:
        assert await feed.outbox_holds(person.id_number) == 0
