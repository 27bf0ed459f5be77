"""Exchange application factory; the lifespan owns the database, the bus, the outbox relay and
the reply consumers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common import keywrap
from services.common.bus import Bus, KafkaBus, Subscription
from services.common.http import create_service_app
from services.common.runtime import readiness_checks, service_runtime
from services.exchange import callbacks
from services.exchange.answers import ProviderKeys
from services.exchange.api import router
from services.exchange.config import ExchangeSettings
from services.exchange.evidence import Evidence, EvidenceMetrics
from services.exchange.feeds import FeedMetrics, Feeds, KafkaFeedLog
from services.exchange.feeds_api import router as feeds_router
from services.exchange.ledger import Ledger
from services.exchange.messaging import on_late_replies, on_registry_events, on_replies
from services.exchange.models import Outbox as OutboxModel
from services.exchange.service import Exchange, ExchangeMetrics

MIGRATIONS = Path(__file__).parent / "migrations"


def reply_subscriptions(
    settings: ExchangeSettings, exchange: Exchange, sessions: async_sessionmaker[AsyncSession]
) -> list[Subscription]:
    """The exchange's consumers of ``exchange.replies``: every replica's waiters (no group), and
    the late-reply group. Replies carry the provider's data in clear (个人信息): their dead
    letters are withheld (``personal_data``)."""
    replies = settings.topic("exchange.replies")
    return [
        Subscription([replies], on_replies(exchange), group=None, personal_data=True),
        # Late replies are by definition not urgent: fetch them in larger, slower batches so
        # this consumer does not compete with on_replies the moment a reply arrives.
        Subscription(
            [replies],
            on_late_replies(exchange, sessions),
            group=settings.topic("exchange.late-replies"),
            fetch_min_bytes=64 * 1024,
            fetch_max_wait_ms=250,
            personal_data=True,
        ),
    ]


def create_app(settings: ExchangeSettings | None = None, bus: Bus | None = None) -> FastAPI:
    settings = settings or ExchangeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with service_runtime(
            settings,
            schema="exchange",
            migrations=MIGRATIONS,
            bus=bus,
            registry=app.state.metrics,
            outbox_model=OutboxModel,
        ) as rt:
            outbox = rt.outbox
            assert outbox is not None
            # Fetches the providers' answer-signing keys from the gateway's registry of systems.
            keys_client = httpx.AsyncClient()
            exchange = Exchange(
                settings,
                rt.engine,
                outbox,
                ExchangeMetrics(app.state.metrics),
                provider_keys=ProviderKeys(settings, keys_client),
            )
            # Callbacks are signed with a platform key sealed under the key-encryption key; an
            # exchange without one runs, and refuses callbacks (503 callbacks-unavailable).
            signer = None
            if settings.key_encryption_key is not None:
                wrap = keywrap.required(settings.key_encryption_key, "exchange")
                signer = await callbacks.load_signer(rt.sessions, wrap)
                exchange.callbacks_enabled = True
            for subscription in reply_subscriptions(settings, exchange, rt.sessions):
                rt.bus.subscribe(subscription)
            rt.bus.subscribe(
                Subscription(
                    [settings.topic("registry.events")],
                    on_registry_events(exchange, rt.sessions),
                    group=settings.topic("exchange.registry"),
                )
            )
            ledger_topic = settings.topic("exchange.ledger")
            await rt.bus.start([settings.topic("audit.events"), ledger_topic])
            await outbox.start()
            sweeper = asyncio.create_task(exchange.sweep_abandoned(), name="exchange:abandoned")
            purger = asyncio.create_task(exchange.sweep_answers(), name="exchange:answer-retention")
            ledger = Ledger(outbox, ledger_topic, timedelta(seconds=settings.ledger_window_s))
            ledger_task = asyncio.create_task(ledger.run(), name="exchange:ledger")
            tasks = [sweeper, purger, ledger_task]
            sender = None
            if signer is not None:
                metrics = callbacks.CallbackMetrics(app.state.metrics)
                sender = callbacks.CallbackSender(settings, rt.sessions, signer, exchange.query_closed, metrics)
                tasks.append(asyncio.create_task(sender.run(), name="exchange:callbacks"))
            app.state.runtime = rt
            app.state.exchange = exchange
            app.state.evidence = Evidence(exchange, EvidenceMetrics(app.state.metrics))
            app.state.callback_signer = signer
            # Feeds read Kafka itself (a topic from a position): not the in-process bus of the embedded mode.
            feed_log = KafkaFeedLog(settings) if isinstance(rt.bus, KafkaBus) else None
            app.state.feeds = Feeds(settings, exchange, feed_log, FeedMetrics(app.state.metrics))
            app.state.readiness = readiness_checks(rt)
            try:
                yield
            finally:
                # Async queries still waiting stay pending: the abandoned-query sweep (here or on
                # another replica) closes them, and their callbacks are sent then.
                for task in [*tasks, *exchange.background]:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if sender is not None:
                    await sender.close()
                await outbox.stop()
                await rt.bus.stop()
                await keys_client.aclose()

    app = create_service_app(
        service="exchange",
        title="Tongban exchange",
        version="0.1.0",
        description="Brokers data queries from consuming to providing departments; masks and audits every answer.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
    )
    app.include_router(router)
    app.include_router(feeds_router)
    return app
