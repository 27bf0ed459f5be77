"""Exchange rules: may this system have these items about this subject for this purpose now?
Then send the request to the provider, wait for the reply, mask it, and answer only after the
audit record is durable (fail closed). No HTTP here."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from asyncpg import Record, UniqueViolationError  # type: ignore[import-untyped]
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.common.bus import Message
from services.common.db import driver_connection
from services.common.errors import Problem
from services.common.identifiers import InvalidIdentifier
from services.common.logs import request_id_var
from services.common.masking import apply_masking
from services.common.outbox import Outbox
from services.common.pb import audit_pb2, exchange_pb2
from services.common.security import Principal, PrincipalType, Role
from services.common.subjects import normalise_subject, subject_hash
from services.exchange.config import ExchangeSettings
from services.exchange.models import FIND_IDEMPOTENT, FINISH_QUERY, START_QUERY, GrantView, Query, ResourceView
from services.exchange.schemas import QueryCreate

Reply = exchange_pb2.ExchangeReply
log = logging.getLogger("tongban.exchange")


class Denied(Problem):
    """A query refused before it reached the provider. ``code`` names the reason."""

    def __init__(self, status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, code, title, detail, headers=headers)


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    body: dict[str, Any]


def fingerprint(body: QueryCreate, subject_value: str) -> str:
    canonical = orjson.dumps([body.resource, body.purpose, body.subject.type, subject_value, sorted(body.fields or [])])
    return hashlib.sha256(canonical).hexdigest()


def effective_masking(grant: GrantView, resource: ResourceView) -> dict[str, str]:
    """The grant's rules; a sensitive item the grant leaves unruled is hidden completely."""
    rules = dict(grant.masking)
    for item in resource.items:
        if item.get("sensitive") and item["name"] not in rules:
            rules[item["name"]] = "full"
    return rules


def check_grant(
    grant: GrantView | None, resource: ResourceView, purpose: str, fields: list[str], now: datetime
) -> GrantView:
    """The sharing rules at query time: a live grant, for this purpose, covering every item asked."""
    if grant is None:
        raise Denied(
            403,
            "no-grant",
            "No grant",
            f"Your system has no grant for resource {resource.code}; apply in the registry.",
        )
    if grant.revoked:
        raise Denied(403, "grant-revoked", "Grant revoked", f"Grant {grant.id} was revoked by the provider.")
    if grant.valid_until < now:
        raise Denied(
            403, "grant-expired", "Grant expired", f"Grant {grant.id} expired at {grant.valid_until.isoformat()}."
        )
    if grant.purpose != purpose:
        raise Denied(
            403,
            "purpose-not-granted",
            "Purpose not granted",
            f"Grant {grant.id} is for 事项 {grant.purpose}; the data may not be used for {purpose}.",
        )
    known = {i["name"] for i in resource.items}
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise Denied(
            422, "unknown-items", "Unknown information items", f"{resource.code} has no items: {', '.join(unknown)}."
        )
    not_granted = [f for f in fields if f not in grant.items]
    if not_granted:
        raise Denied(
            403, "item-not-granted", "Item not granted", f"Not granted to your system: {', '.join(not_granted)}."
        )
    return grant


def seconds_to_midnight(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - now).total_seconds()))


def over_quota(grant: GrantView, now: datetime) -> Denied:
    return Denied(
        429,
        "quota-exceeded",
        "Daily quota used up",
        f"Grant {grant.id} allows {grant.daily_quota} queries a day.",
        headers={"Retry-After": str(seconds_to_midnight(now))},
    )


class Exchange:
    """Brokers queries. Owns the in-memory waiters that correlate replies with open requests."""

    def __init__(self, settings: ExchangeSettings, engine: AsyncEngine, outbox: Outbox) -> None:
        self.settings = settings
        self.engine = engine
        self.outbox = outbox
        self.waiters: dict[str, asyncio.Future[Reply]] = {}
        self._grants: dict[tuple[str, str, str], tuple[float, ResourceView, GrantView]] = {}

    # ----------------------------------------------------------------------- audit

    def audit_message(
        self,
        principal: Principal,
        *,
        outcome: str,
        reason: str = "",
        resource: str = "",
        provider: str = "",
        purpose: str = "",
        subject_type: str = "",
        subject: str = "",
        fields: list[str] | None = None,
        query_id: str = "",
    ) -> Message:
        event = audit_pb2.AuditEvent(
            event_id=uuid.uuid4().hex,
            occurred_unix_ms=int(time.time() * 1000),
            service="exchange",
            action="exchange.query",
            outcome=outcome,
            reason=reason,
            actor=principal.sub,
            consumer_dept=principal.dept,
            consumer_client_id=principal.client_id or "",
            provider_dept=provider,
            resource_code=resource,
            purpose=purpose,
            subject_type=subject_type,
            subject_hash=subject,
            fields=fields or [],
            query_id=query_id,
            request_id=request_id_var.get() or "",
        )
        topic = self.settings.topic("audit.events")
        return Message(topic=topic, key=event.event_id.encode(), value=event.SerializeToString())

    def audit(self, session: AsyncSession, principal: Principal, **event: Any) -> None:
        self.outbox.add(session, self.audit_message(principal, **event))

    async def deny(self, principal: Principal, problem: Problem, **context: Any) -> Problem:
        """Record the denial durably, then hand back the problem to raise (fail closed)."""
        async with self.outbox.transaction(wait_for_publish=False) as session:
            self.audit(session, principal, outcome="denied", reason=problem.code, **context)
        return problem

    # ----------------------------------------------------------------------- queries

    async def query(self, principal: Principal, body: QueryCreate, idempotency_key: str | None) -> Answer:
        context: dict[str, Any] = {
            "resource": body.resource,
            "purpose": body.purpose,
            "subject_type": body.subject.type,
        }
        if not principal.is_system or not principal.has_role(Role.CONSUMER):
            problem = Problem(
                403, "not-a-consumer", "Not a consuming system", "Queries are made by systems with the consumer role."
            )
            raise await self.deny(principal, problem, **context)
        try:
            subject_value = normalise_subject(body.subject.type, body.subject.value)
        except InvalidIdentifier as err:
            raise await self.deny(
                principal, Problem(422, "invalid-subject", "Invalid subject identifier", str(err)), **context
            ) from err
        context["subject"] = subject_hash(self.settings.subject_hash_key, body.subject.type, subject_value)
        print_ = fingerprint(body, subject_value)
        now = datetime.now(UTC)
        timeout_ms = min(body.timeout_ms or self.settings.default_timeout_ms, self.settings.max_timeout_ms)
        query_id = uuid.uuid4()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Reply] = loop.create_future()
        self.waiters[str(query_id)] = waiter
        try:
            try:
                resource, grant = await self.grant_for(principal, body.resource, body.purpose)
                context["provider"] = resource.provider_dept
                grant = check_grant(grant, resource, body.purpose, body.fields or [], now)
                fields = body.fields or list(grant.items)
                context["fields"] = fields
                masking = effective_masking(grant, resource)
                deadline = now + timedelta(milliseconds=timeout_ms)
                request = exchange_pb2.ExchangeRequest(
                    query_id=str(query_id),
                    resource_code=resource.code,
                    resource_version=resource.version,
                    consumer_dept=principal.dept,
                    consumer_client_id=principal.client_id or "",
                    provider_dept=resource.provider_dept,
                    purpose=body.purpose,
                    subject_type=body.subject.type,
                    subject_value=subject_value,
                    fields=fields,
                    deadline_unix_ms=int(deadline.timestamp() * 1000),
                    grant_id=str(grant.id),
                )
                topic = self.settings.topic(f"exchange.requests.{resource.provider_dept}")
                staged = self.outbox.stage(
                    Message(topic=topic, key=str(query_id).encode(), value=request.SerializeToString())
                )
                async with driver_connection(self.engine) as db:
                    if idempotency_key is not None:
                        earlier = await db.fetchrow(FIND_IDEMPOTENT, principal.client_id, idempotency_key)
                        if earlier is not None:
                            return self.replay(earlier, print_)
                    used = await db.fetchval(
                        START_QUERY,
                        grant.id,
                        now.date(),
                        grant.daily_quota,
                        query_id,
                        principal.client_id,
                        principal.dept,
                        principal.sub,
                        idempotency_key,
                        print_,
                        resource.code,
                        resource.provider_dept,
                        body.purpose,
                        body.subject.type,
                        context["subject"],
                        fields,
                        deadline,
                        *self.outbox.row_parameters(staged),
                    )
                if used is None:
                    raise over_quota(grant, now)
                await self.outbox.committed([staged], wait_for_publish=True)
            except Denied as problem:
                raise await self.deny(principal, problem, **context) from None
            except UniqueViolationError:
                raise Problem(
                    409,
                    "idempotency-in-progress",
                    "Same Idempotency-Key in flight",
                    "A query with this Idempotency-Key is still being answered; retry shortly.",
                ) from None
            try:
                reply = await asyncio.wait_for(waiter, timeout_ms / 1000)
            except TimeoutError:
                return await self.finish_timeout(principal, query_id, context, timeout_ms)
        finally:
            self.waiters.pop(str(query_id), None)
        return await self.finish(principal, query_id, reply, masking, context)

    async def grant_for(
        self, principal: Principal, resource_code: str, purpose: str
    ) -> tuple[ResourceView, GrantView | None]:
        """The resource and the caller's best grant for it.

        A grant found is cached for ``grant_cache_s`` seconds, sparing the database two look-ups
        per query on the hot path; the replica that applies a registry event drops its cache at
        once (:meth:`forget_grants`), other replicas within ``grant_cache_s``. A look-up that finds
        nothing is never cached: a grant issued a moment ago must work on the next query.
        """
        key = (principal.client_id or "", resource_code, purpose)
        cached = self._grants.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        async with self.outbox.sessions() as session:
            resource = await session.get(ResourceView, resource_code)
            grant = await session.scalar(
                select(GrantView)
                .where(GrantView.client_id == principal.client_id, GrantView.resource_code == resource_code)
                .order_by(GrantView.revoked, (GrantView.purpose == purpose).desc(), GrantView.valid_until.desc())
                .limit(1)
            )
        if resource is not None and grant is not None:
            if len(self._grants) > 10_000:
                self._grants.clear()
            self._grants[key] = (time.monotonic() + self.settings.grant_cache_s, resource, grant)
        if resource is None:
            raise Denied(404, "unknown-resource", "Unknown resource", f"No published resource {resource_code!r}.")
        return resource, grant

    def forget_grants(self) -> None:
        """Drop cached grant look-ups: a registry event changed resources or grants."""
        self._grants.clear()

    def replay(self, earlier: Record, print_: str) -> Answer:
        """Same Idempotency-Key, same request: the same answer. Different request: an error."""
        if earlier["fingerprint"] != print_:
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "This Idempotency-Key was used for a different query; use a new key.",
            )
        if earlier["status"] == "pending" or earlier["response"] is None:
            raise Problem(
                409,
                "idempotency-in-progress",
                "Same Idempotency-Key in flight",
                "A query with this Idempotency-Key is still being answered; retry shortly.",
            )
        return Answer(earlier["http_status"] or 200, earlier["response"])

    def outcome_of(
        self, reply: Reply, query: dict[str, Any], fields: list[str], masking: dict[str, str]
    ) -> tuple[str, int, dict[str, Any]]:
        """How a reply ends a query: (outcome, HTTP status, body). ``query`` heads the body of an
        answer; only the ``fields`` asked are taken from the reply, then masked."""
        if reply.status == Reply.OK:
            data, masked = apply_masking({k: reply.data[k] for k in fields if k in reply.data}, masking)
            signature = {
                "alg": "EdDSA",
                "key_id": reply.key_id,
                "value": reply.signature,
                "request_hash": reply.request_hash,
            }
            return (
                "completed",
                200,
                {**query, "status": "completed", "data": data, "masked": masked, "signature": signature},
            )
        if reply.status == Reply.NOT_FOUND:
            problem = Problem(404, "subject-not-found", "No record", "The provider has no record about this subject.")
            return "not_found", 404, problem.body()
        problem = Problem(
            502, "provider-error", "Provider error", f"The provider could not answer: {reply.error or 'unknown'}."
        )
        return "provider_error", 502, problem.body()

    async def finish(
        self, principal: Principal, query_id: uuid.UUID, reply: Reply, masking: dict[str, str], context: dict[str, Any]
    ) -> Answer:
        base = {"id": str(query_id), "resource": context["resource"], "provider": context["provider"]}
        outcome, status_code, body = self.outcome_of(reply, base, context["fields"], masking)
        if not await self.close_query(principal, query_id, outcome, status_code, body, context):
            # The late-reply consumer got there first (we were at the deadline): its record stands.
            raise self.timeout_problem(query_id, 0)
        return Answer(status_code, body)

    async def close_query(
        self,
        principal: Principal,
        query_id: uuid.UUID,
        outcome: str,
        status_code: int,
        body: dict[str, Any],
        context: dict[str, Any],
    ) -> bool:
        """Record how a pending query ended, with its audit event; False if it was not pending."""
        staged = self.outbox.stage(self.audit_message(principal, outcome=outcome, query_id=str(query_id), **context))
        async with driver_connection(self.engine) as db:
            closed = await db.fetchval(
                FINISH_QUERY,
                query_id,
                outcome,
                status_code,
                orjson.dumps(body).decode(),
                *self.outbox.row_parameters(staged),
            )
        if closed is None:
            return False
        await self.outbox.committed([staged], wait_for_publish=False)
        return True

    def timeout_problem(self, query_id: uuid.UUID, timeout_ms: int) -> Problem:
        return Problem(
            504,
            "provider-timeout",
            "Provider did not answer in time",
            f"No reply within {timeout_ms} ms. A late reply will be recorded; fetch GET /v1/exchange/queries/{query_id}.",
            extra={"query_id": str(query_id)},
        )

    async def finish_timeout(
        self, principal: Principal, query_id: uuid.UUID, context: dict[str, Any], timeout_ms: int
    ) -> Answer:
        problem = self.timeout_problem(query_id, timeout_ms)
        await self.close_query(principal, query_id, "timeout", 504, problem.body(), context)
        raise problem

    # ----------------------------------------------------------------------- replies

    def dispatch(self, reply: Reply) -> None:
        """Hand a reply to the request waiting in this process, if any."""
        waiter = self.waiters.get(reply.query_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    async def record_late(self, session: AsyncSession, reply: Reply) -> bool:
        """Record a reply that came after the consumer was told 504 (or whose waiter died)."""
        try:
            query_id = uuid.UUID(reply.query_id)
        except ValueError:
            return False
        # Lock only queries past their deadline: in-flight ones belong to their waiter, and
        # locking them here would make every on-time answer wait for this consumer.
        query = await session.scalar(
            select(Query)
            .where(
                Query.id == query_id,
                (Query.status == "timeout") | ((Query.status == "pending") & (Query.deadline < func.now())),
            )
            .with_for_update()
        )
        if query is None:
            return False
        grant = await session.get(GrantView, query.grant_id)
        resource = await session.get(ResourceView, query.resource_code)
        masking = effective_masking(grant, resource) if grant and resource else {}
        base = {"id": str(query.id), "resource": query.resource_code, "provider": query.provider_dept}
        outcome, status_code, body = self.outcome_of(reply, base, query.fields, masking)
        if outcome == "completed":
            body["status"] = "late_reply"
        query.status = "late_reply" if outcome == "completed" else outcome
        query.http_status = status_code
        query.response = body
        query.completed_at = datetime.now(UTC)
        self.audit(session, principal_of(query), outcome="late_reply", reason=outcome, **context_of(query))
        return True

    async def close_abandoned(self) -> int:
        """Close queries left ``pending`` well past their deadline: the replica that waited for them
        died. They end as ``timeout`` with an audit event (reason ``abandoned``), so every query has
        an outcome in the audit trail; a reply that still comes is recorded as a late reply."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.abandoned_after_s)
        async with self.outbox.transaction(wait_for_publish=False) as session:
            queries = (
                await session.scalars(
                    select(Query)
                    .where(Query.status == "pending", Query.deadline < cutoff)
                    .order_by(Query.deadline)
                    .limit(500)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for query in queries:
                waited_ms = int((query.deadline - query.created_at).total_seconds() * 1000)
                query.status = "timeout"
                query.http_status = 504
                query.response = self.timeout_problem(query.id, waited_ms).body()
                query.completed_at = datetime.now(UTC)
                self.audit(session, principal_of(query), outcome="timeout", reason="abandoned", **context_of(query))
        return len(queries)

    async def sweep_abandoned(self) -> None:
        """Run :meth:`close_abandoned` every ``abandoned_after_s / 3`` seconds (a lifespan task)."""
        while True:
            await asyncio.sleep(max(1.0, self.settings.abandoned_after_s / 3))
            try:
                if closed := await self.close_abandoned():
                    log.warning("closed queries abandoned by a dead replica", extra={"ctx_count": closed})
            except Exception:
                log.warning("sweep of abandoned queries failed; will retry", exc_info=True)


def principal_of(query: Query) -> Principal:
    """Who asked ``query``, as far as the audit trail needs to know."""
    return Principal(
        type=PrincipalType.SYSTEM,
        sub=query.actor,
        client_id=query.client_id,
        dept=query.consumer_dept,
        roles=frozenset(),
        scope=frozenset(),
        jti="",
    )


def context_of(query: Query) -> dict[str, Any]:
    """The audit context of ``query`` (the fields :meth:`Exchange.audit_message` takes)."""
    return {
        "resource": query.resource_code,
        "provider": query.provider_dept,
        "purpose": query.purpose,
        "subject_type": query.subject_type,
        "subject": query.subject_hash,
        "fields": query.fields,
        "query_id": str(query.id),
    }


async def get_query(session: AsyncSession, principal: Principal, query_id: uuid.UUID) -> Query:
    query = await session.get(Query, query_id)
    if query is None or query.client_id != principal.client_id:  # only the system that asked
        raise Problem(404, "not-found", "query not found", f"No query {query_id} is visible to you.")
    return query
