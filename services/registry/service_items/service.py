"""Service items (政务服务事项) and their materials (申请材料). No HTTP here.

A service item belongs to its implementing department (实施部门): only that department's
``data_admin`` writes it or its materials, and for anyone else a write is a 404. Service items are
published lists, readable by every department. A government-issued material (政府部门核发) may map
to a catalogue resource and the 信息项 of it that cover the material; the statistics
(``services/registry/stats.py``) count it 免提交 when the exchange can actually fetch it. Every
write sends the item as it now stands on ``registry.events`` (``events.service_item_changed``), so
the exchange can fetch its materials in one evidence bundle.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import NotFound, Problem
from services.common.pagination import one_more, page
from services.common.security import Principal
from services.common.uow import UnitOfWork
from services.registry.catalogue.service import get_resource
from services.registry.events import Topics, item_clock, service_item_changed
from services.registry.lists.service import require_data_admin
from services.registry.models import Material, Resource, ServiceItem
from services.registry.problems import RegistryProblem
from services.registry.service_items.schemas import MaterialSpec, ServiceItemCreate, ServiceItemPatch


def check_covering(spec: MaterialSpec, resource: Resource) -> None:
    """The 信息项 a material maps to are items ``resource`` has."""
    known = {item["name"] for item in resource.items}
    unknown = [name for name in spec.items or [] if name not in known]
    if unknown:
        raise RegistryProblem.UNKNOWN_ITEMS.problem(
            f"材料 {spec.name}: {resource.code} has no items {', '.join(unknown)}.", extra={"unknown": unknown}
        )


async def check_mapping(session: AsyncSession, principal: Principal, spec: MaterialSpec) -> None:
    """A mapped material names a resource the caller can see, and only 信息项 that resource has."""
    if spec.resource is None or spec.items is None:
        return
    check_covering(spec, await get_resource(session, principal, spec.resource))


async def taken_codes(session: AsyncSession, codes: Collection[str]) -> set[str]:
    """Those of ``codes`` already registered (one query for all of them)."""
    if not codes:
        return set()
    return set((await session.scalars(select(ServiceItem.code).where(ServiceItem.code.in_(codes)))).all())


def code_taken(code: str) -> Problem:
    return RegistryProblem.SERVICE_ITEM_EXISTS.problem(f"事项编码 {code} is already registered.")


def new_material(code: str, spec: MaterialSpec) -> Material:
    return Material(
        id=uuid.uuid4(),
        service_item_code=code,
        name=spec.name,
        source=spec.source,
        necessity=spec.necessity,
        resource_code=spec.resource,
        items=spec.items or [],
    )


async def materials_of(session: AsyncSession, codes: list[str]) -> dict[str, list[Material]]:
    rows = await session.scalars(
        select(Material)
        .where(Material.service_item_code.in_(codes))
        .order_by(Material.service_item_code, Material.created_at, Material.id)
    )
    found: dict[str, list[Material]] = {code: [] for code in codes}
    for material in rows:
        found[material.service_item_code].append(material)
    return found


async def create_service_item(
    uow: UnitOfWork, principal: Principal, body: ServiceItemCreate, topics: Topics
) -> tuple[ServiceItem, list[Material]]:
    """A service item of the caller's department (its 实施部门), with its materials."""
    require_data_admin(principal)
    session = uow.session
    if await taken_codes(session, [body.code]):
        raise code_taken(body.code)
    for spec in body.materials:
        await check_mapping(session, principal, spec)
    return (await insert_service_items(uow, principal, [body], topics))[0]


async def insert_service_items(
    uow: UnitOfWork, principal: Principal, bodies: Sequence[ServiceItemCreate], topics: Topics
) -> list[tuple[ServiceItem, list[Material]]]:
    """Service items of the caller's department with their materials, whose rules the caller has
    checked (:func:`create_service_item`, or an import for all its rows at once), in one flush;
    each one's ``ServiceItemChanged`` event (for the exchange's evidence bundles) in the same unit."""
    session = uow.session
    created = []
    for body in bodies:
        item = ServiceItem(code=body.code, name=body.name, dept=principal.dept, author=principal.sub)
        materials = [new_material(body.code, spec) for spec in body.materials]
        session.add(item)
        session.add_all(materials)
        created.append((item, materials))
    await session.flush()
    version = await item_clock(uow)  # once: the items were created (and locked) together
    for item, materials in created:
        await service_item_changed(uow, topics, item, materials, version=version)
    return created


async def get_service_item(session: AsyncSession, code: str) -> tuple[ServiceItem, list[Material]]:
    item = await session.get(ServiceItem, code)
    if item is None:
        raise NotFound("service item", code)
    return item, (await materials_of(session, [code]))[code]


async def list_service_items(
    session: AsyncSession, *, dept: str | None, limit: int, cursor: str | None
) -> tuple[list[tuple[ServiceItem, list[Material]]], str | None]:
    query = one_more(select(ServiceItem).order_by(ServiceItem.code), limit)
    if dept is not None:
        query = query.where(ServiceItem.dept == dept)
    if cursor is not None:
        query = query.where(ServiceItem.code > cursor)
    rows, next_cursor = page(list((await session.scalars(query)).all()), limit, lambda s: s.code)
    materials = await materials_of(session, [s.code for s in rows])
    return [(s, materials[s.code]) for s in rows], next_cursor


async def own_service_item(session: AsyncSession, principal: Principal, code: str) -> ServiceItem:
    """``code`` for its department's data administrator (locked); another department's is a 404."""
    item = await session.get(ServiceItem, code, with_for_update=True)
    if item is None or item.dept != principal.dept:
        raise NotFound("service item", code)
    require_data_admin(principal)
    return item


async def update_service_item(
    uow: UnitOfWork, principal: Principal, code: str, patch: ServiceItemPatch, topics: Topics
) -> tuple[ServiceItem, list[Material]]:
    item = await own_service_item(uow.session, principal, code)
    item.name = patch.name
    item.updated_at = datetime.now(UTC)
    await uow.session.flush()
    materials = (await materials_of(uow.session, [code]))[code]
    await service_item_changed(uow, topics, item, materials)
    return item, materials


async def item_changed(uow: UnitOfWork, topics: Topics, item: ServiceItem) -> None:
    """Tell the exchange a material of ``item`` changed (the item, with all its materials)."""
    await uow.session.flush()
    await service_item_changed(uow, topics, item, (await materials_of(uow.session, [item.code]))[item.code])


async def delete_service_item(uow: UnitOfWork, principal: Principal, code: str, topics: Topics) -> None:
    """Withdraw a service item and its materials."""
    item = await own_service_item(uow.session, principal, code)
    await uow.session.execute(delete(Material).where(Material.service_item_code == code))
    await uow.session.delete(item)
    await uow.session.flush()
    await service_item_changed(uow, topics, item, [], withdrawn=True)


async def add_material(
    uow: UnitOfWork, principal: Principal, code: str, spec: MaterialSpec, topics: Topics
) -> Material:
    item = await own_service_item(uow.session, principal, code)
    await check_mapping(uow.session, principal, spec)
    material = new_material(code, spec)
    uow.session.add(material)
    item.updated_at = datetime.now(UTC)
    await item_changed(uow, topics, item)
    return material


async def own_material(
    session: AsyncSession, principal: Principal, code: str, material_id: uuid.UUID
) -> tuple[ServiceItem, Material]:
    item = await own_service_item(session, principal, code)
    material = await session.get(Material, material_id, with_for_update=True)
    if material is None or material.service_item_code != code:
        raise NotFound("material", str(material_id))
    return item, material


async def replace_material(
    uow: UnitOfWork, principal: Principal, code: str, material_id: uuid.UUID, spec: MaterialSpec, topics: Topics
) -> Material:
    """Rewrite a material: its name, 来源渠道, 必要性 and mapping."""
    item, material = await own_material(uow.session, principal, code, material_id)
    await check_mapping(uow.session, principal, spec)
    material.name = spec.name
    material.source = spec.source
    material.necessity = spec.necessity
    material.resource_code = spec.resource
    material.items = spec.items or []
    material.updated_at = datetime.now(UTC)
    await item_changed(uow, topics, item)
    return material


async def delete_material(
    uow: UnitOfWork, principal: Principal, code: str, material_id: uuid.UUID, topics: Topics
) -> None:
    item, material = await own_material(uow.session, principal, code, material_id)
    await uow.session.delete(material)
    await item_changed(uow, topics, item)
