"""Helpers of the gateway's service tier."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.keywrap import KeyWrap, new_kek
from services.gateway.config import GatewaySettings
from services.gateway.service import Lockout

KEK = new_kek()  # made per test run, as make run and the e2e stacks make theirs
SETTINGS = GatewaySettings(
    jwt_issuer="tongban-test",
    jwt_audience="tongban-test",
    token_ttl_s=900,
    key_encryption_key=KEK,
    public_url="https://gateway.test",
)
WRAP = KeyWrap(KEK)
PASSWORD = "Tongban-2026"  # meets the password policy

LOCKOUT_THRESHOLD = 3
LOCKOUT_S = 60


def lockout_on(session: AsyncSession, threshold: int = LOCKOUT_THRESHOLD, duration_s: int = LOCKOUT_S) -> Lockout:
    """A lockout whose own transactions are savepoints of the test's ``session``: rolled back with it."""
    sessions = async_sessionmaker(bind=session.bind, expire_on_commit=False, join_transaction_mode="create_savepoint")
    return Lockout(sessions, threshold, duration_s)
