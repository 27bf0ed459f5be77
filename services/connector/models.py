"""Connector tables (schema ``connector``): the demo backend, the reply-signing key and the
replies already sent (so a request delivered again is not looked up again)."""

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Date, DateTime, LargeBinary, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import one_of, schema_metadata


class Base(DeclarativeBase):
    metadata = schema_metadata("connector")


class Resident(Base):
    """A synthetic 户籍 record: the demo backend of 市公安局's 居民户籍信息."""

    __tablename__ = "residents"

    id_number: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    gender: Mapped[str] = mapped_column(String(1))
    birth_date: Mapped[date] = mapped_column(Date)
    address: Mapped[str] = mapped_column(String(200))


class SigningKey(Base):
    """The Ed25519 key this connector signs replies with (the provider answers for accuracy),
    sealed (AES-GCM) under the key-encryption key of the environment."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sealed_private_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Before the key-encryption key: the raw key in clear, sealed (and cleared) at the next start.
    private_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SentReply(Base):
    """The signed reply to one query, kept for ``reply_retention_s`` (回执留存): a request that
    arrives again (Kafka redelivers after a crash or a rebalance; the exchange's outbox may publish
    twice) is answered with these bytes, never by asking the backend again. A row is claimed
    (``reply`` NULL) in the transaction that looks the subject up and stores the reply, so two
    deliveries at once wait for each other instead of both asking the backend."""

    __tablename__ = "replies"

    query_id: Mapped[str] = mapped_column(Text, primary_key=True)
    reply: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)


class WatermarkKind(StrEnum):
    """How a stored watermark's text is read back: the type of the watermark column."""

    INTEGER = "integer"
    TIMESTAMP = "timestamp"
    TEXT = "text"


class FeedWatermark(Base):
    """水位线 — how far the change feed of one resource has been published (connector/feeds.py):
    the watermark of the last change Kafka acknowledged. The row is locked while a poll runs, so
    of several connector replicas one polls a resource at a time."""

    __tablename__ = "feed_watermarks"
    __table_args__ = (one_of("kind", WatermarkKind),)

    resource_code: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[WatermarkKind] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(Text)
    published: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
