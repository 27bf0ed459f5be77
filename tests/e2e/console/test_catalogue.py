"""The data administrator's journey in a real Chromium (journey 1 of issue 12): the catalogue
searched, an entry with its items and versions, another department's draft "not found"."""

from __future__ import annotations

import httpx
from playwright.async_api import BrowserContext, Page, expect

from services.console.config import ConsoleSettings
from services.demo import DEMO_PASSWORD
from services.gateway.config import GatewaySettings
from tests.e2e.console.support import Person, Stack, log_in, shot
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
