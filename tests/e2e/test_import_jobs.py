"""A 10,000-row .xlsx imported through the gateway, end to end. Imported in the request, it took
longer than the gateway's upstream timeout (30 s) and failed; as a job, the upload is answered at
once with 202 and the job's Location, another department cannot see the job, and the registry's
worker imports every row, showing its progress on the way."""

from __future__ import annotations

import asyncio
import secrets
import time

import asyncpg
import httpx

from services.demo import POLICE, DemoCredentials
from services.registry.transfer import files
from services.registry.transfer.columns import COLUMNS
from tests.e2e.client import person_token
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]
ROWS = 10_000
GATEWAY_UPSTREAM_TIMEOUT_S = 30.0
FINISH_WITHIN_S = 600.0  # the machine is shared; the import itself takes about a minute under load


def sheet(category: str) -> bytes:
    cells = {
        "信息资源摘要": "公安机关登记的常住人口户籍信息。",
        "分类码": category,
        "资源分类": "基础",
        "信息项": "姓名:C:50:敏感:name\n公民身份号码:C:18:敏感:id_card\n出生日期:D:8",
        "共享类型": "有条件共享",
        "共享条件": "仅用于社会救助审核",
        "更新周期": "每日",
    }
    rows = [[{**cells, "信息资源名称": f"户籍信息第{n}批"}.get(c.label, "") for c in COLUMNS] for n in range(ROWS)]
    return files.write_xlsx([c.label for c in COLUMNS], rows)


async def test_a_10000_row_import_through_the_gateway_is_a_job_that_succeeds(
    distributed: Stack, db: asyncpg.Connection
) -> None:
    _, creds = distributed
    category = "101010" + f"{secrets.randbelow(10**6):06d}"  # a 细目 of its own: its rows are countable
    content = await asyncio.to_thread(sheet, category)
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=60.0) as client:
        police = await person_token(client, "gaj_admin")
        civil = await person_token(client, "mzj_admin")
        started = time.monotonic()
        posted = await client.post(
            "/v1/registry/imports/resources",
            content=content,
            headers={**police, "content-type": files.XLSX_MEDIA_TYPE},
        )
        answered_in = time.monotonic() - started
        assert posted.status_code == 202, posted.text
        assert answered_in < GATEWAY_UPSTREAM_TIMEOUT_S
        job = posted.json()
        assert (job["status"], job["rows_total"]) == ("queued", ROWS)
        location = posted.headers["location"]
        assert location == f"/v1/registry/imports/{job['id']}"

        hidden = await client.get(location, headers=civil)  # another department's data administrator
        assert hidden.status_code == 404, hidden.text

        seen: list[int] = []
        deadline = time.monotonic() + FINISH_WITHIN_S
        while (job := (await client.get(location, headers=police)).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"the import did not finish: {job}"
            seen.append(job["rows_checked"])
            await asyncio.sleep(1.0)
        assert seen == sorted(seen)  # progress only goes forward
        assert job["status"] == "succeeded", job
        assert (job["imported"], job["rows_checked"], job["error_count"]) == (ROWS, ROWS, 0)
        assert job["codes"][0] == f"{category}/000001" and job["codes"][-1] == f"{category}/{ROWS:06d}"

    stored = await db.fetchval(
        "SELECT count(*) FROM registry.resources WHERE category = $1 AND status = 'draft' AND provider_dept = $2",
        category,
        POLICE["code"],
    )
    assert stored == ROWS
