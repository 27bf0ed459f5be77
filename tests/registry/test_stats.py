"""GET /v1/registry/stats — 免提交, resources by sharing class, 责任清单 fulfilment and pending
applications, per department and overall.

A material is 免提交 only when the exchange can fetch it now: mapped to a published, shared
resource that still has its 信息项, nothing of it on the 负面清单, and a live grant for the
implementing department covering those 信息项 for this very 事项. Real PostgreSQL; rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.security import Principal, Role
from services.registry.applications.schemas import Purpose
from services.registry.models import Grant, Resource
from services.registry.service_items import service
from services.registry.service_items.schemas import DepartmentStats, StatsPublic
from services.registry.service_items.stats import exempt_materials
from tests.factories import (
    ApplicationCreateFactory,
    ResourceCreateFactory,
    conditional_share,
    credit_code,
    not_shared,
    person,
    system,
)
from tests.registry.calls import TODAY
from tests.registry.keeping import Keeper

CODE = "ZDSHBZ-SP"  # 最低生活保障审批, implemented by 民政
COVERING = ["姓名", "公民身份号码"]


@dataclass
class World:
    """公安 publishes 居民户籍信息; 民政 implements 最低生活保障审批, whose 居民户口簿 maps to it."""

    keeper: Keeper
    police: str
    civil: str
    client: Principal
    resource: Resource

    async def item_with(self, *materials: dict[str, object], code: str = CODE) -> None:
        await self.keeper.service_item(
            person(self.civil, Role.DATA_ADMIN), code=code, name="最低生活保障审批", materials=list(materials)
        )

    def card(self, items: list[str] | None = None, resource: str | None = None) -> dict[str, object]:
        return {
            "name": "居民户口簿",
            "source": "government",
            "resource": resource or self.resource.code,
            "items": items or COVERING,
        }

    async def granted(self, items: list[str] | None = None, purpose: str = CODE) -> Grant:
        body = ApplicationCreateFactory.build(
            resource=self.resource.code,
            client_id=self.client.client_id,
            items=items or COVERING,
            purpose=Purpose(service_item=purpose),
        )
        _, grant = await self.keeper.apply(self.client, body)
        assert grant is not None
        return grant

    async def civil_stats(self) -> DepartmentStats:
        return of(await self.keeper.stats(), self.civil)


def of(stats: StatsPublic, dept: str) -> DepartmentStats:
    return next(d for d in stats.departments if d.dept == dept)


@pytest.fixture
async def world(session: AsyncSession) -> World:
    keeper = Keeper(session)
    police, civil = credit_code("110101"), credit_code("110105")
    resource = await keeper.publish_resource(person(police, Role.DATA_ADMIN), name="居民户籍信息")
    return World(keeper, police, civil, system(civil), resource)


async def test_a_mapped_material_with_a_live_grant_is_exempt(world: World) -> None:
    form = {"name": "最低生活保障申请书", "source": "applicant"}
    unmapped = {"name": "残疾人证", "source": "government"}
    address = world.card(["户籍地址"])  # mapped, but the grant below does not cover 户籍地址
    await world.item_with(world.card(), form, unmapped, address)
    before = await world.civil_stats()
    assert (before.materials, before.exempt_materials, before.exempt_rate) == (4, 0, 0.0)

    await world.granted()

    after = await world.civil_stats()
    assert (after.materials, after.exempt_materials, after.exempt_rate) == (4, 1, 0.25)


async def test_each_material_says_whether_it_is_exempt_by_the_same_rule(world: World) -> None:
    """A service item's page shows its own materials' 免提交 (exempt_materials), counted as the figures count."""
    form = {"name": "最低生活保障申请书", "source": "applicant"}
    await world.item_with(world.card(), form, world.card(["户籍地址"]))
    await world.item_with(world.card(), code="TKRY-GYSH")  # 特困人员供养: no grant for this 事项
    _, materials = await service.get_service_item(world.keeper.session, CODE)
    card = next(m.id for m in materials if m.items == COVERING)
    codes = [CODE, "TKRY-GYSH"]
    assert await exempt_materials(world.keeper.session, codes, datetime.now(UTC)) == set()

    await world.granted()

    exempt = await exempt_materials(world.keeper.session, codes, datetime.now(UTC))
    assert exempt == {card}  # the card of ZDSHBZ-SP only: 户籍地址 is not granted, TKRY-GYSH not at all
    assert len(exempt) == (await world.civil_stats()).exempt_materials
    assert await exempt_materials(world.keeper.session, [], datetime.now(UTC)) == set()


async def test_a_grant_for_another_purpose_does_not_exempt(world: World) -> None:
    await world.item_with(world.card())
    await world.granted(purpose="GJJ-TQ")  # 住房公积金提取: purpose binding

    assert (await world.civil_stats()).exempt_materials == 0


async def test_a_revoked_or_expired_grant_does_not_exempt(world: World) -> None:
    await world.item_with(world.card())
    grant = await world.granted()
    assert (await world.civil_stats()).exempt_materials == 1

    grant.valid_until = grant.valid_until - timedelta(days=400)
    await world.keeper.session.flush()
    assert (await world.civil_stats()).exempt_materials == 0
    grant.valid_until = grant.valid_until + timedelta(days=400)
    grant.status = "revoked"  # type: ignore[assignment]
    await world.keeper.session.flush()
    assert (await world.civil_stats()).exempt_materials == 0


async def test_a_negative_listed_item_is_not_exempt(world: World) -> None:
    await world.item_with(world.card())
    await world.granted()

    await world.keeper.negative(
        person(world.police, Role.DATA_ADMIN),
        resource=world.resource.code,
        item="公民身份号码",
        basis="《个人信息保护法》",
    )

    assert (await world.civil_stats()).exempt_materials == 0


async def test_an_unpublished_or_unshared_resource_does_not_exempt(world: World) -> None:
    await world.item_with(world.card())
    await world.granted()
    police = person(world.police, Role.DATA_ADMIN)

    await world.keeper.deprecate(police, world.resource.code)
    assert (await world.civil_stats()).exempt_materials == 0

    refused = await world.keeper.publish_resource(police, name="居民户籍信息", share=not_shared())
    await world.item_with(world.card(resource=refused.code), code="TKRY-GYSH")
    assert (await world.civil_stats()).exempt_materials == 0


async def test_resources_responsibilities_and_applications_per_department(world: World) -> None:
    keeper, police = world.keeper, person(world.police, Role.DATA_ADMIN)
    conditional = await keeper.publish_resource(police, name="婚姻登记信息", share=conditional_share())
    await keeper.create(police, ResourceCreateFactory.build())  # a draft
    # 责任清单: one fulfilled by the published 居民户籍信息, one overdue, one planned.
    await keeper.add_line(police, name="居民户籍信息", items=["姓名"], due_by=TODAY + timedelta(days=10))
    overdue = TODAY - timedelta(days=1)
    await keeper.add_line(police, on=overdue, name="死亡登记信息", items=["姓名"], due_by=overdue)
    await keeper.add_line(police, name="残疾人证信息", items=["姓名"], due_by=TODAY)
    # Two pending applications for the conditional resource: one filed a month ago (overdue).
    for filed in (TODAY - timedelta(days=30), TODAY):
        body = ApplicationCreateFactory.build(
            resource=conditional.code, client_id=world.client.client_id, items=["姓名"]
        )
        await keeper.apply(world.client, body, on=filed)

    stats = await keeper.stats()

    p = of(stats, world.police)
    assert p.resources_by_share == {"unconditional": 1, "conditional": 1}  # published only
    assert (p.responsibilities.total, p.responsibilities.fulfilled, p.responsibilities.overdue) == (3, 1, 1)
    assert p.responsibilities.fulfilment_rate == round(1 / 3, 4)
    assert (p.applications.pending, p.applications.overdue) == (2, 1)
    assert (p.materials, p.exempt_rate) == (0, None)  # no service items: no rate, not 0 %
    # Applications count for the provider, not the consumer (民政 has nothing else to count).
    assert world.civil not in {d.dept for d in stats.departments}

    # Overall is the sum over every department.
    overall = stats.overall
    assert overall.dept is None
    assert overall.applications.pending == sum(d.applications.pending for d in stats.departments)
    assert overall.responsibilities.total == sum(d.responsibilities.total for d in stats.departments)
    assert overall.resources_by_share["conditional"] == sum(
        d.resources_by_share.get("conditional", 0) for d in stats.departments
    )


async def test_the_stats_say_which_years_the_calendar_covers(session: AsyncSession) -> None:
    keeper = Keeper(session)
    covered = await keeper.stats(date(2026, 6, 1))
    assert covered.calendar.business_year_covered
    assert {2024, 2025, 2026} <= set(covered.calendar.covered_years)

    beyond = max(covered.calendar.covered_years) + 1  # no notice yet: weekends only, and said so
    assert not (await keeper.stats(date(beyond, 6, 1))).calendar.business_year_covered
