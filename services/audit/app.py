"""Audit application factory; the lifespan owns the database, the bus and the event consumers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from services.audit import anomalies, completeness, retention
from services.audit.api import router
from services.audit.config import AuditSettings
from services.audit.messaging import UnreplayedDeadLetters, on_audit_events, on_dead_letters, sign_checkpoints
from services.audit.models import Outbox as OutboxModel
from services.audit.service import signing_key
from services.common import keywrap
from services.common.bus import Bus, Subscription
from services.common.calendar import WorkingCalendar
from services.common.http import create_service_app
from services.common.runtime import readiness_checks, service_runtime

MIGRATIONS = Path(__file__).parent / "migrations"
# The platform-wide dead-letter topic (services.common.runtime.make_bus): the audit service keeps
# what arrives there, so that it is seen and can be replayed.
DEAD_LETTER_TOPIC = "exchange.dlq"


def personal_data_topics(settings: AuditSettings) -> tuple[str, ...]:
    """Prefixes of the topics whose messages carry personal data in clear (proto/exchange.proto:
    a request's subject_value, a reply's data): their dead letters are kept without the message."""
    return (settings.topic("exchange.requests."), settings.topic("exchange.replies"))


def create_app(settings: AuditSettings | None = None, bus: Bus | None = None) -> FastAPI:
    settings = settings or AuditSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        wrap = keywrap.required(settings.key_encryption_key, "audit service")
        async with service_runtime(
            settings,
            schema="audit",
            migrations=MIGRATIONS,
            bus=bus,
            registry=app.state.metrics,
            outbox_model=OutboxModel,
        ) as rt:
            outbox = rt.outbox
            assert outbox is not None
            # An auditor's search waits for its event's commit (fail-closed), not for the broker's
            # ack: the outbox publishes the row right after, or its relay does once Kafka is back.
            outbox.waits_for_publish = False
            unreplayed = UnreplayedDeadLetters(rt.sessions, app.state.metrics)
            app.state.alert_metrics = alert_metrics = anomalies.AlertMetrics(app.state.metrics)
            rt.bus.subscribe(
                Subscription(
                    [settings.topic("audit.events")],
                    on_audit_events(rt.sessions),
                    group=settings.topic("audit"),
                    fetch_min_bytes=64 * 1024,  # one chain append per batch: fewer, larger batches
                    fetch_max_wait_ms=250,
                )
            )
            app.state.completeness = checked = completeness.CompletenessMetrics(app.state.metrics)
            rt.bus.subscribe(
                Subscription(
                    [settings.topic("exchange.ledger")],
                    completeness.on_ledger(rt.sessions),
                    group=settings.topic("audit.ledger"),
                )
            )
            rt.bus.subscribe(
                Subscription(
                    [settings.topic(DEAD_LETTER_TOPIC)],
                    on_dead_letters(rt.sessions, unreplayed, personal_data_topics(settings)),
                    group=settings.topic("audit.dead-letters"),
                )
            )
            # Made (or a clear one sealed) once, before anything is signed; kept unsealed in memory only.
            async with rt.sessions.begin() as session:
                app.state.checkpoint_signer = signer = await signing_key(session, settings.log_origin, wrap)
            await rt.bus.start()
            await outbox.start()
            watcher = asyncio.create_task(unreplayed.watch(), name="audit-unreplayed-dead-letters")
            checkpointer = asyncio.create_task(
                sign_checkpoints(rt.sessions, settings.log_origin, signer, settings.checkpoint_interval_s),
                name="audit-checkpoints",
            )
            # The anomaly rules run beside ingest, not in it (why: services.audit.anomalies).
            # The platform's working-day calendar (off-hours rule); its fallback counter in this app's registry.
            app.state.calendar = calendar = WorkingCalendar.load(app.state.metrics, "audit")
            rules = asyncio.create_task(
                anomalies.watch(rt.sessions, settings, alert_metrics, calendar), name="audit-anomalies"
            )
            reconciler = asyncio.create_task(
                completeness.watch(
                    rt.sessions,
                    timedelta(seconds=settings.completeness_grace_s),
                    settings.completeness_interval_s,
                    checked,
                    timedelta(days=settings.completeness_keep_days),
                ),
                name="audit-completeness",
            )
            app.state.retention = kept = retention.RetentionMetrics(app.state.metrics, settings.retention_months)
            retained = asyncio.create_task(retention.watch(rt.sessions, kept), name="audit-retention")
            app.state.runtime = rt
            app.state.readiness = readiness_checks(rt)
            try:
                yield
            finally:
                for task in (watcher, checkpointer, rules, reconciler, retained):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await outbox.stop()
                await rt.bus.stop()

    app = create_service_app(
        service="audit",
        title="Tongban audit",
        version="0.1.0",
        description="Every access, hash-chained; searched by auditors; subjects matched by keyed hash. "
        "Keeps the platform's dead letters for auditors and operators.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
    )
    app.include_router(router)
    return app
