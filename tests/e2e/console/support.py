"""What the console's browser tests share: a person of the test's own, logging in, screenshots."""

from __future__ import annotations

import dataclasses

import httpx
from playwright.async_api import Page

from services.demo import DemoCredentials
from tests.factories import UserCreateFactory
from tests.stack import ROOT, DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]
# Every input, select and textarea of a page has a label (page.evaluate it: [] is right).
UNLABELLED_INPUTS = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.outerHTML)"""


@dataclasses.dataclass(frozen=True)
class Person:
    username: str
    password: str


async def new_person(stack: DistributedStack, creds: DemoCredentials, department: str, role: str) -> Person:
    """A person of their own for a test (the demo's keep their login rate limits for other tests)."""
    user = UserCreateFactory.build(department=department, roles=[role])
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        login = await api.post("/v1/auth/login", json={"username": "admin", "password": stack.admin_password})
        admin = {"authorization": f"Bearer {login.json()['access_token']}"}
        created = await api.post("/v1/users", json=user.model_dump(mode="json"), headers=admin)
        assert created.status_code == 201, created.text
    return Person(user.username, user.password)


# Screenshots of the main pages, taken as the tests pass them (docs/screenshots/ holds a copy shown
# in the README: copy them there again when the pages change).
SCREENSHOTS = ROOT / "var" / "screenshots"


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"console-{name}.png", full_page=True)


async def log_in(page: Page, username: str, password: str) -> None:
    await page.goto("/console/login")
    await page.get_by_label("用户名").fill(username)
    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录").click()
