"""The console (管理控制台) in a real Chromium (Debian's package, driven by Playwright), through the
gateway of the distributed stack: journey 5 of issue 12 — everyone logs in, out, mistypes a
password, gets locked out, and comes back to an expired session — and the first read-only pages
(the catalogue and an entry; an approver's queue of pending applications) and the first forms
(approve narrowed, reject with a reason), with what a person sees asserted: Chinese text, errors
next to their field and what was typed kept, overdue applications in red.

Also the safety of the pages: the session cookie is HttpOnly, Secure and SameSite=Strict; a POST
without the session's CSRF token is refused; the Content-Security-Policy allows no inline script,
and the pages work under it (no violation reported by the browser)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from services.console.config import ConsoleSettings
from services.console.session import COOKIE, Sealer
from services.demo import DEMO_PASSWORD, POLICE, DemoCredentials
from services.gateway.config import GatewaySettings
from tests.e2e.client import apply_for, system_token
from tests.factories import ResourceCreateFactory, UserCreateFactory
from tests.stack import ROOT, DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]
LOCKOUT_THRESHOLD = GatewaySettings.model_fields["lockout_threshold"].default
IDLE_TIMEOUT_S = ConsoleSettings.model_fields["idle_timeout_s"].default


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


@pytest.fixture(scope="module")
async def person(distributed: Stack) -> Person:
    """A data administrator of 市公安局, whose demo entry 居民户籍信息 is published."""
    return await new_person(*distributed, POLICE["code"], "data_admin")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is needed (make chromium)"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser, distributed: Stack) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (no cookies) speaking Chinese, on the gateway's address."""
    ctx = await browser.new_context(base_url=distributed[1].gateway, locale="zh-CN")
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page that records what the browser reports about the Content-Security-Policy."""
    opened = await context.new_page()
    violations: list[str] = []
    opened.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    yield opened
    assert violations == [], f"the browser refused something under the console's CSP: {violations}"


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


async def test_a_person_logs_in_searches_the_catalogue_in_chinese_and_logs_out(
    page: Page, context: BrowserContext, person: Person
) -> None:
    await page.goto("/console")
    await expect(page).to_have_url(re.compile(r"/console/login$"))
    await expect(page.get_by_role("heading", name="登录")).to_be_visible()
    await expect(page).to_have_title(re.compile("通办管理控制台"))
    await shot(page, "login")
    await page.goto("/console/")  # as typed; a redirect naming the console's own address would fail here
    await expect(page).to_have_url(re.compile(r"/console/login$"))

    await log_in(page, person.username, person.password)
    await expect(page).to_have_url(re.compile(r"/console/catalogue$"))
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    await expect(page.get_by_role("navigation", name="主导航").get_by_role("link", name="资源目录")).to_be_visible()
    await expect(page.get_by_text(person.username, exact=False)).to_be_visible()
    await expect(page.get_by_role("cell", name="居民户籍信息").first).to_be_visible()
    await expect(page.get_by_role("cell", name="已发布").first).to_be_visible()
    await shot(page, "catalogue")

    (cookie,) = [c for c in await context.cookies() if c["name"] == COOKIE]
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
    assert cookie["path"] == "/console"
    assert "eyJ" not in cookie["value"], "the token must not be readable in the cookie"

    # Search with htmx: the results are replaced in place and the address follows.
    await page.get_by_role("searchbox").fill("不存在的目录名称")
    await page.get_by_role("button", name="搜索").click()
    await expect(page.get_by_text("没有找到目录。")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"q=%E4%B8%8D"))
    await page.get_by_role("searchbox").fill("户籍")
    await page.get_by_role("button", name="搜索").click()
    await expect(page.get_by_role("cell", name="居民户籍信息").first).to_be_visible()

    await page.get_by_role("button", name="退出登录").click()
    await expect(page).to_have_url(re.compile(r"/console/login\?notice=signed-out$"))
    await expect(page.get_by_role("status")).to_have_text("您已退出登录。")
    await page.goto("/console/catalogue")
    await expect(page).to_have_url(re.compile(r"/console/login$"))
    await expect(page.get_by_role("status")).to_have_count(0)  # never logged in again: nothing "expired"


async def test_a_wrong_password_is_said_next_to_the_password_and_the_username_is_kept(
    page: Page, person: Person
) -> None:
    await log_in(page, person.username, "not-the-password")
    password = page.get_by_label("密码")
    await expect(password).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#password-error")).to_have_text("用户名或密码错误。")
    await expect(password).to_have_attribute("aria-describedby", "password-error")
    await shot(page, "wrong-password")
    await expect(page.get_by_label("用户名")).to_have_value(person.username)
    await expect(password).to_have_value("")  # a password is never sent back

    await page.get_by_label("用户名").fill("")
    await page.get_by_role("button", name="登录").click()
    await expect(page.locator("#username-error")).to_have_text("请输入用户名。")
    await expect(page.locator("#password-error")).to_have_text("请输入密码。")


async def test_repeated_failures_lock_the_account_and_the_page_says_so(page: Page, distributed: Stack) -> None:
    user = await new_person(*distributed, GatewaySettings().platform_dept_code, "auditor")

    for _ in range(LOCKOUT_THRESHOLD - 1):
        await log_in(page, user.username, "Wrong-password-1")
        await expect(page.locator("#password-error")).to_have_text("用户名或密码错误。")
    await log_in(page, user.username, "Wrong-password-1")  # the failure that locks the account
    await expect(page.locator("#username-error")).to_have_text("登录失败次数过多，账户已锁定，请稍后再试。")
    await log_in(page, user.username, user.password)  # the right one, too late
    await expect(page.locator("#username-error")).to_have_text("登录失败次数过多，账户已锁定，请稍后再试。")
    await expect(page).to_have_url(re.compile(r"/console/login$"))


async def test_an_idle_session_ends_and_an_altered_cookie_is_no_session(
    page: Page, context: BrowserContext, distributed: Stack, person: Person
) -> None:
    await log_in(page, person.username, person.password)
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    (cookie,) = [c for c in await context.cookies() if c["name"] == COOKIE]

    # The same session, last used longer ago than the idle timeout (sealed as the console seals it:
    # the test knows the stack's key-encryption key).
    sealer = Sealer(distributed[0].key_encryption_key)
    session = sealer.open(cookie["value"])
    assert session is not None and session.signed_in
    idle = dataclasses.replace(session, last_seen=time.time() - IDLE_TIMEOUT_S - 1)
    await context.add_cookies([{**cookie, "value": sealer.seal(idle)}])  # type: ignore[typeddict-item]
    await page.goto("/console/catalogue")
    await expect(page).to_have_url(re.compile(r"/console/login\?notice=expired$"))
    await expect(page.get_by_role("status")).to_have_text("会话已过期，请重新登录。")
    await page.goto("/console/catalogue")  # the expired session was replaced, not kept
    await expect(page).to_have_url(re.compile(r"/console/login$"))

    await log_in(page, person.username, person.password)
    (cookie,) = [c for c in await context.cookies() if c["name"] == COOKIE]
    altered = cookie["value"][:-4] + ("AAAA" if not cookie["value"].endswith("AAAA") else "BBBB")
    await context.add_cookies([{**cookie, "value": altered}])  # type: ignore[typeddict-item]
    await page.goto("/console/catalogue")
    await expect(page).to_have_url(re.compile(r"/console/login$"))


async def test_the_english_switch_changes_the_pages_and_stays_after_login(page: Page, person: Person) -> None:
    await page.goto("/console/login")
    await page.get_by_role("button", name="English").click()
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await page.get_by_label("Username").fill(person.username)
    await page.get_by_label("Password").fill(person.password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Catalogue")).to_be_visible()
    await page.get_by_role("button", name="中文").click()
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(page: Page, person: Person) -> None:
    await log_in(page, person.username, person.password)
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    # With the session's cookie (the page's own request context), but without its token.
    for path, form in (("/console/logout", {}), ("/console/language", {"language": "en"})):
        refused = await page.request.post(path, form=form, max_redirects=0)
        assert refused.status == 403, path
        assert "表单已失效或并非来自本控制台" in await refused.text()
        forged = await page.request.post(path, form={**form, "csrf_token": "forged"}, max_redirects=0)
        assert forged.status == 403, path
    refused = await page.request.post(
        "/console/login", form={"username": person.username, "password": person.password}, max_redirects=0
    )
    assert refused.status == 403
    await page.reload()  # still logged in, still in Chinese
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()


async def test_pages_have_a_content_security_policy_without_inline_script(page: Page) -> None:
    answer = await page.goto("/console/login")
    assert answer is not None
    headers = await answer.all_headers()
    policy = {d.split()[0]: d.split()[1:] for d in headers["content-security-policy"].split(";") if d.strip()}
    assert policy["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert "'unsafe-eval'" not in headers["content-security-policy"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert headers["cache-control"] == "no-store"
    assert await page.locator("script:not([src])").count() == 0
    # htmx itself loaded under the policy (the search form works through it in the first test).
    assert await page.evaluate("typeof window.htmx") == "object"


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


UNLABELLED_INPUTS = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.outerHTML)"""


async def test_every_input_has_a_label_and_the_login_works_from_the_keyboard(page: Page, person: Person) -> None:
    await page.goto("/console/login")
    assert await page.evaluate(UNLABELLED_INPUTS) == []
    await expect(page.get_by_label("用户名")).to_be_focused()
    await page.keyboard.type(person.username)
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("密码")).to_be_focused()
    await page.keyboard.type(person.password)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    assert await page.evaluate(UNLABELLED_INPUTS) == []


async def test_overlong_input_is_said_next_to_its_field_never_as_json(page: Page, person: Person) -> None:
    await page.goto("/console/login")
    csrf = await page.locator("input[name=csrf_token]").first.input_value()
    answer = await page.request.post(
        "/console/login", form={"csrf_token": csrf, "username": "x" * 65, "password": "p" * 129}, max_redirects=0
    )
    assert answer.status == 400 and answer.headers["content-type"].startswith("text/html")
    text = await answer.text()
    assert "用户名最多 64 个字符。" in text and "密码最多 128 个字符。" in text

    await log_in(page, person.username, person.password)
    answer = await page.goto("/console/catalogue?q=" + "户" * 101)
    assert answer is not None and answer.status == 200
    await expect(page.locator("#q-error")).to_have_text("搜索词最多 100 个字符。")
    await expect(page.get_by_role("searchbox")).to_have_attribute("aria-invalid", "true")
    answer = await page.goto("/console/catalogue?cursor=not-a-cursor")
    assert answer is not None and answer.status == 200
    await expect(page.get_by_role("alert")).to_contain_text("cursor")  # the API's problem, in words


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
