"""What the registry tells others when its state changes: every catalogue and application
transition is one event on ``registry.events`` (keyed by its event id) and one audit event on
``audit.events``, both staged on the route's unit of work, so they are written with the change
or not at all."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select

from services.common.contracts.audit import AuditAction, AuditContext, audit_message
from services.common.contracts.registry import (
    ApplicationChange,
    GrantTerms,
    MaterialEntry,
    PublishedResource,
    ResourceChange,
    ServiceItemSnapshot,
    event_message,
)
from services.common.security import Principal
from services.common.uow import UnitOfWork
from services.registry.models import Application, Grant, Material, Resource, ServiceItem

SERVICE = "registry"
COMPLETED = "completed"  # the audit outcome of a transition that happened


@dataclass(frozen=True, slots=True)
class Topics:
    """The registry's two outgoing topics, with the deployment's prefix."""

    events: str  # registry.events
    audit: str  # audit.events


class ResourceTransition(StrEnum):
    """A catalogue entry's transitions, each with its audit action."""

    CREATED = "created"
    EDITED = "edited"
    SUBMITTED = "submitted"
    PUBLISHED = "published"
    REJECTED = "rejected"
    DEPRECATED = "deprecated"


class ApplicationTransition(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


RESOURCE_ACTIONS = {
    ResourceTransition.CREATED: AuditAction.RESOURCE_CREATED,
    ResourceTransition.EDITED: AuditAction.RESOURCE_EDITED,
    ResourceTransition.SUBMITTED: AuditAction.RESOURCE_SUBMITTED,
    ResourceTransition.PUBLISHED: AuditAction.RESOURCE_PUBLISHED,
    ResourceTransition.REJECTED: AuditAction.RESOURCE_REJECTED,
    ResourceTransition.DEPRECATED: AuditAction.RESOURCE_DEPRECATED,
}
APPLICATION_ACTIONS = {
    ApplicationTransition.SUBMITTED: AuditAction.APPLICATION_SUBMITTED,
    ApplicationTransition.APPROVED: AuditAction.APPLICATION_APPROVED,
    ApplicationTransition.REJECTED: AuditAction.APPLICATION_REJECTED,
}


def resource_transition(
    uow: UnitOfWork,
    topics: Topics,
    principal: Principal,
    resource: Resource,
    transition: ResourceTransition,
    *,
    version: int,
    reason: str = "",
) -> None:
    """Tell that ``resource`` went through ``transition`` (of ``version``). Publication is the
    ``resource_published`` event the exchange projects (the serving copy, with its items); every
    other transition is ``resource_changed``."""
    if transition == ResourceTransition.PUBLISHED:
        published = PublishedResource(
            resource.code, resource.name, resource.provider_dept, version, resource.share["type"], resource.items
        )
        uow.emit(event_message(topics.events, published=published))
    else:
        change = ResourceChange(resource.code, resource.provider_dept, version, transition, principal.sub, reason)
        uow.emit(event_message(topics.events, resource_changed=change))
    ctx = AuditContext(
        actor=principal.sub,
        consumer_dept=principal.dept,
        resource=resource.code,
        provider=resource.provider_dept,
    )
    uow.emit(audit_message(topics.audit, SERVICE, RESOURCE_ACTIONS[transition], ctx, outcome=COMPLETED))


def application_transition(
    uow: UnitOfWork,
    topics: Topics,
    actor: str,
    application: Application,
    transition: ApplicationTransition,
    grant: Grant | None = None,
) -> None:
    """Tell that ``application`` went through ``transition``, done by ``actor`` (a token subject)."""
    change = ApplicationChange(
        application_id=application.id,
        resource_code=application.resource_code,
        provider_dept=application.provider_dept,
        consumer_dept=application.consumer_dept,
        client_id=application.client_id,
        change=transition,
        status=application.status,
        items=list(application.items),
        purpose=application.purpose["service_item"],
        actor=actor,
        due_by=application.due_by,
        reason=(application.reason or "") if transition == ApplicationTransition.REJECTED else "",
        grant_id=grant.id if grant else None,
    )
    uow.emit(event_message(topics.events, application_changed=change))
    ctx = AuditContext(
        actor=actor,
        consumer_dept=application.consumer_dept,
        consumer_client_id=application.client_id,
        resource=application.resource_code,
        provider=application.provider_dept,
        purpose=application.purpose["service_item"],
        fields=tuple(application.items),
    )
    uow.emit(audit_message(topics.audit, SERVICE, APPLICATION_ACTIONS[transition], ctx, outcome=COMPLETED))


def grant_issued(uow: UnitOfWork, topics: Topics, grant: Grant) -> None:
    """The grant's terms, for the exchange to enforce (audited as the approval that issued it)."""
    terms = GrantTerms(
        id=grant.id,
        resource_code=grant.resource_code,
        provider_dept=grant.provider_dept,
        consumer_dept=grant.consumer_dept,
        client_id=grant.client_id,
        items=grant.items,
        purpose=grant.purpose,
        masking=grant.masking,
        valid_until=grant.valid_until,
        daily_quota=grant.daily_quota,
    )
    uow.emit(event_message(topics.events, issued=terms))


def grant_revoked(uow: UnitOfWork, topics: Topics, principal: Principal, grant: Grant, reason: str) -> None:
    """撤销授权: the exchange stops honouring the grant when it applies this event."""
    uow.emit(event_message(topics.events, revoked=(grant.id, reason)))
    ctx = AuditContext(
        actor=principal.sub,
        consumer_dept=grant.consumer_dept,
        consumer_client_id=grant.client_id,
        resource=grant.resource_code,
        provider=grant.provider_dept,
        purpose=grant.purpose,
        fields=tuple(grant.items),
    )
    uow.emit(audit_message(topics.audit, SERVICE, AuditAction.GRANT_REVOKED, ctx, outcome=COMPLETED))


async def item_clock(uow: UnitOfWork) -> int:
    """The database's clock in µs: a service item's version (:func:`service_item_changed`)."""
    clock = await uow.session.scalar(select(func.clock_timestamp()))
    assert clock is not None
    return int(clock.timestamp() * 1_000_000)


async def service_item_changed(
    uow: UnitOfWork,
    topics: Topics,
    item: ServiceItem,
    materials: list[Material],
    *,
    withdrawn: bool = False,
    version: int | None = None,
) -> None:
    """The service item (事项) as it now stands, for the exchange's evidence bundles (免提交).
    Its version is the database's clock, read after the writer locked the item (or created it),
    so two changes of one item are versioned in the order they commit, whichever replica made them.
    ``version``: that clock read once for many items created together (an import)."""
    snapshot = ServiceItemSnapshot(
        code=item.code,
        name=item.name,
        dept=item.dept,
        version=version if version is not None else await item_clock(uow),
        withdrawn=withdrawn,
        materials=[]
        if withdrawn
        else [MaterialEntry(m.id, m.name, m.source, m.necessity, m.resource_code, list(m.items)) for m in materials],
    )
    uow.emit(event_message(topics.events, service_item=snapshot))
