"""The data administrator's journey in a real Chromium (journey 1 of issue 12): the catalogue
searched, an entry with its items and versions, another department's draft "not found"; a draft
created with its errors in place, edited and submitted; an .xlsx imported with its row errors, and
the import template downloaded."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import httpx
from openpyxl import load_workbook
from playwright.async_api import BrowserContext, FilePayload, Page, expect

from services.console.config import ConsoleSettings
from services.demo import DEMO_PASSWORD, POLICE, DemoCredentials
from services.gateway.config import GatewaySettings
from services.registry.catalogue.classification import TAXONOMY
from tests.e2e.console.support import UNLABELLED_INPUTS, Person, Stack, log_in, shot
from tests.factories import ResourceCreateFactory

LOCKOUT_THRESHOLD = GatewaySettings.model_fields["lockout_threshold"].default
IDLE_TIMEOUT_S = ConsoleSettings.model_fields["idle_timeout_s"].default


async def test_an_entry_shows_its_items_and_versions_and_another_departments_draft_is_not_found(
    page: Page, context: BrowserContext, distributed: Stack, person: Person
) -> None:
    creds = distributed[1]
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        login = await api.post("/v1/auth/login", json={"username": person.username, "password": person.password})
        police = {"authorization": f"Bearer {login.json()['access_token']}"}
        draft = ResourceCreateFactory.build()
        created = await api.post("/v1/registry/resources", json=draft.model_dump(mode="json"), headers=police)
        assert created.status_code == 201, created.text
        code = created.json()["code"]

    await log_in(page, person.username, person.password)
    await page.get_by_role("row", name=creds.resource).get_by_role("link", name="居民户籍信息").click()
    await expect(page.get_by_role("heading", name="居民户籍信息", level=1)).to_be_visible()
    await expect(page.get_by_role("heading", name="信息项")).to_be_visible()
    await expect(page.get_by_role("cell", name="姓名", exact=True)).to_be_visible()
    await expect(page.get_by_role("heading", name="版本")).to_be_visible()  # 公安 provides it: its history
    await shot(page, "entry")

    answer = await page.goto(f"/console/catalogue/{code}")
    assert answer is not None and answer.status == 200
    await expect(page.get_by_role("heading", name=draft.name, level=1)).to_be_visible()
    await expect(page.get_by_role("cell", name="草稿")).to_be_visible()

    await page.get_by_role("button", name="退出登录").click()
    await log_in(page, "mzj_admin", DEMO_PASSWORD)  # 民政's data administrator
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    answer = await page.goto(f"/console/catalogue/{code}")
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", name="没有这条目录。")).to_be_visible()
    await expect(page.get_by_text(draft.name)).to_have_count(0)


CATEGORY = sorted(TAXONOMY.targets)[0]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


# A whole draft form as the page posts it (one item).
VALID_FORM = {
    "name": "别人的目录",
    "summary": "改过的摘要。",
    "format": "服务接口",
    "update_cycle": "实时",
    "share_type": "unconditional",
    "share_mode": "接口",
    "open_public": "no",
    "subject_types": "id_card",
    "item_name": "姓名",
    "item_data_type": "C",
    "item_length": "50",
    "item_sensitive": "no",
    "item_masking": "",
}


async def department_entries(creds: DemoCredentials, person: Person, marker: str) -> list[dict[str, Any]]:
    """The person's department's entries whose summary holds ``marker``, as the API lists them."""
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        login = await api.post("/v1/auth/login", json={"username": person.username, "password": person.password})
        token = {"authorization": f"Bearer {login.json()['access_token']}"}
        found: list[dict[str, Any]] = []
        params = {"provider": POLICE["code"], "limit": "500"}  # the person's department (conftest)
        while True:
            listed = await api.get("/v1/registry/resources", params=params, headers=token)
            assert listed.status_code == 200, listed.text
            found += [r for r in listed.json()["items"] if marker in r["summary"]]
            if not listed.json()["next_cursor"]:
                return found
            params["cursor"] = listed.json()["next_cursor"]


async def test_a_data_admin_creates_a_draft_with_errors_in_place_edits_and_submits_it(
    page: Page, distributed: Stack, person: Person
) -> None:
    creds = distributed[1]
    marker = uuid.uuid4().hex[:10]
    name = f"测试目录{marker[:4]}"
    await log_in(page, person.username, person.password)
    await page.get_by_role("button", name="新建草稿").click()
    await expect(page.get_by_role("heading", name="新建草稿", level=1)).to_be_visible()
    assert await page.evaluate(UNLABELLED_INPUTS) == []
    await page.get_by_role("button", name="English").click()  # the same form in English
    await expect(page.get_by_role("heading", name="New draft", level=1)).to_be_visible()
    await expect(page.get_by_label("Data type of item 1")).to_have_value("C")
    await page.get_by_role("button", name="中文").click()

    # What the console says at once: a name too short, a length that is not a number.
    await page.get_by_label("名称", exact=True).fill("户")
    await page.get_by_label("摘要").fill(f"测试用的信息资源 {marker}。")
    await page.get_by_label("分类码").fill(CATEGORY)
    await page.get_by_label("第 1 项的名称").fill("姓名")
    await page.get_by_label("第 1 项的长度").fill("五十")
    await page.get_by_label("第 1 项的长度").press("Enter")  # Enter saves (it does not remove the row)
    await expect(page.locator("#name-error")).to_have_text("名称应为 2–100 个字符。")
    await expect(page.get_by_label("名称", exact=True)).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("名称", exact=True)).to_have_value("户")
    await expect(page.locator("#item-0-length-error")).to_have_text("请输入整数。")
    await expect(page.get_by_label("第 1 项的长度")).to_have_value("五十")
    await expect(page.get_by_label("第 1 项的名称")).to_have_value("姓名")

    # A second row (a plain submit: no script), what was typed kept; the registry's own rule on it.
    await page.get_by_role("button", name="添加信息项").click()
    await expect(page.get_by_label("第 1 项的长度")).to_have_value("五十")
    await page.get_by_label("名称", exact=True).fill(name)
    await page.get_by_label("第 1 项的长度").fill("50")
    await page.get_by_label("第 2 项的名称").fill("出生日期")
    await page.get_by_label("第 2 项的数据类型").select_option("D")
    await page.get_by_label("第 2 项的长度").fill("10")
    await page.get_by_label("第 2 项是否敏感").select_option("yes")
    await page.get_by_role("button", name="保存草稿").click()
    await expect(page.locator("#items-error")).to_contain_text("平台不接受这个值。")
    await expect(page.locator("#items-error")).to_contain_text("长度应为 8")
    await expect(page.get_by_label("第 2 项的长度")).to_have_value("10")
    await expect(page.get_by_label("第 2 项是否敏感")).to_have_value("yes")

    # The registry's problem about the category (unknown-category), next to it.
    await page.get_by_label("第 2 项的长度").fill("8")
    await page.get_by_label("分类码").fill("999999")
    await page.get_by_role("button", name="保存草稿").click()
    await expect(page.locator("#category-error")).to_contain_text("信息资源分类中没有这个分类码。")
    await expect(page.get_by_label("分类码")).to_have_value("999999")
    await shot(page, "draft")
    assert await department_entries(creds, person, marker) == []  # nothing was created

    await page.get_by_label("分类码").fill(CATEGORY)
    await page.get_by_role("button", name="保存草稿").click()
    await expect(page.locator("#notice")).to_have_text("草稿已创建。")
    await expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
    await expect(page.locator("#status")).to_have_text("草稿")
    await expect(page.get_by_role("cell", name="出生日期", exact=True)).to_be_visible()
    [created] = await department_entries(creds, person, marker)
    assert created["status"] == "draft" and [i["name"] for i in created["items"]] == ["姓名", "出生日期"]
    assert created["items"][1] == {
        "name": "出生日期",
        "data_type": "D",
        "length": 8,
        "sensitive": True,
        "masking": None,
    }

    # The catalogue lists it.
    await page.goto("/console/catalogue?q=" + name)
    await page.get_by_role("row", name=created["code"]).get_by_role("link", name=name).click()

    # Edited: a row removed, the summary changed; a bad edit first changes nothing.
    await page.get_by_role("button", name="编辑草稿").click()
    await expect(page.get_by_role("heading", name="编辑草稿", level=1)).to_be_visible()
    assert await page.evaluate(UNLABELLED_INPUTS) == []
    await page.get_by_label("共享类型").select_option("conditional")
    await page.get_by_role("button", name="保存草稿").click()
    await expect(page.locator("#share_condition-error")).to_have_text("有条件共享须填写共享条件。")
    await page.get_by_label("共享类型").select_option("unconditional")
    await page.get_by_role("button", name="删除第 2 项").click()
    await expect(page.get_by_label("第 2 项的名称")).to_have_count(0)
    await page.get_by_label("摘要").fill(f"改过的摘要 {marker}。")
    await page.get_by_role("button", name="保存草稿").click()
    await expect(page.locator("#notice")).to_have_text("草稿已保存。")
    await expect(page.get_by_role("cell", name="出生日期", exact=True)).to_have_count(0)
    [edited] = await department_entries(creds, person, marker)
    assert edited["summary"] == f"改过的摘要 {marker}。" and [i["name"] for i in edited["items"]] == ["姓名"]
    assert edited["share"]["type"] == "unconditional"

    # Submitted for review (提交审核): its status shown, no more editing.
    await page.get_by_role("button", name="提交审核").click()
    await expect(page.locator("#notice")).to_have_text("已提交审核。")
    await expect(page.locator("#status")).to_have_text("待审核")
    await expect(page.get_by_role("button", name="编辑草稿")).to_have_count(0)
    await expect(page.get_by_role("button", name="提交审核")).to_have_count(0)
    [submitted] = await department_entries(creds, person, marker)
    assert submitted["status"] == "submitted"

    # Another department's data administrator: "not found", as the API says.
    await page.get_by_role("button", name="退出登录").click()
    await log_in(page, "mzj_admin", DEMO_PASSWORD)
    answer = await page.goto(f"/console/catalogue/{created['code']}/edit")
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", name="没有这条目录。")).to_be_visible()
    csrf = await page.locator("input[name=csrf_token]").first.input_value()
    for action in ("edit", "submit"):
        form = {"csrf_token": csrf, **VALID_FORM}
        refused = await page.request.post(f"/console/catalogue/{created['code']}/{action}", form=form)
        assert refused.status == 404, action
        assert "没有这条目录。" in await refused.text()
    [unchanged] = await department_entries(creds, person, marker)
    assert unchanged["name"] == name and unchanged["status"] == "submitted"


def sheet(template: bytes, rows: list[dict[str, str]]) -> bytes:
    """The registry's template with ``rows`` filled in (header → text) under its header row."""
    workbook = load_workbook(io.BytesIO(template))
    entries = workbook["资源目录"]
    header = [str(c.value) for c in entries[1]]
    for number, row in enumerate(rows, start=2):
        for column, label in enumerate(header, start=1):
            if label in row:
                entries.cell(row=number, column=column, value=row[label])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def upload(name: str, content: bytes) -> FilePayload:
    return {"name": name, "mimeType": XLSX, "buffer": content}


def row_of(name: str, marker: str, classification: str = "基础") -> dict[str, str]:
    return {
        "信息资源名称": name,
        "信息资源摘要": f"导入的信息资源 {marker}。",
        "分类码": CATEGORY,
        "资源分类": classification,
        "信息项": "姓名:C:50:敏感:name\n公民身份号码:C:18:敏感:id_card",
        "共享类型": "无条件共享",
        "更新周期": "每日",
    }


async def test_an_xlsx_import_shows_its_row_errors_imports_nothing_until_it_is_right_and_the_template_downloads(
    page: Page, distributed: Stack, person: Person
) -> None:
    creds = distributed[1]
    marker = uuid.uuid4().hex[:10]
    await log_in(page, person.username, person.password)
    await page.get_by_role("button", name="从表格导入").click()
    await expect(page.get_by_role("heading", name="从表格导入", level=1)).to_be_visible()
    assert await page.evaluate(UNLABELLED_INPUTS) == []

    async with page.expect_download() as downloading:
        await page.get_by_role("link", name="下载导入模板（.xlsx）").click()
    download = await downloading.value
    assert download.suggested_filename == "资源目录导入模板.xlsx"
    template = await asyncio.to_thread(Path(await download.path()).read_bytes)
    assert "信息资源名称" in [c.value for c in load_workbook(io.BytesIO(template))["资源目录"][1]]

    # Row 3 is not valid: the registry imports all or nothing.
    bad = upload(
        "甲乙.xlsx",
        sheet(template, [row_of(f"导入甲{marker[:4]}", marker), row_of(f"导入乙{marker[:4]}", marker, "不存在")]),
    )
    await page.get_by_label("表格文件（.xlsx 或 .csv，不超过 8 MiB）").set_input_files(bad)
    await page.get_by_role("button", name="导入", exact=True).click()
    await expect(page.locator("#job-status")).to_have_text("未导入", timeout=30_000)
    await expect(page.locator("#job-file")).to_have_text("甲乙.xlsx")  # its name, through the gateway
    await expect(page.get_by_text("未导入任何数据：请更正下列各行后重新导入文件。")).to_be_visible()
    error_row = page.locator("#row-errors tbody tr")
    await expect(error_row).to_have_count(1)
    await expect(error_row.get_by_role("cell").nth(0)).to_have_text("3")
    await expect(error_row.get_by_role("cell").nth(1)).to_have_text("资源分类")
    await expect(error_row.get_by_role("cell").nth(2)).to_contain_text("不存在")
    await expect(page.locator("#job-imported")).to_have_text("0")
    await shot(page, "import")
    assert await department_entries(creds, person, marker) == []  # not even the valid row

    good = upload(
        "good.xlsx", sheet(template, [row_of(f"导入甲{marker[:4]}", marker), row_of(f"导入乙{marker[:4]}", marker)])
    )
    await page.goto("/console/catalogue/import")
    await page.get_by_label("表格文件（.xlsx 或 .csv，不超过 8 MiB）").set_input_files(good)
    await page.get_by_role("button", name="导入", exact=True).click()
    await expect(page.locator("#job-status")).to_have_text("已导入", timeout=30_000)
    await expect(page.locator("#job-imported")).to_have_text("2")
    await expect(page.locator("#imported li")).to_have_count(2)
    imported = await department_entries(creds, person, marker)
    assert sorted(r["name"] for r in imported) == [f"导入乙{marker[:4]}", f"导入甲{marker[:4]}"]
    assert {r["status"] for r in imported} == {"draft"}

    # No file, or not a spreadsheet: said next to the field, nothing sent.
    await page.goto("/console/catalogue/import")
    await page.get_by_role("button", name="导入", exact=True).click()
    await expect(page.locator("#file-error")).to_have_text("请选择要导入的文件。")
    text: FilePayload = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a sheet"}
    await page.get_by_label("表格文件（.xlsx 或 .csv，不超过 8 MiB）").set_input_files(text)
    await page.get_by_role("button", name="导入", exact=True).click()
    await expect(page.locator("#file-error")).to_have_text("请上传 .xlsx 或 .csv 文件。")

    # Over the limit: refused on its field, in words, and not sent (the gateway's 413 is no page).
    posted: list[str] = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    field = page.get_by_label("表格文件（.xlsx 或 .csv，不超过 8 MiB）")
    await field.set_input_files({"name": "big.csv", "mimeType": "text/csv", "buffer": b"," * (8 * 1024 * 1024 + 1)})
    await page.get_by_role("button", name="导入", exact=True).click()
    assert await field.evaluate("e => e.validationMessage") == "文件过大（不超过 8 MiB、10000 行）。"
    await expect(page.get_by_role("heading", name="从表格导入", level=1)).to_be_visible()
    assert posted == []


async def test_a_file_upload_without_the_csrf_token_is_refused(page: Page, distributed: Stack, person: Person) -> None:
    creds = distributed[1]
    marker = uuid.uuid4().hex[:10]
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        login = await api.post("/v1/auth/login", json={"username": person.username, "password": person.password})
        token = {"authorization": f"Bearer {login.json()['access_token']}"}
        template = (await api.get("/v1/registry/imports/template.xlsx", headers=token)).content
    one = upload("one.xlsx", sheet(template, [row_of(f"伪造{marker[:4]}", marker)]))
    await log_in(page, person.username, person.password)
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    refused = await page.request.post("/console/catalogue/import", multipart={"file": one}, max_redirects=0)
    assert refused.status == 403
    assert "表单已失效或并非来自本控制台" in await refused.text()
    forged = await page.request.post(
        "/console/catalogue/import", multipart={"csrf_token": "forged", "file": one}, max_redirects=0
    )
    assert forged.status == 403
    # The same upload with the session's token, as the page's form sends it, is taken.
    await page.goto("/console/catalogue/import")
    csrf = await page.locator("form[enctype] input[name=csrf_token]").input_value()
    taken = await page.request.post(
        "/console/catalogue/import", multipart={"csrf_token": csrf, "file": one}, max_redirects=0
    )
    assert taken.status == 303 and taken.headers["location"].startswith("/console/catalogue/imports/")


async def test_a_spreadsheet_larger_than_an_ordinary_request_body_is_uploaded_and_checked(
    page: Page, distributed: Stack, person: Person
) -> None:
    """The import page takes a file up to the upload limit, not the 64 KiB of any other form."""
    creds = distributed[1]
    marker = uuid.uuid4().hex[:10]
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        login = await api.post("/v1/auth/login", json={"username": person.username, "password": person.password})
        token = {"authorization": f"Bearer {login.json()['access_token']}"}
        template = (await api.get("/v1/registry/imports/template.xlsx", headers=token)).content
    rows = [
        row_of(f"大表{n}", marker) | {"信息资源摘要": "".join(uuid.uuid4().hex for _ in range(60)) + marker}
        for n in range(150)
    ]
    rows[-1]["资源分类"] = "不存在"  # so that nothing is written
    content = sheet(template, rows)
    assert len(content) > GatewaySettings.model_fields["max_body_bytes"].default
    await log_in(page, person.username, person.password)
    await page.goto("/console/catalogue/import")
    await page.get_by_label("表格文件（.xlsx 或 .csv，不超过 8 MiB）").set_input_files(upload("大表.xlsx", content))
    await page.get_by_role("button", name="导入", exact=True).click()
    await expect(page.locator("#job-status")).to_have_text("未导入", timeout=60_000)
    await expect(page.locator("#job-file")).to_have_text("大表.xlsx")
    error_row = page.locator("#row-errors tbody tr")
    await expect(error_row).to_have_count(1)
    await expect(error_row.get_by_role("cell").nth(0)).to_have_text("151")
    assert await department_entries(creds, person, marker) == []
