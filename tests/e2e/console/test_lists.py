"""The data administrator keeps the three lists in a real Chromium (journey 1 of issue 12): a
responsibility line added (a past due date refused in place, nothing written) and changed; a demand
sent (to the department's own self: refused, nothing written) and accepted by the provider into its
responsibility list; a data item put on the negative list (an item the resource lacks: refused in
place) and taken off again."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import httpx
from playwright.async_api import Locator, Page, expect

from services.demo import CIVIL_AFFAIRS, POLICE
from tests.e2e.client import publish_unconditional_resource
from tests.e2e.console.support import UNLABELLED_INPUTS, Person, Stack, log_in, new_person, shot


async def as_person(gateway: str, person: Person, path: str, params: dict[str, str] | None = None) -> Any:
    """What the API answers the person (to check what the console did, or did not, write)."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as api:
        login = await api.post("/v1/auth/login", json={"username": person.username, "password": person.password})
        assert login.status_code == 200, login.text
        answer = await api.get(path, params=params, headers={"authorization": f"Bearer {login.json()['access_token']}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def open_form(page: Page, summary: str, form: str) -> Locator:
    """The form under a folded ``<details>`` section, unfolded when it is not yet."""
    located = page.locator(form)
    if not await located.is_visible():
        await page.locator("summary").filter(has_text=summary).click()
    await expect(located).to_be_visible()
    return located


async def test_a_data_administrator_keeps_the_responsibility_list(page: Page, distributed: Stack) -> None:
    stack, creds = distributed
    admin = await new_person(stack, creds, POLICE["code"], "data_admin")
    name = f"婚姻登记信息-{uuid.uuid4().hex[:6]}"

    async def lines() -> list[dict[str, Any]]:
        found = await as_person(creds.gateway, admin, "/v1/registry/responsibilities", {"dept": POLICE["code"]})
        return [line for line in found["items"] if line["name"] == name]

    await log_in(page, admin.username, admin.password)
    await page.get_by_role("navigation", name="主导航").get_by_role("link", name="三张清单").click()
    await expect(page.get_by_role("heading", name="三张清单", exact=True)).to_be_visible()
    form = await open_form(page, "新增一行", "#responsibility-form")

    # No data item, and a due date before today: refused in place, what was typed kept, nothing written.
    await form.get_by_label("资源名称").fill(name)
    await form.get_by_label("共享方式").select_option("库表")
    await form.get_by_label("到期日").fill((date.today() - timedelta(days=3)).isoformat())
    await form.get_by_role("button", name="加入责任清单").click()
    await expect(page.locator("#r_items-error")).to_have_text("请至少填写一个信息项。")
    form = page.locator("#responsibility-form")
    await expect(form.get_by_label("资源名称")).to_have_value(name)
    await expect(form.get_by_label("共享方式")).to_have_value("库表")
    await expect(form.get_by_label("信息项", exact=True)).to_have_attribute("aria-invalid", "true")
    await form.get_by_label("信息项", exact=True).fill("姓名、登记日期")
    await form.get_by_role("button", name="加入责任清单").click()
    # The registry's own rule (a due date before its business date), said by the registry, in place.
    await expect(page.locator("#r_due_by-error")).to_contain_text("不能早于今天")
    await expect(page.locator("#responsibility-form").get_by_label("信息项", exact=True)).to_have_value(
        "姓名、登记日期"
    )
    assert await lines() == []

    due = (date.today() + timedelta(days=30)).isoformat()
    await page.locator("#responsibility-form").get_by_label("到期日").fill(due)
    await page.locator("#responsibility-form").get_by_role("button", name="加入责任清单").click()
    row = page.locator("#responsibilities").get_by_role("row").filter(has_text=name)
    await expect(row).to_contain_text("姓名、登记日期")
    await expect(row).to_contain_text("库表")
    await expect(row).to_contain_text(due)
    await expect(row).to_contain_text("计划提供")
    [line] = await lines()
    assert (line["items"], line["mode"], line["due_by"], line["status"]) == (
        ["姓名", "登记日期"],
        "库表",
        due,
        "planned",
    )
    assert await page.evaluate(UNLABELLED_INPUTS) == []
    await shot(page, "lists")

    # Changed on its own page: a later due date and one more item.
    await row.get_by_role("link", name=name).click()
    await expect(page.locator("#status")).to_have_text("计划提供")
    later = (date.today() + timedelta(days=60)).isoformat()
    await page.get_by_label("到期日").fill(later)
    await page.get_by_label("信息项", exact=True).fill("姓名、登记日期、登记机关")
    assert await page.evaluate(UNLABELLED_INPUTS) == []
    await page.get_by_role("button", name="保存").click()
    row = page.locator("#responsibilities").get_by_role("row").filter(has_text=name)
    await expect(row).to_contain_text(later)
    await expect(row).to_contain_text("姓名、登记日期、登记机关")
    [line] = await lines()
    assert (line["items"], line["due_by"]) == (["姓名", "登记日期", "登记机关"], later)


async def test_a_demand_is_sent_and_the_provider_accepts_it_into_its_responsibility_list(
    page: Page, distributed: Stack
) -> None:
    stack, creds = distributed
    civil = await new_person(stack, creds, CIVIL_AFFAIRS["code"], "data_admin")
    police = await new_person(stack, creds, POLICE["code"], "data_admin")
    name = f"居民死亡注销信息-{uuid.uuid4().hex[:6]}"

    async def demands(person: Person) -> list[dict[str, Any]]:
        found = await as_person(creds.gateway, person, "/v1/registry/demands")
        return [d for d in found["items"] if d["name"] == name]

    await log_in(page, civil.username, civil.password)
    await page.goto("/console/lists")
    form = await open_form(page, "向其他部门提出数据需求", "#demand-form")
    await form.get_by_label("提供部门（统一社会信用代码）").fill(CIVIL_AFFAIRS["code"])  # its own: the registry refuses
    await form.get_by_label("所需数据").fill(name)
    await form.get_by_label("信息项", exact=True).fill("姓名, 公民身份号码, 注销日期")
    await form.get_by_label("事项编码").fill("ZDSHBZ-SP")
    await form.get_by_label("依据").fill("《社会救助暂行办法》第十一条")
    await form.get_by_role("button", name="提交需求").click()
    refusal = page.locator("#d_form-error")
    await expect(refusal).to_contain_text("需求应提给其他部门，不能提给本部门。")
    await expect(refusal).to_contain_text("another department")  # the API's own detail
    await expect(page.locator("#demand-form").get_by_label("所需数据")).to_have_value(name)
    assert await demands(civil) == []

    await page.locator("#demand-form").get_by_label("提供部门（统一社会信用代码）").fill(POLICE["code"])
    await page.locator("#demand-form").get_by_role("button", name="提交需求").click()
    row = page.locator("#demands").get_by_role("row").filter(has_text=name)
    await expect(row).to_contain_text("发出")
    await expect(row).to_contain_text("待答复")
    [sent] = await demands(civil)
    assert sent["items"] == ["姓名", "公民身份号码", "注销日期"]

    # The provider's data administrator sees it received, and accepts it (a reason is needed to reject).
    await page.get_by_role("button", name="退出登录").click()
    await log_in(page, police.username, police.password)
    await page.goto("/console/lists")
    await page.locator("#demands").get_by_role("row").filter(has_text=name).get_by_role("link", name=name).click()
    await page.get_by_role("button", name="驳回").click()
    await expect(page.locator("#j_reason-error")).to_have_text("请填写驳回理由（至少 2 个字符）。")
    await expect(page.locator("#status")).to_have_text("待答复")
    assert await page.evaluate(UNLABELLED_INPUTS) == []
    await page.get_by_label("到期日").fill((date.today() + timedelta(days=90)).isoformat())
    await page.get_by_role("button", name="接受", exact=True).click()
    await expect(page.locator("#status")).to_have_text("已接受")
    await page.get_by_role("link", name="对应的责任清单行").click()
    await expect(page.get_by_role("heading", name=name)).to_be_visible()
    await expect(page.locator("#status")).to_have_text("计划提供")
    [accepted] = await demands(police)
    assert accepted["status"] == "accepted" and accepted["responsibility_id"]


async def test_a_data_item_goes_on_the_negative_list_and_comes_off(page: Page, distributed: Stack) -> None:
    stack, creds = distributed
    admin = await new_person(stack, creds, POLICE["code"], "data_admin")
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        code = await publish_unconditional_resource(api, f"出入境记录-{uuid.uuid4().hex[:6]}", "101010", "证件号码", 18)

    async def listed() -> list[dict[str, Any]]:
        found = await as_person(creds.gateway, admin, "/v1/registry/negative-list", {"resource": code})
        return list(found["items"])

    await log_in(page, admin.username, admin.password)
    await page.goto("/console/lists")
    form = await open_form(page, "列入负面清单", "#negative-form")
    await form.get_by_label("资源代码").fill(code)
    await form.get_by_label("信息项（留空表示整个资源）").fill("指纹")  # not an item of the resource
    await form.get_by_label("依据").fill("《出境入境管理法》第八十五条")
    await form.get_by_role("button", name="列入负面清单").click()
    await expect(page.locator("#n_item-error")).to_have_text("该资源没有这个信息项。")
    await expect(page.locator("#n_form-error")).to_contain_text("指纹")  # the API's detail names it
    await expect(page.locator("#negative-form").get_by_label("依据")).to_have_value("《出境入境管理法》第八十五条")
    assert await listed() == []

    await page.locator("#negative-form").get_by_label("信息项（留空表示整个资源）").fill("证件号码")
    await page.locator("#negative-form").get_by_role("button", name="列入负面清单").click()
    row = page.locator("#negative").get_by_role("row").filter(has_text=code)
    await expect(row).to_contain_text("证件号码")
    await expect(row).to_contain_text("《出境入境管理法》第八十五条")
    [line] = await listed()
    assert line["item"] == "证件号码"

    # An approver of the department reads the lists (published lists) but is offered no form.
    approver = await new_person(stack, creds, POLICE["code"], "approver")
    await page.get_by_role("button", name="退出登录").click()
    await log_in(page, approver.username, approver.password)
    await page.goto("/console/lists")
    await expect(page.locator("#negative").get_by_role("row").filter(has_text=code)).to_contain_text("证件号码")
    await expect(page.locator("summary")).to_have_count(0)
    await expect(page.get_by_role("button", name="移出清单")).to_have_count(0)

    await page.get_by_role("button", name="退出登录").click()
    await log_in(page, admin.username, admin.password)
    await page.goto("/console/lists")
    row = page.locator("#negative").get_by_role("row").filter(has_text=code)
    await row.get_by_role("button", name="移出清单").click()
    await expect(page.locator("#negative").get_by_role("row").filter(has_text=code)).to_have_count(0)
    assert await listed() == []
