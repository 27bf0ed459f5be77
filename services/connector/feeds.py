"""Change feeds (库表共享), the provider's side: a table of the department watched by watermark
(水位线). Every ``interval_s`` the connector runs the configured query for the rows whose
watermark column (``updated_at``, a change sequence…) is past the last one published, maps their
columns to catalogue items as the SQL backend does, and publishes each row as a ``FeedChange`` on
the resource's topic (``exchange.feeds.<resource>``). The watermark is stored in the connector's
schema only after Kafka acknowledged the changes: a crash in between publishes them again (a
change is a row's state, so a consumer applying it twice ends the same), never skips one.

In the backend file (``TONGBAN_CONNECTOR_BACKENDS``, next to ``[backends.*]``)::

    [feeds."<信息资源代码>"]
    backend = "<name>"            # a sql backend: its database, and its columns → catalogue items
    query = "SELECT … FROM … WHERE gxsj > :watermark ORDER BY gxsj LIMIT :limit"
    watermark = "gxsj"            # the column the query orders by; monotonic
    subject = "sfzh"              # the column holding the subject's identifier
    subject_type = "id_card"      # or "credit_code" (default id_card)
    start = 1970-01-01T00:00:00Z  # the first watermark: an integer, a date-time or a string
    deleted = "sc"                # optional: a boolean column, true for a (soft-)deleted row
    interval_s = 5.0              # between polls when nothing is waiting (default 5)
    batch = 500                   # rows per poll (default 500)

Ties: when a full batch ends in rows sharing one watermark value, those rows are left for the next
poll (the query asks for rows *past* the watermark, so none is skipped). A row committed late
with a watermark below one already published is not seen: watermark by a value the provider's
database assigns at commit, or by a change table a trigger fills (README "Change feeds").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import tomllib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import Bus
from services.common.contracts.feeds import Change, ChangeOp, feed_topic_name
from services.common.db import driver_connection
from services.common.identifiers import InvalidIdentifier
from services.common.subjects import SubjectType, normalise_subject
from services.connector.backend_config import BackendConfigError, BackendsConfig, BackendType
from services.connector.backends import Ask, Backends, SqlBackend
from services.connector.models import WatermarkKind

log = logging.getLogger("tongban.connector.feeds")

DEFAULT_INTERVAL_S = 5.0
DEFAULT_BATCH = 500
MAX_BATCH = 10_000
KEYS = frozenset(
    {"backend", "query", "watermark", "subject", "subject_type", "start", "deleted", "interval_s", "batch"}
)
QUERY_PARAMETERS = frozenset({"watermark", "limit"})
# A poll holds its watermark row locked; a Kafka outage must not hold it (and a transaction) forever.
POLL_TIMEOUT_S = 60.0

Watermark = int | datetime | str


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One configured change feed."""

    resource_code: str
    backend: str
    query: str
    watermark: str
    subject: str
    subject_type: SubjectType
    start: Watermark
    deleted: str = ""
    interval_s: float = DEFAULT_INTERVAL_S
    batch: int = DEFAULT_BATCH

    @property
    def topic(self) -> str:
        return feed_topic_name(self.resource_code)


def load_feeds(path: Path, backends: BackendsConfig) -> tuple[FeedSpec, ...]:
    """The ``[feeds.*]`` tables of the backend file (already read and checked by
    :func:`~services.connector.backend_config.load_backends`); a wrong one is a
    :class:`BackendConfigError` naming the file, key and reason."""
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    return parse_feeds(document.get("feeds"), str(path), backends)


def parse_feeds(tables: Any, where: str, backends: BackendsConfig) -> tuple[FeedSpec, ...]:
    if tables is None:
        return ()
    if not isinstance(tables, dict):
        raise BackendConfigError(where, "feeds", 'must be a table of [feeds."<resource>"] tables')
    sql = {spec.name for spec in backends.backends if spec.type is BackendType.SQL}
    specs = []
    for resource, table in tables.items():
        key = f"feeds.{resource}"

        def fail(name: str, reason: str, key: str = key) -> BackendConfigError:
            return BackendConfigError(where, f"{key}.{name}" if name else key, reason)

        if not isinstance(table, dict):
            raise fail("", "must be a table")
        try:
            feed_topic_name(resource)
        except ValueError as err:
            raise fail("", str(err)) from None
        if unknown := sorted(set(table) - KEYS):
            raise fail(unknown[0], f"unknown key (expected: {', '.join(sorted(KEYS))})")
        backend = table.get("backend")
        if backend not in sql:
            raise fail("backend", f"must name a sql backend (configured: {', '.join(sorted(sql)) or 'none'})")
        strings = {}
        for name in ("query", "watermark", "subject"):
            value = table.get(name)
            if not isinstance(value, str) or not value.strip():
                raise fail(name, "missing or not a non-empty string")
            strings[name] = value
        check_feed_query(strings["query"], fail)
        subject_type = table.get("subject_type", "id_card")
        if subject_type not in get_args(SubjectType):
            raise fail("subject_type", f"must be one of: {', '.join(get_args(SubjectType))}")
        start = table.get("start")
        if isinstance(start, bool) or not isinstance(start, int | datetime | str):
            raise fail("start", "missing: the first watermark, an integer, a date-time or a string")
        if isinstance(start, datetime) and start.tzinfo is None:
            raise fail("start", "a date-time needs its offset (e.g. 1970-01-01T00:00:00Z)")
        deleted = table.get("deleted", "")
        if not isinstance(deleted, str):
            raise fail("deleted", "must name a boolean column")
        interval = table.get("interval_s", DEFAULT_INTERVAL_S)
        if type(interval) not in (int, float) or not 0.05 <= interval <= 3600:
            raise fail("interval_s", "must be a number of seconds from 0.05 to 3600")
        batch = table.get("batch", DEFAULT_BATCH)
        if type(batch) is not int or not 1 <= batch <= MAX_BATCH:
            raise fail("batch", f"must be an integer from 1 to {MAX_BATCH}")
        specs.append(
            FeedSpec(
                resource,
                backend,
                strings["query"],
                strings["watermark"],
                strings["subject"],
                subject_type,
                start,
                deleted,
                float(interval),
                batch,
            )
        )
    return tuple(specs)


def check_feed_query(query: str, fail: Any) -> None:
    """A read-only, ordered statement binding ``:watermark`` and ``:limit``, nothing else."""
    if not re.match(r"\s*(select|with)\b", query, re.IGNORECASE):
        raise fail("query", "must be a SELECT (or WITH … SELECT) statement")
    if not re.search(r"\border\s+by\b", query, re.IGNORECASE):
        raise fail("query", "must ORDER BY the watermark column")
    bound = set(text(query).compile().params)
    if bound != QUERY_PARAMETERS:
        raise fail("query", "must bind exactly :watermark and :limit")


# --------------------------------------------------------------------------- watermark


def watermark_text(value: Any) -> tuple[WatermarkKind, str]:
    """A watermark as stored: its kind and its text."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a watermark")
    if isinstance(value, int):
        return WatermarkKind.INTEGER, str(value)
    if isinstance(value, datetime):
        return WatermarkKind.TIMESTAMP, value.isoformat()
    return WatermarkKind.TEXT, str(value)


def watermark_value(kind: str, value: str) -> Watermark:
    if kind == WatermarkKind.INTEGER:
        return int(value)
    if kind == WatermarkKind.TIMESTAMP:
        return datetime.fromisoformat(value)
    return value


def held_back(rows: Sequence[Mapping[str, Any]], column: str, batch: int) -> int:
    """How many rows at the end of a full batch share its last watermark and wait for the next
    poll (the next one reads past the watermark, so it would skip their unread peers). None when
    the whole batch shares one value: it is published, or the feed would never move on."""
    if len(rows) < batch:
        return 0
    last = rows[-1][column]
    for tied, row in enumerate(reversed(rows)):
        if row[column] != last:
            return tied
    return 0


class FeedMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.changes = Counter(
            "tongban_connector_feed_changes",
            "Rows of a change feed: published, or skipped (no valid subject identifier)",
            ["resource", "outcome"],
            registry=registry,
        )
        self.poll_errors = Counter(
            "tongban_connector_feed_poll_errors", "Change feed polls that failed", ["resource"], registry=registry
        )


SEED_WATERMARK = """
INSERT INTO connector.feed_watermarks (resource_code, kind, value) VALUES ($1, $2, $3)
ON CONFLICT (resource_code) DO NOTHING
"""
LOCK_WATERMARK = "SELECT kind, value FROM connector.feed_watermarks WHERE resource_code = $1 FOR UPDATE SKIP LOCKED"
SAVE_WATERMARK = """
UPDATE connector.feed_watermarks SET kind = $2, value = $3, published = published + $4, updated_at = now()
WHERE resource_code = $1
"""


class FeedPoller:
    """Polls one feed's table and publishes its changes (a lifespan task: :meth:`run`)."""

    def __init__(
        self,
        spec: FeedSpec,
        backend: SqlBackend,
        engine: AsyncEngine,
        bus: Bus,
        topic: str,
        provider_dept: str,
        metrics: FeedMetrics,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.engine = engine
        self.bus = bus
        self.topic = topic
        self.provider_dept = provider_dept
        self.metrics = metrics
        self.statement = text(spec.query)
        self.items = tuple(backend.spec.mapping.values())

    async def poll_once(self) -> int:
        """One poll: the changes past the stored watermark published, the watermark moved on.
        Returns how many rows were read (0 when another replica holds this feed's row)."""
        spec = self.spec
        kind, start = watermark_text(spec.start)
        async with asyncio.timeout(POLL_TIMEOUT_S), driver_connection(self.engine) as db, db.transaction():
            # The row lock makes one connector replica poll a feed at a time; the others skip it.
            await db.execute(SEED_WATERMARK, spec.resource_code, kind, start)
            stored = await db.fetchrow(LOCK_WATERMARK, spec.resource_code)
            if stored is None:
                return 0
            rows = await self.fetch(watermark_value(stored["kind"], stored["value"]))
            rows = rows[: len(rows) - held_back(rows, spec.watermark, spec.batch)]
            if not rows:
                return 0
            changes = [c for c in (self.change(row) for row in rows) if c is not None]
            if changes:
                await self.bus.publish_many([c.message(self.topic) for c in changes])
            self.metrics.changes.labels(spec.resource_code, "published").inc(len(changes))
            self.metrics.changes.labels(spec.resource_code, "skipped").inc(len(rows) - len(changes))
            kind, value = watermark_text(rows[-1][spec.watermark])
            await db.execute(SAVE_WATERMARK, spec.resource_code, kind, value, len(changes))
        return len(rows)

    async def fetch(self, watermark: Watermark) -> list[dict[str, Any]]:
        async with asyncio.timeout(self.backend.spec.timeout_s), self.backend.engine.connect() as connection:
            result = await connection.execute(self.statement, {"watermark": watermark, "limit": self.spec.batch})
            return [dict(row) for row in result.mappings().all()]

    def change(self, row: Mapping[str, Any]) -> Change | None:
        """A row as a change; None for a row without a valid subject identifier (counted, never
        logged: it may be a citizen's). A column the configuration names but the query does not
        return fails the poll (``KeyError``, ``BackendError``): a misconfiguration, not a row."""
        spec = self.spec
        try:
            subject = normalise_subject(spec.subject_type, str(row[spec.subject]))
        except InvalidIdentifier:
            return None
        deleted = bool(spec.deleted and row[spec.deleted])
        data = self.backend.items(row, Ask(spec.subject_type, subject, self.items))
        _, mark = watermark_text(row[spec.watermark])
        return Change(
            spec.resource_code,
            self.provider_dept,
            ChangeOp.DELETE if deleted else ChangeOp.UPSERT,
            spec.subject_type,
            subject,
            data,
            mark,
            int(time.time() * 1000),
        )

    async def run(self) -> None:
        """Poll until cancelled: again at once after a full batch, else every ``interval_s``."""
        while True:
            read = 0
            try:
                read = await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.metrics.poll_errors.labels(self.spec.resource_code).inc()
                log.warning(
                    "change feed poll failed; will retry",
                    extra={"ctx_resource": self.spec.resource_code, "ctx_error": type(err).__name__},
                )
            if read < self.spec.batch:
                await asyncio.sleep(self.spec.interval_s)


@contextlib.asynccontextmanager
async def running_feeds(
    specs: Sequence[FeedSpec],
    backends: Backends,
    engine: AsyncEngine,
    bus: Bus,
    topic: Any,
    provider_dept: str,
    registry: CollectorRegistry | None,
) -> AsyncIterator[list[FeedPoller]]:
    """A poller task per feed, cancelled on exit. ``topic(name)`` adds the platform's prefix."""
    metrics = FeedMetrics(registry)
    pollers = []
    for spec in specs:
        backend = backends.by_name[spec.backend]
        assert isinstance(backend, SqlBackend)  # parse_feeds admits sql backends only
        pollers.append(FeedPoller(spec, backend, engine, bus, topic(spec.topic), provider_dept, metrics))
    tasks = [asyncio.create_task(p.run(), name=f"connector:feed:{p.spec.resource_code}") for p in pollers]
    try:
        yield pollers
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
