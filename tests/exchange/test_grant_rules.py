"""授权 — the grant rules the exchange applies to every query before it reaches a provider.

A live grant, for this 事项, covering every item asked; what the consumer then sees is masked by
the grant's rules, and a sensitive item the grant leaves unruled is hidden completely.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Problem
from services.common.masking import effective_masking
from services.exchange.models import GrantView, ResourceView
from services.exchange.service import Denied, check_grant
from tests.factories import HOUSEHOLD_ITEMS, SERVICE_ITEMS, credit_code

NOW = datetime(2026, 3, 16, 9, 30, tzinfo=UTC)
PURPOSE = SERVICE_ITEMS[0][0]  # 最低生活保障审批
GRANTED = ["姓名", "出生日期", "户籍地址", "公民身份号码"]


def resource_view(**overrides: Any) -> ResourceView:
    """A published 居民户籍信息 as the exchange learned it from ``registry.events``."""
    values: dict[str, Any] = {
        "code": "101010/000001",
        "name": "居民户籍信息",
        "provider_dept": credit_code("110101"),
        "version": 1,
        "share_type": "conditional",
        "items": [item.model_dump() for item in HOUSEHOLD_ITEMS],
    }
    return ResourceView(**(values | overrides))


def grant_view(resource: ResourceView, **overrides: Any) -> GrantView:
    """A live grant of ``GRANTED`` items of ``resource`` for ``PURPOSE``, valid for a year."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "resource_code": resource.code,
        "provider_dept": resource.provider_dept,
        "consumer_dept": credit_code("110105"),
        "client_id": "sys-0123456789abcdef",
        "items": GRANTED,
        "purpose": PURPOSE,
        "masking": {"姓名": "name", "公民身份号码": "id_card"},
        "valid_until": NOW + timedelta(days=365),
        "daily_quota": 1000,
        "revoked": False,
    }
    return GrantView(**(values | overrides))


def denied(grant: GrantView | None, resource: ResourceView, fields: list[str], purpose: str = PURPOSE) -> Problem:
    with pytest.raises(Denied) as raised:
        check_grant(grant, resource, purpose, fields, NOW)
    return raised.value


# --------------------------------------------------------------------------- check_grant


@pytest.mark.parametrize("fields", [[], ["姓名"], GRANTED], ids=["all granted", "one item", "every granted item"])
def test_a_live_grant_covering_the_items_lets_the_query_through(fields: list[str]) -> None:
    resource = resource_view()
    grant = grant_view(resource)

    assert check_grant(grant, resource, PURPOSE, fields, NOW) is grant


def test_no_grant_is_a_denial_that_says_where_to_apply() -> None:
    problem = denied(None, resource_view(), ["姓名"])

    assert (problem.status, problem.code) == (403, "no-grant")
    assert "registry" in problem.detail


def test_a_revoked_grant_is_a_denial() -> None:
    resource = resource_view()

    problem = denied(grant_view(resource, revoked=True), resource, ["姓名"])

    assert (problem.status, problem.code) == (403, "grant-revoked")


def test_an_expired_grant_is_a_denial() -> None:
    resource = resource_view()
    expired = grant_view(resource, valid_until=NOW - timedelta(seconds=1))

    problem = denied(expired, resource, ["姓名"])

    assert (problem.status, problem.code) == (403, "grant-expired")
    # Valid up to and including its last instant.
    assert check_grant(grant_view(resource, valid_until=NOW), resource, PURPOSE, ["姓名"], NOW) is not None


def test_a_grant_for_another_purpose_is_a_denial() -> None:
    resource = resource_view()
    other_purpose = SERVICE_ITEMS[2][0]  # 住房公积金提取

    problem = denied(grant_view(resource), resource, ["姓名"], purpose=other_purpose)

    assert (problem.status, problem.code) == (403, "purpose-not-granted")
    assert PURPOSE in problem.detail and other_purpose in problem.detail


def test_an_item_the_resource_does_not_have_is_invalid() -> None:
    resource = resource_view()

    problem = denied(grant_view(resource), resource, ["姓名", "银行账号"])

    assert (problem.status, problem.code) == (422, "unknown-items")
    assert "银行账号" in problem.detail


def test_an_item_the_grant_does_not_cover_is_a_denial() -> None:
    resource = resource_view()

    problem = denied(grant_view(resource), resource, ["姓名", "联系电话"])

    assert (problem.status, problem.code) == (403, "item-not-granted")
    assert "联系电话" in problem.detail and "姓名" not in problem.detail


def test_revocation_is_reported_before_expiry_and_purpose() -> None:
    # The most final reason wins: applying again does not help against a revocation.
    resource = resource_view()
    grant = grant_view(resource, revoked=True, valid_until=NOW - timedelta(days=1), purpose="GJJ-TQ")

    assert denied(grant, resource, ["姓名"]).code == "grant-revoked"


async def test_a_grant_as_stored_by_the_exchange_is_checked_alike(session: AsyncSession) -> None:
    # Through the exchange's tables: valid_until comes back time zone aware, items as a list.
    resource = resource_view()
    grant = grant_view(resource)
    session.add_all([resource, grant])
    await session.flush()
    session.expunge_all()  # what follows is read back from the database

    stored = await session.get(ResourceView, resource.code)
    loaded = await session.get(GrantView, grant.id)
    assert stored is not None and loaded is not None
    assert check_grant(loaded, stored, PURPOSE, ["姓名"], datetime.now(UTC)) is loaded
    assert denied(loaded, stored, ["联系电话"]).code == "item-not-granted"


# --------------------------------------------------------------------------- effective_masking


def test_masking_follows_the_grant_and_hides_unruled_sensitive_items() -> None:
    resource = resource_view()
    grant = grant_view(resource, masking={"姓名": "name", "公民身份号码": "id_card"})

    rules = effective_masking(grant.masking, resource.items)

    # The grant's rules stand (a sensitive item it rules keeps its rule); 联系电话 is sensitive and
    # unruled, so it is hidden; items that are not sensitive and not ruled are shown as they are.
    assert rules == {"姓名": "name", "公民身份号码": "id_card", "联系电话": "full"}


def test_a_grant_without_rules_hides_every_sensitive_item() -> None:
    resource = resource_view()

    assert effective_masking(grant_view(resource, masking={}).masking, resource.items) == {
        "公民身份号码": "full",
        "联系电话": "full",
    }


def test_masking_does_not_change_the_grant() -> None:
    resource = resource_view()
    grant = grant_view(resource, masking={"姓名": "name"})

    effective_masking(grant.masking, resource.items)

    assert grant.masking == {"姓名": "name"}
