"""Catalogue rules: 信息资源代码 allocation, the classification, related codes, and the lifecycle of an
entry and its versions. No HTTP here.

Lifecycle (目录编目 → 审核 → 发布): the providing department's ``data_admin`` drafts and submits;
a ``platform_admin`` publishes or rejects with a reason; a published entry may be deprecated.
Editing a published entry drafts a new version while the published one keeps serving: the
``resources`` row is the serving copy, ``resource_versions`` every version (see the models).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, Select, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import CommonProblem, NotFound, Problem
from services.common.pagination import one_more, page
from services.common.security import Principal, Role, forbidden
from services.common.uow import UnitOfWork
from services.registry.catalogue.classification import check_category
from services.registry.catalogue.schemas import ResourceCreate, ResourcePatch
from services.registry.events import ResourceTransition, Topics, resource_transition
from services.registry.lists.service import fulfil_responsibilities, reopen_responsibilities
from services.registry.models import Resource, ResourceStatus, ResourceVersion, VersionStatus
from services.registry.problems import RegistryProblem

# The elements of an entry a data administrator writes (MISSION.md, the catalogue entry); a version
# keeps exactly these.
CONTENT_FIELDS = (
    "name",
    "summary",
    "category",
    "classification",
    "format",
    "items",
    "share",
    "open",
    "update_cycle",
    "related_codes",
    "subject_types",
)
CODE = re.compile(r"[0-9]{6,12}/[0-9]{6}")  # 信息资源代码: 分类码 (目 + 细目) / 顺序码
PUBLIC_STATES = (ResourceStatus.PUBLISHED, ResourceStatus.DEPRECATED)
PUBLIC_VERSIONS = (VersionStatus.PUBLISHED, VersionStatus.SUPERSEDED, VersionStatus.DEPRECATED)


def require_data_admin(principal: Principal) -> None:
    if not principal.has_role(Role.DATA_ADMIN, Role.PLATFORM_ADMIN):
        raise forbidden("Only a data administrator may change the catalogue.")


def require_platform_admin(principal: Principal) -> None:
    if not principal.has_role(Role.PLATFORM_ADMIN):
        raise forbidden("Only a platform administrator may publish or reject a catalogue entry (审核).")


def invalid_state(code: str, what: str) -> Problem:
    return RegistryProblem.INVALID_STATE.problem(f"{code}: {what}")


async def next_codes(session: AsyncSession, category: str, count: int = 1) -> list[str]:
    """``count`` 信息资源代码 = 分类码 "/" 6-digit 顺序码, allocated together under the counter's row
    lock (unique, never reused): one statement for a whole import's entries of ``category``."""
    last = await session.scalar(
        text(
            "INSERT INTO registry.category_sequences (category, last) VALUES (:c, :n) "
            "ON CONFLICT (category) DO UPDATE SET last = category_sequences.last + :n RETURNING last"
        ),
        {"c": category, "n": count},
    )
    if last is None or last > 999_999:
        raise RegistryProblem.CATEGORY_FULL.problem(
            f"分类 {category} has used all 999999 顺序码.", extra={"category": category}
        )
    return [f"{category}/{n:06d}" for n in range(last - count + 1, last + 1)]


def visible_clause(principal: Principal, table: type[Resource] = Resource) -> ColumnElement[bool]:
    """Which entries ``principal`` may see: published or deprecated ones, its own department's
    drafts, and — for a platform administrator, who reviews them — every submitted one."""
    clause = table.status.in_(PUBLIC_STATES) | (table.provider_dept == principal.dept)
    if principal.has_role(Role.PLATFORM_ADMIN):
        clause = clause | (table.status == ResourceStatus.SUBMITTED)
    return clause


def visible(resource: Resource | None, principal: Principal) -> bool:
    if resource is None:
        return False
    return (
        resource.status in PUBLIC_STATES
        or resource.provider_dept == principal.dept
        or (resource.status == ResourceStatus.SUBMITTED and principal.has_role(Role.PLATFORM_ADMIN))
    )


async def missing_related(session: AsyncSession, principal: Principal, codes: Collection[str]) -> set[str]:
    """Those of ``codes`` that name no entry the caller may see (one query for all of them)."""
    if not codes:
        return set()
    found = set(
        (await session.scalars(select(Resource.code).where(Resource.code.in_(codes), visible_clause(principal)))).all()
    )
    return set(codes) - found


def unknown_related(missing: list[str]) -> Problem:
    return RegistryProblem.UNKNOWN_RELATED.problem(
        f"关联资源代码不存在 (no such resources): {', '.join(missing)}.", extra={"missing": missing}
    )


async def check_related(session: AsyncSession, principal: Principal, codes: list[str]) -> None:
    """关联资源代码 must name entries that exist (and that the caller may see): 422 naming the rest."""
    absent = await missing_related(session, principal, codes)
    if missing := [c for c in codes if c in absent]:
        raise unknown_related(missing)


async def create_resource(uow: UnitOfWork, principal: Principal, body: ResourceCreate, topics: Topics) -> Resource:
    """A draft entry (version 1) of the caller's department, with a newly allocated code."""
    require_data_admin(principal)
    check_category(body.category, body.classification)
    await check_related(uow.session, principal, body.related_codes)
    return (await insert_entries(uow, principal, [body], topics))[0]


async def insert_entries(
    uow: UnitOfWork, principal: Principal, bodies: Sequence[ResourceCreate], topics: Topics
) -> list[Resource]:
    """Draft entries (version 1) of the caller's department, in the order of ``bodies``, whose
    rules the caller has checked (:func:`create_resource`, or an import for all its rows at once):
    codes allocated per 分类码 in one statement each, every row written in one flush."""
    session = uow.session
    counts = Counter(body.category for body in bodies)
    # Categories in one order, so that two imports lock the counters alike (no deadlock).
    allocated = {category: iter(await next_codes(session, category, counts[category])) for category in sorted(counts)}
    resources: list[Resource] = []
    for body in bodies:
        content = body.model_dump(mode="json")
        resource = Resource(
            code=next(allocated[body.category]),
            provider_dept=principal.dept,
            status=ResourceStatus.DRAFT,
            version=1,
            **content,
        )
        resources.append(resource)
        session.add(resource)
        session.add(
            ResourceVersion(
                code=resource.code, version=1, content=content, status=VersionStatus.DRAFT, author=principal.sub
            )
        )
    await session.flush()
    for resource in resources:
        resource_transition(uow, topics, principal, resource, ResourceTransition.CREATED, version=1)
    return resources


async def get_resource(session: AsyncSession, principal: Principal, code: str, *, lock: bool = False) -> Resource:
    resource = await session.get(Resource, code, with_for_update=lock)
    if resource is None or not visible(resource, principal):
        raise NotFound("resource", code)
    return resource


async def visible_resources(session: AsyncSession, principal: Principal, codes: Collection[str]) -> dict[str, Resource]:
    """The entries of ``codes`` the caller may see, by code (one query; the others are absent)."""
    if not codes:
        return {}
    rows = await session.scalars(select(Resource).where(Resource.code.in_(codes), visible_clause(principal)))
    return {r.code: r for r in rows}


def filtered(query: Select[Any], filters: Mapping[str, str | None], table: type[Resource] = Resource) -> Select[Any]:
    """``query`` narrowed by the catalogue's filters: provider, 分类码 (a prefix: a 类, 项 or 目 also
    finds what lies under it), classification, sharing class (``share_type``, the column computed
    from ``share``: indexed with status and code) and status; a filter
    not given is not applied. ``table`` is ``Resource`` or an alias of it."""
    for column, key in (
        (table.provider_dept, "provider"),
        (table.classification, "classification"),
        (table.status, "status"),
    ):
        if (value := filters.get(key)) is not None:
            query = query.where(column == value)
    if (category := filters.get("category")) is not None:
        query = query.where(table.category.startswith(category, autoescape=True))
    if (share_type := filters.get("share_type")) is not None:
        query = query.where(table.share_type == share_type)
    return query


async def list_resources(
    session: AsyncSession, principal: Principal, filters: Mapping[str, str | None], limit: int, cursor: str | None
) -> tuple[list[Resource], str | None]:
    """The entries ``principal`` may see, by code (a search by text is ``catalogue.search``)."""
    query = one_more(filtered(select(Resource), filters).order_by(Resource.code), limit)
    query = query.where(visible_clause(principal))
    if cursor:
        if CODE.fullmatch(cursor) is None:
            raise RegistryProblem.INVALID_CURSOR.problem("cursor 无效 (not a cursor this list handed out).")
        query = query.where(Resource.code > cursor)
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda r: r.code)


# --------------------------------------------------------------------------- lifecycle and versions


async def latest_version(session: AsyncSession, code: str) -> ResourceVersion:
    """The newest version of ``code`` (locked): the pending change if there is one, else the serving one."""
    version = await session.scalar(
        select(ResourceVersion)
        .where(ResourceVersion.code == code)
        .order_by(ResourceVersion.version.desc())
        .limit(1)
        .with_for_update()
    )
    if version is None:
        raise RuntimeError(f"{code} has no version")  # every entry is created with version 1
    return version


async def own_entry(session: AsyncSession, principal: Principal, code: str) -> Resource:
    """``code`` for its provider's data administrator (locked); another department's entry is a
    404, as if it did not exist, and only a ``data_admin`` of the provider may change it."""
    resource = await session.get(Resource, code, with_for_update=True)
    if resource is None or resource.provider_dept != principal.dept:
        raise NotFound("resource", code)
    if not principal.has_role(Role.DATA_ADMIN):
        raise forbidden("Only the providing department's data administrator may change this entry.")
    return resource


def show(resource: Resource, content: dict[str, Any]) -> None:
    """Make ``content`` the serving copy of ``resource``."""
    for name in CONTENT_FIELDS:
        setattr(resource, name, content[name])
    resource.updated_at = datetime.now(UTC)


async def update_resource(
    uow: UnitOfWork, principal: Principal, code: str, patch: ResourcePatch, topics: Topics
) -> tuple[Resource, ResourceVersion]:
    """Edit an entry. A draft is changed in place; a published entry gets a new draft version
    (版本) and keeps serving the published one until that is published. A submitted version is
    under review and cannot change; a deprecated entry cannot change at all."""
    session = uow.session
    resource = await own_entry(session, principal, code)
    if resource.status == ResourceStatus.DEPRECATED:
        raise invalid_state(code, "a deprecated entry cannot be edited.")
    working = await latest_version(session, code)
    if working.status == VersionStatus.SUBMITTED:
        raise invalid_state(code, f"version {working.version} is submitted for review; wait for the decision.")
    merged = {**working.content, **patch.model_dump(mode="json", exclude_unset=True)}
    try:
        body = ResourceCreate.model_validate(merged)
    except ValidationError as err:
        # The same shape as a request's own validation errors (services.common.errors), so that a
        # client shows them by field whichever check found them.
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in err.errors(include_url=False)
        ]
        raise CommonProblem.VALIDATION.problem("The edited entry is not valid.", extra={"errors": errors}) from err
    await check_related(session, principal, body.related_codes)
    content = body.model_dump(mode="json")
    now = datetime.now(UTC)
    if working.status == VersionStatus.DRAFT:
        if content != working.content:
            resource_transition(uow, topics, principal, resource, ResourceTransition.EDITED, version=working.version)
        working.content = content
        working.author = principal.sub
        working.updated_at = now
        if resource.status == ResourceStatus.DRAFT:  # never published: the draft is what is shown
            show(resource, content)
        await session.flush()
        return resource, working
    if content == working.content:
        return resource, working  # nothing changed: no new version
    draft = ResourceVersion(
        code=code, version=working.version + 1, content=content, status=VersionStatus.DRAFT, author=principal.sub
    )
    session.add(draft)
    await session.flush()
    resource_transition(uow, topics, principal, resource, ResourceTransition.EDITED, version=draft.version)
    return resource, draft


async def submit_resource(
    uow: UnitOfWork, principal: Principal, code: str, topics: Topics
) -> tuple[Resource, ResourceVersion]:
    """提交审核: the provider's data administrator submits the draft version for review."""
    session = uow.session
    resource = await own_entry(session, principal, code)
    working = await latest_version(session, code)
    if resource.status == ResourceStatus.DEPRECATED or working.status != VersionStatus.DRAFT:
        raise invalid_state(code, f"only a draft can be submitted (version {working.version} is {working.status}).")
    working.status = VersionStatus.SUBMITTED
    working.updated_at = datetime.now(UTC)
    if resource.status == ResourceStatus.DRAFT:
        resource.status = ResourceStatus.SUBMITTED
    resource_transition(uow, topics, principal, resource, ResourceTransition.SUBMITTED, version=working.version)
    return resource, working


async def reviewed(session: AsyncSession, principal: Principal, code: str) -> tuple[Resource, ResourceVersion]:
    """The entry and its submitted version, for a platform administrator's decision (审核)."""
    require_platform_admin(principal)
    resource = await get_resource(session, principal, code, lock=True)
    working = await latest_version(session, code)
    if resource.status == ResourceStatus.DEPRECATED or working.status != VersionStatus.SUBMITTED:
        raise invalid_state(
            code, f"only a submitted version can be decided (version {working.version} is {working.status})."
        )
    return resource, working


async def publish_resource(
    uow: UnitOfWork, principal: Principal, code: str, topics: Topics, today: date
) -> tuple[Resource, ResourceVersion]:
    """发布: the submitted version becomes the serving one (the previous one is superseded), and
    ``resource_published`` tells the exchange, whose projection it replaces."""
    session = uow.session
    resource, working = await reviewed(session, principal, code)
    if working.version > 1 and resource.status == ResourceStatus.PUBLISHED:
        previous = await session.get(ResourceVersion, (code, resource.version), with_for_update=True)
        if previous is not None:
            previous.status = VersionStatus.SUPERSEDED
    now = datetime.now(UTC)
    working.status = VersionStatus.PUBLISHED
    working.decided_by = principal.sub
    working.reason = None
    working.published_on = today
    working.updated_at = now
    show(resource, working.content)
    resource.status = ResourceStatus.PUBLISHED
    resource.version = working.version
    resource.published_on = today
    resource_transition(uow, topics, principal, resource, ResourceTransition.PUBLISHED, version=working.version)
    await fulfil_responsibilities(session, resource, today)  # 责任清单: in this same unit of work
    await session.flush()
    return resource, working


async def reject_resource(
    uow: UnitOfWork, principal: Principal, code: str, reason: str, topics: Topics
) -> tuple[Resource, ResourceVersion]:
    """驳回: the submitted version goes back to draft with the reviewer's reason."""
    resource, working = await reviewed(uow.session, principal, code)
    working.status = VersionStatus.DRAFT
    working.decided_by = principal.sub
    working.reason = reason
    working.updated_at = datetime.now(UTC)
    if resource.status == ResourceStatus.SUBMITTED:
        resource.status = ResourceStatus.DRAFT
    resource_transition(
        uow, topics, principal, resource, ResourceTransition.REJECTED, version=working.version, reason=reason
    )
    return resource, working


async def deprecate_resource(uow: UnitOfWork, principal: Principal, code: str, topics: Topics, today: date) -> Resource:
    """废止: the provider's data administrator withdraws a published entry; no new application is
    accepted for it. A pending version can then no longer be submitted or published, and the
    责任清单 lines it fulfilled are reopened on the business date ``today`` (same unit of work)."""
    session = uow.session
    resource = await own_entry(session, principal, code)
    if resource.status != ResourceStatus.PUBLISHED:
        raise invalid_state(code, f"only a published entry can be deprecated (it is {resource.status}).")
    serving = await session.get(ResourceVersion, (code, resource.version), with_for_update=True)
    if serving is not None:
        serving.status = VersionStatus.DEPRECATED
        serving.updated_at = datetime.now(UTC)
    resource.status = ResourceStatus.DEPRECATED
    resource.updated_at = datetime.now(UTC)
    resource_transition(uow, topics, principal, resource, ResourceTransition.DEPRECATED, version=resource.version)
    await reopen_responsibilities(session, resource, today)
    return resource


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """What changed between two versions, element by element; a 信息项 by its name (``items.姓名``)."""
    changes: list[dict[str, Any]] = []
    for name in CONTENT_FIELDS:
        old, new = before.get(name), after.get(name)
        if name == "items":
            old_items = {i["name"]: i for i in old or []}
            new_items = {i["name"]: i for i in new or []}
            for item in [*old_items, *(n for n in new_items if n not in old_items)]:
                if old_items.get(item) != new_items.get(item):
                    changes.append(
                        {"field": f"items.{item}", "before": old_items.get(item), "after": new_items.get(item)}
                    )
        elif old != new:
            changes.append({"field": name, "before": old, "after": new})
    return changes


async def list_versions(
    session: AsyncSession, principal: Principal, code: str
) -> list[tuple[ResourceVersion, list[dict[str, Any]]]]:
    """The history of ``code``, oldest first, each version with its changes from the one before.
    Other departments see only the versions that were published."""
    resource = await get_resource(session, principal, code)
    query = select(ResourceVersion).where(ResourceVersion.code == code).order_by(ResourceVersion.version)
    if resource.provider_dept != principal.dept and not principal.has_role(Role.PLATFORM_ADMIN):
        query = query.where(ResourceVersion.status.in_(PUBLIC_VERSIONS))
    versions = list((await session.scalars(query)).all())
    history: list[tuple[ResourceVersion, list[dict[str, Any]]]] = []
    previous: dict[str, Any] | None = None
    for version in versions:
        history.append((version, diff(previous, version.content) if previous is not None else []))
        previous = version.content
    return history
