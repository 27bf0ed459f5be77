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

from services.common.pb import registry_pb2 as pb
from services.common.security import Principal
from services.common.uow import Staged, UnitOfWork
from services.registry.catalogue import service as catalogue
from services.registry.catalogue.schemas import ResourceCreate, ResourcePatch
from services.registry.models import CategorySequence, Resource, ResourceVersion

TOPIC = "t.registry.events"
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

    def events(self) -> list[pb.RegistryEvent]:
        """The events staged so far, and forget them."""
        staged, self.staged = self.staged, []
        assert all(message.topic == TOPIC for _, message in staged)
        return [pb.RegistryEvent.FromString(message.value) for _, message in staged]


@dataclass
class Catalogue(Units):
    async def create(self, admin: Principal, body: ResourceCreate) -> Resource:
        async with self.unit() as uow:
            return await catalogue.create_resource(uow, admin, body)

    async def patch(self, admin: Principal, code: str, **changes: Any) -> ResourceVersion:
        async with self.unit() as uow:
            _, version = await catalogue.update_resource(uow, admin, code, ResourcePatch.model_validate(changes))
            return version

    async def submit(self, admin: Principal, code: str) -> ResourceVersion:
        async with self.unit() as uow:
            _, version = await catalogue.submit_resource(uow, admin, code)
            return version

    async def publish(self, reviewer: Principal, code: str) -> Resource:
        async with self.unit() as uow:
            resource, _ = await catalogue.publish_resource(uow, reviewer, code, TOPIC, TODAY)
            return resource

    async def reject(self, reviewer: Principal, code: str, reason: str) -> ResourceVersion:
        async with self.unit() as uow:
            _, version = await catalogue.reject_resource(uow, reviewer, code, reason)
            return version

    async def deprecate(self, admin: Principal, code: str) -> Resource:
        async with self.unit() as uow:
            return await catalogue.deprecate_resource(uow, admin, code)

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
