"""Exchange rules: may this system have these items about this subject for this purpose now?
Then send the request to the provider, wait for the reply, mask it, and answer only after the
audit record is durable (fail closed). No HTTP here.

A query goes through named steps (:meth:`Exchange.query`): authorise the caller, identify the
subject, check the grant, start (quota, idempotency, the request written with the query), await
the reply, finish (record the outcome with its audit event). Every refusal before the provider is
asked is a :class:`Denied` problem, audited as a denial with its code as the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from asyncpg import Record, UniqueViolationError  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.common.bus import Message
from services.common.clock import business_date, seconds_to_midnight
from services.common.contracts.audit import AuditAction, AuditContext, audit_message
from services.common.db import driver_connection
from services.common.errors import NotFound, Problem, unexpected_problem
from services.common.identifiers import InvalidIdentifier
from services.common.masking import effective_masking
from services.common.outbox import Outbox
from services.common.pb import exchange_pb2
from services.common.sdjwt import InvalidSdJwt
from services.common.security import Principal, Role
from services.common.subjects import normalise_subject, subject_hash
from services.common.uow import UnitOfWork
from services.exchange import repository
from services.exchange.answers import ProviderKeys, ProviderKeysUnavailable, answer_body, audited, verified_answer
from services.exchange.config import ExchangeSettings
from services.exchange.models import CallbackUrl, GrantView, Query, QueryStatus, ResourceView
from services.exchange.problems import ExchangeProblem
from services.exchange.schemas import BatchCreate, QueryCreate
from services.exchange.schemas import Subject as SubjectIn

Reply = exchange_pb2.ExchangeReply
log = logging.getLogger("tongban.exchange")


class Denied(Problem):
    """A query refused before it reached the provider; audited as a denial (reason = its code).
    ``context``: the audit context the refusing step knew, when it knew more than the caller."""

    def __init__(
        self,
        code: ExchangeProblem,
        detail: str,
        headers: dict[str, str] | None = None,
        context: AuditContext | None = None,
    ) -> None:
        super().__init__(code.status, code, code.headline, detail, headers=headers)
        self.context = context


class StoredAnswer(Problem):
    """An error answer recorded with its query, replayed as it was (same Idempotency-Key)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, str(body.get("type", "")).rsplit("/", 1)[-1], str(body.get("title", "")))
        self._body = body

    def body(self) -> dict[str, Any]:
        return self._body


@dataclass(frozen=True, slots=True)
class Subject:
    """The person or organisation asked about: type, normalised value (in clear, for the provider
    only), and its keyed hash (for the query row and audit)."""

    type: str
    value: str
    hash: str


@dataclass(frozen=True, slots=True)
class Earlier:
    """The query this system made before with the same Idempotency-Key (``fingerprint``: of the
    question asked now, to compare with the earlier one's)."""

    record: Record
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Opened:
    """When the consumer's call began: ``timeout_ms`` counts from here, the publish included."""

    monotonic: float
    at: datetime

    @classmethod
    def now(cls) -> Opened:
        return cls(time.monotonic(), datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class Started:
    """A query written and sent: what the remaining steps need."""

    id: uuid.UUID
    context: AuditContext
    masking: dict[str, str]
    timeout_ms: int
    opened: Opened
    request_hash: str = ""  # SHA-256 (hex) of the request as sent: the provider's answer must sign it

    def remaining_s(self) -> float:
        """Time left before the consumer's deadline (never negative)."""
        return max(0.0, self.opened.monotonic + self.timeout_ms / 1000 - time.monotonic())


def fingerprint(body: QueryCreate, subject_value: str) -> str:
    canonical = orjson.dumps([body.resource, body.purpose, body.subject.type, subject_value, sorted(body.fields or [])])
    return hashlib.sha256(canonical).hexdigest()


def check_grant(
    grant: GrantView | None, resource: ResourceView, purpose: str, fields: list[str], now: datetime
) -> GrantView:
    """The sharing rules at query time: a live grant, for this purpose, covering every item asked."""
    if grant is None:
        raise Denied(
            ExchangeProblem.NO_GRANT, f"Your system has no grant for resource {resource.code}; apply in the registry."
        )
    if grant.revoked:
        raise Denied(ExchangeProblem.GRANT_REVOKED, f"Grant {grant.id} was revoked by the provider.")
    if grant.valid_until < now:
        raise Denied(ExchangeProblem.GRANT_EXPIRED, f"Grant {grant.id} expired at {grant.valid_until.isoformat()}.")
    if grant.purpose != purpose:
        raise Denied(
            ExchangeProblem.PURPOSE_NOT_GRANTED,
            f"Grant {grant.id} is for 事项 {grant.purpose}; the data may not be used for {purpose}.",
        )
    known = {i["name"] for i in resource.items}
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise Denied(ExchangeProblem.UNKNOWN_ITEMS, f"{resource.code} has no items: {', '.join(unknown)}.")
    not_granted = [f for f in fields if f not in grant.items]
    if not_granted:
        raise Denied(ExchangeProblem.ITEM_NOT_GRANTED, f"Not granted to your system: {', '.join(not_granted)}.")
    return grant


def granted_fields(grant: GrantView, resource: ResourceView, asked: list[str] | None) -> list[str]:
    """数据最小化 — the items the provider is asked for: those asked (already checked to be granted
    and catalogued by :func:`check_grant`), or, when none are named, every granted item the
    resource still catalogues (a newer version may have dropped one the grant names)."""
    if asked:
        return list(dict.fromkeys(asked))
    known = {i["name"] for i in resource.items}
    return [item for item in grant.items if item in known]


def timeout_problem(query_id: uuid.UUID, timeout_ms: int) -> Problem:
    return ExchangeProblem.PROVIDER_TIMEOUT.problem(
        f"No reply within {timeout_ms} ms. A late reply will be recorded; fetch GET /v1/exchange/queries/{query_id}.",
        extra={"query_id": str(query_id)},
    )


def interrupted_problem(query_id: uuid.UUID) -> Problem:
    """An error after the request was committed to be sent: the provider may have it (and may
    answer), so the consumer must not be told that nothing happened."""
    return ExchangeProblem.QUERY_INTERRUPTED.problem(
        f"Query {query_id} was sent to the provider, but its outcome could not be recorded just now. "
        f"Read GET /v1/exchange/queries/{query_id} shortly, or retry with the same Idempotency-Key: "
        "the provider is not asked again.",
        extra={"query_id": str(query_id)},
        headers={"Retry-After": "1"},
    )


def outcome_of(
    reply: Reply,
    head: dict[str, Any],
    fields: list[str],
    masking: dict[str, str],
    keys: Mapping[str, Ed25519PublicKey] | None = None,
    request_hash: str | None = None,
) -> tuple[QueryStatus, int, dict[str, Any]]:
    """How a reply ends a query: (status, HTTP status, body). ``head`` heads the body of an answer;
    only the ``fields`` asked are taken from the reply's SD-JWT, verified with the provider's
    ``keys`` (an answer that does not verify is a 502 ``unverifiable-answer``), then masked.
    ``request_hash``: the hash of the request as sent, when this process sent it."""
    if reply.status == Reply.OK:
        try:
            answer = verified_answer(
                reply, head["provider"], head["resource"], fields, masking, keys or {}, request_hash=request_hash
            )
        except InvalidSdJwt as err:
            log.warning("answer not verified", extra={"ctx_query_id": reply.query_id, "ctx_reason": str(err)})
            problem = ExchangeProblem.UNVERIFIABLE_ANSWER.problem(
                f"The provider's answer could not be verified: {err}. Nothing of it is passed on."
            )
            return QueryStatus.PROVIDER_ERROR, problem.status, problem.body()
        signature = {
            "alg": "EdDSA",
            "key_id": reply.key_id,
            "value": reply.signature,
            "request_hash": reply.request_hash,
        }
        body = {**head, "status": QueryStatus.COMPLETED, **answer_body(answer), "signature": signature}
        return QueryStatus.COMPLETED, 200, body
    if reply.status == Reply.NOT_FOUND:
        problem = ExchangeProblem.SUBJECT_NOT_FOUND.problem("The provider has no record about this subject.")
        return QueryStatus.NOT_FOUND, problem.status, problem.body()
    code, _ = provider_error(reply.error)
    problem = ExchangeProblem.PROVIDER_ERROR.problem(
        f"The provider could not answer: {reply.error or 'unknown'}.", extra={"provider_code": code}
    )
    return QueryStatus.PROVIDER_ERROR, problem.status, problem.body()


PROVIDER_CODE = re.compile(r"[a-z][a-z0-9_\-]{0,63}")


def provider_error(error: str) -> tuple[str, str]:
    """A connector's ``error`` (``"<code>: <detail>"``, services/connector/backends.py) as (code,
    detail); an error without a code of that shape is ``provider_error`` with the whole text."""
    code, sep, detail = error.partition(": ")
    if sep and PROVIDER_CODE.fullmatch(code):
        return code, detail
    return "provider_error", error


def extra_items(reply: Reply, fields: list[str]) -> list[str]:
    """Items a provider sent that were not asked for (so not granted): :func:`outcome_of` never
    passes them on; the exchange counts and logs them, as a provider's connector at fault."""
    asked = set(fields)
    return sorted(name for name in reply.data if name not in asked)


class ExchangeMetrics:
    """What the exchange refuses to pass on, and its batches."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.extra_items = Counter(
            "tongban_exchange_extra_items_dropped",
            "Items a provider returned that were not asked for (not granted), dropped before the answer",
            ["provider"],
            registry=registry,
        )
        self.batch_subjects = Counter(
            "tongban_exchange_batch_subjects",
            "Subjects asked about in batches (each one query of its own)",
            registry=registry,
        )


def answer_or_raise(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """The body of a successful answer; an error answer is raised (errors are never returned)."""
    if status >= 400:
        raise StoredAnswer(status, body)
    return body


class Exchange:
    """Brokers queries. Owns the in-memory waiters that correlate replies with open requests."""

    def __init__(
        self,
        settings: ExchangeSettings,
        engine: AsyncEngine,
        outbox: Outbox,
        metrics: ExchangeMetrics | None = None,
        provider_keys: ProviderKeys | None = None,
    ) -> None:
        self.settings = settings
        # No keys: no answer verifies (every reply is a 502 unverifiable-answer).
        self.provider_keys = provider_keys or ProviderKeys(settings, None)
        self.engine = engine
        self.outbox = outbox
        self.metrics = metrics or ExchangeMetrics(CollectorRegistry())
        self.waiters: dict[str, asyncio.Future[Reply]] = {}
        self.background: set[asyncio.Task[None]] = set()  # async queries awaiting their reply
        self.query_closed = asyncio.Event()  # wakes the callback sender (exchange/callbacks.py)
        self.callbacks_enabled = False  # set by the lifespan once it has a callback signing key
        self._grants: dict[tuple[str, str, str], tuple[float, ResourceView, GrantView]] = {}

    # ----------------------------------------------------------------------- audit

    def audit_message(self, ctx: AuditContext, *, outcome: str, reason: str = "") -> Message:
        """A query's audit event, keyed by its query id once it has one (a denial before has not):
        the events of one query (``timeout`` then ``late_reply``) share a partition, so the audit
        service appends them in the order they were emitted."""
        message = audit_message(
            self.settings.topic("audit.events"),
            "exchange",
            AuditAction.EXCHANGE_QUERY,
            ctx,
            outcome=outcome,
            reason=reason,
        )
        return replace(message, key=ctx.query_id.encode()) if ctx.query_id else message

    async def deny(self, ctx: AuditContext, problem: Problem) -> Problem:
        """Record the denial durably, then hand back the problem to raise (fail closed)."""
        async with self.outbox.unit_of_work(wait_for_publish=False) as uow:
            uow.emit(self.audit_message(ctx, outcome="denied", reason=str(problem.code)))
        return problem

    # ----------------------------------------------------------------------- queries

    async def query(
        self,
        principal: Principal,
        body: QueryCreate,
        idempotency_key: str | None,
        *,
        batch_id: uuid.UUID | None = None,
        bundle_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """Answer ``body`` for ``principal``: the masked, signed answer, or a raised problem.
        ``batch_id``/``bundle_id``: the batch or evidence bundle it is part of (in its audit record)."""
        query_id = uuid.uuid4()
        waiter = self.wait_for(query_id)
        try:
            started = await self.open(principal, body, idempotency_key, query_id, batch_id, bundle_id)
            if isinstance(started, Earlier):  # an idempotent replay
                return replay(started.record, started.fingerprint)
            # From here the request is committed and will reach the provider.
            try:
                reply = await self.await_reply(started, waiter)
            except Problem:
                raise
            except Exception as exc:
                raise self.interrupted(started.id, exc) from exc
        finally:
            self.waiters.pop(str(query_id), None)
        try:
            return await self.finish(started, reply)
        except Problem:
            raise
        except Exception as exc:
            raise self.interrupted(started.id, exc) from exc

    async def submit(
        self,
        principal: Principal,
        body: QueryCreate,
        idempotency_key: str | None,
        *,
        batch_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """异步查询 — ``mode: async``: the same checks, dedup, quota and audit as :meth:`query`, up
        to the request's being committed; the id of the query (of the earlier one, for a replayed
        Idempotency-Key) is returned at once and the reply awaited in the background. A replica
        that dies meanwhile leaves the query to the abandoned-query sweep and the late-reply
        consumer, as for a sync query whose waiter died: it still ends, and its callback is sent."""
        query_id = uuid.uuid4()
        waiter = self.wait_for(query_id)
        try:
            started = await self.open(principal, body, idempotency_key, query_id, batch_id)
        except BaseException:
            self.waiters.pop(str(query_id), None)
            raise
        if isinstance(started, Earlier):
            self.waiters.pop(str(query_id), None)
            replayed_id: uuid.UUID = started.record["id"]
            if started.record["fingerprint"] != started.fingerprint:
                replay(started.record, started.fingerprint)  # raises idempotency-key-reused
            return replayed_id
        task = asyncio.create_task(self.complete(started, waiter), name=f"exchange:async:{started.id}")
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return started.id

    async def complete(self, started: Started, waiter: asyncio.Future[Reply]) -> None:
        """The rest of an async query, in the background: await the reply, record the outcome."""
        try:
            try:
                reply = await self.await_reply(started, waiter)
            finally:
                self.waiters.pop(str(started.id), None)
            await self.finish(started, reply)
        except Problem:
            pass  # an error outcome (or a timeout), recorded with its query like any other
        except Exception:
            # Left pending: the abandoned-query sweep closes it, a late reply is still recorded.
            log.warning("async query outcome not recorded", extra={"ctx_query_id": str(started.id)}, exc_info=True)
        finally:
            self.query_closed.set()

    def wait_for(self, query_id: uuid.UUID) -> asyncio.Future[Reply]:
        """Register the waiter of ``query_id`` before its request can go: a reply that comes
        before the query waits for it is kept."""
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.waiters[str(query_id)] = waiter
        return waiter

    async def open(
        self,
        principal: Principal,
        body: QueryCreate,
        idempotency_key: str | None,
        query_id: uuid.UUID,
        batch_id: uuid.UUID | None,
        bundle_id: uuid.UUID | None = None,
    ) -> Started | Earlier:
        """The steps before the provider is asked: authorise, identify, the callback URL, the
        grant, then start; each refusal is audited as a denial and raised."""
        ctx = AuditContext(
            actor=principal.sub,
            consumer_dept=principal.dept,
            consumer_client_id=principal.client_id or "",
            resource=body.resource,
            purpose=body.purpose,
            subject_type=body.subject.type,
            batch_id=str(batch_id) if batch_id else "",
            bundle_id=str(bundle_id) if bundle_id else "",
        )
        opened = Opened.now()
        try:
            self.authorise(principal)
            subject = self.identify(body)
            ctx = ctx.with_(subject_hash=subject.hash, subject_key_id=self.settings.subject_hash_key_id)
            callback_url = await self.check_callback(principal, body)
            resource, grant = await self.check_grant(principal, body, ctx)
            ctx = ctx.with_(provider=resource.provider_dept)
            return await self.start(
                principal,
                body,
                subject,
                resource,
                grant,
                idempotency_key,
                query_id,
                ctx,
                opened,
                batch_id=batch_id,
                callback_url=callback_url,
            )
        except Denied as denied:
            raise await self.deny(denied.context or ctx, denied) from None

    async def batch(self, principal: Principal, body: BatchCreate, idempotency_key: str | None) -> dict[str, Any]:
        """批量查询 — each subject of ``body`` asked as its own query (its own id, audit record,
        quota count and Idempotency-Key ``<key>#<index>``), at most ``batch_concurrency`` at a
        time, tied by one batch id; an outcome per subject, in the order asked. A batch over
        ``batch_max_subjects`` is refused whole (audited once, nothing else written)."""
        limit = self.settings.batch_max_subjects
        if len(body.subjects) > limit:
            ctx = AuditContext(
                actor=principal.sub,
                consumer_dept=principal.dept,
                consumer_client_id=principal.client_id or "",
                resource=body.resource,
                purpose=body.purpose,
            )
            problem = Denied(
                ExchangeProblem.BATCH_TOO_LARGE,
                f"A batch may ask about at most {limit} subjects; this one names {len(body.subjects)}. "
                "Split it into several batches.",
                context=ctx,
            )
            raise await self.deny(ctx, problem)
        batch_id = uuid.uuid4()
        gate = asyncio.Semaphore(self.settings.batch_concurrency)

        async def one(index: int, subject: SubjectIn) -> dict[str, Any]:
            key = f"{idempotency_key}#{index}" if idempotency_key is not None else None
            async with gate:
                try:
                    if body.mode == "async":
                        query_id = await self.submit(principal, body.query(subject), key, batch_id=batch_id)
                        return {"index": index, "status": 202, "id": str(query_id)}
                    answer = await self.query(principal, body.query(subject), key, batch_id=batch_id)
                    return {"index": index, "status": 200, "answer": answer}
                except Problem as problem:
                    return {"index": index, "status": problem.status, "problem": problem.body()}
                except Exception as exc:
                    # Before its request was committed (after, query() says query-interrupted):
                    # nothing was written for this subject; the others keep their outcomes.
                    failed = unexpected_problem(exc)
                    return {"index": index, "status": failed.status, "problem": failed.body()}

        outcomes = await asyncio.gather(*(one(n, s) for n, s in enumerate(body.subjects)))
        self.metrics.batch_subjects.inc(len(outcomes))
        return {"batch_id": str(batch_id), "mode": body.mode, "outcomes": outcomes}

    async def check_callback(self, principal: Principal, body: QueryCreate) -> str | None:
        """回调地址: the callback URL of an async query must be https and the one its system
        registered (so the exchange never POSTs personal data anywhere a client merely names)."""
        url = body.callback_url
        if url is None:
            return None
        if not is_https(url):
            raise Denied(ExchangeProblem.CALLBACK_URL_NOT_HTTPS, "A callback URL must be an https URL.")
        if not self.callbacks_enabled:
            raise Denied(
                ExchangeProblem.CALLBACKS_UNAVAILABLE,
                "This exchange cannot sign callbacks (no key-encryption key); read the query by id instead.",
            )
        async with self.outbox.sessions() as session:
            registered = await session.get(CallbackUrl, principal.client_id or "")
        if registered is None or registered.url != url:
            raise Denied(
                ExchangeProblem.CALLBACK_URL_NOT_REGISTERED,
                "This callback URL is not the one your system registered (PUT /v1/exchange/callback-url).",
            )
        return url

    @staticmethod
    def interrupted(query_id: uuid.UUID, exc: Exception) -> Problem:
        log.warning("query outcome not recorded", extra={"ctx_query_id": str(query_id)}, exc_info=exc)
        return interrupted_problem(query_id)

    def authorise(self, principal: Principal) -> None:
        """Queries are made by consuming systems, never by people (the token says which it is)."""
        if not principal.is_system or not principal.has_role(Role.CONSUMER):
            raise Denied(ExchangeProblem.NOT_A_CONSUMER, "Queries are made by systems with the consumer role.")

    def identify(self, body: QueryCreate) -> Subject:
        """The subject's normalised identifier (check character verified) and its keyed hash."""
        try:
            value = normalise_subject(body.subject.type, body.subject.value)
        except InvalidIdentifier as err:
            raise Denied(ExchangeProblem.INVALID_SUBJECT, str(err)) from err
        return Subject(body.subject.type, value, subject_hash(self.settings.subject_hash_key, body.subject.type, value))

    async def check_grant(
        self, principal: Principal, body: QueryCreate, ctx: AuditContext
    ) -> tuple[ResourceView, GrantView]:
        """The resource asked for and the caller's live grant covering the purpose and items."""
        resource, grant = await self.grant_for(principal, body.resource, body.purpose)
        try:
            return resource, check_grant(grant, resource, body.purpose, body.fields or [], datetime.now(UTC))
        except Denied as denied:
            denied.context = ctx.with_(provider=resource.provider_dept)
            raise

    async def start(
        self,
        principal: Principal,
        body: QueryCreate,
        subject: Subject,
        resource: ResourceView,
        grant: GrantView,
        idempotency_key: str | None,
        query_id: uuid.UUID,
        ctx: AuditContext,
        opened: Opened,
        *,
        batch_id: uuid.UUID | None = None,
        callback_url: str | None = None,
    ) -> Started | Earlier:
        """Write the pending query with its request (counted against the day's quota) in one
        statement, then publish the request (in the background: the consumer's deadline, counted
        from ``opened``, is awaited by :meth:`await_reply`, however long a broker outage blocks
        the publish). Returns the earlier answer instead when ``idempotency_key`` was used before
        for the same question."""
        now = opened.at
        fields = granted_fields(grant, resource, body.fields)
        ctx = ctx.with_(fields=tuple(fields), query_id=str(query_id))
        timeout_ms = min(body.timeout_ms or self.settings.default_timeout_ms, self.settings.max_timeout_ms)
        deadline = now + timedelta(milliseconds=timeout_ms)
        print_ = fingerprint(body, subject.value)
        request = exchange_pb2.ExchangeRequest(
            query_id=str(query_id),
            resource_code=resource.code,
            resource_version=resource.version,
            consumer_dept=principal.dept,
            consumer_client_id=principal.client_id or "",
            provider_dept=resource.provider_dept,
            purpose=body.purpose,
            subject_type=subject.type,
            subject_value=subject.value,
            fields=fields,
            deadline_unix_ms=int(deadline.timestamp() * 1000),
            grant_id=str(grant.id),
        )
        topic = self.settings.topic(f"exchange.requests.{resource.provider_dept}")
        sent = request.SerializeToString()
        request_hash = hashlib.sha256(sent).hexdigest()
        staged = self.outbox.stage(Message(topic=topic, key=str(query_id).encode(), value=sent))
        new = repository.NewQuery(
            id=query_id,
            client_id=principal.client_id or "",
            consumer_dept=principal.dept,
            actor=principal.sub,
            idempotency_key=idempotency_key,
            fingerprint=print_,
            resource_code=resource.code,
            provider_dept=resource.provider_dept,
            grant_id=grant.id,
            purpose=body.purpose,
            subject_type=subject.type,
            subject_hash=subject.hash,
            fields=fields,
            deadline=deadline,
            request_hash=request_hash,
            subject_key_id=self.settings.subject_hash_key_id,
            batch_id=batch_id,
            callback_url=callback_url,
        )
        try:
            async with driver_connection(self.engine) as db:
                if idempotency_key is not None:
                    earlier = await repository.find_idempotent(db, new.client_id, idempotency_key)
                    if earlier is not None:
                        return Earlier(earlier, print_)
                day = business_date(self.settings.zone, now)
                if not await repository.start_query(
                    db, new, day, grant.daily_quota, self.outbox.row_parameters(staged)
                ):
                    if await repository.is_revoked(db, grant.id):
                        # Revoked after this replica cached the grant: the projection decides.
                        raise Denied(
                            ExchangeProblem.GRANT_REVOKED, f"Grant {grant.id} was revoked by the provider.", context=ctx
                        )
                    raise self.over_quota(grant, now, ctx)
        except UniqueViolationError:  # the same key, committed by a concurrent request meanwhile
            raise in_progress(None) from None
        await self.outbox.committed([staged], wait_for_publish=False)
        masking = effective_masking(grant.masking, resource.items)
        return Started(query_id, ctx, masking, timeout_ms, opened, request_hash)

    def over_quota(self, grant: GrantView, now: datetime, ctx: AuditContext) -> Denied:
        return Denied(
            ExchangeProblem.QUOTA_EXCEEDED,
            f"Grant {grant.id} allows {grant.daily_quota} queries a day.",
            headers={"Retry-After": str(seconds_to_midnight(self.settings.zone, now))},
            context=ctx,
        )

    async def grant_for(
        self, principal: Principal, resource_code: str, purpose: str, *, fresh: bool = False
    ) -> tuple[ResourceView, GrantView | None]:
        """The resource and the caller's best grant for it.

        A grant found is cached for ``grant_cache_s`` seconds, sparing the database two look-ups
        per query on the hot path; the replica that applies a registry event drops its cache at
        once (:meth:`forget_grants`), other replicas within ``grant_cache_s``. A revocation does
        not wait for that: the statement that starts a query reads the grant's ``revoked`` flag
        from the shared projection (:data:`repository.START_QUERY`). A look-up that finds
        nothing is never cached: a grant issued a moment ago must work on the next query.
        ``fresh``: read the projection, not the cache (a change feed page: a revocation bites at once).
        """
        key = (principal.client_id or "", resource_code, purpose)
        cached = self._grants.get(key)
        if not fresh and cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        async with self.outbox.sessions() as session:
            resource = await session.get(ResourceView, resource_code)
            grant = await session.scalar(
                select(GrantView)
                .where(GrantView.client_id == principal.client_id, GrantView.resource_code == resource_code)
                # The grant for this purpose first (so a revoked one says so, rather than another
                # purpose's grant saying "purpose not granted"), then live before revoked, newest.
                .order_by((GrantView.purpose == purpose).desc(), GrantView.revoked, GrantView.valid_until.desc())
                .limit(1)
            )
        if resource is not None and grant is not None:
            if len(self._grants) > 10_000:
                self._grants.clear()
            self._grants[key] = (time.monotonic() + self.settings.grant_cache_s, resource, grant)
        if resource is None:
            raise Denied(ExchangeProblem.UNKNOWN_RESOURCE, f"No published resource {resource_code!r}.")
        return resource, grant

    def forget_grants(self) -> None:
        """Drop cached grant look-ups: a registry event changed resources or grants."""
        self._grants.clear()

    async def await_reply(self, started: Started, waiter: asyncio.Future[Reply]) -> Reply:
        """The provider's reply; at the deadline the query is closed as a timeout (504)."""
        try:
            return await asyncio.wait_for(waiter, started.remaining_s())
        except TimeoutError:
            problem = timeout_problem(started.id, started.timeout_ms)
            await self.close_query(started.id, QueryStatus.TIMEOUT, problem.status, problem.body(), started.context)
            raise problem from None

    async def finish(self, started: Started, reply: Reply) -> dict[str, Any]:
        """Record how the reply ends the query, with its audit event; then answer (or raise)."""
        head = {"id": str(started.id), "resource": started.context.resource, "provider": started.context.provider}
        self.flag_extra(started.id, reply, list(started.context.fields))
        try:
            keys = await self.provider_keys.keys(started.context.provider, reply.sd_jwt)
        except ProviderKeysUnavailable as err:
            raise await self.defer(started, reply, err) from None
        status, http_status, body = outcome_of(
            reply, head, list(started.context.fields), started.masking, keys, request_hash=started.request_hash or None
        )
        if not await self.close_query(started.id, status, http_status, body, audited(started.context, body)):
            # The late-reply consumer got there first (we were at the deadline): its record stands.
            return await self.recorded_answer(started.id)
        return answer_or_raise(http_status, body)

    async def recorded_answer(self, query_id: uuid.UUID) -> dict[str, Any]:
        """The answer recorded for a query that is no longer pending (or raised, if an error)."""
        async with self.outbox.sessions() as session:
            query = await session.get(Query, query_id)
        if query is None or query.response is None:
            raise timeout_problem(query_id, 0)
        return answer_or_raise(query.http_status or 200, query.response)

    async def defer(self, started: Started, reply: Reply, err: ProviderKeysUnavailable) -> Problem:
        """The answer came but cannot be verified yet (its key is not known, the provider's JWKS is
        out of reach): close the query as a timeout now and hand the reply to the late-reply path,
        which verifies and records it once the key can be fetched (retried, else dead-lettered with
        the reason). The reply is published again in the transaction that closes the query, so it
        is never lost; its deadline is set to now, so the late-reply consumer takes it up."""
        log.warning(
            "answer deferred: provider keys unavailable",
            extra={"ctx_query_id": str(started.id), "ctx_reason": str(err)},
        )
        problem = ExchangeProblem.PROVIDER_TIMEOUT.problem(
            "The provider answered, but its signing key could not be fetched to verify the answer. It will "
            f"be verified and recorded as a late reply; fetch GET /v1/exchange/queries/{started.id}.",
            extra={"query_id": str(started.id)},
        )
        again = Reply()
        again.CopyFrom(reply)
        again.deadline_unix_ms = int(time.time() * 1000)
        async with self.outbox.unit_of_work(wait_for_publish=False) as uow:
            query = await uow.session.scalar(
                select(Query).where(Query.id == started.id, Query.status == QueryStatus.PENDING).with_for_update()
            )
            if query is None:  # the late-reply consumer closed it first: its record stands
                return timeout_problem(started.id, 0)
            query.status = QueryStatus.TIMEOUT
            query.http_status = problem.status
            query.response = problem.body()
            query.completed_at = datetime.now(UTC)
            uow.emit(self.audit_message(started.context, outcome=QueryStatus.TIMEOUT))
            topic = self.settings.topic("exchange.replies")
            uow.emit(Message(topic=topic, key=reply.query_id.encode(), value=again.SerializeToString()))
        return problem

    def flag_extra(self, query_id: uuid.UUID, reply: Reply, fields: list[str]) -> None:
        """Count and log items the provider returned beyond those asked (names only, never values)."""
        if extra := extra_items(reply, fields):
            self.metrics.extra_items.labels(reply.provider_dept or "-").inc(len(extra))
            log.warning(
                "provider returned items that were not asked for; dropped",
                extra={"ctx_query_id": str(query_id), "ctx_provider": reply.provider_dept, "ctx_items": extra},
            )

    async def close_query(
        self, query_id: uuid.UUID, status: QueryStatus, http_status: int, body: dict[str, Any], ctx: AuditContext
    ) -> bool:
        """Record how a pending query ended, with its audit event; False if it was not pending."""
        staged = self.outbox.stage(self.audit_message(ctx, outcome=status))
        async with driver_connection(self.engine) as db:
            closed = await repository.finish_query(
                db, query_id, status, http_status, body, self.outbox.row_parameters(staged)
            )
        if closed:
            await self.outbox.committed([staged], wait_for_publish=False)
        return closed

    # ----------------------------------------------------------------------- replies

    def dispatch(self, reply: Reply) -> None:
        """Hand a reply to the request waiting in this process, if any."""
        waiter = self.waiters.get(reply.query_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    async def record_late_replies(self, replies: Sequence[Reply]) -> list[str]:
        """Record the ``replies`` no waiter recorded (see :meth:`record_late`); the ids of the
        queries recorded. The one statement below finds which of them are still open.

        Any replica can do it: the request hash each answer must sign is kept with its query. The
        providers' keys are fetched first, outside any transaction (an HTTP fetch never holds a
        row lock, which would stall the answers of queries about to settle). A key that cannot be
        fetched raises :class:`ProviderKeysUnavailable` and nothing is recorded: the bus retries
        the reply, then dead-letters it with that reason; it is never dropped."""
        by_id: dict[uuid.UUID, Reply] = {}
        for reply in replies:
            try:
                by_id[uuid.UUID(reply.query_id)] = reply
            except ValueError:
                continue
        if not by_id:
            return []
        async with self.outbox.sessions() as session:
            candidates = (
                await session.execute(
                    select(Query.id, Query.provider_dept).where(Query.id.in_(list(by_id)), late_reply_possible())
                )
            ).all()
        keys: dict[uuid.UUID, dict[str, Ed25519PublicKey]] = {}
        for query_id, provider in candidates:
            if by_id[query_id].status == Reply.OK:
                keys[query_id] = await self.provider_keys.keys(provider, by_id[query_id].sd_jwt)
        recorded: list[str] = []
        async with self.outbox.unit_of_work(wait_for_publish=False) as uow:
            for query_id, _ in candidates:
                if await self.record_late(uow, by_id[query_id], keys.get(query_id, {})):
                    recorded.append(str(query_id))
        return recorded

    async def record_late(self, uow: UnitOfWork, reply: Reply, keys: Mapping[str, Ed25519PublicKey]) -> bool:
        """Record one reply no waiter recorded, in ``uow``, verified with the provider's ``keys``
        fetched beforehand (see :meth:`record_late_replies`): one that came after the consumer was
        told 504, or whose waiter died or could not write it. A reply the connector sent before the
        deadline ends the query as it would have on time (the consumer, told to retry with its key,
        then reads that answer); a reply after the deadline is a ``late_reply``. False if its query
        cannot take a reply any more."""
        try:
            query_id = uuid.UUID(reply.query_id)
        except ValueError:
            return False
        session = uow.session
        # Lock only queries past their deadline: in-flight ones belong to their waiter, and
        # locking them here would make every on-time answer wait for this consumer.
        query = await session.scalar(select(Query).where(Query.id == query_id, late_reply_possible()).with_for_update())
        if query is None:
            return False
        grant = await session.get(GrantView, query.grant_id)
        resource = await session.get(ResourceView, query.resource_code)
        masking = effective_masking(grant.masking, resource.items) if grant and resource else {}
        head = {"id": str(query.id), "resource": query.resource_code, "provider": query.provider_dept}
        self.flag_extra(query.id, reply, query.fields)
        status, http_status, body = outcome_of(
            reply, head, query.fields, masking, keys, request_hash=query.request_hash
        )
        was_pending = query.status == QueryStatus.PENDING
        on_time = was_pending and 0 < reply.answered_unix_ms <= deadline_ms(query)
        if on_time:
            audit = self.audit_message(audited(context_of(query), body), outcome=status)
        else:
            if status == QueryStatus.COMPLETED:
                status = QueryStatus.LATE_REPLY
                body["status"] = QueryStatus.LATE_REPLY
            reason = QueryStatus.COMPLETED if status == QueryStatus.LATE_REPLY else status
            audit = self.audit_message(audited(context_of(query), body), outcome=QueryStatus.LATE_REPLY, reason=reason)
            if was_pending:
                # Past its deadline with no outcome recorded: its waiter is at the deadline (and
                # will find the query closed: the consumer gets 504) or died with its replica
                # before the sweep closed it. The timeout is recorded first, so that the audit
                # chain is the one every late reply has (timeout, late_reply); both are keyed by
                # the query id (:meth:`audit_message`), so they reach the audit log in this order.
                uow.emit(self.audit_message(context_of(query), outcome=QueryStatus.TIMEOUT))
        query.status = status
        query.http_status = http_status
        query.response = body
        query.completed_at = datetime.now(UTC)
        uow.emit(audit)
        return True

    async def close_abandoned(self) -> int:
        """Close queries left ``pending`` well past their deadline: the replica that waited for them
        died. They end as ``timeout`` with an audit event (reason ``abandoned``), so every query has
        an outcome in the audit trail; a reply that still comes is recorded as a late reply."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.abandoned_after_s)
        async with self.outbox.unit_of_work(wait_for_publish=False) as uow:
            queries = (
                await uow.session.scalars(
                    select(Query)
                    .where(Query.status == QueryStatus.PENDING, Query.deadline < cutoff)
                    .order_by(Query.deadline)
                    .limit(500)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for query in queries:
                waited_ms = int((query.deadline - query.created_at).total_seconds() * 1000)
                query.status = QueryStatus.TIMEOUT
                query.http_status = 504
                query.response = timeout_problem(query.id, waited_ms).body()
                query.completed_at = datetime.now(UTC)
                uow.emit(self.audit_message(context_of(query), outcome=QueryStatus.TIMEOUT, reason="abandoned"))
        return len(queries)

    async def purge_answers(self) -> int:
        """答复保留期: purge the answers older than ``answer_retention_s``, in batches of
        ``answer_purge_batch`` (short transactions: the query path is never held up); how many."""
        purged = 0
        while True:
            async with driver_connection(self.engine) as db:
                batch = await repository.purge_answers(
                    db, self.settings.answer_retention_s, self.settings.answer_purge_batch
                )
            purged += batch
            if batch < self.settings.answer_purge_batch:
                return purged

    async def sweep_answers(self) -> None:
        """Run :meth:`purge_answers` every ``answer_purge_every_s`` seconds (a lifespan task)."""
        while True:
            await asyncio.sleep(self.settings.answer_purge_every_s)
            try:
                if purged := await self.purge_answers():
                    log.info("answers past their retention purged", extra={"ctx_count": purged})
            except Exception:
                log.warning("purge of old answers failed; will retry", exc_info=True)

    async def sweep_abandoned(self) -> None:
        """Run :meth:`close_abandoned` every ``abandoned_after_s / 3`` seconds (a lifespan task)."""
        while True:
            await asyncio.sleep(max(1.0, self.settings.abandoned_after_s / 3))
            try:
                if closed := await self.close_abandoned():
                    log.warning("closed queries abandoned by a dead replica", extra={"ctx_count": closed})
            except Exception:
                log.warning("sweep of abandoned queries failed; will retry", exc_info=True)


def is_https(url: str) -> bool:
    """An absolute https URL with a host, no credentials in it and no fragment."""
    try:
        parts = urlsplit(url)
        return parts.scheme == "https" and bool(parts.hostname) and "@" not in parts.netloc and not parts.fragment
    except ValueError:  # e.g. an invalid IPv6 literal or port
        return False


def in_progress(query_id: uuid.UUID | None) -> Problem:
    """The 409 for an Idempotency-Key whose query has not ended yet: a retry with the same key
    gets its outcome once it has. The query ends even when the replica that sent it died (a late
    reply, or the abandoned-query sweep), so a client whose first attempt was cut off — the
    gateway retries it on another replica — is told to wait, not to ask again."""
    return ExchangeProblem.IDEMPOTENCY_IN_PROGRESS.problem(
        "A query with this Idempotency-Key is still being answered; retry shortly with the same key.",
        extra={"query_id": str(query_id)} if query_id is not None else None,
        headers={"Retry-After": "1"},
    )


def replay(earlier: Record, print_: str) -> dict[str, Any]:
    """Same Idempotency-Key, same request: the same answer. Different request: an error."""
    if earlier["fingerprint"] != print_:
        raise ExchangeProblem.IDEMPOTENCY_KEY_REUSED.problem(
            "This Idempotency-Key was used for a different query; use a new key."
        )
    if earlier["answer_purged_at"] is not None:
        raise ExchangeProblem.ANSWER_PURGED.problem(
            "The answer to this query was purged after the retention period (it was personal data); "
            "its outcome stays readable by id. Ask again with a new Idempotency-Key if you still need the data."
        )
    if earlier["status"] == QueryStatus.PENDING or earlier["response"] is None:
        raise in_progress(earlier["id"])
    response: dict[str, Any] = earlier["response"]  # JSONB, decoded by the engine's codec
    return answer_or_raise(earlier["http_status"] or 200, response)


def deadline_ms(query: Query) -> int:
    return int(query.deadline.timestamp() * 1000)


def late_reply_possible() -> ColumnElement[bool]:
    """The queries a late reply may still be recorded for: closed as a timeout, or pending past
    their deadline (their waiter is gone), and whose answer is not past its retention."""
    return (
        Query.answer_purged_at.is_(None)  # a reply later than the retention is not kept
        & (
            (Query.status == QueryStatus.TIMEOUT)
            | ((Query.status == QueryStatus.PENDING) & (Query.deadline < func.now()))
        )
    )


def context_of(query: Query) -> AuditContext:
    """The audit context of a recorded query (for events made after its request has gone)."""
    return AuditContext(
        actor=query.actor,
        consumer_dept=query.consumer_dept,
        consumer_client_id=query.client_id,
        resource=query.resource_code,
        provider=query.provider_dept,
        purpose=query.purpose,
        subject_type=query.subject_type,
        subject_hash=query.subject_hash,
        fields=tuple(query.fields),
        query_id=str(query.id),
        subject_key_id=query.subject_key_id,  # the key of the query's time, not today's
    )


async def get_query(session: AsyncSession, principal: Principal, query_id: uuid.UUID) -> Query:
    query = await session.get(Query, query_id)
    if query is None or not principal.is_system or query.client_id != principal.client_id:
        raise NotFound("query", str(query_id))  # only the system that asked; others see nothing
    return query


def query_view(query: Query) -> dict[str, Any]:
    """A query as its consumer reads it: the recorded answer, or, before it ends or once its
    answer was purged (答复保留期), the outcome alone (with ``answer_purged_at``)."""
    body = query.response or {
        "id": str(query.id),
        "status": query.status,
        "resource": query.resource_code,
        "provider": query.provider_dept,
    }
    purged = {"answer_purged_at": query.answer_purged_at.isoformat()} if query.answer_purged_at else {}
    return {**body, "id": str(query.id), "status": query.status, **purged}
