"""The catalogue calls the registry's service-tier tests make, each in its own unit of work, as a
route runs it (all or nothing), with the events the calls staged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.pb import audit_pb2
from services.common.pb import registry_pb2 as pb
from services.common.security import Principal
from services.common.uow import Staged, UnitOfWork
from services.registry.catalogue import service as catalogue
from services.registry.catalogue.schemas import ResourceCreate, ResourcePatch
from services.registry.events import Topics
from services.registry.models import CategorySequence, Resource, ResourceVersion

TOPIC = "t.registry.events"
AUDIT_TOPIC = "t.audit.events"
TOPICS = Topics(events=TOPIC, audit=AUDIT_TOPIC)
TODAY = date(2026, 11, 27)


@dataclass
class Units:
    """The registry's service calls of a test, each in a unit of work on the test's session, and
    the events they staged (the base of :class:`Catalogue` and the applications tests' helper)."""

    session: AsyncSession
    staged: list[Staged] = field(default_factory=list)

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[UnitOfWork]:
        """A unit of work on the test's session, inside a savepoint: what it emits counts only if
        it ends without an error (nothing is published: the test's transaction never commits)."""
        async with self.session.begin_nested():
            uow = UnitOfWork(self.session)
            try:
                yield uow
            finally:
                uow.open = False
        self.staged.extend(uow.staged)

    def _take(self, topic: str) -> list[bytes]:
        assert all(message.topic in (TOPIC, AUDIT_TOPIC) for _, message in self.staged)
        taken = [message for _, message in self.staged if message.topic == topic]
        self.staged = [(i, message) for i, message in self.staged if message.topic != topic]
        # The wire contract: every message is keyed by its event id.
        for message in taken:
            event_id = (pb.RegistryEvent if topic == TOPIC else audit_pb2.AuditEvent).FromString(message.value).event_id
            assert message.key == event_id.encode()
        return [message.value for message in taken]

    def events(self) -> list[pb.RegistryEvent]:
        """The ``registry.events`` staged so far, and forget them."""
        return [pb.RegistryEvent.FromString(value) for value in self._take(TOPIC)]

    def audits(self) -> list[audit_pb2.AuditEvent]:
        """The audit events staged so far, and forget them."""
        return [audit_pb2.AuditEvent.FromString(value) for value in self._take(AUDIT_TOPIC)]

    def changes(self) -> list[str]:
        """The kinds of the ``registry.events`` staged so far (a resource's or an application's
        change by its name), and forget them and the audit events."""
        self.audits()
        names = []
        for event in self.events():
            kind = event.WhichOneof("event")
            if kind in ("resource_changed", "application_changed"):
                kind = getattr(event, kind).change
            names.append(str(kind))
        return names


@dataclass
class Catalogue(Units):
    async def create(self, admin: Principal, body: ResourceCreate) -> Resource:
        async with self.unit() as uow:
            return await catalogue.create_resource(uow, admin, body, TOPICS)

    async def patch(self, admin: Principal, code: str, **changes: Any) -> ResourceVersion:
        async with self.unit() as uow:
            _, version = await catalogue.update_resource(
                uow, admin, code, ResourcePatch.model_validate(changes), TOPICS
            )
            return version

    async def submit(self, admin: Principal, code: str) -> ResourceVersion:
        async with self.unit() as uow:
            _, version = await catalogue.submit_resource(uow, admin, code, TOPICS)
            return version

    async def publish(self, reviewer: Principal, code: str) -> Resource:
        async with self.unit() as uow:
            resource, _ = await catalogue.publish_resource(uow, reviewer, code, TOPICS, TODAY)
            return resource

    async def reject(self, reviewer: Principal, code: str, reason: str) -> ResourceVersion:
        async with self.unit() as uow:
            _, version = await catalogue.reject_resource(uow, reviewer, code, reason, TOPICS)
            return version

    async def deprecate(self, admin: Principal, code: str) -> Resource:
        async with self.unit() as uow:
            return await catalogue.deprecate_resource(uow, admin, code, TOPICS, TODAY)

    async def published(self, admin: Principal, reviewer: Principal, body: ResourceCreate) -> Resource:
        """A published entry: created, submitted and published."""
        draft = await self.create(admin, body)
        await self.submit(admin, draft.code)
        return await self.publish(reviewer, draft.code)

    async def count(self, category: str) -> tuple[int, int]:
        """Resources and 顺序码 counters of ``category``: both 0 when nothing was written."""
        resources = await self.session.scalar(select(func.count()).where(Resource.category == category))
        sequences = await self.session.scalar(select(func.count()).where(CategorySequence.category == category))
        return int(resources or 0), int(sequences or 0)

    async def state(self, code: str) -> tuple[Any, ...]:
        """Everything stored about ``code``, to compare before and after a refused call."""
        resource = await self.session.get(Resource, code, populate_existing=True)
        assert resource is not None
        versions = (
            await self.session.execute(
                select(ResourceVersion.version, ResourceVersion.status, ResourceVersion.content, ResourceVersion.reason)
                .where(ResourceVersion.code == code)
                .order_by(ResourceVersion.version)
                .execution_options(populate_existing=True)
            )
        ).all()
        shown = {c: getattr(resource, c) for c in catalogue.CONTENT_FIELDS}
        return resource.status, resource.version, shown, [tuple(v) for v in versions]
