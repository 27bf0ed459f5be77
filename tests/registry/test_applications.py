"""共享申请 — applications: the sharing rules of 国发〔2016〕51号 as the registry applies them.

Unconditional data is granted at once; conditional data waits for the provider's approver, due
within 10 working days; data not shared is refused citing its basis. An approval may narrow what
was asked, never widen it. Run against real PostgreSQL; each test is rolled back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.calendar import WorkingCalendar
from services.common.clock import business_date
from services.common.contracts.audit import AuditAction
from services.common.errors import Problem
from services.common.security import Principal, Role
from services.common.settings import CommonSettings
from services.registry.applications import service
from services.registry.applications.schemas import ApplicationApprove, ApplicationCreate, ApplicationReject
from services.registry.catalogue import service as catalogue
from services.registry.catalogue.schemas import ShareSpec
from services.registry.models import Application, Grant, Resource
from tests.factories import (
    ApplicationCreateFactory,
    ResourceCreateFactory,
    conditional_share,
    credit_code,
    not_shared,
    person,
    system,
    unconditional_share,
)
from tests.registry.calls import TOPICS, Units

ASKED = ["姓名", "出生日期", "户籍地址", "公民身份号码"]


def filing_day() -> date:
    """The business date an application filed now counts from (the registry's today, in the
    platform's time zone)."""
    return business_date(CommonSettings().zone)


# --------------------------------------------------------------------------- the registry's calls


@dataclass
class Registry(Units):
    """Every call of the registry's services these tests make, in one place, each in its own
    unit of work (as a route runs it: all or nothing), and the events the calls staged."""

    calendar: WorkingCalendar = field(default_factory=lambda: WorkingCalendar.load(CollectorRegistry(), "registry"))

    async def publish(self, admin: Principal, share: ShareSpec) -> Resource:
        """A published 信息资源 of ``admin``'s department (the provider); its catalogue events are
        forgotten (the catalogue's tests check them)."""
        async with self.unit() as uow:
            draft = await catalogue.create_resource(uow, admin, ResourceCreateFactory.build(share=share), TOPICS)
            await catalogue.submit_resource(uow, admin, draft.code, TOPICS)
            reviewer = person(credit_code(), Role.PLATFORM_ADMIN)
            resource, _ = await catalogue.publish_resource(uow, reviewer, draft.code, TOPICS, filing_day())
        self.changes()
        return resource

    async def apply(
        self,
        principal: Principal,
        body: ApplicationCreate,
        *,
        client_dept: str | None = None,
        today: date | None = None,
    ) -> tuple[Application, Grant | None]:
        """Apply as ``principal`` on ``today`` (default: the business date now). A system's
        department is its own (as the route decides); for a person, ``client_dept`` is what the
        gateway says owns ``body.client_id``."""
        if principal.is_system:
            client_dept = principal.dept if body.client_id == principal.client_id else None
        async with self.unit() as uow:
            return await service.create_application(
                uow,
                principal,
                body,
                client_dept=client_dept,
                topics=TOPICS,
                today=today or filing_day(),
                calendar=self.calendar,
            )

    async def approve(
        self, principal: Principal, application_id: uuid.UUID, body: ApplicationApprove
    ) -> tuple[Application, Grant]:
        async with self.unit() as uow:
            return await service.approve_application(uow, principal, application_id, body, TOPICS)

    async def reject(self, principal: Principal, application_id: uuid.UUID, reason: str) -> Application:
        async with self.unit() as uow:
            return await service.reject_application(uow, principal, application_id, reason, TOPICS)

    async def revoke(self, principal: Principal, grant_id: uuid.UUID, reason: str) -> Grant:
        async with self.unit() as uow:
            return await service.revoke_grant(uow, principal, grant_id, reason, TOPICS)

    async def list(
        self, principal: Principal, *, today: date, limit: int = 100, cursor: str | None = None, **filters: Any
    ) -> tuple[list[Application], str | None, int]:
        return await service.list_applications(
            self.session,
            principal,
            service.ApplicationFilters(**filters),
            limit=limit,
            cursor=cursor,
            today=today,
        )

    async def grants(self, principal: Principal) -> list[Grant]:
        rows, _ = await service.list_grants(self.session, principal, 500, None)
        return rows

    async def grant(self, principal: Principal, grant_id: uuid.UUID) -> Grant:
        return await service.get_grant(self.session, principal, grant_id)

    def actions(self) -> list[str]:
        """The audit actions staged so far, and forget them."""
        return [event.action for event in self.audits()]

    async def get(self, principal: Principal, application_id: uuid.UUID) -> Application:
        return await service.get_application(self.session, principal, application_id)

    async def stored(self, application_id: uuid.UUID) -> Application:
        """The application as the database has it now."""
        application = await self.session.get(Application, application_id, populate_existing=True)
        assert application is not None
        return application

    async def count(self, model: type[Application | Grant]) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def registry(session: AsyncSession) -> Registry:
    return Registry(session)


@dataclass(frozen=True)
class Parties:
    """市公安局 provides; 市民政局 consumes with its 低保审核系统; a third department is unrelated."""

    provider: str
    consumer: str
    other: str
    provider_admin: Principal
    approver: Principal
    client: Principal

    def asking(self, resource: Resource, items: list[str] | None = None, **fields: Any) -> ApplicationCreate:
        """What the consumer's system asks for: ``items`` (ASKED) of ``resource``."""
        return ApplicationCreateFactory.build(
            **{"resource": resource.code, "client_id": self.client.client_id, "items": items or ASKED, **fields}
        )


@pytest.fixture
def parties() -> Parties:
    provider, consumer = credit_code("110101"), credit_code("110105")
    return Parties(
        provider=provider,
        consumer=consumer,
        other=credit_code("310104"),
        provider_admin=person(provider, Role.DATA_ADMIN),
        approver=person(provider, Role.APPROVER),
        client=system(consumer),
    )


async def applied(registry: Registry, parties: Parties, share: ShareSpec, **fields: Any) -> uuid.UUID:
    """The consumer's system has applied for a published resource shared by ``share``: its id.

    (An id, not the object: a failed call rolls back its savepoint and expires what it touched.)
    """
    resource = await registry.publish(parties.provider_admin, share)
    application, _ = await registry.apply(parties.client, parties.asking(resource, **fields))
    registry.changes()
    return application.id


def assert_problem(raised: pytest.ExceptionInfo[Problem], status: int, code: str) -> None:
    assert (raised.value.status, raised.value.code) == (status, code), raised.value.body()


# --------------------------------------------------------------------------- the three kinds of sharing


async def test_unconditional_data_is_granted_at_once(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, unconditional_share())

    body = parties.asking(resource)
    application, grant = await registry.apply(parties.client, body)

    assert application.status == "approved"
    assert application.due_by is None
    assert grant is not None
    assert (grant.client_id, grant.consumer_dept, grant.provider_dept) == (
        parties.client.client_id,
        parties.consumer,
        parties.provider,
    )
    assert (grant.items, grant.purpose, grant.daily_quota) == (ASKED, body.purpose.service_item, body.daily_quota)
    expected_end = datetime.now(UTC) + timedelta(days=body.valid_days)
    assert abs(grant.valid_until - expected_end) < timedelta(minutes=1)
    assert grant.masking == {"公民身份号码": "id_card", "联系电话": "mobile"}  # the resource's defaults
    submitted, issued, approved = registry.events()
    assert issued.grant_issued.grant_id == str(grant.id)
    assert list(issued.grant_issued.items) == ASKED
    assert (submitted.application_changed.change, submitted.application_changed.status) == ("submitted", "pending")
    assert (approved.application_changed.change, approved.application_changed.grant_id) == ("approved", str(grant.id))
    assert approved.application_changed.actor == service.AUTOMATIC
    assert registry.actions() == [AuditAction.APPLICATION_SUBMITTED, AuditAction.APPLICATION_APPROVED]
    assert await registry.count(Grant) == 1


async def test_conditional_data_waits_ten_working_days_for_the_provider(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, conditional_share())
    filed = date(2026, 9, 25)  # before 中秋节 and 国庆节: 9-25..9-27 and 10-01..10-07 off, 10-10 (Sat) worked

    application, grant = await registry.apply(parties.client, parties.asking(resource), today=filed)

    assert (application.status, grant) == ("pending", None)
    assert application.due_by == date(2026, 10, 15)  # weekends only would have said 10-09
    assert await registry.count(Grant) == 0
    [submitted] = registry.events()
    change = submitted.application_changed
    assert (change.change, change.status, change.due_by, list(change.items)) == (
        "submitted",
        "pending",
        "2026-10-15",
        ASKED,
    )
    [audit] = registry.audits()
    assert (audit.action, audit.actor, audit.resource_code, audit.consumer_dept, audit.provider_dept) == (
        AuditAction.APPLICATION_SUBMITTED,
        parties.client.sub,
        resource.code,
        parties.consumer,
        parties.provider,
    )


async def test_data_not_shared_is_refused_citing_its_basis_and_nothing_is_written(
    registry: Registry, parties: Parties
) -> None:
    basis = "《中华人民共和国居民身份证法》第六条：公安机关对履行职责获得的个人信息应予保密"
    resource = await registry.publish(parties.provider_admin, not_shared(basis))

    with pytest.raises(Problem) as raised:
        await registry.apply(parties.client, parties.asking(resource))

    assert_problem(raised, 422, "not-shared")
    assert basis in raised.value.detail and raised.value.body()["basis"] == basis
    assert (await registry.count(Application), await registry.count(Grant)) == (0, 0)
    assert (registry.events(), registry.audits()) == ([], [])


# --------------------------------------------------------------------------- approval narrows, never widens


async def test_approval_may_narrow_items_validity_and_quota(registry: Registry, parties: Parties) -> None:
    application_id = await applied(registry, parties, conditional_share(), valid_days=365, daily_quota=1000)

    narrowed = ApplicationApprove(items=["姓名", "户籍地址"], valid_days=90, daily_quota=200, masking={"姓名": "name"})
    decided, grant = await registry.approve(parties.approver, application_id, narrowed)

    assert (decided.status, decided.decided_by) == ("approved", parties.approver.sub)
    assert (grant.items, grant.daily_quota) == (["姓名", "户籍地址"], 200)
    assert abs(grant.valid_until - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=1)
    assert grant.masking["姓名"] == "name"
    issued, approved = registry.events()
    assert (list(issued.grant_issued.items), issued.grant_issued.daily_quota) == (["姓名", "户籍地址"], 200)
    change = approved.application_changed
    assert (change.change, change.status, change.actor, list(change.items), change.grant_id) == (
        "approved",
        "approved",
        parties.approver.sub,
        ["姓名", "户籍地址"],
        str(grant.id),
    )
    [audit] = registry.audits()
    assert (audit.action, audit.actor, list(audit.fields)) == (
        AuditAction.APPLICATION_APPROVED,
        parties.approver.sub,
        ["姓名", "户籍地址"],
    )


@pytest.mark.parametrize(
    "approval",
    [
        pytest.param(ApplicationApprove(items=[*ASKED, "联系电话"]), id="an item not asked for"),
        pytest.param(ApplicationApprove(items=["联系电话"]), id="another item instead"),
        pytest.param(ApplicationApprove(valid_days=366), id="longer validity"),
        pytest.param(
            ApplicationApprove(valid_until=datetime.now(UTC) + timedelta(days=366)), id="validity ending later"
        ),
        pytest.param(ApplicationApprove(daily_quota=1001), id="higher quota"),
        pytest.param(ApplicationApprove(items=["姓名"], daily_quota=5000), id="narrower items, higher quota"),
    ],
)
async def test_approval_may_not_widen(registry: Registry, parties: Parties, approval: ApplicationApprove) -> None:
    application_id = await applied(registry, parties, conditional_share(), valid_days=365, daily_quota=1000)

    with pytest.raises(Problem) as raised:
        await registry.approve(parties.approver, application_id, approval)

    assert_problem(raised, 422, "widening")
    stored = await registry.stored(application_id)
    assert (stored.status, stored.items, stored.valid_days, stored.daily_quota) == ("pending", ASKED, 365, 1000)
    assert (stored.decided_by, stored.decided_at) == (None, None)
    assert await registry.count(Grant) == 0
    assert (registry.events(), registry.audits()) == ([], [])


async def test_approval_may_end_the_validity_earlier(registry: Registry, parties: Parties) -> None:
    application_id = await applied(registry, parties, conditional_share(), valid_days=365)
    ends = datetime.now(UTC) + timedelta(days=30, hours=12)

    decided, grant = await registry.approve(parties.approver, application_id, ApplicationApprove(valid_until=ends))

    assert (grant.valid_until, decided.valid_days) == (ends, 31)
    issued, _ = registry.events()
    assert issued.grant_issued.valid_until_unix_ms == int(ends.timestamp() * 1000)


async def test_a_validity_already_past_or_given_twice_is_refused(registry: Registry, parties: Parties) -> None:
    application_id = await applied(registry, parties, conditional_share(), valid_days=365)

    past = ApplicationApprove(valid_until=datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(Problem) as raised:
        await registry.approve(parties.approver, application_id, past)

    assert_problem(raised, 422, "validation")
    with pytest.raises(ValidationError, match="not both"):
        ApplicationApprove.model_validate({"valid_days": 30, "valid_until": "2027-01-01T00:00:00+08:00"})
    assert (await registry.stored(application_id)).status == "pending"
    assert (await registry.count(Grant), registry.events(), registry.audits()) == (0, [], [])


async def test_a_rejection_needs_a_reason() -> None:
    for reason in ("", "  ", "x"):
        with pytest.raises(ValidationError):
            ApplicationReject.model_validate({"reason": reason})


async def test_a_decided_application_cannot_be_approved_again(registry: Registry, parties: Parties) -> None:
    application_id = await applied(registry, parties, conditional_share())
    await registry.approve(parties.approver, application_id, ApplicationApprove())

    with pytest.raises(Problem) as raised:
        await registry.approve(parties.approver, application_id, ApplicationApprove())

    assert_problem(raised, 409, "invalid-state")
    assert await registry.count(Grant) == 1


# --------------------------------------------------------------------------- who decides, who sees


async def test_the_providers_approver_rejects_with_a_reason(registry: Registry, parties: Parties) -> None:
    application_id = await applied(registry, parties, conditional_share())

    rejected = await registry.reject(parties.approver, application_id, "用途与所申请信息项不相符")

    assert (rejected.status, rejected.reason, rejected.decided_by) == (
        "rejected",
        "用途与所申请信息项不相符",
        parties.approver.sub,
    )
    assert (await registry.stored(application_id)).status == "rejected"
    assert await registry.count(Grant) == 0
    [event] = registry.events()
    assert (event.application_changed.change, event.application_changed.reason) == (
        "rejected",
        "用途与所申请信息项不相符",
    )
    assert registry.actions() == [AuditAction.APPLICATION_REJECTED]


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        pytest.param(lambda p: p.provider_admin, 403, "forbidden", id="the provider's data admin"),
        pytest.param(lambda p: person(p.consumer, Role.APPROVER), 403, "forbidden", id="the consumer's approver"),
        # A system sees only its own applications: the provider's does not see this one at all.
        pytest.param(lambda p: system(p.provider, Role.PROVIDER), 404, "not-found", id="the provider's system"),
    ],
)
async def test_only_the_providers_approver_may_decide(
    registry: Registry, parties: Parties, who: Any, status: int, code: str
) -> None:
    application_id = await applied(registry, parties, conditional_share())

    with pytest.raises(Problem) as rejecting:
        await registry.reject(who(parties), application_id, "不同意")
    with pytest.raises(Problem) as approving:
        await registry.approve(who(parties), application_id, ApplicationApprove())

    assert_problem(rejecting, status, code)
    assert_problem(approving, status, code)
    assert (await registry.stored(application_id)).status == "pending"
    assert await registry.count(Grant) == 0
    assert (registry.events(), registry.audits()) == ([], [])


async def test_another_departments_application_looks_like_one_that_does_not_exist(
    registry: Registry, parties: Parties
) -> None:
    application_id = await applied(registry, parties, conditional_share())
    outsider = person(parties.other, Role.APPROVER, Role.DATA_ADMIN)
    missing = uuid.uuid4()

    for attempt in (
        lambda app_id: registry.get(outsider, app_id),
        lambda app_id: registry.approve(outsider, app_id, ApplicationApprove()),
        lambda app_id: registry.reject(outsider, app_id, "不同意"),
    ):
        with pytest.raises(Problem) as hidden:
            await attempt(application_id)
        with pytest.raises(Problem) as absent:
            await attempt(missing)
        assert_problem(hidden, 404, "not-found")
        shown = {**hidden.value.body(), "detail": hidden.value.detail.replace(str(application_id), "…")}
        assert shown == {**absent.value.body(), "detail": absent.value.detail.replace(str(missing), "…")}
    assert (await registry.stored(application_id)).status == "pending"


# --------------------------------------------------------------------------- who may apply


async def test_a_system_may_apply_only_for_itself(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, unconditional_share())
    colleague = system(parties.consumer)  # another system of the same department

    with pytest.raises(Problem) as raised:
        await registry.apply(parties.client, parties.asking(resource, client_id=colleague.client_id))

    assert_problem(raised, 403, "forbidden")
    assert (await registry.count(Application), await registry.count(Grant)) == (0, 0)


async def test_a_system_without_the_consumer_role_may_not_apply(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, unconditional_share())
    provider_only = system(parties.consumer, Role.PROVIDER)

    with pytest.raises(Problem) as raised:
        await registry.apply(provider_only, parties.asking(resource, client_id=provider_only.client_id))

    assert_problem(raised, 403, "forbidden")
    assert await registry.count(Application) == 0


async def test_a_data_admin_applies_for_a_system_of_their_department(registry: Registry, parties: Parties) -> None:
    # Regression: a person's token once carried client_id = sub, and the registry took them for a
    # system applying for another one.
    resource = await registry.publish(parties.provider_admin, conditional_share())
    admin = person(parties.consumer, Role.DATA_ADMIN)

    application, _ = await registry.apply(admin, parties.asking(resource), client_dept=parties.consumer)

    assert (application.status, application.client_id) == ("pending", parties.client.client_id)
    assert (application.applicant, application.consumer_dept) == (admin.sub, parties.consumer)


async def test_a_data_admin_may_not_apply_for_another_departments_system(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, unconditional_share())
    admin = person(parties.other, Role.DATA_ADMIN)

    with pytest.raises(Problem) as raised:
        await registry.apply(admin, parties.asking(resource), client_dept=parties.consumer)

    assert_problem(raised, 422, "unknown-client")
    assert await registry.count(Application) == 0


async def test_a_person_who_is_not_a_data_admin_may_not_apply(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, unconditional_share())
    approver = person(parties.consumer, Role.APPROVER, Role.AUDITOR)

    with pytest.raises(Problem) as raised:
        await registry.apply(approver, parties.asking(resource), client_dept=parties.consumer)

    assert_problem(raised, 403, "forbidden")
    assert await registry.count(Application) == 0


async def test_items_the_resource_does_not_have_are_refused(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, unconditional_share())

    with pytest.raises(Problem) as raised:
        await registry.apply(parties.client, parties.asking(resource, items=["姓名", "银行账号"]))

    assert_problem(raised, 422, "unknown-items")
    assert "银行账号" in raised.value.detail
    assert await registry.count(Application) == 0


# --------------------------------------------------------------------------- the approver's queue

QUEUE_DAY = date(2026, 11, 27)  # the business date the queue is read on (a Friday)


async def test_the_approver_sees_their_departments_pending_applications_with_working_days_left(
    registry: Registry, parties: Parties
) -> None:
    resource = await registry.publish(parties.provider_admin, conditional_share())
    fresh, _ = await registry.apply(parties.client, parties.asking(resource), today=date(2026, 11, 26))
    late, _ = await registry.apply(parties.client, parties.asking(resource), today=date(2026, 10, 9))
    decided_id = (await registry.apply(parties.client, parties.asking(resource), today=date(2026, 11, 26)))[0].id
    fresh_id, late_id = fresh.id, late.id
    await registry.reject(parties.approver, decided_id, "用途不明确")
    elsewhere = await registry.publish(person(parties.other, Role.DATA_ADMIN), conditional_share())
    await registry.apply(parties.client, parties.asking(elsewhere))  # pending at another provider

    rows, next_cursor, overdue = await registry.list(
        parties.approver, today=QUEUE_DAY, status="pending", provider=parties.provider
    )

    assert {a.id for a in rows} == {fresh_id, late_id}
    assert next_cursor is None
    assert overdue == 1
    by_id = {a.id: a for a in rows}
    # filed 11-26 → due 12-10; after Friday 11-27: 11-30, 12-01…12-04 and 12-07…12-10 are left.
    assert by_id[fresh_id].due_by == date(2026, 12, 10)
    assert service.working_days_left(by_id[fresh_id], QUEUE_DAY, registry.calendar) == 9
    assert not service.is_overdue(by_id[fresh_id], QUEUE_DAY)
    # filed 10-09 → due 10-22 (Saturday 10-10 is worked): 10-23 and five full weeks are past since.
    assert by_id[late_id].due_by == date(2026, 10, 22)
    assert service.is_overdue(by_id[late_id], QUEUE_DAY)
    assert service.working_days_left(by_id[late_id], QUEUE_DAY, registry.calendar) == -26


async def test_filters_select_and_overdue_applications_are_counted(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, conditional_share())
    other_resource = await registry.publish(parties.provider_admin, conditional_share())
    late = [
        (await registry.apply(parties.client, parties.asking(resource), today=date(2026, 9, 1)))[0].id for _ in range(2)
    ]
    on_time = (await registry.apply(parties.client, parties.asking(other_resource), today=QUEUE_DAY))[0].id

    overdue_rows, _, overdue = await registry.list(parties.approver, today=QUEUE_DAY, overdue=True)
    assert ({a.id for a in overdue_rows}, overdue) == (set(late), 2)
    current_rows, _, overdue = await registry.list(parties.approver, today=QUEUE_DAY, overdue=False)
    assert ({a.id for a in current_rows}, overdue) == ({on_time}, 2)  # the count ignores the overdue filter
    by_resource, _, overdue = await registry.list(parties.approver, today=QUEUE_DAY, resource=other_resource.code)
    assert ({a.id for a in by_resource}, overdue) == ({on_time}, 0)
    by_consumer, _, _ = await registry.list(parties.approver, today=QUEUE_DAY, consumer=parties.other)
    assert by_consumer == []
    approved, _, _ = await registry.list(parties.approver, today=QUEUE_DAY, status="approved")
    assert approved == []


async def test_the_list_pages_with_a_cursor_and_refuses_a_tampered_one(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, conditional_share())
    filed = {(await registry.apply(parties.client, parties.asking(resource)))[0].id for _ in range(5)}

    seen: list[uuid.UUID] = []
    cursor: str | None = None
    pages = 0
    while True:
        rows, cursor, _ = await registry.list(parties.approver, today=QUEUE_DAY, limit=2, cursor=cursor)
        seen.extend(a.id for a in rows)
        pages += 1
        if cursor is None:
            break
    assert (pages, len(seen), set(seen)) == (3, 5, filed)

    _, first_cursor, _ = await registry.list(parties.approver, today=QUEUE_DAY, limit=2)
    assert first_cursor is not None
    before = (await registry.count(Application), await registry.count(Grant))
    for tampered in (first_cursor[:-3] + "xyz", "not-a-cursor", "MjAyNnxub3QtYS11dWlk", first_cursor + "!"):
        with pytest.raises(Problem) as raised:
            await registry.list(parties.approver, today=QUEUE_DAY, limit=2, cursor=tampered)
        assert_problem(raised, 422, "invalid-cursor")
    assert (await registry.count(Application), await registry.count(Grant)) == before


# --------------------------------------------------------------------------- grants and revocation


async def test_the_provider_revokes_a_grant_and_tells_the_exchange(registry: Registry, parties: Parties) -> None:
    application_id = await applied(registry, parties, conditional_share())
    _, grant = await registry.approve(parties.approver, application_id, ApplicationApprove(daily_quota=10))
    grant_id = grant.id
    registry.changes()

    revoked = await registry.revoke(parties.approver, grant_id, "事项已办结，不再需要")

    assert (revoked.status, revoked.revoked_reason, revoked.daily_quota) == ("revoked", "事项已办结，不再需要", 10)
    [event] = registry.events()
    assert (event.grant_revoked.grant_id, event.grant_revoked.reason) == (str(grant_id), "事项已办结，不再需要")
    [audit] = registry.audits()
    assert (audit.action, audit.actor, audit.consumer_client_id) == (
        AuditAction.GRANT_REVOKED,
        parties.approver.sub,
        parties.client.client_id,
    )
    with pytest.raises(Problem) as again:
        await registry.revoke(parties.approver, grant_id, "再次撤销")
    assert_problem(again, 409, "invalid-state")
    # Both departments read why: the consumer's data administrator, and the consuming system.
    for who in (person(parties.consumer, Role.DATA_ADMIN), parties.client):
        read = await registry.grant(who, grant_id)
        assert (read.status, read.revoked_reason) == ("revoked", "事项已办结，不再需要")


# --------------------------------------------------------------------------- BOLA: another department, another system


async def test_another_department_sees_none_of_the_applications_or_grants(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, unconditional_share())
    application, grant = await registry.apply(parties.client, parties.asking(resource))
    assert grant is not None
    application_id, grant_id = application.id, grant.id
    registry.changes()
    outsider = person(parties.other, Role.APPROVER, Role.DATA_ADMIN)

    rows, _, overdue = await registry.list(outsider, today=QUEUE_DAY)
    assert (rows, overdue) == ([], 0)
    rows, _, _ = await registry.list(outsider, today=QUEUE_DAY, provider=parties.provider, status="approved")
    assert rows == []
    assert await registry.grants(outsider) == []
    with pytest.raises(Problem) as hidden:
        await registry.get(outsider, application_id)
    assert_problem(hidden, 404, "not-found")
    with pytest.raises(Problem) as hidden:
        await registry.grant(outsider, grant_id)
    assert_problem(hidden, 404, "not-found")
    with pytest.raises(Problem) as hidden:
        await registry.revoke(outsider, grant_id, "越权撤销")
    assert_problem(hidden, 404, "not-found")
    assert (await registry.session.get(Grant, grant_id, populate_existing=True)).status == "active"  # type: ignore[union-attr]
    assert (registry.changes(), registry.audits()) == ([], [])


async def test_a_consumer_system_sees_only_its_own_applications_and_grants(
    registry: Registry, parties: Parties
) -> None:
    resource = await registry.publish(parties.provider_admin, unconditional_share())
    mine, my_grant = await registry.apply(parties.client, parties.asking(resource))
    colleague = system(parties.consumer)  # another system of the consuming department
    theirs, their_grant = await registry.apply(colleague, parties.asking(resource, client_id=colleague.client_id))
    assert my_grant is not None and their_grant is not None
    mine_id, theirs_id, my_grant_id = mine.id, theirs.id, my_grant.id

    rows, _, _ = await registry.list(parties.client, today=QUEUE_DAY)
    assert [a.id for a in rows] == [mine_id]
    assert [g.id for g in await registry.grants(parties.client)] == [my_grant_id]
    assert (await registry.get(parties.client, mine_id)).id == mine_id
    with pytest.raises(Problem) as hidden:
        await registry.get(parties.client, theirs_id)
    assert_problem(hidden, 404, "not-found")
    assert (await registry.grant(parties.client, my_grant_id)).id == my_grant_id
    with pytest.raises(Problem) as hidden:
        await registry.grant(colleague, my_grant_id)
    assert_problem(hidden, 404, "not-found")
    # People of the consuming department see both; the provider's approver sees both too.
    for who in (person(parties.consumer, Role.DATA_ADMIN), parties.approver):
        rows, _, _ = await registry.list(who, today=QUEUE_DAY)
        assert {a.id for a in rows} == {mine_id, theirs_id}


async def test_only_the_provider_may_revoke_a_grant(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, unconditional_share())
    _, grant = await registry.apply(parties.client, parties.asking(resource))
    assert grant is not None
    grant_id = grant.id

    for who in (person(parties.consumer, Role.APPROVER, Role.DATA_ADMIN), person(parties.provider, Role.AUDITOR)):
        with pytest.raises(Problem) as refused:
            await registry.revoke(who, grant_id, "无权撤销")
        assert_problem(refused, 403, "forbidden")
    assert (await registry.session.get(Grant, grant_id, populate_existing=True)).status == "active"  # type: ignore[union-attr]
