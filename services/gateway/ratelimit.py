"""Rate limits (限流) at the gateway: token buckets in PostgreSQL, shared by every replica.

Each request takes one token from each bucket it counts against, in ONE statement (``TAKE``): an
upsert whose row lock serialises the replicas, so two gateways never both spend the last token.
A bucket holds at most ``burst`` tokens and refills at ``rate_per_s``.

Proxied requests do not pay that round trip each (it was most of the gateway's added latency):
a replica takes a *lease* (租约) of several tokens of the caller's bucket in the same statement and
spends them in memory for at most ``rate_limit_lease_s``. The lease is small against the policy —
at most ``burst / LEASE_SHARE``, ``rate_per_s × lease_s`` and ``rate_limit_lease_max`` tokens, at
least one — so a small limit (a lease of one) stays exact. The bounds, with ``L`` the lease size,
``n`` the replicas and ``T`` the lease's life: over any window of ``w`` seconds a caller gets at
most ``burst + rate_per_s × (w + T)`` requests through (a token is only spent after the shared
bucket gave it, at most ``T`` earlier), and is refused at most ``n × L`` tokens early (leased by
a replica it is not talking to, or left unused when a lease ends).

Buckets, by key:
* ``api:<sub>`` — every proxied request of a system or person; a system's own limit
  (``gateway.rate_limits``, set by a platform administrator) overrides the default;
* ``token:client:<client_id>`` and ``token:source:<address>`` — the token and introspection endpoints;
* ``login:user:<username>`` and ``login:source:<address>`` — the login endpoint.
The stricter limits on tokens and logins slow down guessing; the lockout stops it for one name.

Over the limit: 429 ``rate-limited`` with ``Retry-After`` and the ``RateLimit`` /
``RateLimit-Policy`` fields of draft-ietf-httpapi-ratelimit-headers (-09/-10 syntax:
``RateLimit-Policy: "api";q=200;w=2`` and ``RateLimit: "api";r=57;t=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import delete, func
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.common.contracts.audit import storable
from services.common.db import database_unavailable, driver_connection
from services.common.errors import NotFound
from services.common.security import Principal
from services.gateway import service
from services.gateway.config import GatewaySettings
from services.gateway.models import RateLimit, System
from services.gateway.problems import GatewayProblem

log = logging.getLogger("tongban.gateway.ratelimit")

KEY_MAX = 200
PRUNE_EVERY_S = 60.0

# A lease is at most this share of a bucket: the part of the burst one replica may hold unspent.
LEASE_SHARE = 10

# One statement per request (or per lease), for every bucket it counts against (sorted by key, so
# that two requests lock shared rows in the same order). A new bucket starts full, minus what is
# taken; an existing one is refilled for the time since it was last counted, then pays if it can.
# The policy is the system's own row of rate_limits if any, else the one passed in ($2, $3).
# What is taken is the lease (see the module docstring; $5 the largest lease, $6 its life in
# seconds; 1 and 0 for one token): all of it or nothing, so that the caller knows how many it got.
# The lease's size is written three times, alike — on the new row, on the row found and on the
# row returned: GREATEST(1, LEAST($5, floor(burst / 10), floor(rate * $6))), 10 being LEASE_SHARE.
TAKE = """
INSERT INTO gateway.rate_buckets AS b (key, tokens, rate_per_s, burst, allowed, updated_at, full_at)
SELECT k.key, p.burst - GREATEST(1, LEAST($5::float8, floor(p.burst::float8 / 10), floor(p.rate * $6::float8)))::int,
    p.rate, p.burst, true, now(), now() + make_interval(secs => p.burst / p.rate)
FROM unnest($1::text[], $2::float8[], $3::int[], $4::text[]) AS k(key, rate, burst, client_id)
CROSS JOIN LATERAL (
    SELECT COALESCE(l.rate_per_s, k.rate) AS rate, COALESCE(l.burst, k.burst) AS burst
    FROM (VALUES (1)) AS one(x) LEFT JOIN gateway.rate_limits AS l ON l.client_id = k.client_id
) AS p
ORDER BY k.key
ON CONFLICT (key) DO UPDATE SET
    (tokens, allowed) = (
        SELECT CASE WHEN a.available >= a.lease THEN a.available - a.lease ELSE a.available END,
            a.available >= a.lease
        FROM (
            SELECT LEAST(
                excluded.burst,
                b.tokens + GREATEST(0, EXTRACT(EPOCH FROM now() - b.updated_at)) * excluded.rate_per_s
            ) AS available,
            GREATEST(1, LEAST(
                $5::float8, floor(excluded.burst::float8 / 10), floor(excluded.rate_per_s * $6::float8)
            ))::int AS lease
        ) AS a
    ),
    rate_per_s = excluded.rate_per_s,
    burst = excluded.burst,
    updated_at = now(),
    full_at = excluded.full_at
RETURNING key, tokens, rate_per_s, burst, allowed,
    GREATEST(1, LEAST($5::float8, floor(burst::float8 / 10), floor(rate_per_s * $6::float8)))::int AS lease
"""


@dataclass(frozen=True)
class Bucket:
    """What to count a request against: ``key``, and the policy unless ``client_id`` has its own."""

    policy: str  # the name in the RateLimit fields: api, token, login
    key: str
    rate_per_s: float
    burst: int
    client_id: str = ""


@dataclass(frozen=True)
class Outcome:
    policy: str
    tokens: float
    rate_per_s: float
    burst: int
    allowed: bool
    taken: int = 1  # tokens taken when allowed: 1, or a lease

    def headers(self) -> dict[str, str]:
        """``RateLimit-Policy`` (quota ``q`` per window ``w`` seconds: a full bucket and the time it
        takes to refill) and ``RateLimit`` (``r`` remaining, ``t`` seconds until full again)."""
        window = max(1, math.ceil(self.burst / self.rate_per_s))
        remaining = max(0, math.floor(self.tokens))
        until_full = max(0, math.ceil((self.burst - self.tokens) / self.rate_per_s))
        return {
            "RateLimit-Policy": f'"{self.policy}";q={self.burst};w={window}',
            "RateLimit": f'"{self.policy}";r={remaining};t={until_full}',
        }

    def retry_after(self) -> int:
        """Seconds until the bucket has a whole token again."""
        return max(1, math.ceil((1 - self.tokens) / self.rate_per_s))


@dataclass
class Lease:
    """Tokens of a shared bucket this replica took in one statement, spent here until ``expires``
    (monotonic); ``outcome`` is the shared bucket as the lease left it."""

    left: int
    expires: float
    outcome: Outcome

    def spend(self, now: float) -> dict[str, str] | None:
        """One token, and the RateLimit fields to answer with; None when there is none left."""
        if self.left < 1 or self.expires <= now:
            return None
        self.left -= 1
        o = self.outcome
        return Outcome(o.policy, o.tokens + self.left, o.rate_per_s, o.burst, True).headers()


class RateLimiter:
    """The gateway's rate limits; owned by the lifespan (``app.state.ratelimiter``)."""

    def __init__(self, engine: AsyncEngine, settings: GatewaySettings, registry: CollectorRegistry) -> None:
        self.engine = engine
        self.settings = settings
        # Proxied requests' leases by bucket key, and the lease being taken for a key: concurrent
        # requests of one caller wait for it rather than each asking PostgreSQL.
        self.leases: dict[str, Lease] = {}
        self.refills: dict[str, asyncio.Future[Outcome | None]] = {}
        self.limited = Counter(
            "tongban_gateway_ratelimit_rejections",
            "Requests refused with 429 by a rate limit",
            ["policy"],
            registry=registry,
        )
        self.unavailable = Counter(
            "tongban_gateway_ratelimit_unavailable",
            "Proxied requests let through unlimited because the database could not be asked",
            registry=registry,
        )

    async def take(self, buckets: Sequence[Bucket], lease_max: int = 1, lease_s: float = 0.0) -> list[Outcome]:
        """Take one token from each bucket (atomically, across replicas); the outcome of each. With
        ``lease_max`` > 1 and ``lease_s`` > 0: a lease of up to ``lease_max`` tokens, all or nothing."""
        async with driver_connection(self.engine) as conn:
            rows = await conn.fetch(
                TAKE,
                [b.key[:KEY_MAX] for b in buckets],
                [b.rate_per_s for b in buckets],
                [b.burst for b in buckets],
                [b.client_id for b in buckets],
                lease_max,
                lease_s,
            )
        policy_of = {b.key[:KEY_MAX]: b.policy for b in buckets}
        return [
            Outcome(policy_of[r["key"]], r["tokens"], r["rate_per_s"], r["burst"], r["allowed"], r["lease"])
            for r in rows
        ]

    async def check(self, buckets: Sequence[Bucket]) -> list[Outcome]:
        """:meth:`take`, raising 429 ``rate-limited`` if any bucket was empty."""
        outcomes = await self.take(buckets)
        for outcome in outcomes:
            self.refuse_if_empty(outcome)
        return outcomes

    def refuse_if_empty(self, outcome: Outcome) -> None:
        if not outcome.allowed:
            self.limited.labels(outcome.policy).inc()
            raise GatewayProblem.RATE_LIMITED.problem(
                f"Too many requests: retry in {outcome.retry_after()} s (请求过于频繁，请稍后再试).",
                headers={"Retry-After": str(outcome.retry_after()), **outcome.headers()},
            )

    async def check_api(self, principal: Principal) -> dict[str, str]:
        """Count a proxied request against its caller's bucket; the RateLimit fields for the answer.
        Spent from this replica's lease when it has one (no database round trip), else from a new
        lease (:meth:`lease`). If the database cannot be asked the request goes on unlimited (the
        services behind answer for themselves): a rate limit must not turn a database hiccup into
        an outage of every API."""
        s = self.settings
        bucket = Bucket("api", f"api:{principal.sub}", s.rate_limit_per_s, s.rate_limit_burst, client_id=principal.sub)
        key = bucket.key[:KEY_MAX]
        while True:
            lease = self.leases.get(key)
            if lease is not None and (headers := lease.spend(time.monotonic())) is not None:
                return headers
            refill = self.refills.get(key)
            if refill is None:
                refill = self.refills[key] = asyncio.ensure_future(self.lease(key, bucket))
                # Its error reaches every waiter; retrieved here too, for when all have gone.
                refill.add_done_callback(lambda done: done.cancelled() or done.exception())
            # Shielded: a caller that gives up does not cancel the lease the others wait for.
            outcome = await asyncio.shield(refill)
            if outcome is None:
                return {}
            self.refuse_if_empty(outcome)

    async def lease(self, key: str, bucket: Bucket) -> Outcome | None:
        """A new lease of ``bucket`` for this replica (kept in ``leases``); None if the database
        cannot be asked. A bucket with fewer tokens than a lease, but at least one, lends what it has."""
        s = self.settings
        try:
            (outcome,) = await self.take([bucket], s.rate_limit_lease_max, s.rate_limit_lease_s)
            if not outcome.allowed and outcome.tokens >= 1:
                (outcome,) = await self.take([bucket], math.floor(outcome.tokens), s.rate_limit_lease_s)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            self.unavailable.inc()
            log.warning("rate limit not checked: database unavailable")
            return None
        finally:
            self.refills.pop(key, None)
        if outcome.allowed:
            self.leases[key] = Lease(outcome.taken, time.monotonic() + s.rate_limit_lease_s, outcome)
        return outcome

    async def check_token(self, client_id: str, source: str) -> None:
        s = self.settings
        await self.check(
            [
                # A claimed name may hold what PostgreSQL text cannot (NUL): counted as storable.
                Bucket(
                    "token", f"token:client:{storable(client_id)}", s.token_rate_limit_per_s, s.token_rate_limit_burst
                ),
                Bucket("token", f"token:source:{source}", s.source_rate_limit_per_s, s.source_rate_limit_burst),
            ]
        )

    async def check_login(self, username: str, source: str) -> None:
        s = self.settings
        await self.check(
            [
                Bucket("login", f"login:user:{storable(username)}", s.login_rate_limit_per_s, s.login_rate_limit_burst),
                Bucket("login", f"login:source:{source}", s.source_rate_limit_per_s, s.source_rate_limit_burst),
            ]
        )

    async def prune(self) -> int:
        """Forget the buckets that are full again (a new bucket starts full): the table holds only
        the recently active callers, whatever names an attacker tries. And this replica's ended leases."""
        now = time.monotonic()
        self.leases = {key: lease for key, lease in self.leases.items() if lease.expires > now}
        async with driver_connection(self.engine) as conn:
            status: str = await conn.execute("DELETE FROM gateway.rate_buckets WHERE full_at < now()")
        return int(status.rsplit(" ", 1)[-1])

    @contextlib.asynccontextmanager
    async def pruning(self) -> AsyncIterator[None]:
        """Prune every PRUNE_EVERY_S while the body runs (the lifespan's)."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(PRUNE_EVERY_S)
                try:
                    await self.prune()
                except Exception:  # the next round tries again; a request never waits for this
                    log.exception("pruning rate-limit buckets failed")

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --------------------------------------------------------------------------- per-system limits


async def system_limit(session: AsyncSession, principal: Principal, client_id: str) -> RateLimit | None:
    """A system's own limit, or None when it has the default (platform_admin)."""
    await limited_system(session, principal, client_id)
    return await session.get(RateLimit, client_id)


async def set_system_limit(
    session: AsyncSession, principal: Principal, client_id: str, rate_per_s: float, burst: int
) -> RateLimit:
    """Give a system its own limit (platform_admin); it applies from the system's next request."""
    await limited_system(session, principal, client_id)
    row = await session.get(RateLimit, client_id)
    if row is None:
        row = RateLimit(client_id=client_id, rate_per_s=rate_per_s, burst=burst)
        session.add(row)
    else:
        row.rate_per_s, row.burst, row.updated_at = rate_per_s, burst, func.now()
    await session.flush()
    await session.refresh(row)
    return row


async def reset_system_limit(session: AsyncSession, principal: Principal, client_id: str) -> None:
    """Back to the default limit (platform_admin)."""
    await limited_system(session, principal, client_id)
    await session.execute(delete(RateLimit).where(RateLimit.client_id == client_id))


async def limited_system(session: AsyncSession, principal: Principal, client_id: str) -> System:
    service.require_platform_admin(principal)
    system = await session.get(System, client_id)
    if system is None:
        raise NotFound("system", client_id)
    return system
