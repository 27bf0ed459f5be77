"""Fixtures of the console's browser tests: one Chromium for the session (Debian's package, driven
by Playwright), a fresh profile and page for each test — a page that fails its test if the browser
reports anything refused under the console's Content-Security-Policy."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from services.demo import POLICE
from tests.e2e.console.support import Person, Stack, new_person


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
