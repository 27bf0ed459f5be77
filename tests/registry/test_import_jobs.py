"""导入任务 — an import as a job: queued when posted, run by the registry's worker all or nothing,
its progress and error report read back by its own department only, and a job left running by a
dead process taken up again (or failed, after too many interruptions).

The worker commits, as it does in the registry, so these tests use the tier's database directly
(not the rolled-back ``session``): each uses a department and a 分类码 of its own and deletes what it
wrote at its end. The route tests at the bottom run on the rolled-back session."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.common.errors import Problem
from services.common.pb import audit_pb2
from services.common.runtime import current_principal, unit_of_work
from services.common.security import Principal, Role
from services.common.uow import Staged, UnitOfWork
from services.registry.api.common import topics
from services.registry.app import create_app
from services.registry.config import RegistrySettings
from services.registry.models import (
    CategorySequence,
    ImportJob,
    ImportKind,
    ImportStatus,
    Material,
    Resource,
    ResourceVersion,
    ServiceItem,
)
from services.registry.transfer import files, jobs
from services.registry.transfer import service_items as item_sheet
from services.registry.transfer.columns import COLUMNS
from services.registry.transfer.files import Row
from tests.factories import credit_code, person
from tests.registry.calls import AUDIT_TOPIC, TOPICS
from tests.registry.test_transfer import zipped

LABELS = [c.label for c in COLUMNS]


def row(category: str, **cells: str) -> list[str]:
    values = {
        "信息资源名称": "居民户籍信息",
        "信息资源摘要": "公安机关登记的常住人口户籍信息。",
        "分类码": category,
        "资源分类": "基础",
        "信息项": "姓名:C:50:敏感:name\n公民身份号码:C:18:敏感:id_card",
        "共享类型": "有条件共享",
        "共享条件": "仅用于社会救助审核",
        "更新周期": "每日",
        **cells,
    }
    return [values.get(label, "") for label in LABELS]


@pytest.fixture
def category() -> str:
    return "101010" + f"{secrets.randbelow(10**6):06d}"


class Place:
    """A department's corner of the tier's database, committed for real and cleared afterwards,
    with a unit-of-work factory for the worker that keeps what each unit emitted."""

    def __init__(self, engine: AsyncEngine, category: str) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.dept = credit_code()
        self.category = category
        self.admin = person(self.dept, Role.DATA_ADMIN)
        self.staged: list[Staged] = []

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[UnitOfWork]:
        async with self.sessions.begin() as session:
            uow = UnitOfWork(session)
            try:
                yield uow
            finally:
                uow.open = False
        self.staged.extend(uow.staged)

    def worker(self, **settings: Any) -> jobs.ImportWorker:
        return jobs.ImportWorker(self.sessions, self.unit, TOPICS, heartbeat_s=0.05, **settings)

    async def submit(self, rows: list[list[str]], kind: ImportKind = ImportKind.RESOURCES) -> uuid.UUID:
        header, read = files.read_upload(files.write_xlsx(LABELS, rows), files.XLSX_MEDIA_TYPE)
        return await self.submit_rows(header, read, kind)

    async def submit_rows(self, header: list[str], rows: list[Row], kind: ImportKind) -> uuid.UUID:
        async with self.unit() as uow:
            job = await jobs.submit_import(uow, self.admin, kind, "户籍.xlsx", header, rows, TOPICS)
            return job.id

    async def job(self, job_id: uuid.UUID, who: Principal | None = None) -> ImportJob:
        async with self.sessions() as session:
            return await jobs.get_import(session, who or self.admin, job_id)

    async def written(self) -> tuple[int, int, int]:
        """Entries, versions and 顺序码 counters of this place: all 0 when nothing was written."""
        async with self.sessions() as session:
            codes = select(Resource.code).where(Resource.provider_dept == self.dept)
            return (
                int(await session.scalar(select(func.count()).select_from(codes.subquery())) or 0),
                int(await session.scalar(select(func.count()).where(ResourceVersion.code.in_(codes))) or 0),
                int(await session.scalar(select(func.count()).where(CategorySequence.category == self.category)) or 0),
            )

    def audits(self) -> list[tuple[str, str, str]]:
        events = [audit_pb2.AuditEvent.FromString(m.value) for _, m in self.staged if m.topic == AUDIT_TOPIC]
        return [(e.action, e.outcome, e.reason) for e in events if e.action.startswith("registry.import.")]

    async def clear(self) -> None:
        async with self.sessions.begin() as session:
            codes = select(Resource.code).where(Resource.provider_dept == self.dept)
            await session.execute(delete(ResourceVersion).where(ResourceVersion.code.in_(codes)))
            await session.execute(delete(Resource).where(Resource.provider_dept == self.dept))
            await session.execute(delete(CategorySequence).where(CategorySequence.category == self.category))
            items = select(ServiceItem.code).where(ServiceItem.dept == self.dept)
            await session.execute(delete(Material).where(Material.service_item_code.in_(items)))
            await session.execute(delete(ServiceItem).where(ServiceItem.dept == self.dept))
            await session.execute(delete(ImportJob).where(ImportJob.dept == self.dept))


@pytest.fixture
async def place(tier_engine: AsyncEngine, category: str) -> AsyncIterator[Place]:
    here = Place(tier_engine, category)
    try:
        yield here
    finally:
        await here.clear()


async def drain(worker: jobs.ImportWorker, place: Place) -> None:
    """Run the waiting jobs until this place has none left (other tests' jobs may run too)."""
    for _ in range(50):
        async with place.sessions() as session:
            waiting = await session.scalar(
                select(func.count()).where(
                    ImportJob.dept == place.dept, ImportJob.status.in_((ImportStatus.QUEUED, ImportStatus.RUNNING))
                )
            )
        if not waiting:
            return
        await worker.run_next()
    raise AssertionError("the jobs did not finish")


# --------------------------------------------------------------------------- the lifecycle


async def test_a_queued_import_is_run_by_the_worker_and_succeeds(place: Place) -> None:
    job_id = await place.submit([row(place.category), row(place.category, 信息资源名称="户籍迁移信息")])
    queued = await place.job(job_id)
    assert (queued.status, queued.rows_total, queued.rows_checked, queued.codes) == ("queued", 2, 0, [])
    assert await place.written() == (0, 0, 0)

    await drain(place.worker(), place)

    done = await place.job(job_id)
    assert (done.status, done.rows_checked, done.error_count, done.reason) == ("succeeded", 2, 0, None)
    assert done.codes == [f"{place.category}/000001", f"{place.category}/000002"]
    assert done.started_at is not None and done.finished_at is not None and done.attempts == 1
    assert await place.written() == (2, 2, 1)
    async with place.sessions() as session:
        assert (await session.scalar(select(ImportJob.rows).where(ImportJob.id == job_id))) is None  # not kept
        first = await session.get(Resource, done.codes[0])
        assert first is not None and (first.status, first.provider_dept) == ("draft", place.dept)
    assert place.audits() == [
        ("registry.import.submitted", "completed", ""),
        ("registry.import.finished", "completed", ""),
    ]


async def test_bad_rows_fail_the_job_with_a_row_by_row_report_and_nothing_is_written(place: Place) -> None:
    rows = [
        row(place.category),
        row(place.category, 共享类型="有条件共享", 共享条件=""),
        row(place.category, 资源分类="主题"),
        row(place.category, 更新周期="每小时"),
    ]
    job_id = await place.submit(rows)
    await drain(place.worker(), place)

    failed = await place.job(job_id)
    assert failed.status == "failed" and failed.codes == []
    assert failed.rows_checked == 4 and failed.error_count == 3
    assert [(e["row"], e["column"]) for e in failed.errors] == [(3, "共享条件"), (4, "资源分类"), (5, "更新周期")]
    assert failed.errors[0]["reason"] == "有条件共享须填写共享条件"
    assert all(e["reason_en"] for e in failed.errors)
    assert failed.reason is not None and "未导入" in failed.reason
    assert await place.written() == (0, 0, 0)  # not even the good first row, nor a 顺序码
    assert place.audits()[-1] == ("registry.import.finished", "failed", "import-invalid")


async def test_service_items_import_as_a_job_too(place: Place) -> None:
    code = f"JOB-{secrets.token_hex(4)}"
    rows = item_sheet.rows_of([(code, "最低生活保障审批", [{"材料名称": "申请书", "来源渠道": "申请人自备"}])])
    header, read = files.read_upload(files.write_xlsx(list(item_sheet.LABELS), rows), files.XLSX_MEDIA_TYPE)
    job_id = await place.submit_rows(header, read, ImportKind.SERVICE_ITEMS)
    await drain(place.worker(), place)
    done = await place.job(job_id)
    assert (done.kind, done.status, done.codes) == ("service_items", "succeeded", [code])
    async with place.sessions() as session:
        item = await session.get(ServiceItem, code)
        assert item is not None and item.dept == place.dept


async def test_the_progress_is_written_while_the_job_runs(place: Place) -> None:
    release = asyncio.Event()

    async def slow(
        uow: UnitOfWork, principal: Principal, header: list[str], rows: list[Row], topics: Any, progress: Any
    ) -> list[str]:
        progress(1)
        await release.wait()
        return []

    job_id = await place.submit([row(place.category), row(place.category)])
    worker = place.worker(importers={ImportKind.RESOURCES: slow})
    running = asyncio.create_task(drain(worker, place))
    try:
        for _ in range(200):
            seen = await place.job(job_id)
            if seen.rows_checked == 1:
                break
            await asyncio.sleep(0.05)
        assert (seen.status, seen.rows_checked, seen.rows_total) == ("running", 1, 2)
        assert seen.lease_until is not None and seen.lease_until > datetime.now(UTC)
    finally:
        release.set()
        await running
    assert (await place.job(job_id)).status == "succeeded"


# --------------------------------------------------------------------------- a restart


async def test_a_job_left_running_by_a_dead_process_is_taken_up_again_after_its_lease(place: Place) -> None:
    job_id = await place.submit([row(place.category)])
    dead = place.worker()
    claimed = await dead.claim()
    while claimed is not None and claimed[0] != job_id:  # another test's job: leave it to its test
        async with place.unit() as uow:
            await uow.session.execute(update(ImportJob).where(ImportJob.id == claimed[0]).values(status="queued"))
        claimed = await dead.claim()
    assert claimed == (job_id, 1)
    # The process died here. While its lease runs, nobody else takes the job…
    successor = place.worker()
    async with place.sessions() as session:
        assert await session.scalar(select(ImportJob.claimed_by).where(ImportJob.id == job_id)) == dead.owner
    taken = await successor.claim()
    assert taken is None or taken[0] != job_id
    # …once it has run out, the next worker takes it up and imports it, once.
    async with place.unit() as uow:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await uow.session.execute(update(ImportJob).where(ImportJob.id == job_id).values(lease_until=past))
    await drain(successor, place)
    done = await place.job(job_id)
    assert (done.status, done.attempts, done.claimed_by) == ("succeeded", 2, successor.owner)
    assert await place.written() == (1, 1, 1)


async def test_a_job_interrupted_too_often_fails_and_says_why(place: Place) -> None:
    job_id = await place.submit([row(place.category)])
    async with place.unit() as uow:
        await uow.session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id)
            .values(
                status="running",
                attempts=jobs.MAX_ATTEMPTS,
                claimed_by="a-dead-process",
                lease_until=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    await drain(place.worker(), place)
    failed = await place.job(job_id)
    assert failed.status == "failed" and failed.reason is not None
    assert f"中断 {jobs.MAX_ATTEMPTS} 次" in failed.reason and "interrupted" in failed.reason
    assert await place.written() == (0, 0, 0)
    assert place.audits()[-1] == ("registry.import.finished", "failed", "interrupted")


async def test_the_worker_runs_a_job_on_its_own_once_started(place: Place) -> None:
    job_id = await place.submit([row(place.category)])
    worker = place.worker(poll_s=0.1)
    await worker.start()
    try:
        for _ in range(300):
            if (await place.job(job_id)).status == "succeeded":
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    assert (await place.job(job_id)).status == "succeeded"


# --------------------------------------------------------------------------- whose job


async def test_another_department_cannot_see_a_job_and_only_a_data_administrator_can(place: Place) -> None:
    job_id = await place.submit([row(place.category)])
    with pytest.raises(Problem) as other:
        await place.job(job_id, person(credit_code(), Role.DATA_ADMIN))
    assert (other.value.status, other.value.code) == (404, "not-found")
    with pytest.raises(Problem) as unknown:
        await place.job(uuid.uuid4())
    # exactly as if it did not exist
    assert (unknown.value.status, unknown.value.title) == (other.value.status, other.value.title)
    with pytest.raises(Problem) as approver:
        await place.job(job_id, person(place.dept, Role.APPROVER))
    assert (approver.value.status, approver.value.code) == (403, "forbidden")


async def test_only_a_data_administrator_queues_an_import(place: Place) -> None:
    header, rows = files.read_upload(files.write_xlsx(LABELS, [row(place.category)]), files.XLSX_MEDIA_TYPE)
    with pytest.raises(Problem) as caught:
        async with place.unit() as uow:
            await jobs.submit_import(
                uow, person(place.dept, Role.APPROVER), ImportKind.RESOURCES, "x.xlsx", header, rows, TOPICS
            )
    assert caught.value.status == 403
    async with place.sessions() as session:
        assert await session.scalar(select(func.count()).where(ImportJob.dept == place.dept)) == 0


# --------------------------------------------------------------------------- the routes


@pytest.fixture
async def routes(session: AsyncSession) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, Principal]]]:
    """The registry's app on the test's rolled-back session; the caller is ``who["caller"]``."""
    app = create_app(RegistrySettings())
    dept = credit_code()
    who = {"caller": person(dept, Role.DATA_ADMIN)}
    app.state.imports = jobs.ImportWorker(async_sessionmaker(), lambda: place_unit(session), TOPICS)

    async def unit() -> AsyncIterator[UnitOfWork]:
        async with place_unit(session) as uow:
            yield uow

    app.dependency_overrides[current_principal] = lambda: who["caller"]
    app.dependency_overrides[unit_of_work] = unit
    app.dependency_overrides[topics] = lambda: TOPICS
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        yield client, who


@asynccontextmanager
async def place_unit(session: AsyncSession) -> AsyncIterator[UnitOfWork]:
    async with session.begin_nested():
        uow = UnitOfWork(session)
        try:
            yield uow
        finally:
            uow.open = False


async def jobs_of(session: AsyncSession, dept: str) -> int:
    return int(await session.scalar(select(func.count()).where(ImportJob.dept == dept)) or 0)


async def test_posting_a_file_answers_202_with_the_job_and_its_location(
    routes: tuple[httpx.AsyncClient, dict[str, Principal]], session: AsyncSession, category: str
) -> None:
    client, who = routes
    content = files.write_xlsx(LABELS, [row(category), row(category)])
    posted = await client.post(
        "/v1/registry/imports/resources",
        content=content,
        headers={
            "content-type": files.XLSX_MEDIA_TYPE,
            "content-disposition": f"attachment; filename*=UTF-8''{quote('户籍.xlsx')}",
        },
    )
    assert posted.status_code == 202, posted.text
    job = posted.json()
    assert posted.headers["location"] == f"/v1/registry/imports/{job['id']}"
    assert (job["status"], job["kind"], job["rows_total"], job["rows_checked"]) == ("queued", "resources", 2, 0)
    assert (job["file_name"], job["errors"], job["imported"]) == ("户籍.xlsx", [], 0)

    read = await client.get(posted.headers["location"])
    assert read.status_code == 200 and read.json()["id"] == job["id"]
    who["caller"] = person(credit_code(), Role.DATA_ADMIN)  # BOLA: another department
    hidden = await client.get(posted.headers["location"])
    assert hidden.status_code == 404 and hidden.json()["type"].endswith("/not-found")


@pytest.mark.parametrize(
    ("content", "media_type", "status", "code"),
    [
        (b"", files.XLSX_MEDIA_TYPE, 400, "malformed-file"),
        (b"PK\x03\x04 not really a zip", files.XLSX_MEDIA_TYPE, 400, "malformed-file"),
        (b"\0" * (files.MAX_FILE_BYTES + 1), files.XLSX_MEDIA_TYPE, 413, "body-too-large"),  # before it is read
        (None, files.XLSX_MEDIA_TYPE, 413, "file-too-large"),  # a zip bomb
        (b"a,b\n", "application/json", 415, "unsupported-file"),
    ],
    ids=["empty", "not-a-zip", "too-big", "zip-bomb", "not-a-sheet"],
)
async def test_a_file_that_cannot_be_read_is_refused_at_once_and_no_job_is_made(
    routes: tuple[httpx.AsyncClient, dict[str, Principal]],
    session: AsyncSession,
    content: bytes | None,
    media_type: str,
    status: int,
    code: str,
) -> None:
    client, who = routes
    if content is None:
        content = zipped({"[Content_Types].xml": b"<x/>", "xl/workbook.xml": bytes(200 << 20)})
    for path in ("/v1/registry/imports/resources", "/v1/registry/imports/service-items"):
        refused = await client.post(path, content=content, headers={"content-type": media_type})
        assert refused.status_code == status, refused.text
        assert refused.json()["type"].endswith(f"/{code}")
    assert await jobs_of(session, who["caller"].dept) == 0


async def test_the_service_items_template_is_served_with_its_dropdowns(
    routes: tuple[httpx.AsyncClient, dict[str, Principal]],
) -> None:
    client, _ = routes
    served = await client.get("/v1/registry/imports/service-items/template.xlsx")
    assert served.status_code == 200
    assert served.headers["content-type"] == files.XLSX_MEDIA_TYPE
    header, rows = files.read_upload(served.content, files.XLSX_MEDIA_TYPE)
    assert header[:2] == ["事项编码", "事项名称"] and rows == []
