"""A consuming department's data administrator applies for data in a real Chromium: from the
catalogue entry to the application form (errors in place, nothing filed), the filed application's
page, their department's list, and the provider's approver who sees it in the queue."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Page, expect

from services.demo import CIVIL_AFFAIRS, POLICE
from tests.e2e.console.support import UNLABELLED_INPUTS, Person, Stack, log_in, new_person, shot


async def applications_of(stack: Stack, person: Person, department: str) -> list[dict[str, object]]:
    """Every application a department has filed, as one of its people sees them through the API."""
    async with httpx.AsyncClient(base_url=stack[1].gateway, timeout=30) as api:
        login = await api.post("/v1/auth/login", json={"username": person.username, "password": person.password})
        answer = await api.get(
            "/v1/registry/applications",
            params={"consumer": department, "limit": "500"},
            headers={"authorization": f"Bearer {login.json()['access_token']}"},
        )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


async def test_a_data_administrator_applies_for_data_and_follows_the_application(
    page: Page, distributed: Stack
) -> None:
    stack, creds = distributed
    applicant = await new_person(stack, creds, CIVIL_AFFAIRS["code"], "data_admin")
    before = await applications_of(distributed, applicant, CIVIL_AFFAIRS["code"])
    await log_in(page, applicant.username, applicant.password)
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    await page.goto(f"/console/catalogue/{creds.resource}")
    await page.get_by_role("button", name="申请数据").click()  # a link styled (and announced) as a button
    await expect(page.get_by_role("heading", name="申请数据")).to_be_visible()
    assert await page.evaluate(UNLABELLED_INPUTS) == []

    # Nothing chosen, a validity out of range, a quota that is not a number: said in place, kept.
    await page.get_by_label("用于查询的系统（client_id）").fill(creds.client_id)
    await page.get_by_label("数据用于的事项").fill(creds.purpose)
    await page.get_by_label("有效期（天）").fill("2000")
    await page.get_by_label("每日限额").fill("很多")
    await page.get_by_role("button", name="提交申请").click()
    await expect(page.locator("#items-error")).to_have_text("请至少选择一个信息项。")
    await expect(page.locator("#valid_days-error")).to_have_text("请输入 1 到 1095 之间的整数天数。")
    await expect(page.locator("#daily_quota-error")).to_have_text("请输入 1 到 10,000,000 之间的整数。")
    await expect(page.get_by_label("有效期（天）")).to_have_value("2000")
    await expect(page.get_by_label("用于查询的系统（client_id）")).to_have_value(creds.client_id)

    # A system that is not the department's: the registry refuses; the page says so in words.
    await page.get_by_label("姓名").check()
    await page.get_by_label("有效期（天）").fill("30")
    await page.get_by_label("每日限额").fill("50")
    await page.get_by_label("用于查询的系统（client_id）").fill("no-such-system")
    await page.get_by_role("button", name="提交申请").click()
    await expect(page.locator("#apply-error")).to_contain_text("本部门没有这个系统。")
    await expect(page.get_by_label("姓名")).to_be_checked()
    assert await applications_of(distributed, applicant, CIVIL_AFFAIRS["code"]) == before  # nothing filed

    await page.get_by_label("用于查询的系统（client_id）").fill(creds.client_id)
    await page.get_by_role("button", name="提交申请").click()
    await expect(page).to_have_url(re.compile(r"/console/applications/[0-9a-f-]{36}$"))
    await expect(page.locator("#status")).to_have_text("待审批")
    await expect(page.locator("#items")).to_have_text("姓名")
    filed = page.url.rsplit("/", 1)[-1]
    after = await applications_of(distributed, applicant, CIVIL_AFFAIRS["code"])
    (new,) = [a for a in after if a["id"] not in {b["id"] for b in before}]
    assert new["id"] == filed and new["items"] == ["姓名"] and new["valid_days"] == 30 and new["daily_quota"] == 50

    await page.get_by_role("link", name="本部门的申请").click()
    row = page.locator("tr", has=page.locator(f"a[href='/console/applications/{filed}']"))
    await expect(row).to_contain_text(POLICE["name"])  # the provider by its name, not its code
    await expect(row).to_contain_text("待审批")
    await shot(page, "my-applications")

    # The provider's approver finds it in the queue.
    approver = await new_person(stack, creds, POLICE["code"], "approver")
    await page.get_by_role("button", name="退出登录").click()
    await log_in(page, approver.username, approver.password)
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    await page.goto("/console/applications")
    await expect(page.locator(f"a[href='/console/applications/{filed}']")).to_be_visible()


async def test_the_apply_form_of_an_unknown_entry_is_not_found(page: Page, distributed: Stack) -> None:
    stack, creds = distributed
    applicant = await new_person(stack, creds, CIVIL_AFFAIRS["code"], "data_admin")
    await log_in(page, applicant.username, applicant.password)
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    answer = await page.goto("/console/apply?resource=NO-SUCH-ENTRY")
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", name="没有这条目录。")).to_be_visible()
