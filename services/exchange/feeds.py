"""Change feeds (库表共享), the consumer's side: ``GET /v1/exchange/feeds/{resource}`` serves the
changes a provider's connector publishes on ``exchange.feeds.<resource>`` (services/connector/feeds.py)
to a consuming system holding a live grant for the resource and purpose.

- **Long-poll**: a page waits up to ``wait`` seconds for a change and returns as soon as one comes.
- **Minimised and masked** as a query's answer is: each change carries only the granted items the
  resource still catalogues, masked by the grant's rules (:func:`effective_masking`).
- **Replayable**: a page ends with a cursor — the position in each partition of the topic, bound
  to the consuming system and the resource, signed (HMAC) so that a changed cursor is refused —
  and reading from a cursor again returns the same changes, for as long as the topic keeps them.
- **Checked on every page, at once**: the grant is read from the projection (no cache), and again
  after the wait, so a revocation stops a consumer's next page, even one already waiting.
- **Audited per change**: every change a page delivers is one ``exchange.feed`` record with its
  subject (keyed hash and key id, as a query's), its op, the items disclosed and its position in
  the page (``reason``), all staged in one unit of work before the page is answered — so a person's
  report (数据使用记录) shows feed reads as it shows queries (README "Change feeds").

The exchange keeps no copy of the changes: it reads the topic itself, from the cursor's positions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast, get_args

import orjson
from prometheus_client import CollectorRegistry, Counter

from services.common.bus import Message, kafka_ssl_context
from services.common.contracts.audit import AuditAction, AuditContext, audit_message
from services.common.contracts.feeds import feed_topic_name, parse_change
from services.common.db import driver_connection
from services.common.errors import Problem
from services.common.identifiers import InvalidIdentifier
from services.common.masking import apply_masking, effective_masking
from services.common.security import Principal
from services.common.settings import CommonSettings
from services.common.subjects import SubjectType, normalise_subject, subject_hash
from services.exchange import repository
from services.exchange.config import ExchangeSettings
from services.exchange.models import GrantView, ResourceView
from services.exchange.problems import ExchangeProblem
from services.exchange.service import Denied, Exchange, check_grant, granted_fields

log = logging.getLogger("tongban.exchange.feeds")

CURSOR_VERSION = 1
CURSOR_MAC_BYTES = 16
CURSOR_MAX = 4096  # characters: a topic of a few hundred partitions
# Kafka's own wait for data, per fetch: short, so a page that has data returns at once.
FETCH_WAIT_MS = 200
# When the cursor is behind the topic's end, data is there: wait at least this long for the fetch.
DATA_WAIT_MS = 5000

Positions = dict[int, int]  # partition → offset of the next change to read


# --------------------------------------------------------------------------- cursor


def cursor_keys(settings: CommonSettings) -> list[bytes]:
    """The keys a cursor is signed with (the first) and checked against (all): derived from the
    subject hash keys (every replica holds them, and a rotation keeps the retired ones), so a
    cursor outlives a replica and a key rotation without a secret of its own."""
    current = settings.subject_hash_key_id
    ordered = sorted(settings.subject_hash_keys.items(), key=lambda kv: kv[0] != current)
    return [hmac.new(key.encode(), b"tongban feed cursor v1", hashlib.sha256).digest() for _, key in ordered]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(key: bytes, client_id: str, resource_code: str, positions: Mapping[int, int]) -> str:
    """An opaque cursor: the positions, bound to the system and resource, with their MAC."""
    payload = orjson.dumps(
        {
            "v": CURSOR_VERSION,
            "c": client_id,
            "r": resource_code,
            "p": {str(p): o for p, o in sorted(positions.items())},
        }
    )
    body = b64(payload)
    return f"{body}.{b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:CURSOR_MAC_BYTES])}"


def invalid_cursor(detail: str) -> Problem:
    return ExchangeProblem.FEED_CURSOR_INVALID.problem(
        f"{detail} Use a cursor exactly as a page of this feed returned it, or start without one."
    )


def decode_cursor(keys: list[bytes], cursor: str, client_id: str, resource_code: str) -> Positions:
    """The positions of a cursor this exchange issued to ``client_id`` for ``resource_code``;
    anything else (changed, truncated, another system's or resource's) is ``feed-cursor-invalid``."""
    body, dot, mac = cursor.partition(".")
    try:
        given = unb64(mac)
    except ValueError:
        given = b""
    expected = [hmac.new(key, body.encode(), hashlib.sha256).digest()[:CURSOR_MAC_BYTES] for key in keys]
    if not dot or not any(hmac.compare_digest(given, e) for e in expected):
        raise invalid_cursor("The cursor was not issued by this platform, or was changed.")
    payload = orjson.loads(unb64(body))  # signed by us: well formed
    if payload.get("v") != CURSOR_VERSION or payload.get("c") != client_id or payload.get("r") != resource_code:
        raise invalid_cursor("The cursor belongs to another system or resource.")
    return {int(p): int(o) for p, o in payload["p"].items()}


# --------------------------------------------------------------------------- the topic


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Read:
    """Records read from a feed topic, in partition then offset order, and the positions after them."""

    records: list[Record]
    positions: Positions


class CursorExpired(Exception):
    """The cursor points before what the topic still keeps (its retention removed the changes)."""


class CursorAhead(Exception):
    """The cursor points past the end of the topic (it was recreated): not a position of it."""


class FeedLog(Protocol):
    async def read(self, topic: str, positions: Positions | None, limit: int, wait_s: float) -> Read: ...


class KafkaFeedLog:
    """Reads a feed topic from given positions with a short-lived consumer of no group: the
    cursor, not Kafka, keeps the consumer's place, so any replica serves any page."""

    def __init__(self, settings: CommonSettings) -> None:
        self.bootstrap = settings.kafka_bootstrap
        self.connection: dict[str, Any] = {}
        if settings.kafka_security_protocol == "SSL" and settings.kafka_ssl_cafile is not None:
            context = kafka_ssl_context(
                settings.kafka_ssl_cafile, settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile
            )
            self.connection = {"security_protocol": "SSL", "ssl_context": context}

    async def read(self, topic: str, positions: Positions | None, limit: int, wait_s: float) -> Read:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import OffsetOutOfRangeError

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="tongban-exchange-feeds",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",  # never skip silently: a position out of range is an error
            fetch_max_wait_ms=FETCH_WAIT_MS,
            max_poll_records=limit,
            **self.connection,
        )
        await consumer.start()
        try:
            if topic not in await consumer.topics():  # no change published yet
                return Read([], dict(positions or {}))
            # Assigning the topic's partitions needs their number: a consumer learns it only for a
            # topic it subscribes to, or once it was given partitions of it; ask for partition 0.
            consumer.assign([TopicPartition(topic, 0)])
            partitions = consumer.partitions_for_topic(topic)
            for _ in range(50):
                if partitions:
                    break
                await asyncio.sleep(0.02)
                partitions = consumer.partitions_for_topic(topic)
            tps = [TopicPartition(topic, p) for p in sorted(partitions or {0})]
            consumer.assign(tps)
            begin = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
            start: Positions = {}
            for tp in tps:
                position = (positions or {}).get(tp.partition, begin[tp])
                if position < begin[tp]:
                    raise CursorExpired(f"partition {tp.partition}: {position} < {begin[tp]}")
                if position > end[tp]:
                    raise CursorAhead(f"partition {tp.partition}: {position} > {end[tp]}")
                consumer.seek(tp, position)
                start[tp.partition] = position
            waiting = any(start[tp.partition] < end[tp] for tp in tps)
            timeout_ms = max(int(wait_s * 1000), DATA_WAIT_MS if waiting else 0)
            try:
                batches = await consumer.getmany(*tps, timeout_ms=timeout_ms, max_records=limit)
            except OffsetOutOfRangeError as err:  # retention removed them between the check and the fetch
                raise CursorExpired(str(err)) from None
            records = [
                Record(tp.partition, r.offset, r.value)
                for tp, batch in sorted(batches.items(), key=lambda kv: kv[0].partition)
                for r in batch
            ]
            after = dict(start)
            for record in records:
                after[record.partition] = record.offset + 1
            return Read(records, after)
        finally:
            await consumer.stop()


# --------------------------------------------------------------------------- the rules


class FeedMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.pages = Counter(
            "tongban_exchange_feed_pages",
            "Change feed pages served, by outcome (changes, empty, denied, cursor_refused, busy)",
            ["outcome"],
            registry=registry,
        )
        self.changes = Counter(
            "tongban_exchange_feed_changes", "Changes served on change feed pages", ["resource"], registry=registry
        )
        self.undecodable = Counter(
            "tongban_exchange_feed_undecodable",
            "Messages of a feed topic that were not a change of its resource (or had no valid subject), skipped",
            ["resource"],
            registry=registry,
        )


def change_view(
    record: Record, data: dict[str, str], masked: list[str], op: str, subject_type: str, at: int
) -> dict[str, Any]:
    """A change as the consumer gets it: never the subject's identifier (only its type)."""
    return {
        "position": position_of(record),
        "op": op,
        "subject_type": subject_type,
        "changed_at": datetime.fromtimestamp(at / 1000, UTC).isoformat() if at else None,
        "data": data,
        "masked": masked,
    }


def position_of(record: Record) -> str:
    return f"{record.partition}:{record.offset}"


@dataclass(frozen=True, slots=True)
class Served:
    """A change as served (``view``) and whom it is about, as audit names a subject: the keyed
    hash of the normalised identifier — never the identifier itself."""

    view: dict[str, Any]
    subject_type: str
    subject_hash: str


class Feeds:
    """Serves change feed pages (lifespan-owned; ``log`` None when the platform runs without
    Kafka, the embedded mode: feeds are then unavailable)."""

    def __init__(self, settings: ExchangeSettings, exchange: Exchange, log: FeedLog | None, metrics: FeedMetrics):
        self.settings = settings
        self.exchange = exchange
        self.log = log
        self.metrics = metrics
        self.keys = cursor_keys(settings)
        self.reading = 0  # pages reading Kafka now (at most settings.feed_max_reads)

    def audit(self, ctx: AuditContext, *, outcome: str, reason: str) -> Any:
        return audit_message(
            self.settings.topic("audit.events"),
            "exchange",
            AuditAction.EXCHANGE_FEED,
            ctx,
            outcome=outcome,
            reason=reason,
        )

    async def record(self, *messages: Message) -> None:
        """The page's audit records, durable (in the outbox, one transaction) before the page is
        answered: fail closed — if they cannot be written, the page is not served."""
        async with self.exchange.outbox.unit_of_work(wait_for_publish=False) as uow:
            for message in messages:
                uow.emit(message)

    def disclosures(self, ctx: AuditContext, served: list[Served]) -> list[Message]:
        """One ``exchange.feed`` record per change served: its subject (hash and key id, as a
        query's record), the items it disclosed, and in ``reason`` its op, its position and the
        page's first and last positions and size — what ties the records of one page together
        (with the request id); e.g. ``upsert 0:41; page 0:40..1:7, 3 changes``."""
        first, last = served[0].view["position"], served[-1].view["position"]
        key_id = self.settings.subject_hash_key_id
        return [
            self.audit(
                ctx.with_(
                    subject_type=s.subject_type,
                    subject_hash=s.subject_hash,
                    subject_key_id=key_id,
                    fields=tuple(sorted(s.view["data"])),
                ),
                outcome="completed",
                reason=f"{s.view['op']} {s.view['position']}; page {first}..{last}, {len(served)} changes",
            )
            for s in served
        ]

    async def deny(self, ctx: AuditContext, denied: Denied) -> Problem:
        self.metrics.pages.labels("denied").inc()
        await self.record(self.audit(denied.context or ctx, outcome="denied", reason=str(denied.code)))
        return denied

    async def authorised(
        self, principal: Principal, resource_code: str, purpose: str, ctx: AuditContext
    ) -> tuple[ResourceView, GrantView, AuditContext]:
        """The resource and the caller's live grant for it and the purpose, read afresh."""
        try:
            self.exchange.authorise(principal)
            resource, grant = await self.exchange.grant_for(principal, resource_code, purpose, fresh=True)
            ctx = ctx.with_(provider=resource.provider_dept)
            return resource, check_grant(grant, resource, purpose, [], datetime.now(UTC)), ctx
        except Denied as denied:
            raise await self.deny(ctx, denied) from None

    async def page(
        self,
        principal: Principal,
        resource_code: str,
        purpose: str,
        cursor: str | None,
        wait_s: float | None,
        limit: int,
    ) -> dict[str, Any]:
        """One page of ``resource_code``'s changes after ``cursor`` (from the oldest kept, without one)."""
        ctx = AuditContext(
            actor=principal.sub,
            consumer_dept=principal.dept,
            consumer_client_id=principal.client_id or "",
            resource=resource_code,
            purpose=purpose,
        )
        resource, grant, ctx = await self.authorised(principal, resource_code, purpose, ctx)
        client_id = principal.client_id or ""
        positions = None
        if cursor is not None:
            try:
                positions = decode_cursor(self.keys, cursor, client_id, resource.code)
            except Problem:
                self.metrics.pages.labels("cursor_refused").inc()
                raise
        if self.log is None:
            raise ExchangeProblem.FEEDS_UNAVAILABLE.problem("Change feeds need Kafka; this platform runs without it.")
        wait = min(self.settings.feed_wait_s if wait_s is None else wait_s, self.settings.feed_max_wait_s)
        if self.reading >= self.settings.feed_max_reads:
            self.metrics.pages.labels("busy").inc()
            raise ExchangeProblem.FEEDS_UNAVAILABLE.problem(
                "Too many feed pages are being read on this replica just now; retry shortly with the same cursor.",
                headers={"Retry-After": "1"},
            )
        self.reading += 1
        try:
            read = await self.log.read(
                self.settings.topic(feed_topic_name(resource.code)),
                positions,
                min(limit, self.settings.feed_page_max),
                wait,
            )
        except CursorExpired:
            self.metrics.pages.labels("cursor_refused").inc()
            raise ExchangeProblem.FEED_CURSOR_EXPIRED.problem(
                "The changes after this cursor are past the feed's retention. Start again without a cursor "
                "(from the oldest change kept) and reconcile by queries."
            ) from None
        except CursorAhead:
            self.metrics.pages.labels("cursor_refused").inc()
            raise invalid_cursor("The cursor points past the end of the feed.") from None
        finally:
            self.reading -= 1
        # The wait may have been long: a grant revoked meanwhile stops this page too.
        async with driver_connection(self.exchange.engine) as db:
            if await repository.is_revoked(db, grant.id):
                denied = Denied(ExchangeProblem.GRANT_REVOKED, f"Grant {grant.id} was revoked by the provider.")
                raise await self.deny(ctx, denied)
        served = self.minimised(read, resource, grant)
        changes = [s.view for s in served]
        if served:
            await self.record(*self.disclosures(ctx, served))
            self.metrics.changes.labels(resource.code).inc(len(changes))
        self.metrics.pages.labels("changes" if changes else "empty").inc()
        return {
            "resource": resource.code,
            "provider": resource.provider_dept,
            "count": len(changes),
            "changes": changes,
            "cursor": encode_cursor(self.keys[0], client_id, resource.code, read.positions),
        }

    def minimised(self, read: Read, resource: ResourceView, grant: GrantView) -> list[Served]:
        """数据最小化: each change with only the granted (and catalogued) items, masked, and
        whom it is about (hashed). A change without a valid subject identifier is not passed on:
        its disclosure could not be audited to its subject (the connector publishes none)."""
        items = granted_fields(grant, resource, None)
        masking = effective_masking(grant.masking, resource.items)
        key = self.settings.subject_hash_key
        changes = []
        for record in read.records:
            try:
                change = parse_change(record.value)
            except ValueError:
                change = None
            if change is None or (change.resource_code, change.provider_dept) != (
                resource.code,
                resource.provider_dept,
            ):
                # Only the provider's connector may write the topic (ACL); still, never pass it on.
                self.metrics.undecodable.labels(resource.code).inc()
                log.warning("feed message skipped", extra={"ctx_resource": resource.code, "ctx_offset": record.offset})
                continue
            hashed = self.subject_hash(key, change.subject_type, change.subject_value)
            if hashed is None:
                self.metrics.undecodable.labels(resource.code).inc()
                # The offset only: never the identifier, not even an invalid one.
                log.warning(
                    "feed change without a valid subject skipped",
                    extra={"ctx_resource": resource.code, "ctx_offset": record.offset},
                )
                continue
            data, masked = apply_masking({i: change.data[i] for i in items if i in change.data}, masking)
            view = change_view(record, data, masked, change.op, change.subject_type, change.changed_unix_ms)
            changes.append(Served(view, change.subject_type, hashed))
        return changes

    @staticmethod
    def subject_hash(key: str, subject_type: str, value: str) -> str | None:
        """The keyed hash of the normalised identifier, as the query path makes it (so the
        person's report finds both); None for an identifier that is not a valid one."""
        if subject_type not in get_args(SubjectType):
            return None
        try:
            normalised = normalise_subject(cast(SubjectType, subject_type), value)
        except InvalidIdentifier:
            return None
        return subject_hash(key, subject_type, normalised)
