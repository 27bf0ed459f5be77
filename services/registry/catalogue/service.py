"""Catalogue rules: 信息资源代码 allocation, who may change an entry, and publishing. No HTTP here."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.contracts.registry import PublishedResource, event_message
from services.common.errors import NotFound
from services.common.pagination import one_more, page
from services.common.security import Principal, Role, forbidden
from services.common.uow import UnitOfWork
from services.registry.catalogue.classification import check_category
from services.registry.catalogue.schemas import ResourceCreate
from services.registry.models import Resource, ResourceStatus
from services.registry.problems import RegistryProblem


def require_data_admin(principal: Principal) -> None:
    if not principal.has_role(Role.DATA_ADMIN, Role.PLATFORM_ADMIN):
        raise forbidden("Only a data administrator may change the catalogue.")


async def next_code(session: AsyncSession, category: str) -> str:
    """信息资源代码 = 分类码 "/" 6-digit 顺序码, allocated under a row lock (unique, never reused)."""
    last = await session.scalar(
        text(
            "INSERT INTO registry.category_sequences (category, last) VALUES (:c, 1) "
            "ON CONFLICT (category) DO UPDATE SET last = category_sequences.last + 1 RETURNING last"
        ),
        {"c": category},
    )
    if last is None or last > 999_999:
        raise RegistryProblem.CATEGORY_FULL.problem(f"分类 {category} has used all 999999 顺序码.")
    return f"{category}/{last:06d}"


async def create_resource(uow: UnitOfWork, principal: Principal, body: ResourceCreate) -> Resource:
    require_data_admin(principal)
    check_category(body.category, body.classification)
    session = uow.session
    resource = Resource(
        code=await next_code(session, body.category),
        name=body.name,
        summary=body.summary,
        category=body.category,
        classification=body.classification,
        provider_dept=principal.dept,
        format=body.format,
        items=[i.model_dump() for i in body.items],
        share=body.share.model_dump(),
        open=body.open.model_dump(),
        update_cycle=body.update_cycle,
        related_codes=body.related_codes,
        subject_types=body.subject_types,
        status=ResourceStatus.DRAFT,
        version=1,
    )
    session.add(resource)
    await session.flush()
    return resource


def visible(resource: Resource | None, principal: Principal) -> bool:
    return resource is not None and (
        resource.status != ResourceStatus.DRAFT or resource.provider_dept == principal.dept
    )


async def get_resource(session: AsyncSession, principal: Principal, code: str, *, lock: bool = False) -> Resource:
    resource = await session.get(Resource, code, with_for_update=lock)
    if resource is None or not visible(resource, principal):
        raise NotFound("resource", code)
    return resource


async def list_resources(
    session: AsyncSession, principal: Principal, filters: dict[str, str | None], limit: int, cursor: str | None
) -> tuple[list[Resource], str | None]:
    query = one_more(select(Resource).order_by(Resource.code), limit)
    query = query.where((Resource.status != ResourceStatus.DRAFT) | (Resource.provider_dept == principal.dept))
    if cursor:
        query = query.where(Resource.code > cursor)
    if q := filters.get("q"):
        like = f"%{q}%"
        query = query.where(Resource.name.ilike(like) | Resource.summary.ilike(like))
    for column, key in (
        (Resource.provider_dept, "provider"),
        (Resource.category, "category"),
        (Resource.status, "status"),
    ):
        if (value := filters.get(key)) is not None:
            query = query.where(column == value)
    if (share_type := filters.get("share_type")) is not None:
        query = query.where(Resource.share["type"].astext == share_type)
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda r: r.code)


async def publish_resource(uow: UnitOfWork, principal: Principal, code: str, topic: str, today: date) -> Resource:
    require_data_admin(principal)
    resource = await get_resource(uow.session, principal, code, lock=True)
    if resource.provider_dept != principal.dept:
        raise NotFound("resource", code)  # another department's entry: as if it did not exist
    if resource.status != ResourceStatus.DRAFT:
        raise RegistryProblem.INVALID_STATE.problem(f"Resource {code} is {resource.status}, not draft.")
    resource.status = ResourceStatus.PUBLISHED
    resource.published_on = today
    resource.updated_at = datetime.now(UTC)
    published = PublishedResource(
        resource.code, resource.name, resource.provider_dept, resource.version, resource.share["type"], resource.items
    )
    uow.emit(event_message(topic, resource.code, published=published))
    return resource
