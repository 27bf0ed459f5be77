"""Audit tables (schema ``audit``): an append-only, hash-chained record of accesses."""

from datetime import datetime

from sqlalchemy import ARRAY, BigInteger, DateTime, Identity, Index, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import schema_metadata


class Base(DeclarativeBase):
    metadata = schema_metadata("audit")


class AuditRecord(Base):
    """AuditRecord — 访问记录. ``hash`` = SHA-256(previous hash + this record's canonical form)."""

    __tablename__ = "records"
    __table_args__ = (
        Index("ix_records_subject", "subject_hash", "seq"),
        Index("ix_records_consumer", "consumer_dept", "seq"),
        Index("ix_records_occurred", "occurred_at"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    service: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))
    consumer_dept: Mapped[str] = mapped_column(String(18))
    consumer_client_id: Mapped[str] = mapped_column(String(64))
    provider_dept: Mapped[str] = mapped_column(String(18))
    resource_code: Mapped[str] = mapped_column(String(40))
    purpose: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(16))
    subject_hash: Mapped[str] = mapped_column(String(64))
    fields: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    query_id: Mapped[str] = mapped_column(String(40))
    request_id: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChainHead(Base):
    """The last link of the chain; appends lock this row, so the chain has one order."""

    __tablename__ = "chain_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
