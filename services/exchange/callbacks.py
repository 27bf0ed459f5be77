"""回调 — callbacks of async queries: when an async query that named its system's registered
callback URL has ended, its outcome (the body ``GET /v1/exchange/queries/{id}`` gives) is POSTed
there, signed by the exchange, and retried with exponential backoff until the consumer's server
answers 2xx or the attempts are used up.

The queue is ``exchange.callbacks`` in PostgreSQL: a row is written in the statement that starts
its query (exchange/repository.py), so a callback survives any restart. A row is due once its
query is no longer pending — whichever replica closed it (its waiter, the late-reply consumer,
the abandoned-query sweep) — and is claimed with ``FOR UPDATE SKIP LOCKED`` under a lease, so two
replicas never POST it at once; a replica that dies mid-POST leaves it to another after the lease.

The signature (签名) is a JWS with detached content (RFC 7515 appendix F) over the exact body
bytes, ``alg`` Ed25519 (RFC 9864), in the header ``Tongban-Signature``; the public keys are served
as a JWKS at ``GET /v1/exchange/callback-keys`` (the README shows how a consumer verifies).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import ssl
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from joserfc import jws
from joserfc.jwk import OKPKey
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.keywrap import KeyWrap
from services.common.security import Principal, Role
from services.exchange.config import ExchangeSettings
from services.exchange.models import CallbackState, CallbackUrl, Query, SigningKey
from services.exchange.problems import ExchangeProblem
from services.exchange.service import is_https, query_view

log = logging.getLogger("tongban.exchange.callbacks")

ALG = "Ed25519"  # RFC 9864: fully specified (not the deprecated polymorphic "EdDSA")
SIGNATURE_HEADER = "Tongban-Signature"
LEASE_MARGIN_S = 5.0  # beyond the POST's timeout: how long a claimed row is another replica's

# Claim due callbacks: pending, their time come, their query ended. The claim is the lease (the
# next attempt pushed past the POST's timeout) and the attempt counted, committed before the POST.
CLAIM_DUE = """
WITH due AS (
    SELECT c.query_id FROM exchange.callbacks c JOIN exchange.queries q ON q.id = c.query_id
    WHERE c.state = 'pending' AND c.next_attempt_at <= now() AND q.status <> 'pending'
    ORDER BY c.next_attempt_at
    LIMIT :limit
    FOR UPDATE OF c SKIP LOCKED
)
UPDATE exchange.callbacks c
SET attempts = c.attempts + 1, next_attempt_at = now() + make_interval(secs => :lease)
FROM due WHERE c.query_id = due.query_id
RETURNING c.query_id, c.url, c.attempts
"""


def sealing_context(key_id: str) -> str:
    """What a sealed key is bound to: it opens only on its own row."""
    return f"tongban.exchange.signing_keys:{key_id}"


@dataclass(frozen=True, slots=True)
class CallbackSigner:
    """The exchange's callback signing key (a platform key) and every key's public half (JWKS)."""

    key_id: str
    key: OKPKey
    public_keys: tuple[dict[str, Any], ...]

    def sign(self, body: bytes) -> str:
        """A compact JWS over ``body`` with the content detached: ``<header>..<signature>``."""
        value = jws.serialize_compact(
            {"alg": ALG, "kid": self.key_id, "typ": "tongban-callback+jws"}, body, self.key, algorithms=[ALG]
        )
        detached: str = jws.detach_content(value)
        return detached

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self.public_keys)}


def public_jwk(key_id: str, public_key: bytes) -> dict[str, Any]:
    jwk = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": jws_b64(public_key)}).as_dict(private=False)
    return {**jwk, "kid": key_id, "alg": ALG, "use": "sig"}


def jws_b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def load_signer(sessions: async_sessionmaker[AsyncSession], wrap: KeyWrap) -> CallbackSigner:
    """The newest callback signing key, made on a fresh database. Two replicas starting together
    on an empty database may each make one: both are published, and each signs with its own."""
    async with sessions.begin() as session:
        row = await session.scalar(select(SigningKey).order_by(SigningKey.created_at.desc()).limit(1))
        if row is None:
            private = Ed25519PrivateKey.generate()
            public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            key_id = hashlib.sha256(public).hexdigest()[:16]
            raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            row = SigningKey(
                key_id=key_id, public_key=public, sealed_private_key=wrap.seal(raw, sealing_context(key_id))
            )
            session.add(row)
            await session.flush()
        everyone = (await session.scalars(select(SigningKey).order_by(SigningKey.created_at))).all()
    private = Ed25519PrivateKey.from_private_bytes(wrap.open(row.sealed_private_key, sealing_context(row.key_id)))
    return CallbackSigner(
        row.key_id, OKPKey.import_key(private), tuple(public_jwk(k.key_id, k.public_key) for k in everyone)
    )


async def register_url(session: AsyncSession, principal: Principal, url: str) -> dict[str, str]:
    """Register (or replace) the callback URL of the calling system: https only."""
    if not principal.is_system or not principal.has_role(Role.CONSUMER):
        raise ExchangeProblem.NOT_A_CONSUMER.problem("Callback URLs are registered by systems with the consumer role.")
    if not is_https(url):
        raise ExchangeProblem.CALLBACK_URL_NOT_HTTPS.problem("A callback URL must be an https URL.")
    client_id = principal.client_id or ""
    values = {"client_id": client_id, "url": url, "registered_by": principal.sub}
    await session.execute(
        insert(CallbackUrl)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["client_id"],
            set_={"url": url, "registered_by": principal.sub, "registered_at": text("now()")},
        )
    )
    return {"client_id": client_id, "url": url}


async def registered_url(session: AsyncSession, principal: Principal) -> dict[str, str] | None:
    row = await session.get(CallbackUrl, principal.client_id or "") if principal.is_system else None
    return {"client_id": row.client_id, "url": row.url} if row is not None else None


def backoff_s(settings: ExchangeSettings, attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: base × 2^(n-1), capped."""
    return float(min(settings.callback_backoff_max_s, settings.callback_backoff_s * 2 ** max(0, attempts - 1)))


class CallbackMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.attempts = Counter(
            "tongban_exchange_callback_attempts",
            "Callback POSTs by outcome: delivered (2xx), retry (will be tried again), failed (gave up)",
            ["outcome"],
            registry=registry,
        )


class CallbackSender:
    """Delivers due callbacks (a lifespan task: :meth:`run`)."""

    def __init__(
        self,
        settings: ExchangeSettings,
        sessions: async_sessionmaker[AsyncSession],
        signer: CallbackSigner,
        wake: asyncio.Event,
        metrics: CallbackMetrics,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.signer = signer
        self.wake = wake
        self.metrics = metrics
        context = ssl.create_default_context()
        if settings.callback_ca_file:
            context.load_verify_locations(cafile=settings.callback_ca_file)
        # Redirects are not followed: the registered URL is the only place personal data goes.
        self.http = httpx.AsyncClient(verify=context, timeout=settings.callback_timeout_s, follow_redirects=False)

    async def close(self) -> None:
        await self.http.aclose()

    async def deliver_due(self, limit: int = 50) -> int:
        """Claim and POST the due callbacks (at most ``limit``); how many were attempted."""
        lease = self.settings.callback_timeout_s + LEASE_MARGIN_S
        async with self.sessions.begin() as session:
            claimed = (await session.execute(text(CLAIM_DUE), {"limit": limit, "lease": lease})).all()
        await asyncio.gather(*(self.deliver(row.query_id, row.url, row.attempts) for row in claimed))
        return len(claimed)

    async def deliver(self, query_id: uuid.UUID, url: str, attempts: int) -> None:
        async with self.sessions() as session:
            query = await session.get(Query, query_id)
        if query is None:  # cannot happen while the row exists (written together); nothing to say
            return
        body = orjson.dumps(query_view(query))
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: self.signer.sign(body),
            "Tongban-Query-Id": str(query_id),
            "Tongban-Attempt": str(attempts),
        }
        error: str | None = None
        try:
            answer = await self.http.post(url, content=body, headers=headers)
            if not 200 <= answer.status_code < 300:
                error = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        await self.record(query_id, attempts, error)

    async def record(self, query_id: uuid.UUID, attempts: int, error: str | None) -> None:
        """The attempt's outcome: delivered, another try after the backoff, or failed for good."""
        async with self.sessions.begin() as session:
            if error is None:
                await session.execute(
                    text(
                        "UPDATE exchange.callbacks SET state = :state, delivered_at = now(), last_error = NULL "
                        "WHERE query_id = :id"
                    ),
                    {"state": CallbackState.DELIVERED, "id": query_id},
                )
                self.metrics.attempts.labels("delivered").inc()
                return
            if attempts >= self.settings.callback_max_attempts:
                await session.execute(
                    text("UPDATE exchange.callbacks SET state = :state, last_error = :error WHERE query_id = :id"),
                    {"state": CallbackState.FAILED, "error": error, "id": query_id},
                )
                self.metrics.attempts.labels("failed").inc()
                log.error(
                    "callback failed for good; the consumer must read the query by id",
                    extra={"ctx_query_id": str(query_id), "ctx_attempts": attempts, "ctx_error": error},
                )
                return
            await session.execute(
                text(
                    "UPDATE exchange.callbacks SET last_error = :error, "
                    "next_attempt_at = now() + make_interval(secs => :wait) WHERE query_id = :id"
                ),
                {"error": error, "wait": backoff_s(self.settings, attempts), "id": query_id},
            )
            self.metrics.attempts.labels("retry").inc()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                if await self.deliver_due():
                    continue  # there may be more due at once
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: the rows wait in it
                log.warning("callback delivery round failed; will retry", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.callback_poll_s)
