"""Connector rules: look the subject up in the backend, answer only the items asked, sign; a
request already answered is answered again from the reply store, never from the backend."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.common import sdjwt
from services.common.identifiers import id_card_check_char
from services.common.keywrap import KeyWrap
from services.common.pb import exchange_pb2
from services.connector.backend_config import DEMO_ONLY
from services.connector.backends import Ask, BackendError, Backends, Outcome
from services.connector.models import Resident, SigningKey

Reply = exchange_pb2.ExchangeReply
# The provider's access log (访问日志): one line per backend look-up, naming the queries (never the
# subjects), written before the look-up; on when ``TONGBAN_CONNECTOR_LOG_LOOKUPS`` is set.
lookup_log = logging.getLogger("tongban.connector.lookups")

# The demo resource's information items, as the registry catalogue names them.
ITEMS = ("姓名", "性别", "出生日期", "户籍地址", "公民身份号码")

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红玉梅志文辉晨阳雪琳浩宇欣怡子涵"
DISTRICTS = {
    "110101": "北京市东城区",
    "110102": "北京市西城区",
    "110105": "北京市朝阳区",
    "110106": "北京市丰台区",
    "110108": "北京市海淀区",
}
STREETS = ("东长安街", "西单北大街", "建国路", "中关村大街", "南三环西路", "和平里街道", "学院路")


def synthetic_residents(count: int, seed: int = 20180045) -> list[Resident]:
    """A deterministic synthetic population with valid 居民身份证号码 (GB 11643 check digits)."""
    rng = random.Random(seed)
    residents: list[Resident] = []
    seen: set[str] = set()
    while len(residents) < count:
        region = rng.choice(list(DISTRICTS))
        born = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 66))
        sequence = rng.randrange(0, 1000)
        first17 = f"{region}{born:%Y%m%d}{sequence:03d}"
        number = first17 + id_card_check_char(first17)
        if number in seen:
            continue
        seen.add(number)
        gender = "男" if sequence % 2 else "女"  # GB 11643: odd sequence = male
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
        address = f"{DISTRICTS[region]}{rng.choice(STREETS)}{rng.randrange(1, 300)}号"
        residents.append(Resident(id_number=number, name=name, gender=gender, birth_date=born, address=address))
    return residents


async def seed_population(session: AsyncSession, count: int) -> int:
    existing = await session.scalar(select(func.count()).select_from(Resident)) or 0
    if existing:
        return int(existing)
    rows = [
        {"id_number": r.id_number, "name": r.name, "gender": r.gender, "birth_date": r.birth_date, "address": r.address}
        for r in synthetic_residents(count)
    ]
    await session.execute(insert(Resident).values(rows).on_conflict_do_nothing())
    return len(rows)


def sealing_context(key_id: str) -> str:
    """What a sealed key is bound to: it opens only on its own row."""
    return f"tongban.connector.signing_keys:{key_id}"


# Replicas of one connector starting together on a fresh database take turns here, so that they
# make one key between them, not one each (a key only one replica knows and publishes).
SIGNING_KEY_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('tongban.connector.signing_keys'))")


async def signing_key(session: AsyncSession, wrap: KeyWrap) -> tuple[str, Ed25519PrivateKey]:
    """The newest reply-signing key, made on a fresh database (by one replica, under a lock held
    to the end of ``session``'s transaction). Keys are kept sealed under the key-encryption key;
    one kept in clear by an earlier connector is sealed now."""
    await session.execute(SIGNING_KEY_LOCK)
    for legacy in (await session.scalars(select(SigningKey).where(SigningKey.private_key.is_not(None)))).all():
        assert legacy.private_key is not None
        legacy.sealed_private_key = wrap.seal(legacy.private_key, sealing_context(legacy.key_id))
        legacy.private_key = None
    row = await session.scalar(select(SigningKey).order_by(SigningKey.created_at.desc()).limit(1))
    if row is None:
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        key_id = hashlib.sha256(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]
        row = SigningKey(key_id=key_id, sealed_private_key=wrap.seal(raw, sealing_context(key_id)))
        session.add(row)
    await session.flush()
    assert row.sealed_private_key is not None
    raw = wrap.open(row.sealed_private_key, sealing_context(row.key_id))
    return row.key_id, Ed25519PrivateKey.from_private_bytes(raw)


SIGN_IN_THREAD_FROM = 32  # requests in a batch

# Claim the queries not answered yet. A query another delivery claimed in a transaction still open
# makes this statement wait for it; after its commit the query counts as answered (its reply is
# then stored), after its rollback it is claimed here. Returns the query ids claimed.
CLAIM_REPLIES = (
    "INSERT INTO connector.replies (query_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING query_id"
)
STORED_REPLIES = "SELECT query_id, reply FROM connector.replies WHERE query_id = ANY($1::text[]) AND reply IS NOT NULL"
STORE_REPLIES = (
    "UPDATE connector.replies AS r SET reply = s.reply "
    "FROM unnest($1::text[], $2::bytea[]) AS s(query_id, reply) WHERE r.query_id = s.query_id"
)
PURGE_REPLIES = "DELETE FROM connector.replies WHERE created_at < now() - make_interval(secs => $1)"


def signed_payload(request_hash: str, data: dict[str, str]) -> bytes:
    return request_hash.encode() + b"\n" + orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


class LookupMetrics:
    """How often the backend was asked, and how often a stored reply spared asking it."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.lookups = Counter(
            "tongban_connector_backend_lookups",
            "Subjects looked up in the provider's backend (once per query; a redelivery is not counted)",
            registry=registry,
        )
        self.resent = Counter(
            "tongban_connector_replies_resent",
            "Replies sent again from the reply store for a request delivered again",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A reply to send: the query it answers and its serialised ``ExchangeReply``."""

    query_id: str
    value: bytes


class Responder:
    """Answers exchange requests for one providing department."""

    def __init__(
        self,
        dept_code: str,
        key_id: str,
        key: Ed25519PrivateKey,
        metrics: LookupMetrics | None = None,
        *,
        log_lookups: bool = False,
        backends: Backends | None = None,
    ) -> None:
        self.dept_code = dept_code
        self.key_id = key_id
        self.key = key
        self.metrics = metrics or LookupMetrics(CollectorRegistry())
        self.log_lookups = log_lookups
        # Without configured backends, the demo data answers every resource (as ``make run``).
        self.backends = backends or Backends(DEMO_ONLY, CollectorRegistry())

    async def answer_once(
        self, db: Any, requests: Sequence[tuple[bytes, exchange_pb2.ExchangeRequest]]
    ) -> list[Outgoing]:
        """One reply per distinct query of ``requests``: the stored one if the query was answered
        before, else a new one looked up, signed and stored. Runs in one transaction on ``db`` (an
        asyncpg connection), so the claim, the look-up and the stored reply commit together: a
        crash before the commit leaves the query unclaimed, to be answered by the redelivery."""
        distinct: dict[str, tuple[bytes, exchange_pb2.ExchangeRequest]] = {}
        for raw, request in requests:
            distinct.setdefault(request.query_id, (raw, request))
        async with db.transaction():
            claimed = {r["query_id"] for r in await db.fetch(CLAIM_REPLIES, list(distinct))}
            others = [q for q in distinct if q not in claimed]
            stored = (
                {r["query_id"]: bytes(r["reply"]) for r in await db.fetch(STORED_REPLIES, others)} if others else {}
            )
            fresh = await self.answer(db, [distinct[q] for q in distinct if q in claimed])
            now = int(time.time() * 1000)
            for reply in fresh:
                reply.answered_unix_ms = now
                reply.deadline_unix_ms = distinct[reply.query_id][1].deadline_unix_ms
            values = {reply.query_id: reply.SerializeToString() for reply in fresh}
            if values:
                await db.execute(STORE_REPLIES, list(values), list(values.values()))
        if values and self.log_lookups:
            # Committed: these look-ups' replies are stored and will never be asked for again.
            # A look-up whose line has no committed line was cut off (a crash before the commit)
            # and is asked again when its request is delivered again.
            lookup_log.info("backend look-up committed", extra={"ctx_query_ids": list(values)})
        self.metrics.resent.inc(len(stored))
        return [Outgoing(q, values[q] if q in values else stored[q]) for q in distinct if q in values or q in stored]

    async def answer(self, db: Any, requests: Sequence[tuple[bytes, exchange_pb2.ExchangeRequest]]) -> list[Reply]:
        """Replies to a batch of requests, each subject looked up once in its resource's backend
        (``db``: an asyncpg connection, which the demo backend reads)."""
        asked = [r for _, r in requests if r.provider_dept == self.dept_code]
        if asked and self.log_lookups:
            lookup_log.info("backend look-up", extra={"ctx_query_ids": [r.query_id for r in asked]})
        outcomes = await self.backends.look_up(
            db, [(r.resource_code, Ask(r.subject_type, r.subject_value, tuple(r.fields))) for r in asked]
        )
        found = {r.query_id: outcome for r, outcome in zip(asked, outcomes, strict=True)}
        self.metrics.lookups.inc(len(asked))

        def sign_all() -> list[Reply]:
            return [self.reply(raw, request, found.get(request.query_id)) for raw, request in requests]

        # One Ed25519 signature is ~40 µs: a batch of a few is cheaper signed here than handed to
        # a thread; a large batch (after a backlog) would hold the event loop for tens of ms.
        return sign_all() if len(requests) < SIGN_IN_THREAD_FROM else await asyncio.to_thread(sign_all)

    def reply(self, raw: bytes, request: exchange_pb2.ExchangeRequest, outcome: Outcome) -> Reply:
        request_hash = hashlib.sha256(raw).hexdigest()
        reply = Reply(
            query_id=request.query_id, provider_dept=self.dept_code, request_hash=request_hash, key_id=self.key_id
        )
        if request.provider_dept != self.dept_code:
            reply.status = Reply.ERROR
            reply.error = f"request addressed to {request.provider_dept}, not this connector"
        elif isinstance(outcome, BackendError):
            reply.status = Reply.ERROR
            reply.error = str(outcome)
        elif outcome is None:
            reply.status = Reply.NOT_FOUND
        else:
            # Only the items asked (the granted ones), whatever else the backend holds.
            data = {name: outcome[name] for name in request.fields if name in outcome}
            reply.status = Reply.OK
            reply.data.update(data)
            reply.signature = base64.b64encode(self.key.sign(signed_payload(request_hash, data))).decode()
            reply.sd_jwt = self.answer_sd_jwt(request, request_hash, data)
        return reply

    def answer_sd_jwt(self, request: exchange_pb2.ExchangeRequest, request_hash: str, data: dict[str, str]) -> str:
        """The answer as an SD-JWT (可验证应答, RFC 9901): one disclosure per item; the signed
        claims bind it to this query, this request (its hash), the resource, this provider and now."""
        claims = {
            "iss": self.dept_code,
            "iat": int(time.time()),
            "query_id": request.query_id,
            "request_hash": request_hash,
            "resource": request.resource_code,
            "provider": self.dept_code,
        }
        return sdjwt.issue(claims, data, self.key, self.key_id)


async def public_jwks(session: AsyncSession, wrap: KeyWrap) -> dict[str, list[dict[str, str]]]:
    """Every reply-signing key's public JWK (newest first): answers signed before a new key was
    made stay verifiable. The platform serves these to consumers (see the exchange's provider keys)."""
    rows = (await session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc()))).all()
    keys = []
    for row in rows:
        if row.sealed_private_key is None:
            continue
        private = Ed25519PrivateKey.from_private_bytes(wrap.open(row.sealed_private_key, sealing_context(row.key_id)))
        keys.append(sdjwt.public_jwk(private.public_key(), row.key_id))
    return {"keys": keys}


async def purge_replies(db: Any, retention_s: float) -> int:
    """Delete stored replies older than ``retention_s`` (they hold personal data); how many."""
    status: str = await db.execute(PURGE_REPLIES, float(retention_s))
    return int(status.rsplit(" ", 1)[-1])
