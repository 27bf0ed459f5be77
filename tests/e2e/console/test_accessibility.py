"""Accessibility of the console's main pages in a real Chromium: axe-core's WCAG 2 A and AA rules
(colour contrast among them) on the login page, the catalogue, the approver's queue and an
application, and the approve form worked from the keyboard alone.

axe-core is vendored for the tests only (services/console/assets.toml, ``served = false``): the
console never serves it. It is run through Playwright's ``evaluate``, which the DevTools protocol
carries outside the page's Content-Security-Policy — a ``<script>`` tag of it would be inline script,
which the console's CSP refuses (and the ``page`` fixture would fail the test for it)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from services.console import assets
from services.demo import POLICE
from services.gateway.config import GatewaySettings
from tests.e2e.client import system_token
from tests.e2e.console.support import UNLABELLED_INPUTS, Stack, log_in, new_person

AXE = next(p for p in assets.packages() if p.name == "axe-core")
AXE_SOURCE = (AXE.vendor / "axe.min.js").read_text()
# The rules a public-sector web page is held to (GB/T 37668 follows WCAG 2.0 A and AA).
AXE_RUN = """() => axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}, resultTypes: ['violations']})
    .then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary)})))"""


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2 A/AA violations on the page as it is now (axe loaded into it first)."""
    if await page.evaluate("typeof window.axe") != "object":
        await page.evaluate(AXE_SOURCE)
    rules = await page.evaluate("axe.getRules(['wcag2aa']).map(r => r.ruleId)")
    assert "color-contrast" in rules  # contrast is among the rules run, not left out
    violations: list[dict[str, Any]] = await page.evaluate(AXE_RUN)
    return violations


async def pending_application(creds: Any, items: list[str]) -> str:
    """A pending application of the demo consumer system for ``items`` of the demo entry."""
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        body = {"resource": creds.resource, "client_id": creds.client_id, "items": items}
        body["purpose"] = {"service_item": creds.purpose}
        filed = await api.post("/v1/registry/applications", json=body, headers=await system_token(api, creds))
    assert filed.status_code == 201 and filed.json()["status"] == "pending", filed.text
    return str(filed.json()["id"])


async def test_the_main_pages_break_no_wcag_2_a_or_aa_rule(page: Page, distributed: Stack) -> None:
    stack, creds = distributed
    approver = await new_person(stack, creds, POLICE["code"], "approver")
    application = await pending_application(creds, ["姓名", "出生日期"])

    await page.goto("/console/login")
    await expect(page.get_by_role("heading", name="登录")).to_be_visible()
    assert await axe_violations(page) == []
    await page.get_by_role("button", name="登录").click()  # with its errors shown, too
    await expect(page.locator("#username-error")).to_be_visible()
    assert await axe_violations(page) == []

    await log_in(page, approver.username, approver.password)
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    assert await axe_violations(page) == []

    await page.goto("/console/applications")
    await expect(page.get_by_role("heading", name="待审批申请")).to_be_visible()
    assert await axe_violations(page) == []

    await page.goto(f"/console/applications/{application}")
    await expect(page.locator("#status")).to_have_text("待审批")
    assert await axe_violations(page) == []
    await page.get_by_label("有效期（天）").fill("很多")  # its errors shown, in place
    await page.get_by_role("button", name="批准").click()
    await expect(page.locator("#valid_days-error")).to_be_visible()
    assert await axe_violations(page) == []
    await page.get_by_label("有效期（天）").fill("30")
    await page.get_by_role("button", name="批准").click()
    await expect(page.locator("#grant-state")).to_have_text("有效")  # the grant's terms, and its revoke form
    assert await axe_violations(page) == []
    await page.get_by_role("button", name="撤销", exact=True).click()
    await expect(page.locator("#revoke_reason-error")).to_be_visible()
    assert await axe_violations(page) == []

    # The check can fail: an image without a text alternative is found.
    await page.evaluate("document.querySelector('main').append(document.createElement('img'))")
    assert "image-alt" in [v["id"] for v in await axe_violations(page)]


async def focused(page: Page) -> str:
    """What has the keyboard's focus: its id, else its name and value, else its tag and text."""
    return str(
        await page.evaluate(
            """() => { const e = document.activeElement;
                return e.id || (e.name ? `${e.name}=${e.value}` : `${e.tagName}:${e.textContent.trim()}`); }"""
        )
    )


async def test_the_approve_form_is_worked_from_the_keyboard_alone(page: Page, distributed: Stack) -> None:
    stack, creds = distributed
    approver = await new_person(stack, creds, POLICE["code"], "approver")
    application = await pending_application(creds, ["姓名", "性别"])
    await log_in(page, approver.username, approver.password)
    await page.goto(f"/console/applications/{application}")
    assert await page.evaluate(UNLABELLED_INPUTS) == []

    # From the first item, Tab visits every control of the form in the order it is read.
    await page.get_by_label("姓名", exact=True).focus()
    order = [await focused(page)]
    while order[-1] != "BUTTON:批准" and len(order) < 20:
        await page.keyboard.press("Tab")
        if (now := await focused(page)) != order[-1]:  # a date and time field is several stops
            order.append(now)
    assert order == [
        "items=姓名",
        "masking-1",
        "items=性别",
        "masking-2",
        "valid_by=days",  # a group of radios is one stop; the arrows move inside it
        "valid_days",
        "valid_until",
        "daily_quota",
        "BUTTON:批准",
    ], order

    # Uncheck 性别 (Space), mask 姓名 to the surname (arrows on the select), lower the days, submit (Enter).
    await page.get_by_label("性别", exact=True).focus()
    await page.keyboard.press("Space")
    await page.get_by_label("姓名的脱敏方式").focus()
    for _ in range(3):  # the catalogue's default, 身份证号, 手机号, then 姓名
        await page.keyboard.press("ArrowDown")
    await expect(page.get_by_label("姓名的脱敏方式")).to_have_value("name")
    await page.get_by_label("有效期（天）").focus()
    await page.keyboard.press("Control+A")
    await page.keyboard.type("30")
    await page.keyboard.press("Enter")
    await expect(page.locator("#status")).to_have_text("已批准")
    await expect(page.locator("#items")).to_have_text("姓名")

    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        grants = await api.get("/v1/registry/grants", params={"limit": "500"}, headers=await system_token(api, creds))
    granted = [g for g in grants.json()["items"] if g["application_id"] == application]
    # The catalogue's own rules come with every grant (公民身份号码: id_card); 姓名 as chosen.
    assert [(g["items"], g["masking"]) for g in granted] == [(["姓名"], {"姓名": "name", "公民身份号码": "id_card"})]


# Every other role's main pages, as that role sees them (each page answered, then axe run on it).
ROLE_PAGES = {
    "data_admin": [
        "/console/catalogue/new",
        "/console/catalogue/import",
        "/console/lists",
        "/console/service-items",
        "/console/my-applications",
    ],
    "platform_admin": ["/console/admin", "/console/admin/systems", "/console/admin/departments", "/console/admin/keys"],
    "auditor": [
        "/console/audit",
        "/console/audit/subject",
        "/console/audit/chain",
        "/console/audit/alerts",
        "/console/audit/dashboard",
    ],
}


@pytest.mark.parametrize("role", sorted(ROLE_PAGES))
async def test_every_roles_pages_break_no_wcag_2_a_or_aa_rule(page: Page, distributed: Stack, role: str) -> None:
    stack, creds = distributed
    department = POLICE["code"] if role == "data_admin" else GatewaySettings().platform_dept_code
    person = await new_person(stack, creds, department, role)
    await log_in(page, person.username, person.password)
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    paths = ROLE_PAGES[role] + ([f"/console/apply?resource={creds.resource}"] if role == "data_admin" else [])
    if role == "platform_admin":  # an object's page each: a system's (its secrets, its rate limit), a department's
        paths += [f"/console/admin/systems/{creds.client_id}", f"/console/admin/departments/{department}"]
    found: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        answer = await page.goto(path)
        assert answer is not None and answer.status == 200, path
        await expect(page.locator("main h1").first).to_be_visible()
        assert await page.evaluate(UNLABELLED_INPUTS) == [], path
        if violations := await axe_violations(page):
            found[path] = violations
    assert found == {}
