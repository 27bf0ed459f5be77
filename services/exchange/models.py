"""Exchange tables (schema ``exchange``): its projection of the registry, and the queries."""

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ARRAY, Boolean, Date, DateTime, Index, Integer, String, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import one_of, schema_metadata
from services.common.outbox import OutboxRow


class Base(DeclarativeBase):
    metadata = schema_metadata("exchange")


class QueryStatus(StrEnum):
    PENDING = "pending"  # sent to the provider, waiting for its reply
    COMPLETED = "completed"
    NOT_FOUND = "not_found"  # the provider has no record of the subject
    TIMEOUT = "timeout"  # no reply by the deadline (or abandoned by a replica that died)
    PROVIDER_ERROR = "provider_error"
    LATE_REPLY = "late_reply"  # answered after the consumer was told 504


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
        # The purge of old answers reads by age; rows are written in created_at order, so a BRIN
        # index finds them at almost no cost to the query path (a B-tree would grow per query).
        Index("ix_queries_created_brin", "created_at", postgresql_using="brin"),
        Index("ix_queries_completed_at", "completed_at"),  # the ledger's window (exchange/ledger.py)
        one_of("status", QueryStatus),
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
    # Which subject key made subject_hash: the events written after the request has gone (a late
    # reply, an abandoned query) name it too, even after a rotation. "" for rows from before.
    subject_key_id: Mapped[str] = mapped_column(String(32), server_default="")
    fields: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    status: Mapped[QueryStatus] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # 答复保留期: when the answer (personal data) was purged; the outcome stays.
    answer_purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class GrantUsage(Base):
    """Queries made today under a grant, counted against its daily quota (配额)."""

    __tablename__ = "grant_usage"

    grant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer)


class Outbox(OutboxRow, Base):
    pass
