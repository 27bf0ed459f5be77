"""The data administrator's service items in a real Chromium (journey 1 of issue 12): a service
item registered (a bad code refused in place, nothing written), its materials added, a
government-issued one mapped to the catalogue resource that covers it — an item the resource lacks
refused in place — and the item's 免提交 rate moving as the registry counts it; unmapped, it moves
back. Another department's item shows no forms, and a write to it is "not found", as the API says."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from playwright.async_api import Browser, Locator, Page, expect

from services.demo import CIVIL_AFFAIRS, POLICE
from tests.e2e.client import apply_for, system_token
from tests.e2e.console.support import UNLABELLED_INPUTS, Person, Stack, log_in, new_person, shot

GRANTED = "姓名"  # the item the test's own grant covers (for its own service item: purpose binding)


async def api_as(gateway: str, person: Person, method: str, path: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as api:
        login = await api.post("/v1/auth/login", json={"username": person.username, "password": person.password})
        assert login.status_code == 200, login.text
        headers = {"authorization": f"Bearer {login.json()['access_token']}"}
        return await api.request(method, path, json=body, headers=headers)


def shown_rate(exempt: int, total: int) -> str:
    """The rate as the page shows it, from the counts the test set up."""
    return f"{exempt / total * 100:.1f}%（{exempt}/{total}）"


def material(page: Page, name: str) -> Locator:
    return page.locator("article.material").filter(has=page.get_by_text(name, exact=True))


async def test_mapping_a_material_moves_the_service_items_exempt_rate(page: Page, distributed: Stack) -> None:
    stack, creds = distributed
    admin = await new_person(stack, creds, CIVIL_AFFAIRS["code"], "data_admin")
    approver = await new_person(stack, creds, POLICE["code"], "approver")
    code = f"T-{uuid.uuid4().hex[:10]}"
    # 民政's system applies for 姓名 of 公安's 居民户籍信息 for this very service item; 公安 approves.
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        filed = await apply_for(api, await system_token(api, creds), creds, creds.resource, GRANTED, purpose=code)
    approved = await api_as(creds.gateway, approver, "POST", f"/v1/registry/applications/{filed['id']}/approve", {})
    assert approved.status_code == 200, approved.text

    await log_in(page, admin.username, admin.password)
    await page.get_by_role("navigation", name="主导航").get_by_role("link", name="服务事项").click()
    await expect(page.get_by_role("heading", name="服务事项")).to_be_visible()
    await page.get_by_text("登记事项", exact=True).click()
    await page.get_by_label("事项编码").fill("低保!")
    await page.get_by_label("名称", exact=True).fill("最低生活保障审批（测试）")
    await page.get_by_role("button", name="登记", exact=True).click()
    await expect(page.locator("#s_code-error")).to_have_text("请输入事项编码（4 至 64 位字母、数字或连字符）。")
    await expect(page.get_by_label("名称", exact=True)).to_have_value("最低生活保障审批（测试）")
    await page.get_by_label("事项编码").fill(code)
    await page.get_by_role("button", name="登记", exact=True).click()
    await expect(page.get_by_role("heading", name="最低生活保障审批（测试）")).to_be_visible()
    await expect(page.locator("#exempt-rate")).to_have_text("尚无材料")

    for name, source in (
        ("居民户口簿", "government"),
        ("居民身份证", "government"),
        ("最低生活保障申请书", "applicant"),
    ):
        await page.get_by_label("材料名称").fill(name)
        await page.get_by_label("来源渠道").select_option(source)
        await page.get_by_role("button", name="添加材料").click()
        await expect(material(page, name)).to_be_visible()
    await expect(page.locator("#exempt-rate")).to_have_text(shown_rate(0, 3))
    assert await page.evaluate(UNLABELLED_INPUTS) == []

    # An item the resource does not have: refused next to it, what was typed kept, nothing written.
    card = material(page, "居民户口簿")
    await card.get_by_label("资源代码").fill(creds.resource)
    await card.get_by_label("覆盖该材料的信息项").fill("婚姻状况")
    await card.get_by_role("button", name="关联到资源").click()
    card = material(page, "居民户口簿")
    await expect(card.locator("small.error")).to_have_text("该资源没有这个信息项。")
    await expect(card.get_by_label("覆盖该材料的信息项")).to_have_value("婚姻状况")
    stored = (await api_as(creds.gateway, admin, "GET", f"/v1/registry/service-items/{code}")).json()
    assert [m["resource"] for m in stored["materials"]] == [None, None, None]

    # Mapped to the item the grant covers: exempt, and the rate moves from 0 of 3 to 1 of 3.
    await card.get_by_label("覆盖该材料的信息项").fill(GRANTED)
    await card.get_by_role("button", name="关联到资源").click()
    await expect(page.locator("#exempt-rate")).to_have_text(shown_rate(1, 3))
    await expect(material(page, "居民户口簿")).to_contain_text("免提交：由平台共享获取")
    # Mapped to an item not granted for this service item: not exempt, the rate stays.
    identity = material(page, "居民身份证")
    await identity.get_by_label("资源代码").fill(creds.resource)
    await identity.get_by_label("覆盖该材料的信息项").fill("公民身份号码")
    await identity.get_by_role("button", name="关联到资源").click()
    await expect(material(page, "居民身份证")).to_contain_text("需申请人提交")
    await expect(page.locator("#exempt-rate")).to_have_text(shown_rate(1, 3))
    # Only a government-issued material can be mapped at all.
    await expect(material(page, "最低生活保障申请书").get_by_role("button", name="关联到资源")).to_have_count(0)
    await shot(page, "service-item")

    await page.get_by_role("link", name="服务事项").first.click()
    row = page.get_by_role("row").filter(has_text=code)
    await expect(row.get_by_role("cell").last).to_have_text(f"{1 / 3 * 100:.1f}%")
    # The department's figure is the registry's (its other items, of other tests, count too).
    stats = (await api_as(creds.gateway, admin, "GET", "/v1/registry/stats")).json()
    civil = next(d for d in stats["departments"] if d["dept"] == CIVIL_AFFAIRS["code"])
    assert civil["exempt_materials"] >= 1
    rate = f"{civil['exempt_materials'] / civil['materials'] * 100:.1f}%"
    await expect(page.locator("#department-rate")).to_have_text(
        f"本部门：{civil['materials']} 份材料中 {civil['exempt_materials']} 份免提交（{rate}）"
    )
    assert await page.evaluate(UNLABELLED_INPUTS) == []
    await shot(page, "service-items")

    # Unmapped: the rate moves back.
    await row.get_by_role("link", name=code).click()
    await material(page, "居民户口簿").get_by_role("button", name="取消关联").click()
    await expect(page.locator("#exempt-rate")).to_have_text(shown_rate(0, 3))
    stored = (await api_as(creds.gateway, admin, "GET", f"/v1/registry/service-items/{code}")).json()
    assert (stored["exempt_materials"], stored["exempt_rate"]) == (0, 0.0)


async def test_another_departments_service_item_is_not_found_for_a_write(page: Page, distributed: Stack) -> None:
    stack, creds = distributed
    owner = await new_person(stack, creds, CIVIL_AFFAIRS["code"], "data_admin")
    other = await new_person(stack, creds, POLICE["code"], "data_admin")
    code = f"T-{uuid.uuid4().hex[:10]}"
    body = {"code": code, "name": "临时救助审批", "materials": [{"name": "居民户口簿", "source": "government"}]}
    created = await api_as(creds.gateway, owner, "POST", "/v1/registry/service-items", body)
    assert created.status_code == 201, created.text
    [card] = created.json()["materials"]

    await log_in(page, other.username, other.password)
    await page.goto(f"/console/service-items/{code}")
    await expect(page.get_by_role("heading", name="临时救助审批")).to_be_visible()  # a published list: readable
    await expect(page.get_by_role("button", name="关联到资源")).to_have_count(0)
    await expect(page.get_by_role("button", name="添加材料")).to_have_count(0)

    # A write all the same (the form of the owner's page, posted with this person's session): the API's 404.
    token = await page.locator("input[name=csrf_token]").first.input_value()
    answer = await page.request.post(
        f"/console/service-items/{code}/materials/{card['id']}/map",
        form={"csrf_token": token, "resource": creds.resource, "items": "姓名"},
    )
    assert answer.status == 404
    assert "本部门没有此事项或材料，或该资源不存在。" in await answer.text()
    stored = (await api_as(creds.gateway, owner, "GET", f"/v1/registry/service-items/{code}")).json()
    assert stored["materials"][0]["resource"] is None

    await page.goto("/console/service-items/NO-SUCH-ITEM")
    await expect(page.get_by_role("heading", name="没有这个事项。")).to_be_visible()


async def test_a_service_item_is_renamed_and_deleted_after_a_confirmation(
    page: Page, browser: Browser, distributed: Stack
) -> None:
    stack, creds = distributed
    admin = await new_person(stack, creds, CIVIL_AFFAIRS["code"], "data_admin")
    approver = await new_person(stack, creds, CIVIL_AFFAIRS["code"], "approver")
    code = f"T-{uuid.uuid4().hex[:10]}"
    body = {"code": code, "name": "临时救助审批", "materials": [{"name": "居民户口簿", "source": "government"}]}
    created = await api_as(creds.gateway, admin, "POST", "/v1/registry/service-items", body)
    assert created.status_code == 201, created.text

    async def stored() -> httpx.Response:
        return await api_as(creds.gateway, admin, "GET", f"/v1/registry/service-items/{code}")

    await log_in(page, admin.username, admin.password)
    await page.goto(f"/console/service-items/{code}")
    assert await page.evaluate(UNLABELLED_INPUTS) == []
    # A name too short: said next to it, what was typed kept, nothing renamed.
    await page.get_by_label("事项名称").fill("救")
    await page.get_by_role("button", name="重命名").click()
    await expect(page.locator("#r_name-error")).to_have_text("请输入 2 至 200 个字符。")
    await expect(page.get_by_label("事项名称")).to_have_value("救")
    assert (await stored()).json()["name"] == "临时救助审批"

    await page.get_by_label("事项名称").fill("临时救助申请审批")
    await page.get_by_role("button", name="重命名").click()
    await expect(page.locator("#notice")).to_have_text("事项已重命名。")
    await expect(page.get_by_role("heading", name="临时救助申请审批")).to_be_visible()
    assert (await stored()).json()["name"] == "临时救助申请审批"

    # Deleting asks first, naming what goes with the item; cancelling changes nothing.
    await page.get_by_role("button", name="删除事项…").click()
    await expect(page.get_by_role("heading", name="删除事项")).to_be_visible()
    await expect(page.locator("#materials-count")).to_have_text("1")
    await expect(page.get_by_role("main")).to_contain_text("全部材料")
    await page.get_by_role("button", name="取消").click()
    await expect(page.get_by_role("heading", name="临时救助申请审批")).to_be_visible()
    assert (await stored()).status_code == 200

    # An approver of the department may not delete it: the API's refusal in words; it stays.
    other = await browser.new_context(base_url=creds.gateway, locale="zh-CN")
    try:
        theirs = await other.new_page()
        await log_in(theirs, approver.username, approver.password)
        await theirs.goto(f"/console/service-items/{code}/delete")
        await theirs.get_by_role("button", name="确认删除").click()
        await expect(theirs.locator("#d_form-error")).to_contain_text("只有本部门的数据管理员可以修改本部门的事项。")
    finally:
        await other.close()
    assert (await stored()).status_code == 200

    await page.get_by_role("button", name="删除事项…").click()
    await page.get_by_role("button", name="确认删除").click()
    await expect(page.locator("#notice")).to_have_text("事项及其材料已删除。")
    await expect(page.get_by_role("row").filter(has_text=code)).to_have_count(0)
    assert (await stored()).status_code == 404
