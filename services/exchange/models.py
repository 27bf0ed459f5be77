"""Exchange tables (schema ``exchange``): its projection of the registry, and the queries."""

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import ARRAY, Boolean, Date, DateTime, Index, Integer, String, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import schema_metadata
from services.common.outbox import OutboxRow


class Base(DeclarativeBase):
    metadata = schema_metadata("exchange")


class ResourceView(Base):
    """A published resource as the exchange knows it from ``registry.events``."""

    __tablename__ = "resources"

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    provider_dept: Mapped[str] = mapped_column(String(18))
    version: Mapped[int] = mapped_column(Integer)
    share_type: Mapped[str] = mapped_column(String(16))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


class GrantView(Base):
    """A grant as the exchange knows it from ``registry.events``."""

    __tablename__ = "grants"
    __table_args__ = (Index("ix_grants_lookup", "client_id", "resource_code"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    resource_code: Mapped[str] = mapped_column(String(40))
    provider_dept: Mapped[str] = mapped_column(String(18))
    consumer_dept: Mapped[str] = mapped_column(String(18))
    client_id: Mapped[str] = mapped_column(String(64))
    items: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    purpose: Mapped[str] = mapped_column(String(64))
    masking: Mapped[dict[str, str]] = mapped_column(JSONB)
    valid_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    daily_quota: Mapped[int] = mapped_column(Integer)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Query(Base):
    """Query — 数据查询: one request for data about one subject, and how it ended."""

    __tablename__ = "queries"
    __table_args__ = (
        UniqueConstraint("client_id", "idempotency_key"),
        # Only the few pending rows: the sweep of abandoned queries reads them by deadline.
        Index("ix_queries_pending", "deadline", postgresql_where=text("status = 'pending'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    consumer_dept: Mapped[str] = mapped_column(String(18))
    actor: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    resource_code: Mapped[str] = mapped_column(String(40))
    provider_dept: Mapped[str] = mapped_column(String(18))
    grant_id: Mapped[uuid.UUID] = mapped_column()
    purpose: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_hash: Mapped[str] = mapped_column(String(64))
    fields: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    # pending | completed | not_found | timeout | provider_error | late_reply
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class GrantUsage(Base):
    """Queries made today under a grant, counted against its daily quota (配额)."""

    __tablename__ = "grant_usage"

    grant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer)


class Outbox(OutboxRow, Base):
    pass


# The query path's two writes, as single statements: one round trip each, atomic without an
# explicit transaction (services.common.db.driver_connection). They must follow the tables above.

# Count the query against today's quota; only if under it, insert the pending query and its
# request's outbox row. Returns the day's count, or NULL when the quota is used up.
START_QUERY = """
WITH counted AS (
    INSERT INTO exchange.grant_usage AS u (grant_id, day, used)
    SELECT $1, $2, 1 WHERE $3::int > 0
    ON CONFLICT (grant_id, day) DO UPDATE SET used = u.used + 1 WHERE u.used < $3::int
    RETURNING u.used
), query AS (
    INSERT INTO exchange.queries (id, client_id, consumer_dept, actor, idempotency_key, fingerprint,
        resource_code, provider_dept, grant_id, purpose, subject_type, subject_hash, fields, status, deadline)
    SELECT $4, $5, $6, $7, $8, $9, $10, $11, $1, $12, $13, $14, $15, 'pending', $16 FROM counted
    RETURNING id
), request AS (
    INSERT INTO exchange.outbox (id, topic, key, value, headers)
    SELECT $17, $18, $19, $20, $21 FROM query
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
INSERT INTO exchange.outbox (id, topic, key, value, headers)
SELECT $5, $6, $7, $8, $9 FROM done
RETURNING id
"""

FIND_IDEMPOTENT = "SELECT fingerprint, status, http_status, response FROM exchange.queries WHERE client_id = $1 AND idempotency_key = $2"
