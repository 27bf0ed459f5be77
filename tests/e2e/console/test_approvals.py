"""The approver's journey in a real Chromium (journey 2 of issue 12): the department's pending
applications with the working days left, overdue ones in red; an approval narrowed, a widening
refused, a rejection that must give its reason."""

from __future__ import annotations

import re
import uuid

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
    await page.get_by_label("性别").uncheck()
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
    await page.get_by_label("户籍地址").uncheck()
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
