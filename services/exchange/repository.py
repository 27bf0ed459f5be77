"""The query path's SQL, typed: each write is one statement (one round trip, atomic without an
explicit transaction) on the pooled asyncpg connection (:func:`services.common.db.driver_connection`).
The order of a statement's parameters is owned here and nowhere else."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from asyncpg import Record  # type: ignore[import-untyped]

# Count the query against today's quota; only if under it, insert the pending query and its
# request's outbox row (claimed by this process, which publishes it at once: see outbox.py).
# Returns the day's count, or NULL (nothing written) when the quota is used up or the grant is
# revoked in the projection: a replica's cached grant can never outlive its revocation, because
# the row feeding the counter comes from the shared projection, read in this same statement.
# An async query with a callback URL ($26) gets its durable callback row in the same statement.
START_QUERY = """
WITH counted AS (
    INSERT INTO exchange.grant_usage AS u (grant_id, day, used)
    SELECT g.id, $2, 1 FROM exchange.grants g WHERE g.id = $1 AND NOT g.revoked AND $3::int > 0
    ON CONFLICT (grant_id, day) DO UPDATE SET used = u.used + 1 WHERE u.used < $3::int
    RETURNING u.used
), query AS (
    INSERT INTO exchange.queries (id, client_id, consumer_dept, actor, idempotency_key, fingerprint,
        resource_code, provider_dept, grant_id, purpose, subject_type, subject_hash, fields, status, deadline,
        request_hash, batch_id, subject_key_id)
    SELECT $4, $5, $6, $7, $8, $9, $10, $11, $1, $12, $13, $14, $15, 'pending', $16, $17, $25, $27 FROM counted
    RETURNING id
), request AS (
    INSERT INTO exchange.outbox (id, topic, key, value, headers, claimed_by, lease_until)
    SELECT $18, $19, $20, $21, $22, $23, now() + make_interval(secs => $24) FROM query
), callback AS (
    INSERT INTO exchange.callbacks (query_id, client_id, url)
    SELECT id, $5, $26::text FROM query WHERE $26::text IS NOT NULL
)
SELECT used FROM counted
"""

# Close a pending query and write its audit event's outbox row. Returns NULL (and changes
# nothing) when the query is no longer pending: the late-reply consumer closed it first.
FINISH_QUERY = """
WITH done AS (
    UPDATE exchange.queries SET status = $2, http_status = $3, response = $4, completed_at = now()
    WHERE id = $1 AND status = 'pending'
    RETURNING id
)
INSERT INTO exchange.outbox (id, topic, key, value, headers, claimed_by, lease_until)
SELECT $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11) FROM done
RETURNING id
"""

IS_REVOKED = "SELECT revoked FROM exchange.grants WHERE id = $1"

FIND_IDEMPOTENT = (
    "SELECT id, fingerprint, status, http_status, response, answer_purged_at FROM exchange.queries "
    "WHERE client_id = $1 AND idempotency_key = $2"
)


# One batch of answers past their retention: the response (personal data) goes, the outcome
# (status, HTTP status, times) stays. Oldest first; rows another replica is purging are skipped.
PURGE_ANSWERS = """
WITH old AS (
    SELECT id FROM exchange.queries
    WHERE created_at < now() - make_interval(secs => $1) AND answer_purged_at IS NULL AND status <> 'pending'
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE exchange.queries q SET response = NULL, answer_purged_at = now() FROM old WHERE q.id = old.id
"""


@dataclass(frozen=True, slots=True)
class NewQuery:
    """A query about to be sent: its row in ``exchange.queries``."""

    id: uuid.UUID
    client_id: str
    consumer_dept: str
    actor: str
    idempotency_key: str | None
    fingerprint: str
    resource_code: str
    provider_dept: str
    grant_id: uuid.UUID
    purpose: str
    subject_type: str
    subject_hash: str
    fields: list[str]
    deadline: datetime
    request_hash: str  # SHA-256 (hex) of the request as sent, which the provider's answer signs
    subject_key_id: str  # which key made subject_hash (events after a rotation name the right one)
    batch_id: uuid.UUID | None = None
    callback_url: str | None = None  # async with a callback: its row is written with the query


async def find_idempotent(db: Any, client_id: str, key: str) -> Record | None:
    """The earlier query this system made with Idempotency-Key ``key``, if any."""
    return await db.fetchrow(FIND_IDEMPOTENT, client_id, key)


async def start_query(db: Any, q: NewQuery, day: date, daily_quota: int, request: Sequence[Any]) -> bool:
    """Count ``q`` against its grant's quota for ``day`` and insert it with its request's outbox
    row (``request``: :meth:`Outbox.row_parameters`); False (nothing written) when the quota is
    used up or the grant has been revoked meanwhile (:func:`is_revoked` tells which)."""
    used = await db.fetchval(
        START_QUERY,
        q.grant_id,
        day,
        daily_quota,
        q.id,
        q.client_id,
        q.consumer_dept,
        q.actor,
        q.idempotency_key,
        q.fingerprint,
        q.resource_code,
        q.provider_dept,
        q.purpose,
        q.subject_type,
        q.subject_hash,
        q.fields,
        q.deadline,
        q.request_hash,
        *request,
        q.batch_id,
        q.callback_url,
        q.subject_key_id,
    )
    return used is not None


async def is_revoked(db: Any, grant_id: uuid.UUID) -> bool:
    """Whether the projection holds ``grant_id`` as revoked (or no longer holds it at all)."""
    revoked: bool | None = await db.fetchval(IS_REVOKED, grant_id)
    return revoked is not False


async def finish_query(
    db: Any, query_id: uuid.UUID, status: str, http_status: int, response: dict[str, Any], audit: Sequence[Any]
) -> bool:
    """Close a pending query with its audit event (``audit``: :meth:`Outbox.row_parameters`);
    False if it was no longer pending."""
    closed = await db.fetchval(FINISH_QUERY, query_id, status, http_status, orjson.dumps(response).decode(), *audit)
    return closed is not None


async def purge_answers(db: Any, retention_s: float, limit: int) -> int:
    """Purge at most ``limit`` answers older than ``retention_s``; how many were purged."""
    status: str = await db.execute(PURGE_ANSWERS, float(retention_s), limit)
    return int(status.rsplit(" ", 1)[-1])
