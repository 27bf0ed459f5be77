"""Connector tables (schema ``connector``): the demo backend and the reply-signing key."""

from datetime import date, datetime

from sqlalchemy import Date, DateTime, LargeBinary, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import schema_metadata


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
    """The Ed25519 key this connector signs replies with (the provider answers for accuracy)."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
