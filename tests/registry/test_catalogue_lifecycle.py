"""Catalogue lifecycle and versions: draft → submitted → published → deprecated; the provider's
data_admin drafts, submits, edits and deprecates, a platform_admin publishes or rejects (审核);
editing a published entry drafts a new version while the published one keeps serving. Each wrong
transition is 409 ``invalid-state`` and writes nothing. Real PostgreSQL; each test is rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.contracts.audit import AuditAction
from services.common.errors import Problem
from services.common.security import Principal, Role
from services.registry.catalogue import service as catalogue
from services.registry.models import ResourceStatus, VersionStatus
from tests.factories import ResourceCreateFactory, credit_code, person
from tests.registry.calls import TODAY, Catalogue


@dataclass(frozen=True)
class People:
    """市公安局's data administrator and approver, another department's data administrator, and
    the platform's reviewer (a platform_admin)."""

    admin: Principal
    approver: Principal
    other_admin: Principal
    reviewer: Principal


@pytest.fixture
def people() -> People:
    dept = credit_code()
    return People(
        admin=person(dept, Role.DATA_ADMIN),
        approver=person(dept, Role.APPROVER),
        other_admin=person(credit_code(), Role.DATA_ADMIN),
        reviewer=person(credit_code(), Role.PLATFORM_ADMIN),
    )


@pytest.fixture
def registry(session: AsyncSession) -> Catalogue:
    return Catalogue(session)


async def test_an_entry_goes_from_draft_through_review_to_published(registry: Catalogue, people: People) -> None:
    draft = await registry.create(people.admin, ResourceCreateFactory.build())
    assert (draft.status, draft.version) == (ResourceStatus.DRAFT, 1)
    submitted = await registry.submit(people.admin, draft.code)
    assert submitted.status == VersionStatus.SUBMITTED
    assert (await registry.state(draft.code))[0] == ResourceStatus.SUBMITTED
    assert registry.changes() == ["created", "submitted"]  # nothing is served before publication
    published = await registry.publish(people.reviewer, draft.code)
    assert (published.status, published.version, published.published_on) == (
        ResourceStatus.PUBLISHED,
        1,
        TODAY,
    )
    [event] = registry.events()
    assert (event.resource_published.code, event.resource_published.version) == (draft.code, 1)


async def test_every_transition_is_an_event_and_an_audit_event(registry: Catalogue, people: People) -> None:
    draft = await registry.create(people.admin, ResourceCreateFactory.build())
    code = draft.code
    await registry.patch(people.admin, code, name="居民户籍登记信息")
    await registry.submit(people.admin, code)
    await registry.reject(people.reviewer, code, "摘要未说明数据来源")
    await registry.submit(people.admin, code)
    await registry.publish(people.reviewer, code)
    await registry.patch(people.admin, code, summary="新摘要")
    await registry.deprecate(people.admin, code)

    events = registry.events()
    kinds = [e.WhichOneof("event") for e in events]
    changes = [(e.resource_changed.change, e.resource_changed.version) for e in events if e.resource_changed.code]
    assert kinds == ["resource_changed"] * 5 + ["resource_published"] + ["resource_changed"] * 2
    assert changes == [
        ("created", 1),
        ("edited", 1),
        ("submitted", 1),
        ("rejected", 1),
        ("submitted", 1),
        ("edited", 2),
        ("deprecated", 1),
    ]
    rejected = events[3].resource_changed
    assert (rejected.reason, rejected.actor, rejected.provider_dept) == (
        "摘要未说明数据来源",
        people.reviewer.sub,
        people.admin.dept,
    )
    audits = registry.audits()
    assert [a.action for a in audits] == [
        AuditAction.RESOURCE_CREATED,
        AuditAction.RESOURCE_EDITED,
        AuditAction.RESOURCE_SUBMITTED,
        AuditAction.RESOURCE_REJECTED,
        AuditAction.RESOURCE_SUBMITTED,
        AuditAction.RESOURCE_PUBLISHED,
        AuditAction.RESOURCE_EDITED,
        AuditAction.RESOURCE_DEPRECATED,
    ]
    assert {(a.resource_code, a.provider_dept, a.service, a.outcome) for a in audits} == {
        (code, people.admin.dept, "registry", "completed")
    }
    assert [a.actor for a in audits][3::2] == [people.reviewer.sub, people.reviewer.sub, people.admin.sub]


async def test_a_rejection_returns_the_version_to_draft_with_the_reason(registry: Catalogue, people: People) -> None:
    draft = await registry.create(people.admin, ResourceCreateFactory.build())
    await registry.submit(people.admin, draft.code)
    rejected = await registry.reject(people.reviewer, draft.code, "摘要未说明数据来源")
    assert (rejected.status, rejected.reason, rejected.decided_by) == (
        VersionStatus.DRAFT,
        "摘要未说明数据来源",
        people.reviewer.sub,
    )
    assert (await registry.state(draft.code))[0] == ResourceStatus.DRAFT
    await registry.patch(people.admin, draft.code, summary="户籍登记信息，来源：公安人口管理系统。")
    await registry.submit(people.admin, draft.code)  # and it may be submitted again
    assert (await registry.publish(people.reviewer, draft.code)).summary == "户籍登记信息，来源：公安人口管理系统。"


async def test_editing_a_draft_changes_it_in_place(registry: Catalogue, people: People) -> None:
    draft = await registry.create(people.admin, ResourceCreateFactory.build())
    version = await registry.patch(people.admin, draft.code, name="居民户籍登记信息")
    assert (version.version, version.status) == (1, VersionStatus.DRAFT)
    status, shown_version, shown, versions = await registry.state(draft.code)
    assert (status, shown_version, shown["name"], len(versions)) == (ResourceStatus.DRAFT, 1, "居民户籍登记信息", 1)


async def test_editing_a_published_entry_drafts_a_new_version_while_the_old_one_serves(
    registry: Catalogue, people: People
) -> None:
    body = ResourceCreateFactory.build()
    entry = await registry.published(people.admin, people.reviewer, body)
    registry.events()
    v2 = await registry.patch(people.admin, entry.code, summary="新摘要", update_cycle="每日")
    assert (v2.version, v2.status) == (2, VersionStatus.DRAFT)
    again = await registry.patch(people.admin, entry.code, name="居民户籍信息（新）")  # the same draft, edited
    assert again.version == 2

    # Everyone still sees version 1, as published; the exchange was told nothing.
    serving = await catalogue.get_resource(registry.session, people.other_admin, entry.code)
    assert (serving.version, serving.summary, serving.name, serving.status) == (
        1,
        body.summary,
        body.name,
        ResourceStatus.PUBLISHED,
    )
    assert registry.changes() == ["edited", "edited"]

    await registry.submit(people.admin, entry.code)
    republished = await registry.publish(people.reviewer, entry.code)
    assert (republished.version, republished.summary, republished.update_cycle) == (2, "新摘要", "每日")
    submitted, event = registry.events()
    assert (submitted.resource_changed.change, submitted.resource_changed.version) == ("submitted", 2)
    assert (event.resource_published.version, event.resource_published.name) == (2, "居民户籍信息（新）")

    history = await catalogue.list_versions(registry.session, people.other_admin, entry.code)
    assert [(v.version, v.status) for v, _ in history] == [(1, VersionStatus.SUPERSEDED), (2, VersionStatus.PUBLISHED)]
    assert history[0][1] == []
    assert {c["field"]: (c["before"], c["after"]) for c in history[1][1]} == {
        "name": (body.name, "居民户籍信息（新）"),
        "summary": (body.summary, "新摘要"),
        "update_cycle": ("实时", "每日"),
    }


async def test_the_diff_names_each_information_item_that_changed(registry: Catalogue, people: People) -> None:
    entry = await registry.published(people.admin, people.reviewer, ResourceCreateFactory.build())
    items = [dict(i) for i in entry.items]
    items[0]["length"] = 60  # 姓名 widened
    del items[1]  # 性别 dropped
    items.append({"name": "民族", "data_type": "C", "length": 10})
    await registry.patch(people.admin, entry.code, items=items)
    [_, (_, changes)] = await catalogue.list_versions(registry.session, people.admin, entry.code)
    by_field = {c["field"]: c for c in changes}
    assert set(by_field) == {"items.姓名", "items.性别", "items.民族"}
    assert (by_field["items.姓名"]["before"]["length"], by_field["items.姓名"]["after"]["length"]) == (50, 60)
    assert by_field["items.性别"]["after"] is None
    assert by_field["items.民族"]["before"] is None


async def test_other_departments_see_only_published_versions(registry: Catalogue, people: People) -> None:
    entry = await registry.published(people.admin, people.reviewer, ResourceCreateFactory.build())
    await registry.patch(people.admin, entry.code, summary="尚未发布的修改")
    own = await catalogue.list_versions(registry.session, people.admin, entry.code)
    others = await catalogue.list_versions(registry.session, people.other_admin, entry.code)
    assert [v.version for v, _ in own] == [1, 2]
    assert [v.version for v, _ in others] == [1]


async def test_a_deprecated_entry_takes_no_new_applications_or_edits(registry: Catalogue, people: People) -> None:
    entry = await registry.published(people.admin, people.reviewer, ResourceCreateFactory.build())
    deprecated = await registry.deprecate(people.admin, entry.code)
    assert deprecated.status == ResourceStatus.DEPRECATED
    assert (await registry.state(entry.code))[3][0][1] == VersionStatus.DEPRECATED
    with pytest.raises(Problem) as refused:
        await registry.patch(people.admin, entry.code, summary="废止后修改")
    assert refused.value.code == "invalid-state"


# --------------------------------------------------------------------------- wrong transitions: 409, nothing written


async def at_draft(registry: Catalogue, people: People) -> str:
    return (await registry.create(people.admin, ResourceCreateFactory.build())).code


async def at_submitted(registry: Catalogue, people: People) -> str:
    code = await at_draft(registry, people)
    await registry.submit(people.admin, code)
    return code


async def at_published(registry: Catalogue, people: People) -> str:
    return (await registry.published(people.admin, people.reviewer, ResourceCreateFactory.build())).code


async def at_deprecated(registry: Catalogue, people: People) -> str:
    code = await at_published(registry, people)
    await registry.deprecate(people.admin, code)
    return code


async def at_published_with_submitted_v2(registry: Catalogue, people: People) -> str:
    code = await at_published(registry, people)
    await registry.patch(people.admin, code, summary="第二版")
    await registry.submit(people.admin, code)
    return code


SETUPS = {
    "draft": at_draft,
    "submitted": at_submitted,
    "published": at_published,
    "deprecated": at_deprecated,
    "published+v2 submitted": at_published_with_submitted_v2,
}
WRONG = [
    ("draft", "deprecate"),
    ("submitted", "submit"),
    ("submitted", "patch"),
    ("submitted", "deprecate"),
    ("published", "submit"),
    ("published", "publish"),
    ("published", "reject"),
    ("deprecated", "submit"),
    ("deprecated", "publish"),
    ("deprecated", "deprecate"),
    ("deprecated", "patch"),
    ("published+v2 submitted", "patch"),
    ("published+v2 submitted", "submit"),
]


async def act(registry: Catalogue, people: People, action: str, code: str) -> object:
    if action == "patch":
        return await registry.patch(people.admin, code, summary="改")
    if action == "publish":
        return await registry.publish(people.reviewer, code)
    if action == "reject":
        return await registry.reject(people.reviewer, code, "不符合要求")
    call = registry.submit if action == "submit" else registry.deprecate
    return await call(people.admin, code)


@pytest.mark.parametrize(("state", "action"), WRONG, ids=[f"{a} when {s}" for s, a in WRONG])
async def test_a_wrong_transition_is_refused_and_writes_nothing(
    registry: Catalogue, people: People, state: str, action: str
) -> None:
    code = await SETUPS[state](registry, people)
    registry.changes()
    before = await registry.state(code)
    with pytest.raises(Problem) as refused:
        await act(registry, people, action, code)
    assert (refused.value.status, refused.value.code) == (409, "invalid-state")
    assert await registry.state(code) == before
    assert (registry.events(), registry.audits()) == ([], [])


# --------------------------------------------------------------------------- who may do what


@pytest.mark.parametrize("action", ["patch", "submit", "deprecate"])
async def test_another_departments_admin_cannot_change_an_entry_and_it_looks_absent(
    registry: Catalogue, people: People, action: str
) -> None:
    code = await (at_published if action == "deprecate" else at_draft)(registry, people)
    before = await registry.state(code)
    intruder = People(people.other_admin, people.approver, people.admin, people.reviewer)
    with pytest.raises(Problem) as refused:
        await act(registry, intruder, action, code)
    assert (refused.value.status, refused.value.code) == (404, "not-found")
    assert await registry.state(code) == before


async def test_only_the_data_admin_of_the_provider_edits(registry: Catalogue, people: People) -> None:
    code = await at_draft(registry, people)
    before = await registry.state(code)
    with pytest.raises(Problem) as refused:
        await registry.patch(people.approver, code, summary="审批人不能修改目录")
    assert refused.value.status == 403
    assert await registry.state(code) == before


@pytest.mark.parametrize("action", ["publish", "reject"])
async def test_only_a_platform_admin_publishes_or_rejects(registry: Catalogue, people: People, action: str) -> None:
    code = await at_submitted(registry, people)
    before = await registry.state(code)
    registry.changes()
    provider_as_reviewer = People(people.admin, people.approver, people.other_admin, people.admin)
    with pytest.raises(Problem) as refused:
        await act(registry, provider_as_reviewer, action, code)
    assert refused.value.status == 403
    assert await registry.state(code) == before
    assert (registry.events(), registry.audits()) == ([], [])


@pytest.mark.parametrize("action", ["publish", "reject"])
async def test_a_draft_is_not_the_reviewers_to_decide_nor_to_see(
    registry: Catalogue, people: People, action: str
) -> None:
    code = await at_draft(registry, people)
    before = await registry.state(code)
    registry.changes()
    with pytest.raises(Problem) as refused:
        await act(registry, people, action, code)
    assert (refused.value.status, refused.value.code) == (404, "not-found")
    assert await registry.state(code) == before
    assert (registry.events(), registry.audits()) == ([], [])


async def test_a_submitted_entry_is_visible_to_the_reviewer_but_not_to_other_departments(
    registry: Catalogue, people: People
) -> None:
    code = await at_submitted(registry, people)
    assert (await catalogue.get_resource(registry.session, people.reviewer, code)).code == code
    with pytest.raises(Problem) as hidden:
        await catalogue.get_resource(registry.session, people.other_admin, code)
    assert hidden.value.status == 404


async def test_an_edit_that_makes_the_entry_invalid_is_refused_and_writes_nothing(
    registry: Catalogue, people: People
) -> None:
    code = await at_published(registry, people)
    before = await registry.state(code)
    twice = [{"name": "姓名", "data_type": "C", "length": 50}] * 2
    with pytest.raises(Problem) as refused:
        await registry.patch(people.admin, code, items=twice)
    assert (refused.value.status, refused.value.code) == (422, "validation")
    # As a request's own validation errors are: by field (the whole entry's rule names none).
    [error] = refused.value.extra["errors"]
    assert (error["field"], error["type"]) == ("", "value_error")
    assert "items: names must be unique" in error["message"]
    assert await registry.state(code) == before
