"""Exchange tables (schema ``exchange``): its projection of the registry, and the queries."""

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    func,
    text,
)
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
    # SHA-256 (hex) of the request as sent: the provider's signed answer must name it. Kept with
    # the query so that any replica can verify a late reply, not only the one that sent it (NULL
    # for queries written before it was kept).
    request_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[QueryStatus] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # 答复保留期: when the answer (personal data) was purged; the outcome stays.
    answer_purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # 批量查询: the batch this query was one subject of (None: asked alone).
    batch_id: Mapped[uuid.UUID | None] = mapped_column()


class GrantUsage(Base):
    """Queries made today under a grant, counted against its daily quota (配额)."""

    __tablename__ = "grant_usage"

    grant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    used: Mapped[int] = mapped_column(Integer)


class ServiceItemView(Base):
    """A service item (政务服务事项) with its materials (申请材料), as the exchange knows it from
    ``registry.events`` (ServiceItemChanged): what an evidence bundle fetches."""

    __tablename__ = "service_items"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    dept: Mapped[str] = mapped_column(String(18))
    version: Mapped[int] = mapped_column(BigInteger)  # the registry's clock at the change (µs)
    withdrawn: Mapped[bool] = mapped_column(Boolean)
    # [{id, name, source, necessity, resource_code, items}], as the registry sent them
    materials: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)


class EvidenceBundle(Base):
    """EvidenceBundle — 免提交材料包: one call fetching every government-issued material of a
    service item about one subject. Outcomes only; the answers stay with their queries (and go
    with them at the end of the answer retention period)."""

    __tablename__ = "evidence_bundles"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    consumer_dept: Mapped[str] = mapped_column(String(18))
    actor: Mapped[str] = mapped_column(String(64))
    service_item: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_hash: Mapped[str] = mapped_column(String(64))
    materials_total: Mapped[int] = mapped_column(Integer)  # every material of the item
    exempt: Mapped[int] = mapped_column(Integer)  # 免提交: fetched, so not submitted by the applicant
    # [{material_id, name, necessity, resource, outcome, query_id, problem}] per government-issued material
    outcomes: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CallbackUrl(Base):
    """回调地址 — the https URL a consuming system registered for the outcomes of its async queries."""

    __tablename__ = "callback_urls"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(500))
    registered_by: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CallbackState(StrEnum):
    PENDING = "pending"  # to be POSTed once its query has ended (again after next_attempt_at)
    DELIVERED = "delivered"
    FAILED = "failed"  # max attempts used up: alerted (docs/operations.md), readable by id still


class Callback(Base):
    """One async query's outcome to POST to its system's callback URL: a durable queue row,
    written with the query itself, retried with backoff (exchange/callbacks.py)."""

    __tablename__ = "callbacks"
    __table_args__ = (
        Index("ix_callbacks_due", "next_attempt_at", postgresql_where=text("state = 'pending'")),
        one_of("state", CallbackState),
    )

    query_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(500))
    state: Mapped[CallbackState] = mapped_column(String(16), server_default=CallbackState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SigningKey(Base):
    """The Ed25519 key callbacks are signed with (platform key, published at
    ``/v1/exchange/callback-keys``), sealed under the environment's key-encryption key."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Outbox(OutboxRow, Base):
    pass
