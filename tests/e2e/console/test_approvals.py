"""The approver's journey in a real Chromium (journey 2 of issue 12): the department's pending
applications with the working days left, overdue ones in red; an approval narrowed, a widening
refused, a rejection that must give its reason."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from playwright.async_api import Page, expect

from services.console.config import ConsoleSettings
from services.demo import DEMO_PASSWORD, POLICE, DemoCredentials
from services.gateway.config import GatewaySettings
from tests.e2e.client import apply_for, system_token
from tests.e2e.console.support import Stack, log_in, new_person, shot

LOCKOUT_THRESHOLD = GatewaySettings.model_fields["lockout_threshold"].default
IDLE_TIMEOUT_S = ConsoleSettings.model_fields["idle_timeout_s"].default


async def test_an_approver_sees_the_departments_pending_applications_overdue_in_red(
    page: Page, distributed: Stack, db: asyncpg.Connection
) -> None:
    stack, creds = distributed
    approver = await new_person(stack, creds, POLICE["code"], "approver")
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        system = await system_token(api, creds)
        on_time = await apply_for(api, system, creds, creds.resource, "性别", purpose=creds.purpose)
        late = await apply_for(api, system, creds, creds.resource, "出生日期", purpose=creds.purpose)
    assert on_time["status"] == late["status"] == "pending"
    # Filed long ago, as far as the registry can tell: its due date (办结时限) has passed.
    await db.execute("UPDATE registry.applications SET due_by = due_by - 40 WHERE id = $1", uuid.UUID(late["id"]))

    await log_in(page, approver.username, approver.password)
    await page.get_by_role("navigation", name="主导航").get_by_role("link", name="待审批申请").click()
    await expect(page.get_by_role("heading", name="待审批申请")).to_be_visible()
    # Oldest first: this test's applications are the last of their items (other tests of the stack may have some).
    on_time_row = page.get_by_role("row").filter(has_text="性别").last
    late_row = page.get_by_role("row").filter(has_text="出生日期").last
    await expect(on_time_row.get_by_role("cell").last).to_have_text(str(on_time["working_days_left"]))
    await expect(late_row.get_by_role("cell").last).to_have_text(re.compile(r"^已逾期 \d+ 个工作日$"))
    await expect(late_row).to_have_class("overdue")
    red = await late_row.get_by_role("cell").last.evaluate("e => getComputedStyle(e).color")
    assert red == "rgb(179, 38, 30)", red  # #b3261e
    await expect(page.get_by_text(re.compile(r"逾期：\d+ 件"))).to_be_visible()
    await shot(page, "applications")

    # A data administrator has no queue: the entry is not in their navigation.
    await page.get_by_role("button", name="退出登录").click()
    await log_in(page, "mzj_admin", DEMO_PASSWORD)
    await expect(page.get_by_role("navigation", name="主导航").get_by_role("link", name="待审批申请")).to_have_count(0)


async def file_application(creds: DemoCredentials, items: list[str]) -> dict[str, object]:
    """The demo consumer system applies for ``items`` of the demo entry (conditional: pending)."""
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        body = {"resource": creds.resource, "client_id": creds.client_id, "items": items}
        body["purpose"] = {"service_item": creds.purpose}
        filed = await api.post("/v1/registry/applications", json=body, headers=await system_token(api, creds))
    assert filed.status_code == 201, filed.text
    assert filed.json()["status"] == "pending"
    return dict(filed.json())


async def test_an_approver_narrows_an_approval_is_refused_a_widening_and_must_give_a_reason_to_reject(
    page: Page, distributed: Stack
) -> None:
    stack, creds = distributed
    approver = await new_person(stack, creds, POLICE["code"], "approver")
    narrowed = await file_application(creds, ["姓名", "性别"])
    widened = await file_application(creds, ["户籍地址"])
    rejected = await file_application(creds, ["公民身份号码"])
    await log_in(page, approver.username, approver.password)

    await page.goto(f"/console/applications/{narrowed['id']}")
    await expect(page.locator("#status")).to_have_text("待审批")
    await page.get_by_label("性别", exact=True).uncheck()
    days = page.get_by_label("有效期（天）")
    await days.fill(str(int(str(narrowed["valid_days"])) - 1))
    await page.get_by_role("button", name="批准").click()
    await expect(page.locator("#status")).to_have_text("已批准")
    await expect(page.locator("#items")).to_have_text("姓名")
    await expect(page.get_by_role("button", name="批准")).to_have_count(0)  # decided: no forms

    await page.goto(f"/console/applications/{widened['id']}")
    quota = page.get_by_label("每日限额")
    await quota.fill(str(int(str(widened["daily_quota"])) + 1))
    await page.get_by_role("button", name="批准").click()
    refusal = page.locator("#approve-error")
    await expect(refusal).to_contain_text("审批只能缩小申请的范围。")
    await expect(refusal).to_contain_text(str(int(str(widened["daily_quota"])) + 1))  # the API's detail: which value
    await expect(quota).to_have_value(str(int(str(widened["daily_quota"])) + 1))  # what was typed, kept
    await expect(page.locator("#status")).to_have_text("待审批")
    await shot(page, "application")
    await quota.fill("很多")
    await page.get_by_role("button", name="批准").click()
    await expect(page.locator("#daily_quota-error")).to_have_text("请输入整数。")
    await expect(quota).to_have_attribute("aria-invalid", "true")
    await page.get_by_label("户籍地址", exact=True).uncheck()
    await quota.fill(str(widened["daily_quota"]))
    await page.get_by_role("button", name="批准").click()
    await expect(page.locator("#items-error")).to_have_text("请至少保留一个信息项。")

    await page.goto(f"/console/applications/{rejected['id']}")
    await page.get_by_role("button", name="驳回").click()
    await expect(page.locator("#reason-error")).to_have_text("请填写驳回理由（至少 2 个字符）。")
    await expect(page.locator("#status")).to_have_text("待审批")
    await page.get_by_label("理由").fill("超出本部门共享范围")
    await page.get_by_role("button", name="驳回").click()
    await expect(page.locator("#status")).to_have_text("已驳回")
    await expect(page.get_by_text("超出本部门共享范围")).to_be_visible()


async def as_the_consumer(
    creds: DemoCredentials, application_id: object
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The application and the grants of it, as the consumer system reads them through the API."""
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        token = await system_token(api, creds)
        application = await api.get(f"/v1/registry/applications/{application_id}", headers=token)
        grants = await api.get("/v1/registry/grants", params={"limit": "500"}, headers=token)
    assert application.status_code == grants.status_code == 200, (application.text, grants.text)
    mine = [g for g in grants.json()["items"] if g["application_id"] == application_id]
    return application.json(), mine


async def test_an_approver_chooses_the_masking_and_the_end_of_validity_of_a_grant(
    page: Page, distributed: Stack
) -> None:
    stack, creds = distributed
    approver = await new_person(stack, creds, POLICE["code"], "approver")
    filed = await file_application(creds, ["姓名", "公民身份号码"])
    await log_in(page, approver.username, approver.password)
    await page.goto(f"/console/applications/{filed['id']}")
    name_rule = page.get_by_label("姓名的脱敏方式")
    id_rule = page.get_by_label("公民身份号码的脱敏方式")
    # Without a choice the catalogue's own rule holds, and the form says which it is.
    await expect(id_rule.locator("option:checked")).to_have_text("按目录：身份证号：显示前 6 位和后 4 位")
    await expect(name_rule.locator("option:checked")).to_have_text("按目录：无")
    until = page.get_by_label("有效期至")
    await expect(page.get_by_text("时区：Asia/Shanghai")).to_be_visible()

    # A moment already past: said next to the field, what was chosen kept, nothing decided.
    await name_rule.select_option("name")
    await page.get_by_label("截止到指定时间").check()
    await until.fill("2020-01-01T09:00")
    await page.get_by_role("button", name="批准").click()
    await expect(page.locator("#valid_until-error")).to_have_text("有效期截止时间必须晚于现在。")
    await expect(until).to_have_attribute("aria-invalid", "true")
    await expect(until).to_have_value("2020-01-01T09:00")
    await expect(page.get_by_label("截止到指定时间")).to_be_checked()
    await expect(name_rule).to_have_value("name")
    await expect(page.locator("#status")).to_have_text("待审批")
    # A rule the form does not offer (a forged form): refused next to its item.
    await name_rule.evaluate("s => s.add(new Option('clear', 'clear', true, true))")
    await until.fill("2099-01-01T09:00")
    await page.get_by_role("button", name="批准").click()
    await expect(page.locator("#masking-1-error")).to_have_text("请选择所列的脱敏方式之一。")
    application, grants = await as_the_consumer(creds, filed["id"])
    assert application["status"] == "pending" and application["grant_id"] is None and grants == []

    # Approved: 姓名 masked to the surname, 公民身份号码 as the catalogue says, until a chosen moment.
    zone = ZoneInfo("Asia/Shanghai")  # the stack's, as the form said
    end = (datetime.now(zone) + timedelta(days=30)).replace(hour=18, minute=0, second=0, microsecond=0)
    await name_rule.select_option("name")
    await until.fill(end.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_role("button", name="批准").click()
    await expect(page.locator("#status")).to_have_text("已批准")
    application, grants = await as_the_consumer(creds, filed["id"])
    assert application["status"] == "approved" and [g["id"] for g in grants] == [application["grant_id"]]
    assert grants[0]["masking"] == {"姓名": "name", "公民身份号码": "id_card"}
    assert datetime.fromisoformat(grants[0]["valid_until"]) == end
    assert application["valid_days"] in (30, 31)  # as granted, in started days
    # The page now shows the grant as made: its items, each one's masking, its end.
    await expect(page.locator("#grant-state")).to_have_text("有效")
    await expect(page.locator("#grant-until")).to_have_text(end.strftime("%Y-%m-%d %H:%M:%S"))
    terms = page.locator("table.grant-terms")
    await expect(terms.get_by_role("row").filter(has_text="姓名")).to_contain_text("姓名：只显示姓氏")
    await expect(terms.get_by_role("row").filter(has_text="公民身份号码")).to_contain_text(
        "身份证号：显示前 6 位和后 4 位"
    )


async def test_the_provider_revokes_a_grant_with_a_reason_which_the_consumer_reads(
    page: Page, distributed: Stack
) -> None:
    stack, creds = distributed
    approver = await new_person(stack, creds, POLICE["code"], "approver")
    filed = await file_application(creds, ["性别"])
    await log_in(page, approver.username, approver.password)
    await page.goto(f"/console/applications/{filed['id']}")
    await page.get_by_role("button", name="批准").click()
    await expect(page.locator("#grant-state")).to_have_text("有效")

    # No reason: said next to the field, and the grant still holds.
    await page.get_by_role("button", name="撤销", exact=True).click()
    await expect(page.locator("#revoke_reason-error")).to_have_text("请填写撤销原因（至少 2 个字符）。")
    _, [grant] = await as_the_consumer(creds, filed["id"])
    assert grant["status"] == "active"

    await page.get_by_label("理由").fill("事项已办结，不再需要")
    await page.get_by_role("button", name="撤销", exact=True).click()
    await expect(page.locator("#grant-state")).to_have_text("已撤销")
    await expect(page.locator("#grant-revoked-reason")).to_have_text("事项已办结，不再需要")
    await expect(page.get_by_role("button", name="撤销", exact=True)).to_have_count(0)  # nothing left to revoke
    _, [grant] = await as_the_consumer(creds, filed["id"])
    assert (grant["status"], grant["revoked_reason"]) == ("revoked", "事项已办结，不再需要")
    await shot(page, "grant-revoked")

    # The consuming department reads the same, and has no revoke form: only the provider revokes.
    await page.get_by_role("button", name="退出登录").click()
    await log_in(page, "mzj_admin", DEMO_PASSWORD)
    await page.goto(f"/console/applications/{filed['id']}")
    await expect(page.locator("#grant-state")).to_have_text("已撤销")
    await expect(page.locator("#grant-revoked-reason")).to_have_text("事项已办结，不再需要")
    await expect(page.get_by_role("button", name="撤销", exact=True)).to_have_count(0)
