"""Gateway tables (schema ``gateway``): departments, their systems, people, signing keys, the
client assertions seen, and the outbox of its audit events."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import one_of, schema_metadata, subset_of
from services.common.outbox import OutboxRow
from services.common.security import PERSON_ROLES, SYSTEM_ROLES, PrincipalType


class Base(DeclarativeBase):
    metadata = schema_metadata("gateway")


class Status(StrEnum):
    """Whether a department, system or person may get new tokens (启用 / 停用)."""

    ACTIVE = "active"
    DISABLED = "disabled"


def status_column() -> Mapped[Status]:
    return mapped_column(String(16), default=Status.ACTIVE, server_default=Status.ACTIVE.value)


class Department(Base):
    """Department — 部门, identified by its 统一社会信用代码."""

    __tablename__ = "departments"
    __table_args__ = (one_of("status", Status),)

    code: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    region_code: Mapped[str] = mapped_column(String(6))
    level: Mapped[str] = mapped_column(String(16))
    parent_code: Mapped[str | None] = mapped_column(String(18))
    status: Mapped[Status] = status_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuthMethod(StrEnum):
    """How a system authenticates at the token endpoint (RFC 8414 names)."""

    CLIENT_SECRET_BASIC = "client_secret_basic"
    PRIVATE_KEY_JWT = "private_key_jwt"  # RFC 7523: an assertion signed with a key of its JWKS


class System(Base):
    """System — 业务系统: a departmental system that calls the platform as an OAuth2 client."""

    __tablename__ = "systems"
    __table_args__ = (subset_of("roles", SYSTEM_ROLES), one_of("status", Status), one_of("auth_method", AuthMethod))

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dept_code: Mapped[str] = mapped_column(ForeignKey(Department.code), index=True)
    name: Mapped[str] = mapped_column(String(100))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    auth_method: Mapped[str] = mapped_column(String(32))
    status: Mapped[Status] = status_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # private_key_jwt: the system's public keys (公钥集), given inline or fetched from jwks_uri.
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    jwks_uri: Mapped[str | None] = mapped_column(String(2048))
    # RFC 8705 §3.4 tls_client_certificate_bound_access_tokens (证书绑定令牌): its tokens are bound
    # to the client certificate presented at the token endpoint (services/gateway/mtls.py).
    certificate_bound: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    # 应答签名公钥 (a provider system's): the Ed25519 keys its connector signs SD-JWT answers with.
    # The exchange verifies a department's answers only with the keys its provider systems hold here.
    answer_jwks: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class ClientAssertion(Base):
    """A private_key_jwt assertion already accepted (its ``jti``): each is accepted once, by every
    replica, until it expires; expired rows are purged."""

    __tablename__ = "client_assertions"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ClientSecret(Base):
    """A system's client secret (客户端密钥), as its argon2id hash. At most two are active at once,
    so that a secret can be rotated without downtime: add the new one, deploy it, retire the old."""

    __tablename__ = "client_secrets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey(System.client_id), index=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Set at each successful use: shows whether the older secret is still used before it is retired.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class User(Base):
    """A person: data administrator, approver, auditor or platform administrator."""

    __tablename__ = "users"
    __table_args__ = (subset_of("roles", PERSON_ROLES), one_of("status", Status))

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    dept_code: Mapped[str] = mapped_column(ForeignKey(Department.code), index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    status: Mapped[Status] = status_column()
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SignInFailures(Base):
    """Consecutive failed sign-ins (登录失败) of one name — a username or a client id, whether it
    exists or not, so that a lockout does not tell which names exist. In PostgreSQL, so that every
    gateway replica counts the same failures; the lockout (锁定) is decided from it."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (one_of("kind", PrincipalType),)

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class KeyState(StrEnum):
    """Where a token-signing key is in its rotation (轮换): published before it signs (next), signing
    (current), published after it stopped signing, until tokens it signed have expired (previous)."""

    NEXT = "next"
    CURRENT = "current"
    PREVIOUS = "previous"


class SigningKey(Base):
    """A token-signing key (ES256). Every one is in the JWKS; the current one signs. The private
    key is kept sealed (AES-GCM) under the key-encryption key of the environment."""

    __tablename__ = "signing_keys"
    __table_args__ = (
        one_of("state", KeyState),
        # At most one current and one next key, whatever two rotations do at once.
        Index(
            "uq_signing_keys_state",
            "state",
            unique=True,
            postgresql_where=text("state IN ('current', 'next')"),
        ),
    )

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[KeyState] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB)
    sealed_private_jwk: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Before the key-encryption key: a private key in clear, sealed (and cleared) at the next start.
    private_jwk: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    state_since: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Outbox(OutboxRow, Base):
    """Audit events of the gateway, written with the change they record (see services.common.outbox)."""


class RateLimit(Base):
    """A system's own rate limit (限流额度) for the services behind the gateway, instead of the
    default (``TONGBAN_RATE_LIMIT_*``): a token bucket refilled at ``rate_per_s`` up to ``burst``."""

    __tablename__ = "rate_limits"
    __table_args__ = (
        CheckConstraint("rate_per_s > 0", name="rate_per_s_positive"),
        CheckConstraint("burst >= 1", name="burst_positive"),
    )

    client_id: Mapped[str] = mapped_column(ForeignKey(System.client_id, ondelete="CASCADE"), primary_key=True)
    rate_per_s: Mapped[float] = mapped_column(Float)
    burst: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RateBucket(Base):
    """The state of one token bucket (令牌桶), shared by every gateway replica and changed by one
    atomic statement per request (``ratelimit.TAKE``). Unlogged: losing it in a crash only refills
    the buckets. A row whose bucket is full again (``full_at``) is pruned: a new one starts full."""

    __tablename__ = "rate_buckets"
    __table_args__ = ({"prefixes": ["UNLOGGED"]},)

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    # The policy the bucket was last counted with (for the RateLimit headers).
    rate_per_s: Mapped[float] = mapped_column(Float)
    burst: Mapped[int] = mapped_column(Integer)
    allowed: Mapped[bool] = mapped_column(Boolean)  # whether the last request counted got a token
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    full_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
