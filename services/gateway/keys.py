"""Token signing keys (签名密钥) and their rotation (轮换).

Three keys at most are published in the JWKS at once: the *next* key (published before it signs,
so that every service has it cached by the time it does), the *current* key (signs every token),
and the *previous* key (no longer signs, published until the tokens it signed have expired).
A rotation makes next current, current previous, drops the old previous and creates a new next.

Private keys are kept sealed (AES-256-GCM, :mod:`services.common.keywrap`) under the
key-encryption key of the environment (``TONGBAN_KEY_ENCRYPTION_KEY``); the database alone never
holds a usable private key. Every replica re-reads the ring every ``key_refresh_s`` seconds, so a
rotation made by another replica (or by ``python -m services.gateway keys rotate``) reaches it
without a restart; meanwhile its tokens are signed by a key that is still published.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, KeySet
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.keywrap import KeyWrap
from services.common.security import LEEWAY_S, TokenVerifier
from services.gateway.models import KeyState, SigningKey
from services.gateway.problems import GatewayProblem

ALGORITHM = "ES256"
# One lock for every change of the ring (first start of several replicas, concurrent rotations).
RING_LOCK = "SELECT pg_advisory_xact_lock(hashtext('tongban.gateway.signing_keys'))"
# The order keys are published in: the JWKS lists next, current, previous.
PUBLISHED_ORDER = {KeyState.NEXT: 0, KeyState.CURRENT: 1, KeyState.PREVIOUS: 2}


@dataclass(frozen=True)
class KeyRing:
    """The keys of one moment: ``current`` signs; ``published`` (public halves) is the JWKS."""

    current: ECKey
    published: tuple[ECKey, ...]
    states: dict[str, KeyState]  # kid → state

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self.states)

    def jwks(self) -> dict[str, object]:
        return dict(KeySet(list(self.published)).as_dict(private=False))


def context(kid: str) -> str:
    """What a sealed key is bound to: it opens only on its own row."""
    return f"tongban.gateway.signing_keys:{kid}"


def new_key(wrap: KeyWrap, state: KeyState, now: datetime) -> SigningKey:
    kid = uuid.uuid4().hex[:16]
    key = ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": ALGORITHM}, private=True)
    sealed = wrap.seal(json.dumps(key.as_dict(private=True)).encode(), context(kid))
    return SigningKey(
        kid=kid,
        state=state,
        public_jwk=key.as_dict(private=False),
        sealed_private_jwk=sealed,
        created_at=now,
        state_since=now,
    )


def unsealed(row: SigningKey, wrap: KeyWrap) -> ECKey:
    assert row.sealed_private_jwk is not None  # sealed by prepare_ring before any use
    return ECKey.import_key(json.loads(wrap.open(row.sealed_private_jwk, context(row.kid))))


async def rows(session: AsyncSession) -> list[SigningKey]:
    """Every key, in JWKS order: next, current, previous."""
    found = (await session.scalars(select(SigningKey))).all()
    return sorted(found, key=lambda r: (PUBLISHED_ORDER[KeyState(r.state)], r.created_at))


def ring_of(found: list[SigningKey], wrap: KeyWrap) -> KeyRing:
    keys = [unsealed(r, wrap) for r in found]
    current = next(k for k, r in zip(keys, found, strict=True) if r.state == KeyState.CURRENT)
    return KeyRing(current=current, published=tuple(keys), states={r.kid: KeyState(r.state) for r in found})


async def prepare_ring(session: AsyncSession, wrap: KeyWrap) -> KeyRing:
    """At start: a current and a next key exist (created on a fresh database), and every private
    key is sealed (a key from before sealing is sealed now, and its clear copy removed)."""
    await session.execute(text(RING_LOCK))
    now = datetime.now(UTC)
    found = await rows(session)
    for row in found:
        if row.sealed_private_jwk is None and row.private_jwk is not None:
            row.sealed_private_jwk = wrap.seal(json.dumps(row.private_jwk).encode(), context(row.kid))
            row.private_jwk = None
    states = {r.state for r in found}
    if KeyState.CURRENT not in states:
        session.add(new_key(wrap, KeyState.CURRENT, now))
    if KeyState.NEXT not in states:
        session.add(new_key(wrap, KeyState.NEXT, now))
    await session.flush()
    return ring_of(await rows(session), wrap)


async def load_ring(session: AsyncSession, wrap: KeyWrap) -> KeyRing:
    """The ring as the database has it now (each replica, every ``key_refresh_s``)."""
    return ring_of(await rows(session), wrap)


async def rotate(session: AsyncSession, wrap: KeyWrap, token_ttl_s: int) -> KeyRing:
    """One rotation: next → current → previous; the old previous is dropped, a new next created.

    Refused (``rotation-too-soon``) while tokens signed by the previous key may still be valid —
    within ``token_ttl_s`` (plus the verifiers' leeway) of the last rotation — since dropping it
    would turn them away before they expire.
    """
    await session.execute(text(RING_LOCK))
    now = datetime.now(UTC)
    found = await rows(session)
    grace = timedelta(seconds=token_ttl_s + LEEWAY_S)
    for row in found:
        if row.state == KeyState.PREVIOUS and row.state_since + grace > now:
            wait = int((row.state_since + grace - now).total_seconds()) + 1
            raise GatewayProblem.ROTATION_TOO_SOON.problem(
                f"Tokens signed by key {row.kid} may be valid for {wait} s more; rotate again after that "
                f"(上次轮换的令牌尚未全部过期).",
                headers={"Retry-After": str(wait)},
            )
    for dropped in (r for r in found if r.state == KeyState.PREVIOUS):
        await session.delete(dropped)
    await session.flush()
    by_state = {KeyState(r.state): r for r in found if r.state != KeyState.PREVIOUS}
    # In this order, flushed one by one: at no moment two current or two next keys.
    for old, new in ((KeyState.CURRENT, KeyState.PREVIOUS), (KeyState.NEXT, KeyState.CURRENT)):
        moving = by_state.get(old)
        if moving is not None:
            moving.state, moving.state_since = new, now
            await session.flush()
    session.add(new_key(wrap, KeyState.NEXT, now))
    if KeyState.NEXT not in by_state:  # no next key to promote (cannot happen after prepare_ring)
        session.add(new_key(wrap, KeyState.CURRENT, now))
    await session.flush()
    return ring_of(await rows(session), wrap)


def install(state: Any, verifier: TokenVerifier, ring: KeyRing) -> None:
    """Sign with ``ring``'s current key (``state`` is the app's state); verify with every
    published one (the gateway verifies with its own keys, no HTTP). The verifier's cache of
    verified tokens is kept unless the keys changed.

    Installed by a rotation before its transaction commits: should the commit fail, the key
    signing is the one that was next, published by every replica already, and the next refresh
    puts the ring back as the database has it."""
    old: KeyRing | None = getattr(state, "key_ring", None)
    state.key_ring = ring
    if old is None or old.kids != ring.kids:
        verifier.use_keys(KeySet(list(ring.published)))
