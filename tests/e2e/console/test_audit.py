"""The auditor's journey in a real Chromium (journey 4 of issue 12): the access search with its
filters and CSV export, "who looked at this person" (the identifier never written back), the chain
verified with the latest checkpoint, an alert acknowledged, and the dashboard of charts."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import secrets
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import Page, expect

from services.demo import CIVIL_AFFAIRS, DemoCredentials
from services.gateway.config import GatewaySettings
from tests.e2e.client import apply_for, query_body, system_token, wait_for_audit
from tests.e2e.console.support import UNLABELLED_INPUTS, Person, Stack, log_in, new_person, shot

ZONE = ZoneInfo("Asia/Shanghai")  # TONGBAN_TIMEZONE's default, which the test stack keeps


@pytest.fixture(scope="module")
async def auditor(distributed: Stack) -> Person:
    """An auditor of the test's own: auditors belong to the platform operator's department."""
    return await new_person(*distributed, GatewaySettings().platform_dept_code, "auditor")


async def token_of(api: httpx.AsyncClient, person: Person) -> dict[str, str]:
    login = await api.post("/v1/auth/login", json={"username": person.username, "password": person.password})
    assert login.status_code == 200, login.text
    return {"authorization": f"Bearer {login.json()['access_token']}"}


async def query(creds: DemoCredentials, auditor: Person, **overrides: Any) -> tuple[str, int]:
    """A consumer's query through the platform, once its audit record is there: (query id, status)."""
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        asked = await api.post(
            "/v1/exchange/queries", json=query_body(creds, **overrides), headers=await system_token(api, creds)
        )
        if asked.status_code == 200:
            query_id = str(asked.json()["id"])
            await wait_for_audit(api, await token_of(api, auditor), query_id, "completed")
            return query_id, 200
    return "", asked.status_code


def minute(moment: datetime) -> str:
    """A time as a datetime-local input takes it (Beijing time, to the minute)."""
    return moment.astimezone(ZONE).strftime("%Y-%m-%dT%H:%M")


async def test_an_auditor_filters_the_access_records_and_exports_them(
    page: Page, distributed: Stack, auditor: Person
) -> None:
    _, creds = distributed
    start = datetime.now(ZONE)
    query_id, _ = await query(creds, auditor)
    _, status = await query(creds, auditor, purpose="OTHER-ITEM")  # refused: purpose-not-granted
    assert status == 403

    await log_in(page, auditor.username, auditor.password)
    await page.get_by_role("navigation", name="主导航").get_by_role("link", name="审计").click()
    await expect(page.get_by_role("heading", name="访问记录查询")).to_be_visible()
    now = datetime.now(ZONE)
    await page.get_by_label("开始时间").fill(minute(start))
    await page.get_by_label("结束时间（不含）").fill(minute(now + timedelta(minutes=2)))
    await page.get_by_label("动作").select_option("exchange.query")
    await page.get_by_label("使用系统（客户端编号）").fill(creds.client_id)
    await page.get_by_label("资源（代码）").fill(creds.resource)
    await page.get_by_label("事项（用途）").fill(creds.purpose)
    await page.get_by_label("结果").fill("completed")
    await page.get_by_role("button", name="搜索", exact=True).click()
    row = page.locator("#records tbody tr").filter(has_text=query_id)
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(creds.resource)
    await expect(page.get_by_label("使用系统（客户端编号）")).to_have_value(creds.client_id)  # the filters kept
    assert await page.evaluate(UNLABELLED_INPUTS) == []
    await shot(page, "audit-search")

    # Export the same search: the API's CSV, through the console, with the rows on the page.
    async with page.expect_download() as downloading:
        await page.get_by_role("button", name="导出 CSV").click()
    download = await downloading.value
    assert download.suggested_filename == "审计记录.csv"
    text = (await download.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["查询编号 query_id"] for r in rows if r["查询编号 query_id"] == query_id] == [query_id]
    assert {(r["使用系统 client_id"], r["结果 outcome"], r["动作 action"]) for r in rows} == {
        (creds.client_id, "completed", "exchange.query")
    }
    assert len(rows) == await page.locator("#records tbody tr").count()  # this test's few: all on one page

    # The denial, found by its reason (拒绝原因).
    await page.goto("/console/audit")
    await page.get_by_label("使用系统（客户端编号）").fill(creds.client_id)
    await page.get_by_label("原因（问题代码）").fill("purpose-not-granted")
    await page.get_by_role("button", name="搜索", exact=True).click()
    denied = page.locator("#records tbody tr")
    await expect(denied.first).to_contain_text("purpose-not-granted")
    assert set(await denied.locator("td:nth-child(3)").all_inner_texts()) == {
        "denied\n用途（事项）未获授权 · purpose-not-granted"
    }  # the reason in words, and its code

    # Bad input: the error next to its field, in Chinese, what was typed kept; never JSON.
    await page.get_by_label("开始时间").fill(minute(now))
    await page.get_by_label("结束时间（不含）").fill(minute(now - timedelta(days=1)))
    await page.get_by_role("button", name="搜索", exact=True).click()
    await expect(page.locator("#to-error")).to_have_text("结束时间早于开始时间。")
    await expect(page.get_by_label("结束时间（不含）")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("开始时间")).to_have_value(minute(now))
    await expect(page.locator("#records")).to_have_count(0)
    answer = await page.goto("/console/audit?from=yesterday&consumer=" + "X" * 65)
    assert answer is not None and answer.status == 400
    assert answer.headers["content-type"].startswith("text/html")
    await expect(page.locator("#from-error")).to_have_text("请输入日期和时间，例如 2026-03-02T10:00。")
    await expect(page.locator("#consumer-error")).to_have_text("内容过长。")
    await expect(page.get_by_label("使用部门（代码）")).to_have_value("X" * 65)
    exported = await page.request.get("/console/audit/export?from=yesterday")
    assert exported.status == 400 and exported.headers["content-type"].startswith("text/html")


async def test_an_auditor_sees_who_looked_at_a_person_and_the_identifier_is_not_written_back(
    page: Page, distributed: Stack, auditor: Person
) -> None:
    _, creds = distributed
    query_id, _ = await query(creds, auditor)
    await log_in(page, auditor.username, auditor.password)
    await page.goto("/console/audit/subject")
    await page.get_by_label("证件类型").select_option("id_card")
    await page.get_by_label("证件号码").fill(creds.subject)
    await page.get_by_role("button", name="查询", exact=True).click()
    row = page.locator("#accesses tbody tr").filter(has_text=query_id)
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(creds.purpose)
    await expect(page.get_by_role("heading", name=re.compile(r"^查询此人数据的记录：\d+ 条$"))).to_be_visible()
    assert creds.subject not in await page.content()
    assert creds.subject not in page.url and page.url.endswith("/console/audit/subject")
    await expect(page.get_by_label("证件号码")).to_have_value("")
    assert await page.evaluate(UNLABELLED_INPUTS) == []
    await shot(page, "audit-subject")

    # A wrong check digit: the API's refusal next to the field, and the identifier still not shown.
    wrong = creds.subject[:-1] + ("0" if creds.subject[-1] != "0" else "1")
    await page.get_by_label("证件号码").fill(wrong)
    await page.get_by_role("button", name="查询", exact=True).click()
    await expect(page.locator("#value-error")).to_have_text("这不是该类型的有效证件号码。")
    await expect(page.get_by_label("证件号码")).to_have_attribute("aria-invalid", "true")
    assert wrong not in await page.content()
    await expect(page.locator("#accesses")).to_have_count(0)
    await page.get_by_role("button", name="查询", exact=True).click()
    await expect(page.locator("#value-error")).to_have_text("请输入个人或单位的证件号码。")
    # A period that ends before it starts: the API's refusal next to "until", the period kept.
    now = datetime.now(ZONE)
    await page.get_by_label("证件号码").fill(creds.subject)
    await page.get_by_label("开始时间").fill(minute(now))
    await page.get_by_label("结束时间（不含）").fill(minute(now - timedelta(days=1)))
    await page.get_by_role("button", name="查询", exact=True).click()
    await expect(page.locator("#subject-to-error")).to_have_text("结束时间早于开始时间。")
    await expect(page.get_by_label("开始时间")).to_have_value(minute(now))
    assert creds.subject not in await page.content()


async def test_an_auditor_verifies_the_chain_and_sees_the_latest_checkpoint(
    page: Page, distributed: Stack, auditor: Person
) -> None:
    _, creds = distributed
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=60) as api:
        signed = await api.post("/v1/audit/checkpoints", headers=await token_of(api, auditor))
        assert signed.status_code == 200, signed.text
    await log_in(page, auditor.username, auditor.password)
    await page.goto("/console/audit/chain")
    size = int(await page.locator("#tree-size").inner_text())
    assert size >= int(signed.text.split("\n")[1])  # this checkpoint or a later one
    await expect(page.locator("#note")).to_contain_text(f"\n{size}\n")
    # The test stack configures no witness (TONGBAN_AUDIT_WITNESS_KEYS): none has cosigned.
    await expect(page.locator("#no-witnesses")).to_have_text("尚无见证方为此检查点签名。")
    await page.get_by_role("button", name="校验哈希链").click()
    await expect(page.locator("#verify-report h2")).to_have_text("校验通过")
    await expect(page.locator("#verify-report")).to_contain_text("已校验")
    await shot(page, "audit-chain")


async def open_alert(api: httpx.AsyncClient, auditor: dict[str, str], actor: str) -> dict[str, Any]:
    """The open 多次被拒 alert of ``actor``, once the anomaly rules (run every minute) raised it."""
    deadline = asyncio.get_running_loop().time() + 150
    while True:
        found = await api.get("/v1/audit/alerts", params={"acknowledged": "false", "rule": "denials"}, headers=auditor)
        assert found.status_code == 200, found.text
        mine = [a for a in found.json()["items"] if a["actor"] == actor]
        if mine:
            return dict(mine[0])
        assert asyncio.get_running_loop().time() < deadline, "no denials alert was raised"
        await asyncio.sleep(2)


async def test_an_auditor_acknowledges_an_alert_and_a_second_acknowledgement_is_refused(
    page: Page, distributed: Stack, auditor: Person
) -> None:
    _, creds = distributed
    # 多次被拒: the system refused 20 times (TONGBAN_AUDIT_DENIALS_MIN is 10 in a 10-minute window).
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        system = await system_token(api, creds)
        for _ in range(20):
            refused = await api.post(
                "/v1/exchange/queries", json=query_body(creds, purpose="OTHER-ITEM"), headers=system
            )
            assert refused.status_code == 403, refused.text
        headers = await token_of(api, auditor)
        alert = await open_alert(api, headers, creds.client_id)

    await log_in(page, auditor.username, auditor.password)
    await page.goto("/console/audit/alerts")
    row = page.locator(f"#alert-{alert['id']}")
    await expect(row).to_contain_text("多次被拒")
    stale = await page.context.new_page()  # a second tab, still showing the alert as open
    await stale.goto("/console/audit/alerts")
    await row.get_by_role("button", name=f"确认告警 {alert['id']}").click()
    await expect(page.locator("#ack-notice")).to_have_text(f"告警 {alert['id']} 已确认。")
    await expect(page.locator(f"#alert-{alert['id']}")).to_contain_text(auditor.username)

    await stale.locator(f"#alert-{alert['id']}").get_by_role("button", name=f"确认告警 {alert['id']}").click()
    await expect(stale.locator("#ack-error")).to_contain_text("此告警已被确认。")
    await expect(stale.locator("#ack-error")).to_contain_text(auditor.username)  # the API's detail: by whom
    await expect(stale.locator(f"#alert-{alert['id']} .error")).to_have_text("此告警已被确认。")
    await stale.close()
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        listed = await api.get(
            "/v1/audit/alerts", params={"acknowledged": "true"}, headers=await token_of(api, auditor)
        )
    kept = [a for a in listed.json()["items"] if a["id"] == alert["id"]]
    assert [a["acknowledged_by"] for a in kept] == [auditor.username]  # the first acknowledgement stands

    # Without the form's CSRF token: refused, nothing done.
    other = await page.request.post("/console/audit/alerts/1/ack", form={"csrf_token": "forged"})
    assert other.status == 403


async def test_the_dashboard_draws_its_charts_from_the_apis_figures(
    page: Page, distributed: Stack, auditor: Person
) -> None:
    stack, creds = distributed
    await query(creds, auditor)
    # Figures for the registry's two charts: a service item with a material (免提交率, here 0 of 1)
    # and a pending application.
    civil = await new_person(stack, creds, CIVIL_AFFAIRS["code"], "data_admin")
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        item = {
            "code": f"T-{secrets.token_hex(4)}",
            "name": "测试事项",
            "materials": [{"name": "户口簿", "source": "applicant"}],
        }
        made = await api.post("/v1/registry/service-items", json=item, headers=await token_of(api, civil))
        assert made.status_code == 201, made.text
        await apply_for(api, await system_token(api, creds), creds, creds.resource, "性别", purpose=creds.purpose)
    await log_in(page, auditor.username, auditor.password)
    await page.goto("/console/audit/dashboard")
    charts = page.locator(".chart[data-chart]")
    await expect(charts).to_have_count(4)
    await expect(page.locator(".chart[data-drawn='true']")).to_have_count(4)
    for chart in await charts.all():
        await expect(chart.locator("svg")).to_have_count(1)
        assert (await chart.get_attribute("aria-label") or "").strip()
    await expect(page.locator(".chart[data-chart='queries']")).to_have_attribute(
        "aria-label", re.compile(r"^各部门每日查询量：近 30 天 \d+ 个部门共查询 \d+ 次。$")
    )
    await shot(page, "audit-dashboard")

    figures = await page.request.get("/console/audit/dashboard.json")
    assert figures.status == 200 and figures.headers["content-type"] == "application/json"
    data = await figures.json()
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as api:
        headers = await token_of(api, auditor)
        by_consumer = await api.get(
            "/v1/audit/aggregates", params={"by": "consumer", "type": "exchange.query"}, headers=headers
        )
        by_reason = await api.get("/v1/audit/aggregates", params={"by": "reason", "outcome": "denied"}, headers=headers)
        stats = await api.get("/v1/registry/stats", headers=headers)
    queries = {
        (day, s["dept"]): n
        for s in data["queries"]["series"]
        for day, n in zip(data["queries"]["days"], s["counts"], strict=True)
        if n
    }
    assert queries == {(i["day"], i["key"]): i["total"] for i in by_consumer.json()["items"]}
    today = datetime.now(ZONE).date().isoformat()
    assert any(day == today for day, _ in queries)  # this test's own query at least
    reasons: dict[str, int] = {}
    for item in by_reason.json()["items"]:
        reasons[item["key"]] = reasons.get(item["key"], 0) + item["total"]
    assert {d["reason"]: d["count"] for d in data["denials"]} == reasons
    departments = {d["dept"]: d for d in stats.json()["departments"] if d["dept"]}
    assert {d["dept"]: d["rate"] for d in data["exempt"]} == {
        code: d["exempt_rate"] for code, d in departments.items() if d["exempt_rate"] is not None
    }
    assert {d["dept"]: (d["pending"], d["overdue"]) for d in data["applications"]} == {
        code: (d["applications"]["pending"], d["applications"]["overdue"])
        for code, d in departments.items()
        if d["applications"]["pending"]
    }
    assert CIVIL_AFFAIRS["code"] in {d["dept"] for d in data["exempt"]}
    # Each chart's text alternative: the same figures in a table.
    await expect(page.locator("#denials-table tbody tr")).to_have_count(len(reasons))
    await expect(page.locator("#exempt-table tbody tr").filter(has_text=CIVIL_AFFAIRS["name"])).to_have_count(1)


async def test_a_data_administrator_is_refused_the_auditors_pages_readably(page: Page, person: Person) -> None:
    """The console adds no authorisation of its own: the API refuses, and the page says so in
    words (Chinese first, then the API's), never a stack trace."""
    await log_in(page, person.username, person.password)
    await expect(page.get_by_role("navigation", name="主导航").get_by_role("link", name="审计")).to_have_count(0)
    answer = await page.goto("/console/audit/alerts")
    assert answer is not None and answer.status == 403
    await expect(page.locator("#alerts-problem")).to_contain_text("仅审计员可以查看。")
    await expect(page.locator("#alerts")).to_have_count(0)
    await page.goto("/console/audit/chain?verify=1")
    await expect(page.locator("#verify-refused")).to_contain_text("仅审计员可以查看。")
    await expect(page.locator("#verify-report")).to_have_count(0)
    await page.goto("/console/audit/subject")
    await page.get_by_label("证件号码").fill("11010619750916195X")
    await page.get_by_role("button", name="查询", exact=True).click()
    await expect(page.locator("#subject-error")).to_contain_text("仅审计员可以查看。")
    assert "11010619750916195X" not in await page.content()
