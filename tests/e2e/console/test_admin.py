"""The platform administrator's journey in a real Chromium (journey 3 of issue 12): departments;
a system registered with its secret shown once (and working), its public keys registered, disabled
and enabled; people's accounts created, unlocked, re-roled and disabled; the signing key rotated.
Every form's bad input is shown next to its field and changes nothing (checked through the API);
a person who is not a platform administrator is refused by the API, in words."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc.jwk import ECKey
from playwright.async_api import Page, expect

from services.gateway.config import GatewaySettings
from tests.e2e.client import past_rotation_grace
from tests.e2e.console.support import UNLABELLED_INPUTS, Person, Stack, log_in, new_person, shot
from tests.factories import DepartmentCreateFactory

LOCKOUT_THRESHOLD = GatewaySettings.model_fields["lockout_threshold"].default
PLATFORM_DEPT = GatewaySettings.model_fields["platform_dept_code"].default


@pytest.fixture(scope="module")
async def admin(distributed: Stack) -> Person:
    """A platform administrator of the test's own (the stack's ``admin`` keeps its login limits)."""
    return await new_person(*distributed, PLATFORM_DEPT, "platform_admin")


@contextlib.asynccontextmanager
async def api_as(gateway: str, person: Person) -> AsyncIterator[httpx.AsyncClient]:
    """An API client logged in as ``person``."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as api:
        login = await api.post("/v1/auth/login", json={"username": person.username, "password": person.password})
        assert login.status_code == 200, login.text
        api.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        yield api


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def public_jwks(kid: str) -> dict[str, Any]:
    key = ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": "ES256"}, private=True)
    return {"keys": [key.as_dict(private=False)]}


async def open_admin(page: Page, section: str) -> None:
    """From the main navigation to a section of the administration's own."""
    await page.get_by_role("navigation", name="主导航").get_by_role("link", name="平台管理").click()
    await expect(page.get_by_role("heading", name="人员账号")).to_be_visible()
    await page.get_by_role("navigation", name="平台管理").get_by_role("link", name=section).click()
    await expect(page.get_by_role("heading", name=section, exact=True)).to_be_visible()


async def test_a_platform_admin_registers_a_department_and_bad_input_registers_nothing(
    page: Page, distributed: Stack, admin: Person
) -> None:
    _, creds = distributed
    department = DepartmentCreateFactory.build()
    await log_in(page, admin.username, admin.password)
    await open_admin(page, "部门")
    assert await page.evaluate(UNLABELLED_INPUTS) == []

    # A code that is no unified social credit code: said next to its field, what was typed kept.
    await page.get_by_label("统一社会信用代码").fill("12345")
    await page.get_by_label("名称").fill(department.name)
    await page.get_by_label("行政区划代码").fill(department.region_code)
    await page.get_by_label("层级").select_option(label="市级")
    await page.get_by_role("button", name="登记部门").click()
    await expect(page.locator("#code-error")).to_contain_text("请输入有效的统一社会信用代码")
    await expect(page.get_by_label("统一社会信用代码")).to_have_value("12345")
    await expect(page.get_by_label("名称")).to_have_value(department.name)
    await expect(page.get_by_label("层级")).to_have_value("city")
    # Nothing required left empty either.
    await page.get_by_label("名称").fill("")
    await page.get_by_role("button", name="登记部门").click()
    await expect(page.locator("#name-error")).to_have_text("此项必填。")

    await page.get_by_label("统一社会信用代码").fill(department.code)
    await page.get_by_label("名称").fill(department.name)
    await page.get_by_role("button", name="登记部门").click()
    await expect(page.get_by_role("status")).to_have_text("部门已登记。")
    await expect(page.get_by_role("row").filter(has_text=department.code)).to_contain_text(department.name)

    # The same code again: the gateway's refusal, in Chinese, next to the code.
    await page.get_by_label("统一社会信用代码").fill(department.code)
    await page.get_by_label("名称").fill("另一个部门")
    await page.get_by_label("行政区划代码").fill(department.region_code)
    await page.get_by_label("层级").select_option("city")
    await page.get_by_role("button", name="登记部门").click()
    await expect(page.locator("#code-error")).to_contain_text("该统一社会信用代码的部门已登记。")

    async with api_as(creds.gateway, admin) as api:
        assert (await api.get(f"/v1/departments/{department.code}")).json()["name"] == department.name
        assert (await api.get("/v1/departments/12345")).status_code == 404


async def test_a_department_is_disabled_after_a_confirmation_and_its_people_and_systems_shut_out(
    page: Page, distributed: Stack, admin: Person
) -> None:
    stack, creds = distributed
    department = DepartmentCreateFactory.build()
    async with api_as(creds.gateway, admin) as api:
        assert (await api.post("/v1/departments", json=department.model_dump(mode="json"))).status_code == 201
        body = {"name": "婚姻登记系统", "roles": ["consumer"], "auth_method": "client_secret_basic"}
        system = (await api.post(f"/v1/departments/{department.code}/systems", json=body)).json()
    member = await new_person(stack, creds, department.code, "data_admin")

    async def member_login() -> httpx.Response:
        async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as anyone:
            return await anyone.post("/v1/auth/login", json={"username": member.username, "password": member.password})

    await log_in(page, admin.username, admin.password)
    await open_admin(page, "部门")
    await page.get_by_role("link", name=department.name, exact=True).click()
    await expect(page.get_by_role("heading", name=department.name)).to_be_visible()
    await expect(page.locator("#status")).to_have_text("正常")
    await expect(page.get_by_role("button", name="启用")).to_have_count(0)  # only a disabled one is enabled

    # The confirmation names what disabling does; cancelling changes nothing.
    await page.get_by_role("button", name="停用该部门…").click()
    await expect(page.get_by_role("heading", name="停用部门")).to_be_visible()
    await expect(page.locator("#consequences")).to_contain_text("该部门的人员都不能登录，其业务系统都不能获取令牌")
    await page.get_by_role("button", name="取消").click()
    await expect(page.get_by_role("heading", name=department.name)).to_be_visible()
    assert (await member_login()).status_code == 200

    await page.get_by_role("button", name="停用该部门…").click()
    await page.get_by_role("button", name="确认停用该部门").click()
    await expect(page.get_by_role("status")).to_contain_text("已停用：在重新启用前，该部门的人员不能登录")
    await expect(page.locator("#status")).to_have_text("已停用")
    await expect(page.get_by_role("button", name="停用该部门…")).to_have_count(0)
    refused = await member_login()
    assert (refused.status_code, refused.json()["type"].rsplit("/", 1)[-1]) == (403, "account-disabled")
    shut = await token_for(creds.gateway, system["client_id"], system["client_secret"])
    assert shut.json()["error"] == "unauthorized_client", shut.text
    await open_admin(page, "部门")  # the list says it too
    await expect(page.get_by_role("row").filter(has_text=department.code)).to_contain_text("已停用")
    await page.get_by_role("link", name=department.name, exact=True).click()

    await page.get_by_role("button", name="启用").click()
    await expect(page.get_by_role("status")).to_contain_text("已启用")
    await expect(page.locator("#status")).to_have_text("正常")
    assert (await member_login()).status_code == 200
    assert (await token_for(creds.gateway, system["client_id"], system["client_secret"])).status_code == 200

    # One's own department: the gateway's refusal in words on the confirmation; nothing disabled.
    await page.goto(f"/console/admin/departments/{PLATFORM_DEPT}/disable")
    await page.get_by_role("button", name="确认停用该部门").click()
    await expect(page.locator("#form-error")).to_contain_text("不能停用自己或本人所在部门。")
    async with api_as(creds.gateway, admin) as api:  # logging in again works: the department is active
        assert (await api.get(f"/v1/departments/{PLATFORM_DEPT}")).status_code == 200


async def test_a_system_is_registered_its_secret_shown_once_and_it_is_disabled_and_enabled(
    page: Page, distributed: Stack, admin: Person
) -> None:
    _, creds = distributed
    async with api_as(creds.gateway, admin) as api:
        department = DepartmentCreateFactory.build()
        assert (await api.post("/v1/departments", json=department.model_dump(mode="json"))).status_code == 201
        await log_in(page, admin.username, admin.password)
        await open_admin(page, "业务系统")
        assert await page.evaluate(UNLABELLED_INPUTS) == []

        # No name, no role: each said next to its field, the department chosen kept; nothing registered.
        await page.get_by_label("部门").select_option(department.code)
        await page.get_by_role("button", name="登记系统").click()
        await expect(page.locator("#name-error")).to_have_text("此项必填。")
        await expect(page.locator("#roles-error")).to_have_text("请至少选择一个角色。")
        await expect(page.get_by_label("部门")).to_have_value(department.code)
        # Public keys that are no JSON object.
        await page.get_by_label("名称").fill("低保审核系统")
        await page.get_by_label("使用方（调用数据）").check()
        await page.get_by_label("公钥（JWKS）").check()
        await page.get_by_label("JWKS（JSON）").fill("[1, 2")
        await page.get_by_role("button", name="登记系统").click()
        await expect(page.locator("#jwks-error")).to_have_text("这不是 JSON 对象，请粘贴完整的 JWKS。")
        await expect(page.get_by_label("JWKS（JSON）")).to_have_value("[1, 2")
        await expect(page.get_by_label("名称")).to_have_value("低保审核系统")
        assert (await api.get("/v1/systems", params={"department": department.code})).json()["items"] == []

        # A system with a client secret: the secret is on the answer to the POST, with the warning.
        await page.get_by_label("客户端密钥").check()
        await page.get_by_label("JWKS（JSON）").fill("")
        await page.get_by_role("button", name="登记系统").click()
        await expect(page.get_by_role("heading", name="业务系统已登记")).to_be_visible()
        await expect(page.get_by_role("alert")).to_contain_text("它只显示这一次，之后无法再次查看")
        client_id = await page.locator("#client-id").inner_text()
        secret = await page.locator("#client-secret").inner_text()
        assert client_id.startswith("sys-") and len(secret) >= 40
        assert secret not in page.url
        await shot(page, "admin-secret")

        # The secret works: a token for the new system.
        async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as anyone:
            grant = {"grant_type": "client_credentials"}
            issued = await anyone.post("/oauth2/token", data=grant, auth=(client_id, secret))
            assert issued.status_code == 200, issued.text
            assert claims(issued.json()["access_token"])["client_id"] == client_id

        # Reloaded, the answer is the system's page (its address was replaced): no secret, no second system.
        await expect(page).to_have_url(re.compile(f"/console/admin/systems/{client_id}$"))
        await page.reload()
        await expect(page.get_by_role("heading", name="低保审核系统")).to_be_visible()
        await expect(page.locator("#client-secret")).to_have_count(0)
        assert secret not in await page.content()
        assert len((await api.get("/v1/systems", params={"department": department.code})).json()["items"]) == 1

        # Revisited, the list and the system's page show it, never its secret again.
        await page.goto("/console/admin/systems")
        row = page.get_by_role("row").filter(has_text=client_id)
        await expect(row).to_contain_text("低保审核系统")
        await expect(row).to_contain_text(department.name)
        await expect(row.get_by_role("cell").last).to_have_text("正常")
        assert secret not in await page.content()
        await shot(page, "admin-systems")
        await page.reload()
        assert secret not in await page.content()
        await row.get_by_role("link", name="低保审核系统").click()
        await expect(page.locator("#status")).to_have_text("正常")
        assert secret not in await page.content()

        # Disabled: no token; enabled: tokens again.
        await page.get_by_role("button", name="停用").click()
        await expect(page.locator("#status")).to_have_text("已停用")
        await expect(page.get_by_role("status")).to_contain_text("已停用")
        async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as anyone:
            refused = await anyone.post("/oauth2/token", data=grant, auth=(client_id, secret))
            assert refused.json()["error"] == "unauthorized_client", refused.text
            await page.get_by_role("button", name="启用").click()
            await expect(page.locator("#status")).to_have_text("正常")
            assert (await anyone.post("/oauth2/token", data=grant, auth=(client_id, secret))).status_code == 200


async def test_a_systems_public_keys_are_registered_pasted_and_a_bad_address_is_refused(
    page: Page, distributed: Stack, admin: Person
) -> None:
    _, creds = distributed
    async with api_as(creds.gateway, admin) as api:
        await log_in(page, admin.username, admin.password)
        await open_admin(page, "业务系统")

        await page.get_by_label("部门").select_option(PLATFORM_DEPT)
        await page.get_by_label("名称").fill("公积金业务系统")
        await page.get_by_label("提供方（提供数据）").check()
        await page.get_by_label("公钥（JWKS）").check()
        await page.get_by_label("JWKS（JSON）").fill(json.dumps(public_jwks("first-key")))
        await page.get_by_role("button", name="登记系统").click()
        await expect(page.get_by_role("heading", name="业务系统已登记")).to_be_visible()
        await expect(page.locator("#client-secret")).to_have_count(0)  # keys, no secret
        client_id = await page.locator("#client-id").inner_text()
        await page.get_by_role("button", name="完成，查看该系统").click()
        await expect(page.locator("#registered-jwks")).to_contain_text('"kid": "first-key"')
        assert await page.evaluate(UNLABELLED_INPUTS) == []

        # Whatever is pasted is said next to the field, never a stack trace: JSON nested past any parser.
        await page.get_by_label("JWKS（JSON）").fill("[" * 15_000)
        await page.get_by_role("button", name="登记公钥").click()
        await expect(page.locator("#jwks-error")).to_have_text("这不是 JSON 对象，请粘贴完整的 JWKS。")
        await page.get_by_label("JWKS（JSON）").fill("")

        # An address the gateway will not fetch keys from: its refusal next to the field; keys kept.
        await page.get_by_label("JWKS 地址").fill("http://keys.example.gov.cn/jwks.json")
        await page.get_by_role("button", name="登记公钥").click()
        await expect(page.locator("#jwks_uri-error")).to_contain_text("该 JWKS 地址不可用")
        await expect(page.get_by_label("JWKS 地址")).to_have_value("http://keys.example.gov.cn/jwks.json")
        # Both a JWKS and an address: one of the two.
        await page.get_by_label("JWKS（JSON）").fill(json.dumps(public_jwks("second-key")))
        await page.get_by_role("button", name="登记公钥").click()
        await expect(page.locator("#jwks-error")).to_have_text("请粘贴 JWKS 或填写其地址，二者选一。")
        kept = (await api.get(f"/v1/systems/{client_id}/jwks")).json()
        assert [k["kid"] for k in kept["jwks"]["keys"]] == ["first-key"] and kept["jwks_uri"] is None

        await page.get_by_label("JWKS 地址").fill("")
        await page.get_by_role("button", name="登记公钥").click()
        await expect(page.get_by_role("status")).to_have_text("公钥已登记。")
        await expect(page.locator("#registered-jwks")).to_contain_text('"kid": "second-key"')
        now = (await api.get(f"/v1/systems/{client_id}/jwks")).json()
        assert [k["kid"] for k in now["jwks"]["keys"]] == ["second-key"]


async def new_system(api: httpx.AsyncClient, name: str) -> tuple[str, str]:
    """A system of the platform's department with a client secret: its client id and secret."""
    body = {"name": name, "roles": ["consumer"], "auth_method": "client_secret_basic"}
    created = await api.post(f"/v1/departments/{PLATFORM_DEPT}/systems", json=body)
    assert created.status_code == 201, created.text
    return created.json()["client_id"], created.json()["client_secret"]


async def token_for(gateway: str, client_id: str, secret: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as anyone:
        return await anyone.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))


async def test_a_leaked_secret_is_rotated_with_an_overlap_and_the_old_one_revoked(
    page: Page, distributed: Stack, admin: Person
) -> None:
    _, creds = distributed
    async with api_as(creds.gateway, admin) as api:
        client_id, old = await new_system(api, "社保缴费查询系统")

        async def secret_ids() -> list[str]:
            return [s["id"] for s in (await api.get(f"/v1/systems/{client_id}/secrets")).json()["items"]]

        [old_id] = await secret_ids()
        await log_in(page, admin.username, admin.password)
        await page.goto(f"/console/admin/systems/{client_id}")
        secrets_table = page.get_by_role("region", name="客户端密钥")
        await expect(secrets_table.get_by_role("row").filter(has_text=old_id)).to_contain_text("从未使用")
        assert await page.evaluate(UNLABELLED_INPUTS) == []

        # The only secret is not revoked: the gateway's refusal in words, after the confirmation; it still works.
        await secrets_table.get_by_role("row").filter(has_text=old_id).get_by_role("link", name="撤销…").click()
        await expect(page.get_by_role("heading", name="撤销客户端密钥")).to_be_visible()
        await expect(page.locator("#secret-id")).to_have_text(old_id)
        await page.get_by_role("button", name="确认撤销").click()
        await expect(page.locator("#form-error")).to_contain_text("这是该系统唯一的密钥")
        assert await secret_ids() == [old_id]
        assert (await token_for(creds.gateway, client_id, old)).status_code == 200

        # A new secret: shown once, on the answer to the POST; the address becomes the system's.
        await page.goto(f"/console/admin/systems/{client_id}")
        await page.get_by_role("button", name="新增密钥").click()
        await expect(page.get_by_role("heading", name="已新增密钥")).to_be_visible()
        await expect(page.get_by_role("alert")).to_contain_text("它只显示这一次，之后无法再次查看")
        new = await page.locator("#client-secret").inner_text()
        new_id = await page.locator("#secret-id").inner_text()
        assert len(new) >= 40 and new != old and new not in page.url
        await expect(page).to_have_url(re.compile(f"/console/admin/systems/{client_id}$"))
        assert sorted(await secret_ids()) == sorted([old_id, new_id])
        # Both work meanwhile (the overlap): the system changes over without a gap.
        assert (await token_for(creds.gateway, client_id, new)).status_code == 200
        assert (await token_for(creds.gateway, client_id, old)).status_code == 200

        # Reloaded: the system's page, the new secret never again, and no third secret registered.
        await page.reload()
        await expect(page.get_by_role("heading", name="社保缴费查询系统")).to_be_visible()
        assert new not in await page.content()
        await expect(secrets_table.get_by_role("row").filter(has_text=new_id)).to_be_visible()
        await expect(secrets_table.get_by_role("row").filter(has_text=old_id)).not_to_contain_text("从未使用")
        assert len(await secret_ids()) == 2
        # A third while two are active: refused in words, nothing added.
        await page.get_by_role("button", name="新增密钥").click()
        await expect(page.locator("#form-error")).to_contain_text("该系统已有两个有效密钥")
        assert len(await secret_ids()) == 2
        await page.goto(f"/console/admin/systems/{client_id}")
        await shot(page, "system-secrets")

        # The old one revoked after a confirmation (cancelling changes nothing): it gets no token, the new one does.
        await secrets_table.get_by_role("row").filter(has_text=old_id).get_by_role("link", name="撤销…").click()
        await page.get_by_role("button", name="取消").click()
        await expect(page.get_by_role("heading", name="社保缴费查询系统")).to_be_visible()
        assert len(await secret_ids()) == 2
        await secrets_table.get_by_role("row").filter(has_text=old_id).get_by_role("link", name="撤销…").click()
        await page.get_by_role("button", name="确认撤销").click()
        await expect(page.get_by_role("status")).to_have_text("密钥已撤销，不能再用它获取令牌。")
        await expect(secrets_table.get_by_role("row").filter(has_text=old_id)).to_have_count(0)
        assert await secret_ids() == [new_id]
        refused = await token_for(creds.gateway, client_id, old)
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client"), refused.text
        assert (await token_for(creds.gateway, client_id, new)).status_code == 200
        assert new not in await page.content()


async def test_a_system_locked_out_by_wrong_secrets_is_unlocked(page: Page, distributed: Stack, admin: Person) -> None:
    _, creds = distributed
    async with api_as(creds.gateway, admin) as api:
        client_id, secret = await new_system(api, "不动产登记查询系统")
    for _ in range(LOCKOUT_THRESHOLD):
        wrong = await token_for(creds.gateway, client_id, "wrong-secret-" + secrets.token_hex(8))
        assert wrong.status_code in (401, 429), wrong.text
    locked = await token_for(creds.gateway, client_id, secret)
    assert (locked.status_code, locked.json()["error"]) == (429, "invalid_client"), locked.text

    await log_in(page, admin.username, admin.password)
    await page.goto(f"/console/admin/systems/{client_id}")
    await expect(page.locator("#lockout")).to_have_text(re.compile(r"^锁定至 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    access = page.get_by_role("region", name="访问")
    await access.get_by_role("button", name="解锁").click()
    await expect(page.get_by_role("status")).to_have_text("已解锁，该系统可以重新获取令牌。")
    await expect(page.locator("#status")).to_have_text("正常")
    await expect(page.locator("#lockout")).to_have_text("未锁定")
    await expect(access.get_by_role("button", name="解锁")).to_have_count(0)  # nothing left to unlock
    assert (await token_for(creds.gateway, client_id, secret)).status_code == 200


async def test_a_systems_rate_limit_is_set_and_put_back_to_the_default(
    page: Page, distributed: Stack, admin: Person
) -> None:
    _, creds = distributed
    async with api_as(creds.gateway, admin) as api:
        client_id, _secret = await new_system(api, "公积金提取查询系统")

        async def limit() -> dict[str, Any]:
            answer: dict[str, Any] = (await api.get(f"/v1/systems/{client_id}/rate-limit")).json()
            return answer

        default = await limit()
        assert default["default"] is True
        await log_in(page, admin.username, admin.password)
        await page.goto(f"/console/admin/systems/{client_id}")
        shown = page.locator("#rate-limit")
        await expect(shown).to_contain_text("（平台默认）")
        await expect(shown).to_contain_text(f"突发最多 {default['burst']} 次")
        await expect(page.get_by_role("button", name="恢复默认")).to_have_count(0)

        # No number: said next to the field by the console, what was typed kept; nothing set.
        await page.get_by_label("每秒请求数").fill("五")
        await page.get_by_role("button", name="设置限流").click()
        await expect(page.locator("#rate_per_s-error")).to_have_text("每秒请求数：大于 0、不超过 1000000 的数。")
        await expect(page.get_by_label("每秒请求数")).to_have_value("五")
        assert await limit() == default
        # A number out of the gateway's range: its refusal next to the field, with its own words.
        await page.get_by_label("每秒请求数").fill("2.5")
        await page.get_by_label("突发量（一次最多请求数）").fill("0")
        await page.get_by_role("button", name="设置限流").click()
        await expect(page.locator("#burst-error")).to_contain_text("突发量：1 至 10000000 之间的整数。")
        await expect(page.get_by_label("突发量（一次最多请求数）")).to_have_value("0")
        await expect(page.get_by_label("每秒请求数")).to_have_value("2.5")
        assert await limit() == default

        await page.get_by_label("突发量（一次最多请求数）").fill("10")
        await page.get_by_role("button", name="设置限流").click()
        await expect(page.get_by_role("status")).to_contain_text("已设置该系统的限流")
        await expect(shown).to_contain_text("每秒 2.5 次请求，突发最多 10 次")
        await expect(shown).to_contain_text("（该系统专用）")
        assert await limit() == {"client_id": client_id, "rate_per_s": 2.5, "burst": 10, "default": False}

        await page.get_by_role("button", name="恢复默认").click()
        await expect(page.get_by_role("status")).to_have_text("该系统已恢复使用平台默认限流。")
        await expect(shown).to_contain_text("（平台默认）")
        assert await limit() == default


async def test_a_person_is_created_unlocked_re_roled_and_disabled(
    page: Page, distributed: Stack, admin: Person
) -> None:
    _, creds = distributed
    async with api_as(creds.gateway, admin) as api:
        username, password = f"li.na.{secrets.token_hex(3)}", "Tongban-2026-Lina"
        await log_in(page, admin.username, admin.password)
        await open_admin(page, "人员账号")
        assert await page.evaluate(UNLABELLED_INPUTS) == []

        # A password the policy refuses: said next to it in Chinese; the username kept, the password not.
        await page.get_by_label("用户名").fill(username)
        await page.get_by_label("初始密码").fill("short")
        await page.get_by_label("部门").select_option(PLATFORM_DEPT)
        await page.get_by_label("数据管理员").check()
        await page.get_by_role("button", name="创建账号").click()
        await expect(page.locator("#password-error")).to_contain_text("至少 12 个字符")
        await expect(page.get_by_label("用户名")).to_have_value(username)
        await expect(page.get_by_label("初始密码")).to_have_value("")
        await expect(page.get_by_label("数据管理员")).to_be_checked()
        assert "short" not in await page.content()
        assert (await api.get(f"/v1/users/{username}")).status_code == 404

        await page.get_by_label("初始密码").fill(password)
        await page.get_by_role("button", name="创建账号").click()
        await expect(page.get_by_role("heading", name=username)).to_be_visible()
        await expect(page.get_by_role("status")).to_have_text("账号已创建。")
        await expect(page.locator("#roles")).to_have_text("数据管理员")
        assert password not in await page.content()
        assert await page.evaluate(UNLABELLED_INPUTS) == []

        # Locked out by failed logins; unlocked in the console, they log in.
        async with httpx.AsyncClient(base_url=creds.gateway, timeout=30) as anyone:

            async def login(secret: str) -> httpx.Response:
                return await anyone.post("/v1/auth/login", json={"username": username, "password": secret})

            for _ in range(LOCKOUT_THRESHOLD):
                await login("Wrong-password-1")
            assert (await login(password)).json()["type"].endswith("/account-locked")
            await page.reload()
            await expect(page.locator("#locked")).to_contain_text("锁定至")
            await page.get_by_role("button", name="解锁").click()
            await expect(page.get_by_role("status")).to_have_text("已解锁，该人员可以重新登录。")
            await expect(page.locator("#locked")).to_have_text("否")
            assert (await login(password)).status_code == 200

            # Re-roled: no role at all is refused in place, and nothing changes.
            await page.get_by_label("数据管理员").uncheck()
            await page.get_by_role("button", name="修改角色").click()
            await expect(page.locator("#roles-error")).to_have_text("请至少选择一个角色。")
            assert (await api.get(f"/v1/users/{username}")).json()["roles"] == ["data_admin"]
            await page.get_by_label("审计员").check()
            await page.get_by_label("审批人").check()
            await page.get_by_role("button", name="修改角色").click()
            await expect(page.get_by_role("status")).to_contain_text("角色已修改")
            await expect(page.locator("#roles")).to_have_text("审批人、审计员")
            token = (await login(password)).json()["access_token"]
            assert claims(token)["roles"] == ["approver", "auditor"]

            # Disabled: their login is refused; the list says so.
            await page.get_by_role("button", name="停用").click()
            await expect(page.locator("#status")).to_have_text("已停用")
            refused = await login(password)
            assert (refused.status_code, refused.json()["type"].rsplit("/", 1)[-1]) == (403, "account-disabled")
            await page.get_by_role("navigation", name="平台管理").get_by_role("link", name="人员账号").click()
            await expect(page.get_by_role("row").filter(has_text=username)).to_contain_text("已停用")
            await shot(page, "admin-people")

        # Nobody takes their own platform_admin role away: the refusal next to the roles, nothing changed.
        await page.goto(f"/console/admin/users/{admin.username}")
        await page.get_by_label("平台管理员").uncheck()
        await page.get_by_label("审计员").check()
        await page.get_by_role("button", name="修改角色").click()
        await expect(page.locator("#roles-error")).to_contain_text("不能取消自己的平台管理员角色")
        await expect(page.get_by_label("审计员")).to_be_checked()
        assert (await api.get(f"/v1/users/{admin.username}")).json()["roles"] == ["platform_admin"]


async def test_the_signing_key_is_rotated_after_a_confirmation(
    page: Page, distributed: Stack, admin: Person, db: asyncpg.Connection
) -> None:
    _, creds = distributed
    await past_rotation_grace(db)
    async with api_as(creds.gateway, admin) as api:
        await log_in(page, admin.username, admin.password)
        await open_admin(page, "签名密钥")
        before = await page.locator("#current-kid").inner_text()
        assert before == next(k["kid"] for k in (await api.get("/v1/keys")).json()["items"] if k["state"] == "current")

        # A confirmation step first; cancelling changes nothing.
        await page.get_by_role("button", name="轮换签名密钥…").click()
        await expect(page.get_by_role("heading", name="轮换签名密钥")).to_be_visible()
        await page.get_by_role("button", name="取消").click()
        await expect(page.locator("#current-kid")).to_have_text(before)
        await page.get_by_role("button", name="轮换签名密钥…").click()
        await page.get_by_role("button", name="确认轮换").click()
        await expect(page.get_by_role("status")).to_have_text("签名密钥已轮换。")
        after = await page.locator("#current-kid").inner_text()
        assert after != before
        await shot(page, "admin-keys")

        async with api_as(creds.gateway, admin) as fresh:
            published = {k["kid"] for k in (await fresh.get("/.well-known/jwks.json")).json()["keys"]}
            token = fresh.headers["authorization"].split()[1]
        assert {before, after} <= published  # the old key stays published until its tokens expire
        # A token given now is signed by the new current key.
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=" * (-len(token.split(".")[0]) % 4)))
        assert header["kid"] == after

        # At once again: too soon (tokens of the previous key may be valid), said in Chinese; nothing rotated.
        await page.get_by_role("button", name="轮换签名密钥…").click()
        await page.get_by_role("button", name="确认轮换").click()
        await expect(page.locator("#form-error")).to_contain_text("轮换过于频繁")
        current = [k["kid"] for k in (await api.get("/v1/keys")).json()["items"] if k["state"] == "current"]
        assert current == [after]


async def test_a_person_who_is_not_a_platform_admin_is_refused_in_words(page: Page, person: Person) -> None:
    await log_in(page, person.username, person.password)
    await expect(page.get_by_role("heading", name="资源目录")).to_be_visible()
    await expect(page.get_by_role("navigation", name="主导航").get_by_role("link", name="平台管理")).to_have_count(0)

    answer = await page.goto("/console/admin")
    assert answer is not None and answer.status == 403
    await expect(page.get_by_role("heading", name="只有平台管理员可以执行此操作。")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("Not allowed")  # the API's own words follow
    await expect(page.get_by_role("navigation", name="平台管理")).to_have_count(0)
    answer = await page.goto("/console/admin/keys")
    assert answer is not None and answer.status == 403
