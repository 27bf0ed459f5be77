"""库表共享 — the connector's watermark poller against a real PostgreSQL table (a scratch schema of
the test database standing in for a department's database) publishing to real Kafka: changed rows
are published once, in order, mapped to catalogue items; the watermark moves only past what Kafka
acknowledged; ties at the end of a full batch wait for the next poll; one replica polls at a time;
a wrong [feeds.*] table stops the connector with the file, key and reason."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import KafkaBus
from services.common.contracts.feeds import Change, ChangeOp, parse_change
from services.common.db import driver_connection
from services.connector.backend_config import BackendConfigError, load_backends, parse_backends
from services.connector.backends import Backends, SqlBackend
from services.connector.feeds import FeedMetrics, FeedPoller, FeedSpec, held_back, load_feeds, parse_feeds
from services.connector.service import synthetic_residents
from services.exchange.config import ExchangeSettings
from services.exchange.feeds import KafkaFeedLog
from tests.stack import infra_env

SCHEMA = "feed_scratch"
PROVIDER = "111101000000198608"
PEOPLE = synthetic_residents(8)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
QUERY = "SELECT sfzh, xm, dz, sc, gxsj FROM feed_scratch.rk WHERE gxsj > :watermark ORDER BY gxsj, sfzh LIMIT :limit"


@pytest.fixture
async def table(tier_engine: AsyncEngine) -> AsyncIterator[str]:
    """A population register (人口库) table with an update time per row; the database's URL."""
    async with driver_connection(tier_engine) as db:
        await db.execute(f"CREATE SCHEMA {SCHEMA}")
        await db.execute(f"CREATE TABLE {SCHEMA}.rk (sfzh text, xm text, dz text, sc boolean, gxsj timestamptz)")
    try:
        yield tier_engine.url.render_as_string(hide_password=False)
    finally:
        async with driver_connection(tier_engine) as db:
            await db.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
            await db.execute("DELETE FROM connector.feed_watermarks WHERE resource_code LIKE 'T%'")


def document(url: str, **feed: Any) -> dict[str, Any]:
    return {
        "backends": {
            "rkk": {
                "type": "sql",
                "resources": [],
                "url": url,
                "query": "SELECT xm FROM feed_scratch.rk WHERE sfzh = :subject",
                "columns": {"sfzh": "公民身份号码", "xm": "姓名", "dz": "户籍地址"},
            },
            "demo": {"type": "demo", "resources": []},
        },
        "feeds": {
            feed.pop("resource", "T101010/000001"): {
                "backend": "rkk",
                "query": QUERY,
                "watermark": "gxsj",
                "subject": "sfzh",
                "deleted": "sc",
                "start": T0,
                **feed,
            }
        },
    }


async def insert(engine: AsyncEngine, *rows: tuple[str, str, bool, datetime]) -> None:
    async with driver_connection(engine) as db:
        await db.executemany(
            "INSERT INTO feed_scratch.rk VALUES ($1, $2, $3, $4, $5)",
            [(s, n, f"{n}的住址", d, t) for s, n, d, t in rows],
        )


class Poll:
    """A poller over the scratch table and real Kafka (a fresh topic prefix), and what it published."""

    def __init__(self, engine: AsyncEngine, spec: FeedSpec, backends: Backends, bus: KafkaBus, prefix: str) -> None:
        self.metrics = CollectorRegistry()
        backend = backends.by_name["rkk"]
        assert isinstance(backend, SqlBackend)
        self.topic = prefix + spec.topic
        self.poller = FeedPoller(spec, backend, engine, bus, self.topic, PROVIDER, FeedMetrics(self.metrics))
        self.log = KafkaFeedLog(ExchangeSettings(kafka_bootstrap=infra_env()["TONGBAN_KAFKA_BOOTSTRAP"]))
        self.positions: dict[int, int] | None = None

    async def published(self, wait: float = 1.0) -> list[Change]:
        """The changes published since the last call, in watermark order."""
        read = await self.log.read(self.topic, self.positions, 1000, wait)
        self.positions = read.positions
        return sorted((parse_change(r.value) for r in read.records), key=lambda c: (c.watermark, c.subject_value))

    def count(self, outcome: str) -> float:
        return (
            self.metrics.get_sample_value(
                "tongban_connector_feed_changes_total", {"resource": self.poller.spec.resource_code, "outcome": outcome}
            )
            or 0.0
        )


@pytest.fixture
async def poll(tier_engine: AsyncEngine, table: str, request: pytest.FixtureRequest) -> AsyncIterator[Poll]:
    overrides = getattr(request, "param", {})
    doc = document(table, **overrides)
    config = parse_backends(doc, "backends.toml", {})
    (spec,) = parse_feeds(doc["feeds"], "backends.toml", config)
    prefix = f"t{uuid.uuid4().hex[:10]}."
    bus = KafkaBus(infra_env()["TONGBAN_KAFKA_BOOTSTRAP"], "test-connector-feeds", prefix + "exchange.dlq")
    await bus.start([prefix + spec.topic])
    backends = Backends(config)
    try:
        yield Poll(tier_engine, spec, backends, bus, prefix)
    finally:
        await backends.aclose()
        await bus.stop()


async def stored_watermark(engine: AsyncEngine, resource: str) -> tuple[str, str, int] | None:
    async with driver_connection(engine) as db:
        row = await db.fetchrow(
            "SELECT kind, value, published FROM connector.feed_watermarks WHERE resource_code = $1", resource
        )
    return None if row is None else (row["kind"], row["value"], row["published"])


async def test_changed_rows_are_published_once_mapped_to_items(tier_engine: AsyncEngine, poll: Poll) -> None:
    a, b, c = PEOPLE[:3]
    await insert(
        tier_engine,
        (a.id_number, a.name, False, T0 + timedelta(seconds=1)),
        (b.id_number, b.name, False, T0 + timedelta(seconds=2)),
        ("110101199003070000", "坏号码", False, T0 + timedelta(seconds=3)),  # a wrong check digit
    )
    assert await poll.poller.poll_once() == 3
    first = await poll.published()
    assert [ch.subject_value for ch in first] == [a.id_number, b.id_number]
    assert first[0] == Change(
        "T101010/000001",
        PROVIDER,
        ChangeOp.UPSERT,
        "id_card",
        a.id_number,
        {"公民身份号码": a.id_number, "姓名": a.name, "户籍地址": f"{a.name}的住址"},
        (T0 + timedelta(seconds=1)).isoformat(),
        first[0].changed_unix_ms,
    )
    assert poll.count("published") == 2 and poll.count("skipped") == 1
    assert await stored_watermark(tier_engine, "T101010/000001") == (
        "timestamp",
        (T0 + timedelta(seconds=3)).isoformat(),
        2,
    )
    # Nothing new: nothing published again.
    assert await poll.poller.poll_once() == 0
    assert await poll.published(wait=0.5) == []
    # An update and a (soft) deletion come as changes of their own.
    async with driver_connection(tier_engine) as db:
        await db.execute(
            "UPDATE feed_scratch.rk SET dz = '新地址', gxsj = $2 WHERE sfzh = $1", a.id_number, T0 + timedelta(hours=1)
        )
        await db.execute(
            "UPDATE feed_scratch.rk SET sc = true, gxsj = $2 WHERE sfzh = $1", b.id_number, T0 + timedelta(hours=2)
        )
    await insert(tier_engine, (c.id_number, c.name, False, T0 + timedelta(hours=3)))
    assert await poll.poller.poll_once() == 3
    second = await poll.published()
    assert [(ch.subject_value, ch.op) for ch in second] == [
        (a.id_number, ChangeOp.UPSERT),
        (b.id_number, ChangeOp.DELETE),
        (c.id_number, ChangeOp.UPSERT),
    ]
    assert second[0].data["户籍地址"] == "新地址"


@pytest.mark.parametrize("poll", [{"batch": 2, "resource": "T101010/000002"}], indirect=True)
async def test_ties_at_the_end_of_a_full_batch_wait_for_the_next_poll(tier_engine: AsyncEngine, poll: Poll) -> None:
    a, b, c, d = PEOPLE[:4]
    same = T0 + timedelta(seconds=5)
    await insert(
        tier_engine,
        (a.id_number, a.name, False, T0 + timedelta(seconds=1)),
        (b.id_number, b.name, False, same),
        (c.id_number, c.name, False, same),
        (d.id_number, d.name, False, T0 + timedelta(seconds=9)),
    )
    # Batch of two ends in b (tied with c, not yet read): a alone is published.
    assert await poll.poller.poll_once() == 1
    assert [ch.subject_value for ch in await poll.published()] == [a.id_number]
    # b and c fill a batch and share one value: both go (or the feed would never move on).
    assert await poll.poller.poll_once() == 2
    assert await poll.poller.poll_once() == 1
    rest = await poll.published()
    assert sorted(ch.subject_value for ch in rest) == sorted([b.id_number, c.id_number, d.id_number])
    assert await poll.poller.poll_once() == 0
    assert poll.count("published") == 4  # each row once


async def test_one_replica_polls_a_feed_at_a_time(tier_engine: AsyncEngine, poll: Poll) -> None:
    a = PEOPLE[0]
    await insert(tier_engine, (a.id_number, a.name, False, T0 + timedelta(seconds=1)))
    assert await poll.poller.poll_once() == 1  # seeds the watermark row
    await insert(tier_engine, (PEOPLE[1].id_number, PEOPLE[1].name, False, T0 + timedelta(seconds=2)))
    async with driver_connection(tier_engine) as other, other.transaction():
        # Another replica is polling this feed: it holds the row.
        await other.fetchrow(
            "SELECT 1 FROM connector.feed_watermarks WHERE resource_code = $1 FOR UPDATE", "T101010/000001"
        )
        assert await poll.poller.poll_once() == 0
    assert await poll.poller.poll_once() == 1


def test_held_back_keeps_only_a_trailing_tie_of_a_full_batch() -> None:
    rows = [{"w": 1}, {"w": 2}, {"w": 2}]
    assert held_back(rows, "w", 3) == 2
    assert held_back(rows, "w", 4) == 0  # not full: the query found everything past the watermark
    assert held_back([{"w": 2}, {"w": 2}], "w", 2) == 0  # all tied: published


@pytest.mark.parametrize(
    ("feed", "key", "reason"),
    [
        ({"backend": "demo"}, "feeds.R.backend", "must name a sql backend"),
        ({"query": "SELECT sfzh FROM rk WHERE gxsj > :watermark"}, "feeds.R.query", "ORDER BY"),
        ({"query": "SELECT 1 FROM rk WHERE a > :watermark ORDER BY a"}, "feeds.R.query", ":watermark and :limit"),
        ({"query": "DELETE FROM rk ORDER BY a"}, "feeds.R.query", "SELECT"),
        ({"start": None}, "feeds.R.start", "the first watermark"),
        ({"start": datetime(2026, 1, 1)}, "feeds.R.start", "offset"),
        ({"subject_type": "passport"}, "feeds.R.subject_type", "one of"),
        ({"batch": 0}, "feeds.R.batch", "integer"),
        ({"interval": 5}, "feeds.R.interval", "unknown key"),
    ],
)
def test_a_wrong_feed_table_names_the_key_and_the_reason(feed: dict[str, Any], key: str, reason: str) -> None:
    doc = document("postgresql+asyncpg://u@h/db", resource="R")
    table = doc["feeds"]["R"]
    for name, value in feed.items():
        if value is None:
            table.pop(name)
        else:
            table[name] = value
    config = parse_backends(doc, "backends.toml", {})
    with pytest.raises(BackendConfigError) as raised:
        parse_feeds(doc["feeds"], "backends.toml", config)
    assert raised.value.file == "backends.toml" and raised.value.key == key
    assert reason in raised.value.reason


def test_the_readme_example_is_read_as_it_stands(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Change feeds (库表共享)", 1)[1]
    path = tmp_path / "backends.toml"
    path.write_text(section.split("```toml\n", 1)[1].split("```", 1)[0], encoding="utf-8")
    config = load_backends(path, {"RKK_DB_PASSWORD": "pw"})
    (spec,) = load_feeds(path, config)
    assert spec.resource_code == "101010/000001" and spec.backend == "rkk" and spec.batch == 500
    assert spec.start == datetime(2026, 1, 1, tzinfo=UTC) and spec.deleted == "sc"
    assert spec.topic == "exchange.feeds.101010.000001"
