"""The console in a real Chromium, journey 5 of issue 12: everyone logs in, out, mistypes a
password, gets locked out, and comes back to an expired session; the English switch; and the
safety of the pages — the session cookie is HttpOnly, Secure and SameSite=Strict, a POST without
the session's CSRF token is refused, the Content-Security-Policy allows no inline script and the
pages work under it, every input has a label and the login works from the keyboard."""

from __future__ import annotations

import dataclasses
import re
import time

from playwright.async_api import BrowserContext, Page, expect

from services.console.config import ConsoleSettings
from services.console.session import COOKIE, Sealer
from services.gateway.config import GatewaySettings
from tests.e2e.console.support import UNLABELLED_INPUTS, Person, Stack, log_in, new_person, shot

LOCKOUT_THRESHOLD = GatewaySettings.model_fields["lockout_threshold"].default
IDLE_TIMEOUT_S = ConsoleSettings.model_fields["idle_timeout_s"].default


async def test_a_person_logs_in_searches_the_catalogue_in_chinese_and_logs_out(
    page: Page, context: BrowserContext, person: Person, distributed: Stack
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
    # The cookie holds the person's token sealed: none of the token's parts shows in it.
    sealed = Sealer(distributed[0].key_encryption_key).open(cookie["value"])
    assert sealed is not None and sealed.token is not None
    assert not any(part in cookie["value"] for part in sealed.token.split(".")), "the token is readable in the cookie"

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


async def test_an_unknown_address_or_method_is_a_page_never_json(page: Page, person: Person) -> None:
    await log_in(page, person.username, person.password)
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    answer = await page.goto("/console/no-such-page")
    assert answer is not None and answer.status == 404
    assert answer.headers["content-type"].startswith("text/html")
    await expect(page.get_by_role("heading", name="没有这个页面。")).to_be_visible()
    await expect(page.get_by_role("link", name="资源目录")).to_be_visible()  # still logged in, navigation kept
    # The request's number, for a person to quote: the id of the gateway's (and the console's) log lines.
    await expect(page.locator("code")).to_have_text(answer.headers["x-request-id"])
    # A method the address does not take: a page too.
    refused = await page.request.put("/console/catalogue", headers={"x-csrf-token": "x"})
    assert refused.status == 405 and refused.headers["content-type"].startswith("text/html")
    # A static file that does not exist stays the platform's problem+json (no page for a script tag).
    missing = await page.request.get("/console/static/no-such.js")
    assert missing.status == 404 and missing.headers["content-type"].startswith("application/problem+json")
