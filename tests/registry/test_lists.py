"""三清单 — the responsibility, demand and negative lists, as the registry keeps them.

A 责任清单 line is fulfilled when its department publishes a matching resource, and overdue when
read after its due date; a 需求 goes to the presumed provider, who accepts it into its 责任清单 or
rejects it with a reason; nothing on the 负面清单 is granted. Another department's line is a 404.
Real PostgreSQL; each test is rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.security import Principal, Role
from services.registry.applications import service as applications
from services.registry.applications.schemas import ApplicationApprove, Purpose
from services.registry.catalogue.classification import TAXONOMY
from services.registry.lists import service as lists
from services.registry.lists.schemas import (
    DemandCreate,
    DemandReject,
    NegativeLineCreate,
    ResponsibilityCreate,
    ResponsibilityStatus,
)
from services.registry.models import Application, Grant, Responsibility
from tests.factories import (
    ApplicationCreateFactory,
    ResourceCreateFactory,
    conditional_share,
    credit_code,
    person,
    system,
)
from tests.registry.calls import TODAY, TOPICS
from tests.registry.keeping import Keeper

HOUSEHOLD = "居民户籍信息"
BASIS = "《中华人民共和国个人信息保护法》第二十八条"


@dataclass(frozen=True)
class Depts:
    """市公安局 provides, 市民政局 consumes, a third department is unrelated."""

    provider: str
    consumer: str
    other: str

    def admin(self, dept: str) -> Principal:
        return person(dept, Role.DATA_ADMIN)


@pytest.fixture
def depts() -> Depts:
    return Depts(credit_code("110101"), credit_code("110105"), credit_code("310104"))


@pytest.fixture
def keeper(session: AsyncSession) -> Keeper:
    return Keeper(session)


def line_fields(**fields: object) -> dict[str, object]:
    return {"name": HOUSEHOLD, "items": ["姓名", "公民身份号码"], "due_by": TODAY + timedelta(days=30), **fields}


# --------------------------------------------------------------------------- 责任清单


async def test_a_line_is_fulfilled_when_a_matching_resource_is_published(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    line = await keeper.add_line(admin, **line_fields())
    asks_more = await keeper.add_line(admin, **line_fields(items=["姓名", "婚姻状况"]))
    elsewhere = await keeper.add_line(depts.admin(depts.other), **line_fields())
    assert lists.responsibility_status(line, TODAY) == ResponsibilityStatus.PLANNED

    draft = await keeper.create(admin, ResourceCreateFactory.build(name=HOUSEHOLD))
    await keeper.submit(admin, draft.code)
    assert (await keeper.line(line.id)).status == "planned"  # a draft or a submission fulfils nothing

    resource = await keeper.publish(person(credit_code(), Role.PLATFORM_ADMIN), draft.code)

    fulfilled = await keeper.line(line.id)
    assert (fulfilled.status, fulfilled.fulfilled_by, fulfilled.fulfilled_on) == ("fulfilled", resource.code, TODAY)
    assert lists.responsibility_status(fulfilled, TODAY + timedelta(days=365)) == ResponsibilityStatus.FULFILLED
    assert (await keeper.line(asks_more.id)).status == "planned"  # the resource has no 婚姻状况
    assert (await keeper.line(elsewhere.id)).status == "planned"  # another department's line


async def test_a_line_for_a_resource_already_published_is_fulfilled_at_once(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    resource = await keeper.publish_resource(admin, name=HOUSEHOLD)

    line = await keeper.add_line(admin, **line_fields())

    assert (line.status, line.fulfilled_by) == ("fulfilled", resource.code)


async def test_a_resource_shared_less_openly_than_promised_does_not_fulfil(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    line = await keeper.add_line(admin, **line_fields(share_type="unconditional"))

    await keeper.publish_resource(admin, name=HOUSEHOLD, share=conditional_share())
    assert (await keeper.line(line.id)).status == "planned"
    shared = await keeper.publish_resource(admin, name=HOUSEHOLD)  # unconditional, as promised
    assert (await keeper.line(line.id)).fulfilled_by == shared.code


async def test_overdue_is_read_on_the_business_date(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    due = TODAY - timedelta(days=1)
    line = await keeper.add_line(admin, on=due, **line_fields(due_by=due))  # written in time, read late
    later = await keeper.add_line(admin, **line_fields(name="婚姻登记信息"))

    assert lists.responsibility_status(line, due) == ResponsibilityStatus.PLANNED  # the due date itself is in time
    assert lists.responsibility_status(line, TODAY) == ResponsibilityStatus.OVERDUE
    for status, expected in (
        (ResponsibilityStatus.OVERDUE, [line.id]),
        (ResponsibilityStatus.PLANNED, [later.id]),
        (ResponsibilityStatus.FULFILLED, []),
    ):
        rows, _ = await lists.list_responsibilities(
            keeper.session, dept=depts.provider, status=status, today=TODAY, limit=10, cursor=None
        )
        assert [r.id for r in rows] == expected, status


async def test_the_list_pages_by_cursor(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    made = {(await keeper.add_line(admin, **line_fields(name=f"资源{n}"))).id for n in range(3)}

    first, cursor = await lists.list_responsibilities(
        keeper.session, dept=depts.provider, status=None, today=TODAY, limit=2, cursor=None
    )
    assert cursor is not None
    rest, end = await lists.list_responsibilities(
        keeper.session, dept=depts.provider, status=None, today=TODAY, limit=2, cursor=first[-1].id
    )
    assert {r.id for r in first + rest} == made
    assert (len(first), len(rest), end) == (2, 1, None)


async def test_only_the_departments_own_data_admin_changes_a_line(keeper: Keeper, depts: Depts) -> None:
    line = await keeper.add_line(depts.admin(depts.provider), **line_fields())
    moved = TODAY + timedelta(days=90)

    await keeper.refused(404, "not-found", keeper.patch_line(depts.admin(depts.other), line.id, due_by=moved))
    await keeper.refused(
        403, "forbidden", keeper.patch_line(person(depts.provider, Role.APPROVER), line.id, due_by=moved)
    )
    assert (await keeper.line(line.id)).due_by == line_fields()["due_by"]

    changed = await keeper.patch_line(depts.admin(depts.provider), line.id, due_by=moved)
    assert changed.due_by == moved


async def test_a_due_date_already_past_is_refused(keeper: Keeper, depts: Depts) -> None:
    admin, yesterday = depts.admin(depts.provider), TODAY - timedelta(days=1)
    problem = await keeper.refused(422, "validation", keeper.add_line(admin, **line_fields(due_by=yesterday)))
    assert problem.extra["errors"][0]["field"] == "due_by"

    line = await keeper.add_line(admin, **line_fields(due_by=TODAY))  # today is in time
    await keeper.refused(422, "validation", keeper.patch_line(admin, line.id, due_by=yesterday))
    demand = await keeper.demand(depts.admin(depts.consumer), **demand_fields(depts.provider))
    await keeper.refused(422, "validation", keeper.accept(admin, demand.id, due_by=yesterday))
    assert (await keeper.line(line.id)).due_by == TODAY


async def test_a_fulfilled_line_is_history(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    await keeper.publish_resource(admin, name=HOUSEHOLD)
    line = await keeper.add_line(admin, **line_fields())

    await keeper.refused(409, "invalid-state", keeper.patch_line(admin, line.id, name="婚姻登记信息"))


async def test_deprecating_the_resource_reopens_the_line_on_the_business_date(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    due = TODAY - timedelta(days=1)
    late = await keeper.add_line(admin, on=due, **line_fields(due_by=due))  # promised for yesterday
    in_time = await keeper.add_line(admin, **line_fields())  # due in a month
    resource = await keeper.publish_resource(admin, name=HOUSEHOLD)
    other = await keeper.publish_resource(depts.admin(depts.other), name=HOUSEHOLD)  # another department's
    elsewhere = await keeper.add_line(depts.admin(depts.other), **line_fields())
    assert [(await keeper.line(i)).fulfilled_by for i in (late.id, in_time.id, elsewhere.id)] == [
        resource.code,
        resource.code,
        other.code,
    ]

    await keeper.deprecate(admin, resource.code)  # 废止: the resource provides nothing any more

    for line_id in (late.id, in_time.id):
        reopened = await keeper.line(line_id)
        assert (reopened.status, reopened.fulfilled_by, reopened.fulfilled_on) == ("planned", None, None)
    assert lists.responsibility_status(await keeper.line(late.id), TODAY) == ResponsibilityStatus.OVERDUE
    assert lists.responsibility_status(await keeper.line(in_time.id), TODAY) == ResponsibilityStatus.PLANNED
    overdue, _ = await lists.list_responsibilities(
        keeper.session, dept=depts.provider, status=ResponsibilityStatus.OVERDUE, today=TODAY, limit=10, cursor=None
    )
    assert [line.id for line in overdue] == [late.id]
    assert (await keeper.line(elsewhere.id)).fulfilled_by == other.code  # not the deprecated resource's line

    again = await keeper.publish_resource(admin, name=HOUSEHOLD)  # a new resource fulfils the lines again
    assert {(await keeper.line(i)).fulfilled_by for i in (late.id, in_time.id)} == {again.code}


async def test_a_line_stays_fulfilled_while_another_published_resource_fulfils_it(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    category = sorted(TAXONOMY.targets)[0]  # one category: codes in the order of creation
    first = await keeper.publish_resource(admin, name=HOUSEHOLD, category=category)
    line = await keeper.add_line(admin, **line_fields(share_type="unconditional"))
    second = await keeper.publish_resource(admin, name=HOUSEHOLD, category=category)
    poorer = await keeper.publish_resource(admin, name=HOUSEHOLD, category=category, share=conditional_share())
    assert first.code < second.code < poorer.code
    line_two = await keeper.add_line(admin, **line_fields(share_type="conditional"))
    assert [(await keeper.line(i)).fulfilled_by for i in (line.id, line_two.id)] == [first.code, first.code]

    await keeper.deprecate(admin, first.code)

    moved = await keeper.line(line.id)
    assert (moved.status, moved.fulfilled_by, moved.fulfilled_on) == ("fulfilled", second.code, TODAY)
    assert (await keeper.line(line_two.id)).fulfilled_by == second.code

    await keeper.deprecate(admin, second.code)
    assert (await keeper.line(line.id)).status == "planned"  # promised unconditional: the conditional one won't do
    assert (await keeper.line(line_two.id)).fulfilled_by == poorer.code  # promised conditional: it does


async def test_a_system_cannot_keep_a_list(keeper: Keeper, depts: Depts) -> None:
    await keeper.refused(403, "forbidden", keeper.add_line(system(depts.provider), **line_fields()))


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "名" * 101},  # oversized
        {"items": []},
        {"items": ["姓名", "姓名"]},
        {"items": ["项" * 51]},
        {"share_type": "sometimes"},
        {"share_type": "none"},  # a refusal goes on the 负面清单, not the 责任清单
        {"mode": "邮件"},
        {"due_by": None},
    ],
)
async def test_a_bad_line_is_refused(keeper: Keeper, bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ResponsibilityCreate.model_validate(line_fields(**bad))


async def test_the_database_refuses_a_status_the_code_does_not_know(keeper: Keeper, depts: Depts) -> None:
    line = await keeper.add_line(depts.admin(depts.provider), **line_fields())
    stored = await keeper.session.get(Responsibility, line.id)
    assert stored is not None
    async with keeper.session.begin_nested() as savepoint:
        stored.status = "overdue"  # type: ignore[assignment]  # overdue is read, never stored
        with pytest.raises(IntegrityError, match="ck_responsibilities_status"):
            await keeper.session.flush()
        await savepoint.rollback()


# --------------------------------------------------------------------------- 需求清单


def demand_fields(provider: str, **fields: object) -> dict[str, object]:
    return {
        "provider": provider,
        "name": "婚姻登记信息",
        "items": ["姓名", "婚姻状况"],
        "service_item": "ZDSHBZ-SP",
        "basis": "《社会救助暂行办法》第十一条",
        "update_cycle": "实时",
        **fields,
    }


async def test_a_demand_is_routed_to_the_provider_who_accepts_it_into_its_responsibility_list(
    keeper: Keeper, depts: Depts
) -> None:
    demand = await keeper.demand(depts.admin(depts.consumer), **demand_fields(depts.provider))
    assert (demand.status, demand.requester_dept, demand.provider_dept) == ("pending", depts.consumer, depts.provider)

    for dept in (depts.consumer, depts.provider):  # both parties see it, in their lists too
        assert (await lists.get_demand(keeper.session, depts.admin(dept), demand.id)).id == demand.id
        rows, _ = await lists.list_demands(keeper.session, depts.admin(dept), status=None, limit=10, cursor=None)
        assert [d.id for d in rows] == [demand.id]
    rows, _ = await lists.list_demands(keeper.session, depts.admin(depts.other), status=None, limit=10, cursor=None)
    assert rows == []
    await keeper.refused(404, "not-found", lists.get_demand(keeper.session, depts.admin(depts.other), demand.id))

    due = TODAY + timedelta(days=60)
    accepted, line = await keeper.accept(depts.admin(depts.provider), demand.id, due_by=due)

    assert (accepted.status, accepted.responsibility_id) == ("accepted", line.id)
    assert (line.dept, line.name, line.items, line.due_by, line.demand_id, line.status) == (
        depts.provider,
        "婚姻登记信息",
        ["姓名", "婚姻状况"],
        due,
        demand.id,
        "planned",
    )
    seen = await lists.get_demand(keeper.session, depts.admin(depts.consumer), demand.id)
    assert (seen.status, seen.responsibility_id) == ("accepted", line.id)
    [audited] = keeper.audits()
    assert (audited.action, audited.service, audited.outcome) == ("registry.demand.accepted", "registry", "completed")
    assert (audited.consumer_dept, audited.provider_dept, audited.purpose) == (
        depts.consumer,
        depts.provider,
        "ZDSHBZ-SP",
    )
    assert list(audited.fields) == ["姓名", "婚姻状况"]


async def test_a_rejection_needs_a_reason_which_the_requester_reads(keeper: Keeper, depts: Depts) -> None:
    demand = await keeper.demand(depts.admin(depts.consumer), **demand_fields(depts.provider))
    for empty in ({}, {"reason": ""}, {"reason": " "}, {"reason": "因" * 1001}):
        with pytest.raises(ValidationError):
            DemandReject.model_validate(empty)

    provider_admin = depts.admin(depts.provider)
    await keeper.reject_demand(provider_admin, demand.id, "本部门不掌握婚姻登记数据，请向民政部门提出")
    [audited] = keeper.audits()
    assert (audited.action, audited.actor) == ("registry.demand.rejected", provider_admin.sub)

    seen = await lists.get_demand(keeper.session, depts.admin(depts.consumer), demand.id)
    assert (seen.status, seen.reason) == ("rejected", "本部门不掌握婚姻登记数据，请向民政部门提出")
    assert (await keeper.rows())["responsibilities"] == 0


async def test_only_the_provider_answers_a_demand_and_only_once(keeper: Keeper, depts: Depts) -> None:
    demand = await keeper.demand(depts.admin(depts.consumer), **demand_fields(depts.provider))
    due = TODAY + timedelta(days=60)

    await keeper.refused(404, "not-found", keeper.accept(depts.admin(depts.other), demand.id, due_by=due))
    await keeper.refused(404, "not-found", keeper.reject_demand(depts.admin(depts.other), demand.id, "不掌握"))
    await keeper.refused(403, "forbidden", keeper.accept(depts.admin(depts.consumer), demand.id, due_by=due))
    await keeper.refused(403, "forbidden", keeper.accept(person(depts.provider, Role.APPROVER), demand.id, due_by=due))
    assert (await lists.get_demand(keeper.session, depts.admin(depts.provider), demand.id)).status == "pending"

    await keeper.reject_demand(depts.admin(depts.provider), demand.id, "不掌握该数据")
    await keeper.refused(409, "invalid-state", keeper.accept(depts.admin(depts.provider), demand.id, due_by=due))


async def test_a_demand_goes_to_another_department(keeper: Keeper, depts: Depts) -> None:
    await keeper.refused(
        422, "demand-to-self", keeper.demand(depts.admin(depts.consumer), **demand_fields(depts.consumer))
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"provider": "11110101MB0000000X"},  # wrong check character
        {"provider": "short"},
        {"basis": ""},
        {"basis": "依" * 501},
        {"service_item": "低保"},  # not a 事项 code
        {"name": "名" * 101},
        {"update_cycle": "偶尔"},
        {"items": []},
    ],
)
async def test_a_bad_demand_is_refused(depts: Depts, bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DemandCreate.model_validate({**demand_fields(depts.provider), **bad})


# --------------------------------------------------------------------------- 负面清单


async def test_a_negative_listed_resource_is_never_granted(keeper: Keeper, depts: Depts) -> None:
    admin, client = depts.admin(depts.provider), system(depts.consumer)
    resource = await keeper.publish_resource(admin, name=HOUSEHOLD)
    keeper.changes()  # the catalogue's own events and audits: not what this test is about
    line = await keeper.negative(admin, resource=resource.code, basis=BASIS)
    assert (line.dept, line.resource_code, line.item, line.basis) == (depts.provider, resource.code, None, BASIS)

    body = ApplicationCreateFactory.build(resource=resource.code, client_id=client.client_id, items=["姓名"])
    problem = await keeper.refused(422, "negative-listed", keeper.apply(client, body))
    assert problem.extra["listed"] == [{"item": None, "basis": BASIS}]
    assert BASIS in (problem.detail or "")

    await keeper.unlist(admin, line.id)  # taken off the list: sharing is the rule again
    audits = keeper.audits()
    assert [(a.action, a.actor, a.resource_code) for a in audits] == [
        ("registry.negative.listed", admin.sub, resource.code),
        ("registry.negative.unlisted", admin.sub, resource.code),
    ]
    application, grant = await keeper.apply(client, body)
    assert (application.status, grant is not None) == ("approved", True)


async def test_a_negative_listed_item_is_never_granted_the_others_are(keeper: Keeper, depts: Depts) -> None:
    admin, client = depts.admin(depts.provider), system(depts.consumer)
    resource = await keeper.publish_resource(admin, name=HOUSEHOLD)
    await keeper.negative(admin, resource=resource.code, item="公民身份号码", basis=BASIS)

    with_it = ApplicationCreateFactory.build(
        resource=resource.code, client_id=client.client_id, items=["姓名", "公民身份号码"]
    )
    problem = await keeper.refused(422, "negative-listed", keeper.apply(client, with_it))
    assert problem.extra["listed"] == [{"item": "公民身份号码", "basis": BASIS}]

    without = ApplicationCreateFactory.build(resource=resource.code, client_id=client.client_id, items=["姓名"])
    _, grant = await keeper.apply(client, without)
    assert grant is not None and grant.items == ["姓名"]


async def test_an_application_pending_when_listed_cannot_be_approved(keeper: Keeper, depts: Depts) -> None:
    admin, client = depts.admin(depts.provider), system(depts.consumer)
    resource = await keeper.publish_resource(admin, name=HOUSEHOLD, share=conditional_share())
    body = ApplicationCreateFactory.build(
        resource=resource.code,
        client_id=client.client_id,
        items=["姓名", "公民身份号码"],
        purpose=Purpose(service_item="ZDSHBZ-SP"),
    )
    application, _ = await keeper.apply(client, body)
    await keeper.negative(admin, resource=resource.code, item="公民身份号码", basis=BASIS)

    async def approve() -> None:
        async with keeper.unit() as uow:
            approver = person(depts.provider, Role.APPROVER)
            await applications.approve_application(uow, approver, application.id, ApplicationApprove(), TOPICS)

    await keeper.refused(422, "negative-listed", approve())
    stored = await keeper.session.get(Application, application.id, populate_existing=True)
    assert stored is not None and stored.status == "pending"
    assert (await keeper.rows())[Grant.__tablename__] == 0


async def test_listing_a_resource_revokes_its_live_grants_and_tells_the_exchange(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    resource = await keeper.publish_resource(admin, name=HOUSEHOLD)
    kept = await keeper.publish_resource(admin, name="婚姻登记信息")
    clients = [system(depts.consumer), system(depts.other), system(depts.consumer)]
    grants = []
    for client, code in zip(clients, (resource.code, resource.code, kept.code), strict=True):
        body = ApplicationCreateFactory.build(resource=code, client_id=client.client_id, items=["姓名"])
        _, grant = await keeper.apply(client, body)
        assert grant is not None
        grants.append(grant)
    covering, also_covering, other_resource = grants
    keeper.changes()

    line, revoked = await keeper.listed(admin, resource=resource.code, basis=BASIS)

    assert sorted(g.id for g in revoked) == sorted([covering.id, also_covering.id])
    reason = f"整个资源 列入负面清单 (negative-listed): {BASIS}"
    for grant_id in (covering.id, also_covering.id):
        stored = await keeper.session.get(Grant, grant_id, populate_existing=True)
        assert stored is not None and (stored.status, stored.revoked_reason) == ("revoked", reason)
    untouched = await keeper.session.get(Grant, other_resource.id, populate_existing=True)
    assert untouched is not None and untouched.status == "active"
    # The exchange is told as for a revocation by hand: one grant_revoked event per grant, and
    # the listing and each revocation audited, all in the listing's unit of work.
    events = keeper.events()
    assert sorted((e.grant_revoked.grant_id, e.grant_revoked.reason) for e in events) == sorted(
        (str(g), reason) for g in (covering.id, also_covering.id)
    )
    audits = keeper.audits()
    assert [a.action for a in audits] == [
        "registry.negative.listed",
        "registry.grant.revoked",
        "registry.grant.revoked",
    ]
    assert all(a.actor == admin.sub and a.resource_code == resource.code for a in audits)
    assert {a.consumer_client_id for a in audits[1:]} == {clients[0].client_id, clients[1].client_id}
    assert line.item is None


async def test_listing_an_item_revokes_the_grants_that_carry_it(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    resource = await keeper.publish_resource(admin, name=HOUSEHOLD)
    grants = {}
    for items in (["姓名", "公民身份号码"], ["公民身份号码"], ["姓名"], ["公民身份号码", "姓名"]):
        client = system(depts.consumer)
        body = ApplicationCreateFactory.build(resource=resource.code, client_id=client.client_id, items=items)
        _, grant = await keeper.apply(client, body)
        assert grant is not None
        grants[tuple(items)] = grant
    # Already revoked, and expired: neither is live, neither is revoked (again).
    by_hand, expired = grants[("姓名", "公民身份号码")], grants[("公民身份号码",)]
    async with keeper.unit() as uow:
        await applications.revoke_grant(uow, admin, by_hand.id, "事项已办结", TOPICS)
    stored_expired = await keeper.session.get(Grant, expired.id)
    assert stored_expired is not None
    stored_expired.valid_until = datetime.now(UTC) - timedelta(seconds=1)
    await keeper.session.flush()
    keeper.changes()

    _, revoked = await keeper.listed(admin, resource=resource.code, item="公民身份号码", basis=BASIS)

    carrying = grants[("公民身份号码", "姓名")]
    assert [g.id for g in revoked] == [carrying.id]
    [event] = keeper.events()
    assert event.grant_revoked.grant_id == str(carrying.id)
    assert event.grant_revoked.reason == f"公民身份号码 列入负面清单 (negative-listed): {BASIS}"
    statuses = {}
    for items, grant in grants.items():
        stored = await keeper.session.get(Grant, grant.id, populate_existing=True)
        assert stored is not None
        statuses[items] = (stored.status, stored.revoked_reason)
    assert statuses == {
        ("姓名", "公民身份号码"): ("revoked", "事项已办结"),  # its own reason kept
        ("公民身份号码",): ("active", None),  # expired: the exchange honours it no more anyway
        ("姓名",): ("active", None),  # does not carry the item
        ("公民身份号码", "姓名"): ("revoked", event.grant_revoked.reason),
    }


async def test_a_refused_listing_revokes_nothing(keeper: Keeper, depts: Depts) -> None:
    admin, client = depts.admin(depts.provider), system(depts.consumer)
    resource = await keeper.publish_resource(admin, name=HOUSEHOLD)
    body = ApplicationCreateFactory.build(resource=resource.code, client_id=client.client_id, items=["姓名"])
    _, grant = await keeper.apply(client, body)
    assert grant is not None
    keeper.changes()

    await keeper.refused(
        422, "unknown-items", keeper.negative(admin, resource=resource.code, item="婚姻状况", basis=BASIS)
    )
    await keeper.refused(
        404, "not-found", keeper.negative(depts.admin(depts.other), resource=resource.code, basis=BASIS)
    )
    stored = await keeper.session.get(Grant, grant.id, populate_existing=True)
    assert stored is not None and stored.status == "active"


async def test_only_the_provider_lists_its_resource_and_unlists_its_line(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    resource = await keeper.publish_resource(admin, name=HOUSEHOLD)

    intruder = depts.admin(depts.other)
    await keeper.refused(404, "not-found", keeper.negative(intruder, resource=resource.code, basis=BASIS))
    await keeper.refused(
        403, "forbidden", keeper.negative(person(depts.provider, Role.APPROVER), resource=resource.code, basis=BASIS)
    )
    line = await keeper.negative(admin, resource=resource.code, basis=BASIS)
    await keeper.refused(404, "not-found", keeper.unlist(intruder, line.id))
    rows, _ = await lists.list_negative_lines(keeper.session, dept=None, resource=resource.code, limit=10, cursor=None)
    assert [r.id for r in rows] == [line.id]  # still listed, and readable by everyone


async def test_a_line_names_a_real_item_once(keeper: Keeper, depts: Depts) -> None:
    admin = depts.admin(depts.provider)
    resource = await keeper.publish_resource(admin, name=HOUSEHOLD)

    await keeper.refused(
        422, "unknown-items", keeper.negative(admin, resource=resource.code, item="婚姻状况", basis=BASIS)
    )
    await keeper.negative(admin, resource=resource.code, item="公民身份号码", basis=BASIS)
    await keeper.refused(
        409, "already-listed", keeper.negative(admin, resource=resource.code, item="公民身份号码", basis=BASIS)
    )
    await keeper.negative(admin, resource=resource.code, basis=BASIS)  # the whole resource after one item
    await keeper.refused(
        409, "already-listed", keeper.negative(admin, resource=resource.code, item="姓名", basis=BASIS)
    )


@pytest.mark.parametrize(
    "body",
    [
        {"resource": "101010/000001"},  # no basis at all
        {"resource": "101010/000001", "basis": ""},
        {"resource": "101010/000001", "basis": "x"},
        {"resource": "101010/000001", "basis": "依" * 501},
        {"resource": "101010/000001", "basis": BASIS, "item": "项" * 51},
    ],
)
async def test_a_line_without_its_legal_basis_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        NegativeLineCreate.model_validate(body)
