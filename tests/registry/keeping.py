"""The calls of a data administrator keeping the three lists and the service items (三清单, 事项),
each in its own unit of work as a route runs it, for the registry's service-tier tests."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from services.common.calendar import WorkingCalendar
from services.common.errors import Problem
from services.common.security import Principal, Role
from services.registry.applications import service as applications
from services.registry.applications.schemas import ApplicationCreate
from services.registry.lists import service as lists
from services.registry.lists.schemas import (
    DemandAccept,
    DemandCreate,
    NegativeLineCreate,
    ResponsibilityCreate,
    ResponsibilityPatch,
)
from services.registry.models import (
    Application,
    Demand,
    Grant,
    Material,
    NegativeLine,
    Resource,
    Responsibility,
    ServiceItem,
)
from services.registry.service_items import service as service_items
from services.registry.service_items.schemas import MaterialSpec, ServiceItemCreate, ServiceItemPatch, StatsPublic
from services.registry.service_items.stats import registry_stats
from tests.factories import ResourceCreateFactory, credit_code, person
from tests.registry.calls import AUDIT_TOPIC, TODAY, TOPICS, Catalogue

CALENDAR = WorkingCalendar.load(CollectorRegistry(), "registry")
TABLES = (Responsibility, Demand, NegativeLine, ServiceItem, Material, Application, Grant)


@dataclass
class Keeper(Catalogue):
    """A test's calls; ``rows()`` counts what is stored, to prove a refused call wrote nothing."""

    async def publish_resource(self, admin: Principal, **fields: Any) -> Resource:
        reviewer = person(credit_code(), Role.PLATFORM_ADMIN)
        return await self.published(admin, reviewer, ResourceCreateFactory.build(**fields))

    async def rows(self) -> dict[str, int]:
        counts = {}
        for model in TABLES:
            counts[model.__tablename__] = int(await self.session.scalar(select(func.count()).select_from(model)) or 0)
        return counts

    # 责任清单

    async def add_line(self, admin: Principal, on: date = TODAY, **fields: Any) -> Responsibility:
        body = ResponsibilityCreate.model_validate(fields)
        async with self.unit() as uow:
            return await lists.create_responsibility(uow, admin, body, on)

    async def patch_line(self, admin: Principal, line_id: uuid.UUID, **changes: Any) -> Responsibility:
        async with self.unit() as uow:
            return await lists.update_responsibility(
                uow, admin, line_id, ResponsibilityPatch.model_validate(changes), TODAY
            )

    async def line(self, line_id: uuid.UUID) -> Responsibility:
        found = await self.session.get(Responsibility, line_id, populate_existing=True)
        assert found is not None
        return found

    # 需求清单

    async def demand(self, admin: Principal, **fields: Any) -> Demand:
        async with self.unit() as uow:
            return await lists.create_demand(uow, admin, DemandCreate.model_validate(fields))

    async def accept(self, admin: Principal, demand_id: uuid.UUID, **fields: Any) -> tuple[Demand, Responsibility]:
        async with self.unit() as uow:
            return await lists.accept_demand(
                uow, admin, demand_id, DemandAccept.model_validate(fields), TODAY, AUDIT_TOPIC
            )

    async def reject_demand(self, admin: Principal, demand_id: uuid.UUID, reason: str) -> Demand:
        async with self.unit() as uow:
            return await lists.reject_demand(uow, admin, demand_id, reason, AUDIT_TOPIC)

    # 负面清单

    async def negative(self, admin: Principal, **fields: Any) -> NegativeLine:
        line, _ = await self.listed(admin, **fields)
        return line

    async def listed(self, admin: Principal, **fields: Any) -> tuple[NegativeLine, list[Grant]]:
        """A 负面清单 line, and the grants its listing revoked."""
        async with self.unit() as uow:
            return await lists.add_negative_line(uow, admin, NegativeLineCreate.model_validate(fields), TOPICS)

    async def unlist(self, admin: Principal, line_id: uuid.UUID) -> None:
        async with self.unit() as uow:
            await lists.remove_negative_line(uow, admin, line_id, AUDIT_TOPIC)

    async def apply(
        self, client: Principal, body: ApplicationCreate, on: date = TODAY
    ) -> tuple[Application, Grant | None]:
        """Apply as the consuming system ``client`` itself."""
        async with self.unit() as uow:
            return await applications.create_application(
                uow, client, body, client_dept=client.dept, topics=TOPICS, today=on, calendar=CALENDAR
            )

    # 事项 and 材料

    async def service_item(self, admin: Principal, **fields: Any) -> tuple[ServiceItem, list[Material]]:
        async with self.unit() as uow:
            return await service_items.create_service_item(uow, admin, ServiceItemCreate.model_validate(fields), TOPICS)

    async def rename_item(self, admin: Principal, code: str, name: str) -> ServiceItem:
        async with self.unit() as uow:
            item, _ = await service_items.update_service_item(uow, admin, code, ServiceItemPatch(name=name), TOPICS)
            return item

    async def drop_item(self, admin: Principal, code: str) -> None:
        async with self.unit() as uow:
            await service_items.delete_service_item(uow, admin, code, TOPICS)

    async def add_material(self, admin: Principal, code: str, **fields: Any) -> Material:
        async with self.unit() as uow:
            return await service_items.add_material(uow, admin, code, MaterialSpec.model_validate(fields), TOPICS)

    async def replace_material(self, admin: Principal, code: str, material_id: uuid.UUID, **fields: Any) -> Material:
        async with self.unit() as uow:
            spec = MaterialSpec.model_validate(fields)
            return await service_items.replace_material(uow, admin, code, material_id, spec, TOPICS)

    async def drop_material(self, admin: Principal, code: str, material_id: uuid.UUID) -> None:
        async with self.unit() as uow:
            await service_items.delete_material(uow, admin, code, material_id, TOPICS)

    async def refused(self, status: int, code: str, call: Awaitable[object]) -> Problem:
        """``call`` fails with the problem ``code`` (HTTP ``status``), writes nothing, emits nothing."""
        before, staged = await self.rows(), len(self.staged)
        with pytest.raises(Problem) as raised:
            await call
        assert (raised.value.status, raised.value.code) == (status, code), raised.value.body()
        assert await self.rows() == before
        assert len(self.staged) == staged  # no event or audit event either
        return raised.value

    async def stats(self, on: date = TODAY) -> StatsPublic:
        return await registry_stats(self.session, today=on, now=datetime.now(UTC), calendar=CALENDAR)
