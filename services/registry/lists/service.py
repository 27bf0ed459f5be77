"""The three lists (三清单). No HTTP here.

- 责任清单 (responsibility list): what each department must provide, by when. A line is
  *fulfilled* when its department publishes a resource of the line's name carrying the line's
  信息项 (:func:`fulfil_responsibilities`, called by the catalogue's publish in the same unit of
  work). *Overdue* is not stored but read: a planned line whose due date is before the business
  date. A stored "overdue" would need a job to flip it at midnight and would be stale whenever that
  job had not run; computed, it is right on every read and still filterable in SQL.
- 需求清单 (demand list): a consumer department asks the presumed provider; the provider's
  ``data_admin`` accepts (a line is added to its 责任清单) or rejects with a reason. Only the two
  departments see a demand.
  Deprecating (废止) the resource takes the fulfilment back (:func:`reopen_responsibilities`): the
  line passes to another published resource that fulfils it, or is planned again (and so overdue
  if its due date has passed).
- 负面清单 (negative list): a resource, or one 信息项 of it, that is not shared, with its legal
  basis. Nothing on it can be granted (:func:`refuse_negative_listed`, called by the applications),
  and listing it revokes the live grants that cover it (:func:`revoke_covering_grants`).

The lists themselves are readable by every department (they are published lists); only the
owning department's ``data_admin`` changes a line, and another department's line is a 404.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import ColumnElement, any_, literal, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.contracts.audit import AuditAction, AuditContext, audit_message
from services.common.errors import CommonProblem, NotFound
from services.common.pagination import one_more, page
from services.common.security import Principal, Role, forbidden
from services.common.uow import UnitOfWork
from services.registry.events import Topics, grant_revoked
from services.registry.lists.schemas import (
    DemandAccept,
    DemandCreate,
    NegativeLineCreate,
    ResponsibilityCreate,
    ResponsibilityPatch,
    ResponsibilityStatus,
)
from services.registry.models import (
    Demand,
    DemandStatus,
    Grant,
    GrantStatus,
    NegativeLine,
    Resource,
    ResourceStatus,
    Responsibility,
    ResponsibilityState,
)
from services.registry.problems import RegistryProblem


def require_data_admin(principal: Principal) -> None:
    """Only a department's own 数据管理员 keeps its lists."""
    if principal.is_system or not principal.has_role(Role.DATA_ADMIN):
        raise forbidden("Only a department's data administrator (数据管理员) may change its lists.")


def audit(uow: UnitOfWork, topic: str, action: AuditAction, principal: Principal, **context: object) -> None:
    """An audit event of ``principal``'s decision, committed with it (through the unit of work)."""
    ctx = AuditContext(actor=principal.sub, consumer_dept=principal.dept).with_(**context)
    uow.emit(audit_message(topic, "registry", action, ctx, outcome="completed"))


# --------------------------------------------------------------------------- 责任清单


def responsibility_status(line: Responsibility, today: date) -> ResponsibilityStatus:
    """The status of ``line`` on the business date ``today``: overdue (逾期) once a planned line's
    due date has passed."""
    if line.status == ResponsibilityState.FULFILLED:
        return ResponsibilityStatus.FULFILLED
    return ResponsibilityStatus.OVERDUE if line.due_by < today else ResponsibilityStatus.PLANNED


def status_clause(status: ResponsibilityStatus, today: date) -> ColumnElement[bool]:
    """:func:`responsibility_status` as SQL, to filter and count by it."""
    planned = Responsibility.status == ResponsibilityState.PLANNED
    if status == ResponsibilityStatus.OVERDUE:
        return planned & (Responsibility.due_by < today)
    if status == ResponsibilityStatus.PLANNED:
        return planned & (Responsibility.due_by >= today)
    return Responsibility.status == ResponsibilityState.FULFILLED


# How openly a sharing class shares: a resource shared more openly than a line promised fulfils it.
OPENNESS = {"none": 0, "conditional": 1, "unconditional": 2}


def fulfils(resource: Resource, line: Responsibility) -> bool:
    """Whether publishing ``resource`` fulfils ``line``: same department, same name, every 信息项
    the line asks for is in the resource, and it is shared at least as openly as the line says."""
    names = {item["name"] for item in resource.items}
    return (
        resource.provider_dept == line.dept
        and resource.name == line.name
        and set(line.items) <= names
        and OPENNESS[resource.share["type"]] >= OPENNESS[line.share_type]
    )


def mark_fulfilled(line: Responsibility, resource: Resource, today: date) -> None:
    line.status = ResponsibilityState.FULFILLED
    line.fulfilled_by = resource.code
    line.fulfilled_on = today
    line.updated_at = datetime.now(UTC)


async def fulfil_responsibilities(session: AsyncSession, resource: Resource, today: date) -> list[Responsibility]:
    """The planned lines of ``resource``'s department that its publication fulfils, marked so (in
    the caller's unit of work: the publication and the fulfilment commit together)."""
    lines = (
        await session.scalars(
            select(Responsibility)
            .where(
                Responsibility.dept == resource.provider_dept,
                Responsibility.name == resource.name,
                Responsibility.status == ResponsibilityState.PLANNED,
            )
            .with_for_update()
        )
    ).all()
    fulfilled = [line for line in lines if fulfils(resource, line)]
    for line in fulfilled:
        mark_fulfilled(line, resource, today)
    return fulfilled


async def fulfil_if_published(session: AsyncSession, line: Responsibility, today: date) -> None:
    """A line written for a resource already published is fulfilled at once."""
    candidates = await session.scalars(
        select(Resource)
        .where(
            Resource.provider_dept == line.dept,
            Resource.name == line.name,
            Resource.status == ResourceStatus.PUBLISHED,
        )
        .order_by(Resource.code)
    )
    resource = next((r for r in candidates if fulfils(r, line)), None)
    if resource is not None:
        mark_fulfilled(line, resource, today)


async def reopen_responsibilities(session: AsyncSession, resource: Resource, today: date) -> list[Responsibility]:
    """The lines ``resource`` fulfilled, when it is deprecated (废止): a deprecated resource provides
    nothing, so each line passes to another published resource of the department that fulfils it,
    or goes back to planned (read as overdue once its due date is before the business date). Returns
    the lines planned again; in the caller's unit of work, so deprecation and reopening commit
    together."""
    lines = (
        await session.scalars(
            select(Responsibility)
            .where(
                Responsibility.fulfilled_by == resource.code,
                Responsibility.status == ResponsibilityState.FULFILLED,
            )
            .order_by(Responsibility.id)
            .with_for_update()
        )
    ).all()
    if not lines:
        return []
    others = (
        await session.scalars(
            select(Resource)
            .where(
                Resource.provider_dept == resource.provider_dept,
                Resource.name.in_({line.name for line in lines}),
                Resource.status == ResourceStatus.PUBLISHED,
                Resource.code != resource.code,
            )
            .order_by(Resource.code)
        )
    ).all()
    reopened = []
    for line in lines:
        other = next((r for r in others if fulfils(r, line)), None)
        if other is not None:
            mark_fulfilled(line, other, today)
            continue
        line.status = ResponsibilityState.PLANNED
        line.fulfilled_by = None
        line.fulfilled_on = None
        line.updated_at = datetime.now(UTC)
        reopened.append(line)
    await session.flush()
    return reopened


def check_due(due_by: date, today: date) -> None:
    """A line is promised for today or later: a due date already past is a mistake, refused (422)
    rather than written as a line that is overdue from birth."""
    if due_by < today:
        message = f"不能早于今天 {today.isoformat()} (must not be before the business date)"
        raise CommonProblem.VALIDATION.problem(
            f"due_by: {message}", extra={"errors": [{"field": "due_by", "message": message, "type": "past_date"}]}
        )


def new_responsibility(
    dept: str, author: str, body: ResponsibilityCreate, demand_id: uuid.UUID | None = None
) -> Responsibility:
    return Responsibility(
        id=uuid.uuid4(),
        dept=dept,
        name=body.name,
        items=body.items,
        share_type=body.share_type,
        mode=body.mode,
        update_cycle=body.update_cycle,
        due_by=body.due_by,
        status=ResponsibilityState.PLANNED,
        demand_id=demand_id,
        author=author,
    )


async def create_responsibility(
    uow: UnitOfWork, principal: Principal, body: ResponsibilityCreate, today: date
) -> Responsibility:
    """A line of the caller's department's 责任清单."""
    require_data_admin(principal)
    check_due(body.due_by, today)
    line = new_responsibility(principal.dept, principal.sub, body)
    uow.session.add(line)
    await fulfil_if_published(uow.session, line, today)
    await uow.session.flush()
    return line


async def get_responsibility(session: AsyncSession, line_id: uuid.UUID) -> Responsibility:
    line = await session.get(Responsibility, line_id)
    if line is None:
        raise NotFound("responsibility", str(line_id))
    return line


async def update_responsibility(
    uow: UnitOfWork, principal: Principal, line_id: uuid.UUID, patch: ResponsibilityPatch, today: date
) -> Responsibility:
    """Change a planned line of the caller's department; another department's line is a 404."""
    session = uow.session
    line = await session.get(Responsibility, line_id, with_for_update=True)
    if line is None or line.dept != principal.dept:
        raise NotFound("responsibility", str(line_id))
    require_data_admin(principal)
    if line.status != ResponsibilityState.PLANNED:
        raise RegistryProblem.INVALID_STATE.problem(f"Responsibility {line_id} is already fulfilled.")
    if patch.due_by is not None:
        check_due(patch.due_by, today)
    for name, value in patch.model_dump(exclude_unset=True).items():
        setattr(line, name, value)
    line.updated_at = datetime.now(UTC)
    await fulfil_if_published(session, line, today)
    await session.flush()
    return line


async def list_responsibilities(
    session: AsyncSession,
    *,
    dept: str | None,
    status: ResponsibilityStatus | None,
    today: date,
    limit: int,
    cursor: uuid.UUID | None,
) -> tuple[list[Responsibility], str | None]:
    query = one_more(select(Responsibility).order_by(Responsibility.id), limit)
    if dept is not None:
        query = query.where(Responsibility.dept == dept)
    if status is not None:
        query = query.where(status_clause(status, today))
    if cursor is not None:
        query = query.where(Responsibility.id > cursor)
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda r: r.id)


# --------------------------------------------------------------------------- 需求清单


async def create_demand(uow: UnitOfWork, principal: Principal, body: DemandCreate) -> Demand:
    """A demand of the caller's department, routed to the presumed provider."""
    require_data_admin(principal)
    if body.provider == principal.dept:
        raise RegistryProblem.DEMAND_TO_SELF.problem("需求 is addressed to another department, not your own.")
    demand = Demand(
        id=uuid.uuid4(),
        requester_dept=principal.dept,
        provider_dept=body.provider,
        name=body.name,
        items=body.items,
        service_item=body.service_item,
        basis=body.basis,
        update_cycle=body.update_cycle,
        status=DemandStatus.PENDING,
        requested_by=principal.sub,
    )
    uow.session.add(demand)
    await uow.session.flush()
    return demand


async def get_demand(
    session: AsyncSession, principal: Principal, demand_id: uuid.UUID, *, lock: bool = False
) -> Demand:
    """A demand, for its requester or its provider; for anyone else it does not exist (404)."""
    demand = await session.get(Demand, demand_id, with_for_update=lock)
    if demand is None or principal.dept not in (demand.requester_dept, demand.provider_dept):
        raise NotFound("demand", str(demand_id))
    return demand


async def pending_for_provider(session: AsyncSession, principal: Principal, demand_id: uuid.UUID) -> Demand:
    demand = await get_demand(session, principal, demand_id, lock=True)
    if principal.dept != demand.provider_dept:
        raise forbidden("Only the presumed provider answers a demand.")
    require_data_admin(principal)
    if demand.status != DemandStatus.PENDING:
        raise RegistryProblem.INVALID_STATE.problem(f"The demand is already {demand.status}.")
    return demand


def audit_demand(uow: UnitOfWork, topic: str, action: AuditAction, principal: Principal, demand: Demand) -> None:
    audit(
        uow,
        topic,
        action,
        principal,
        consumer_dept=demand.requester_dept,
        provider=demand.provider_dept,
        purpose=demand.service_item,
        fields=tuple(demand.items),
    )


async def accept_demand(
    uow: UnitOfWork, principal: Principal, demand_id: uuid.UUID, body: DemandAccept, today: date, audit_topic: str
) -> tuple[Demand, Responsibility]:
    """接受: the demand becomes a line of the provider's 责任清单, due by ``body.due_by``."""
    session = uow.session
    demand = await pending_for_provider(session, principal, demand_id)
    check_due(body.due_by, today)
    wanted = ResponsibilityCreate.model_validate(
        {"name": demand.name, "items": demand.items, "update_cycle": demand.update_cycle, **body.model_dump()}
    )
    line = new_responsibility(demand.provider_dept, principal.sub, wanted, demand_id=demand.id)
    session.add(line)
    await fulfil_if_published(session, line, today)
    demand.status = DemandStatus.ACCEPTED
    demand.responsibility_id = line.id
    demand.decided_by = principal.sub
    demand.decided_at = datetime.now(UTC)
    audit_demand(uow, audit_topic, AuditAction.DEMAND_ACCEPTED, principal, demand)
    await session.flush()
    return demand, line


async def reject_demand(
    uow: UnitOfWork, principal: Principal, demand_id: uuid.UUID, reason: str, audit_topic: str
) -> Demand:
    """拒绝, with the reason the requester will read."""
    demand = await pending_for_provider(uow.session, principal, demand_id)
    demand.status = DemandStatus.REJECTED
    demand.reason = reason
    demand.decided_by = principal.sub
    demand.decided_at = datetime.now(UTC)
    audit_demand(uow, audit_topic, AuditAction.DEMAND_REJECTED, principal, demand)
    await uow.session.flush()
    return demand


async def list_demands(
    session: AsyncSession,
    principal: Principal,
    *,
    status: DemandStatus | None,
    limit: int,
    cursor: uuid.UUID | None,
) -> tuple[list[Demand], str | None]:
    """The demands the caller's department sent or received."""
    query = one_more(
        select(Demand)
        .where((Demand.requester_dept == principal.dept) | (Demand.provider_dept == principal.dept))
        .order_by(Demand.id),
        limit,
    )
    if status is not None:
        query = query.where(Demand.status == status)
    if cursor is not None:
        query = query.where(Demand.id > cursor)
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda d: d.id)


# --------------------------------------------------------------------------- 负面清单


async def add_negative_line(
    uow: UnitOfWork, principal: Principal, body: NegativeLineCreate, topics: Topics
) -> tuple[NegativeLine, list[Grant]]:
    """Put a resource of the caller's department (or one of its 信息项) on the 负面清单, revoking the
    live grants that cover it (:func:`revoke_covering_grants`); returns the line and those grants."""
    session = uow.session
    # The rule of catalogue.service.own_entry, written out: the catalogue imports this module (its
    # publish fulfils 责任清单 lines), so this one cannot import the catalogue's service back.
    # Locked, so that two administrators listing the same thing at once are serialised.
    resource = await session.get(Resource, body.resource, with_for_update=True)
    if resource is None or resource.provider_dept != principal.dept:
        raise NotFound("resource", body.resource)
    require_data_admin(principal)
    if body.item is not None and body.item not in {i["name"] for i in resource.items}:
        raise RegistryProblem.UNKNOWN_ITEMS.problem(f"{resource.code} has no item {body.item!r}.")
    listed = await session.scalar(
        select(NegativeLine).where(
            NegativeLine.resource_code == resource.code,
            NegativeLine.item.is_(None) | (NegativeLine.item == body.item),
        )
    )
    if listed is not None:
        what = "the whole resource" if listed.item is None else f"item {listed.item!r}"
        raise RegistryProblem.ALREADY_LISTED.problem(f"{resource.code}: {what} is already on the 负面清单.")
    line = NegativeLine(
        id=uuid.uuid4(),
        dept=principal.dept,
        resource_code=resource.code,
        item=body.item,
        basis=body.basis,
        author=principal.sub,
    )
    session.add(line)
    audit_negative(uow, topics.audit, AuditAction.NEGATIVE_LISTED, principal, line)
    revoked = await revoke_covering_grants(uow, principal, line, topics)
    await session.flush()
    return line, revoked


async def revoke_covering_grants(
    uow: UnitOfWork, principal: Principal, line: NegativeLine, topics: Topics
) -> list[Grant]:
    """撤销: the live grants (active, not expired) of ``line``'s resource that cover it — every one for a whole resource,
    those that carry the item for an item — are revoked, each with a ``grant_revoked`` event and
    an audit event, as a revocation by hand is: the exchange stops honouring them when it applies
    the event. A grant that carries the item is revoked, not narrowed: issued terms never change on
    the exchange, and the consumer applies again for the items still shared."""
    covers = literal(line.item) == any_(Grant.items) if line.item is not None else true()
    live = (Grant.status == GrantStatus.ACTIVE) & (Grant.valid_until > datetime.now(UTC))
    grants = (
        await uow.session.scalars(
            select(Grant)
            .where(Grant.resource_code == line.resource_code, live, covers)
            .order_by(Grant.id)
            .with_for_update()
        )
    ).all()
    what = "整个资源" if line.item is None else line.item
    reason = f"{what} 列入负面清单 (negative-listed): {line.basis}"
    for grant in grants:
        grant.status = GrantStatus.REVOKED
        grant.revoked_reason = reason
        grant_revoked(uow, topics, principal, grant, reason)
    return list(grants)


def audit_negative(uow: UnitOfWork, topic: str, action: AuditAction, principal: Principal, line: NegativeLine) -> None:
    fields = (line.item,) if line.item is not None else ()
    audit(uow, topic, action, principal, provider=line.dept, resource=line.resource_code, fields=fields)


async def remove_negative_line(uow: UnitOfWork, principal: Principal, line_id: uuid.UUID, audit_topic: str) -> None:
    line = await uow.session.get(NegativeLine, line_id, with_for_update=True)
    if line is None or line.dept != principal.dept:
        raise NotFound("negative list line", str(line_id))
    require_data_admin(principal)
    audit_negative(uow, audit_topic, AuditAction.NEGATIVE_UNLISTED, principal, line)
    await uow.session.delete(line)
    await uow.session.flush()


async def list_negative_lines(
    session: AsyncSession, *, dept: str | None, resource: str | None, limit: int, cursor: uuid.UUID | None
) -> tuple[list[NegativeLine], str | None]:
    query = one_more(select(NegativeLine).order_by(NegativeLine.id), limit)
    if dept is not None:
        query = query.where(NegativeLine.dept == dept)
    if resource is not None:
        query = query.where(NegativeLine.resource_code == resource)
    if cursor is not None:
        query = query.where(NegativeLine.id > cursor)
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda n: n.id)


async def refuse_negative_listed(session: AsyncSession, resource_code: str, items: list[str]) -> None:
    """A resource, or any of ``items`` of it, on the 负面清单 cannot be granted: 422
    ``negative-listed``, naming each line's legal basis."""
    lines = (
        await session.scalars(
            select(NegativeLine)
            .where(
                NegativeLine.resource_code == resource_code,
                NegativeLine.item.is_(None) | NegativeLine.item.in_(items),
            )
            .order_by(NegativeLine.item.nulls_first())
        )
    ).all()
    if lines:
        listed = [{"item": line.item, "basis": line.basis} for line in lines]
        what = "、".join("整个资源" if line.item is None else line.item for line in lines)
        raise RegistryProblem.NEGATIVE_LISTED.problem(
            f"{resource_code}: {what} 列入负面清单，不予共享 (on the negative list: {lines[0].basis}).",
            extra={"listed": listed},
        )
