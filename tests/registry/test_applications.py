"""共享申请 — applications: the sharing rules of 国发〔2016〕51号 as the registry applies them.

Unconditional data is granted at once; conditional data waits for the provider's approver, due
within 10 working days; data not shared is refused citing its basis. An approval may narrow what
was asked, never widen it. Run against real PostgreSQL; each test is rolled back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.clock import business_date
from services.common.errors import Problem
from services.common.security import Principal, Role
from services.common.settings import CommonSettings
from services.registry.applications import service
from services.registry.applications.schemas import ApplicationApprove, ApplicationCreate
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
from tests.registry.calls import TOPIC, Units

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

    async def publish(self, admin: Principal, share: ShareSpec) -> Resource:
        """A published 信息资源 of ``admin``'s department (the provider)."""
        async with self.unit() as uow:
            draft = await catalogue.create_resource(uow, admin, ResourceCreateFactory.build(share=share))
            await catalogue.submit_resource(uow, admin, draft.code)
            reviewer = person(credit_code(), Role.PLATFORM_ADMIN)
            resource, _ = await catalogue.publish_resource(uow, reviewer, draft.code, TOPIC, filing_day())
            return resource

    async def apply(
        self, principal: Principal, body: ApplicationCreate, *, client_dept: str | None = None
    ) -> tuple[Application, Grant | None]:
        """Apply as ``principal``. A system's department is its own (as the route decides); for a
        person, ``client_dept`` is what the gateway says owns ``body.client_id``."""
        if principal.is_system:
            client_dept = principal.dept if body.client_id == principal.client_id else None
        async with self.unit() as uow:
            return await service.create_application(
                uow, principal, body, client_dept=client_dept, topic=TOPIC, today=filing_day()
            )

    async def approve(
        self, principal: Principal, application_id: uuid.UUID, body: ApplicationApprove
    ) -> tuple[Application, Grant]:
        async with self.unit() as uow:
            return await service.approve_application(uow, principal, application_id, body, TOPIC)

    async def reject(self, principal: Principal, application_id: uuid.UUID, reason: str) -> Application:
        async with self.unit() as uow:
            return await service.reject_application(uow.session, principal, application_id, reason)

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
    registry.events()
    return application.id


def assert_problem(raised: pytest.ExceptionInfo[Problem], status: int, code: str) -> None:
    assert (raised.value.status, raised.value.code) == (status, code), raised.value.body()


# --------------------------------------------------------------------------- the three kinds of sharing


async def test_unconditional_data_is_granted_at_once(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, unconditional_share())
    [published] = registry.events()
    assert published.resource_published.code == resource.code

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
    [issued] = registry.events()
    assert issued.grant_issued.grant_id == str(grant.id)
    assert list(issued.grant_issued.items) == ASKED
    assert await registry.count(Grant) == 1


async def test_conditional_data_waits_ten_working_days_for_the_provider(registry: Registry, parties: Parties) -> None:
    resource = await registry.publish(parties.provider_admin, conditional_share())
    registry.events()
    filed = filing_day()

    application, grant = await registry.apply(parties.client, parties.asking(resource))

    assert (application.status, grant) == ("pending", None)
    assert application.due_by is not None
    due = application.due_by
    # 10 working days later: the 10th weekday after filing, Saturdays and Sundays not counted.
    days = [filed + timedelta(days=n) for n in range(1, (due - filed).days + 1)]
    assert sum(d.weekday() < 5 for d in days) == 10
    assert due.weekday() < 5
    assert 14 <= (due - filed).days <= 16
    assert await registry.count(Grant) == 0
    assert registry.events() == []


async def test_data_not_shared_is_refused_citing_its_basis(registry: Registry, parties: Parties) -> None:
    basis = "《中华人民共和国居民身份证法》第六条：公安机关对履行职责获得的个人信息应予保密"
    resource = await registry.publish(parties.provider_admin, not_shared(basis))
    registry.events()

    application, grant = await registry.apply(parties.client, parties.asking(resource))

    assert (application.status, grant) == ("refused", None)
    assert application.reason is not None and basis in application.reason
    assert (application.due_by, application.decided_at is not None) == (None, True)
    assert await registry.count(Grant) == 0
    assert registry.events() == []


# --------------------------------------------------------------------------- approval narrows, never widens


async def test_approval_may_narrow_items_validity_and_quota(registry: Registry, parties: Parties) -> None:
    application_id = await applied(registry, parties, conditional_share(), valid_days=365, daily_quota=1000)

    narrowed = ApplicationApprove(items=["姓名", "户籍地址"], valid_days=90, daily_quota=200, masking={"姓名": "name"})
    decided, grant = await registry.approve(parties.approver, application_id, narrowed)

    assert (decided.status, decided.decided_by) == ("approved", parties.approver.sub)
    assert (grant.items, grant.daily_quota) == (["姓名", "户籍地址"], 200)
    assert abs(grant.valid_until - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=1)
    assert grant.masking["姓名"] == "name"
    [issued] = registry.events()
    assert (list(issued.grant_issued.items), issued.grant_issued.daily_quota) == (["姓名", "户籍地址"], 200)


@pytest.mark.parametrize(
    "approval",
    [
        pytest.param(ApplicationApprove(items=[*ASKED, "联系电话"]), id="an item not asked for"),
        pytest.param(ApplicationApprove(items=["联系电话"]), id="another item instead"),
        pytest.param(ApplicationApprove(valid_days=366), id="longer validity"),
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
    assert await registry.count(Grant) == 0
    assert registry.events() == []


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


@pytest.mark.parametrize(
    "who",
    [
        pytest.param(lambda p: p.provider_admin, id="the provider's data admin"),
        pytest.param(lambda p: person(p.consumer, Role.APPROVER), id="the consumer's approver"),
        pytest.param(lambda p: system(p.provider, Role.PROVIDER), id="the provider's system"),
    ],
)
async def test_only_the_providers_approver_may_decide(registry: Registry, parties: Parties, who: Any) -> None:
    application_id = await applied(registry, parties, conditional_share())

    with pytest.raises(Problem) as rejecting:
        await registry.reject(who(parties), application_id, "不同意")
    with pytest.raises(Problem) as approving:
        await registry.approve(who(parties), application_id, ApplicationApprove())

    assert_problem(rejecting, 403, "forbidden")
    assert_problem(approving, 403, "forbidden")
    assert (await registry.stored(application_id)).status == "pending"
    assert await registry.count(Grant) == 0


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
