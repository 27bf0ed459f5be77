"""导入任务 — an import as a job: posted, queued, run by a worker of the registry, and read back.

A 10,000-row file takes longer to import than a gateway waits for an answer, so the route only
reads the file (refusing a malformed, oversized or zip-bomb one at once, with a 4xx) and queues it
as an :class:`ImportJob` in PostgreSQL: ``202 Accepted`` with its ``Location``. A worker in every
registry process (:class:`ImportWorker`, owned by the lifespan) claims queued jobs with
``FOR UPDATE SKIP LOCKED``, imports the rows all or nothing in one unit of work, and records the
outcome — in that same unit when it succeeds, so the entries and ``succeeded`` commit together.
While it runs, a heartbeat (its own transaction) writes the progress (rows checked) and renews the
job's lease.

**Restart.** A job ``running`` whose lease ran out was left by a process that died: its unit of
work died with it, so nothing of the file was written, and the job is simply taken up again by the
next worker that looks. A file that kills its process every time must not loop for ever: after
:data:`MAX_ATTEMPTS` interrupted runs the job is marked ``failed``, saying so.

A job belongs to its department: another department's job is a 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import undefer

from services.common.contracts.audit import AuditAction, AuditContext, audit_message
from services.common.errors import NotFound, Problem
from services.common.outbox import lease_expiry, process_owner
from services.common.security import Principal, PrincipalType
from services.common.uow import UnitOfWork
from services.registry.catalogue.service import require_data_admin
from services.registry.events import COMPLETED, SERVICE, Topics
from services.registry.models import ImportJob, ImportKind, ImportStatus
from services.registry.transfer import imports
from services.registry.transfer.files import Row
from services.registry.transfer.service_items import import_service_items

log = logging.getLogger("tongban.registry.imports")

LEASE_S = 60.0  # a running job whose heartbeat stopped this long ago was left by a dead process
HEARTBEAT_S = 2.0  # progress written and lease renewed this often
POLL_S = 5.0  # a worker looks for jobs this often (and at once when its own process queues one)
MAX_ATTEMPTS = 3  # runs a job may start; past them an interrupted job fails
FAILED = "failed"  # the audit outcome of an import that wrote nothing


class Importer(Protocol):
    """An import of one kind of file: the codes it created, or a problem (and nothing written)."""

    def __call__(
        self,
        uow: UnitOfWork,
        principal: Principal,
        header: list[str],
        rows: list[Row],
        topics: Topics,
        progress: imports.Progress,
    ) -> Awaitable[list[str]]: ...


IMPORTERS: Mapping[ImportKind, Importer] = MappingProxyType(
    {ImportKind.RESOURCES: imports.resource_codes, ImportKind.SERVICE_ITEMS: import_service_items}
)


def principal_record(principal: Principal) -> dict[str, Any]:
    """Who posted the job, as stored with it: the import runs as them, with their roles."""
    return {
        "type": str(principal.type),
        "sub": principal.sub,
        "client_id": principal.client_id,
        "dept": principal.dept,
        "roles": sorted(principal.roles),
    }


def principal_of(job: ImportJob) -> Principal:
    record = job.principal
    roles = frozenset(record["roles"])
    return Principal(
        type=PrincipalType(record["type"]),
        sub=record["sub"],
        client_id=record["client_id"],
        dept=record["dept"],
        roles=roles,
        scope=roles,
        jti=f"import:{job.id}",
    )


def audit(topics: Topics, job: ImportJob, action: AuditAction, outcome: str, reason: str = "") -> Any:
    ctx = AuditContext(
        actor=job.principal["sub"],
        consumer_dept=job.dept,
        fields=(str(job.kind), f"job:{job.id}", f"rows:{job.rows_total}"),
    )
    return audit_message(topics.audit, SERVICE, action, ctx, outcome=outcome, reason=reason)


async def submit_import(
    uow: UnitOfWork,
    principal: Principal,
    kind: ImportKind,
    file_name: str,
    header: list[str],
    rows: list[Row],
    topics: Topics,
) -> ImportJob:
    """Queue the rows of a file read without error as an import of ``kind`` by ``principal``."""
    require_data_admin(principal)
    job = ImportJob(
        id=uuid.uuid4(),
        kind=kind,
        dept=principal.dept,
        principal=principal_record(principal),
        status=ImportStatus.QUEUED,
        file_name=file_name[:200],
        header=header,
        rows=[[number, cells] for number, cells in rows],
        rows_total=len(rows),
        rows_checked=0,
        error_count=0,
        errors=[],
        codes=[],
        attempts=0,
    )
    uow.session.add(job)
    await uow.session.flush()
    uow.emit(audit(topics, job, AuditAction.IMPORT_SUBMITTED, COMPLETED))
    return job


async def get_import(session: AsyncSession, principal: Principal, job_id: uuid.UUID) -> ImportJob:
    """An import job of the caller's department (another department's is a 404)."""
    job = await session.get(ImportJob, job_id)
    if job is None or job.dept != principal.dept:
        raise NotFound("import", str(job_id))
    require_data_admin(principal)
    return job


# --------------------------------------------------------------------------- the worker


class LostClaim(RuntimeError):
    """Another worker took the job over (this one's lease ran out): its outcome is not ours to write."""


@dataclass
class Progress:
    rows_checked: int = 0

    def __call__(self, rows_checked: int) -> None:
        self.rows_checked = rows_checked


Units = Callable[[], AbstractAsyncContextManager[UnitOfWork]]


class ImportWorker:
    """Runs the queued import jobs of every registry process, one at a time in this one.

    ``units`` opens a unit of work (the outbox's, in the app) for an import's writes and events;
    ``sessions`` serve the claim and the heartbeat, each its own short transaction."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        units: Units,
        topics: Topics,
        importers: Mapping[ImportKind, Importer] = IMPORTERS,
        *,
        lease_s: float = LEASE_S,
        heartbeat_s: float = HEARTBEAT_S,
        poll_s: float = POLL_S,
    ) -> None:
        self._sessions = sessions
        self._units = units
        self._topics = topics
        self._importers = importers
        self.lease_s = lease_s
        self._heartbeat_s = heartbeat_s
        self._poll_s = poll_s
        self.owner = process_owner()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="import-worker")

    async def stop(self) -> None:
        """Stop at once: a job being run stays ``running`` and is taken up again after its lease."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def nudge(self) -> None:
        """A job was queued here: look now rather than at the next poll."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                while await self.run_next():
                    pass
            except Exception:  # the database out of reach: try again at the next poll
                log.exception("import worker round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            self._wake.clear()

    async def claim(self) -> tuple[uuid.UUID, int] | None:
        """The oldest job waiting — queued, or running past its lease — now ours (its id and how
        many runs it has started), or None."""
        waiting = (
            select(ImportJob.id)
            .where(
                or_(
                    ImportJob.status == ImportStatus.QUEUED,
                    (ImportJob.status == ImportStatus.RUNNING) & (ImportJob.lease_until < func.now()),
                )
            )
            .order_by(ImportJob.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        claim = (
            update(ImportJob)
            .where(ImportJob.id == waiting)
            .values(
                status=ImportStatus.RUNNING,
                claimed_by=self.owner,
                lease_until=lease_expiry(self.lease_s),
                attempts=ImportJob.attempts + 1,
                started_at=func.coalesce(ImportJob.started_at, func.now()),
            )
            .returning(ImportJob.id, ImportJob.attempts)
        )
        async with self._sessions.begin() as session:
            row = (await session.execute(claim)).first()
        return None if row is None else (row[0], row[1])

    async def run_next(self) -> bool:
        """Claim and run one job; False when none was waiting."""
        claimed = await self.claim()
        if claimed is None:
            return False
        job_id, attempts = claimed
        if attempts > MAX_ATTEMPTS:
            reason = (
                f"导入过程已中断 {attempts - 1} 次（注册服务进程退出），不再重试；请检查文件后重新提交 "
                f"(the import was interrupted {attempts - 1} times by its process ending; not retried)."
            )
            await self.finish_failed(job_id, reason=reason, code="interrupted")
            return True
        await self.run(job_id)
        return True

    async def run(self, job_id: uuid.UUID) -> None:
        async with self._sessions() as session:
            job = await session.get(ImportJob, job_id, options=[undefer(ImportJob.rows)])
            assert job is not None
        rows: list[Row] = [(int(number), cells) for number, cells in job.rows or []]
        progress = Progress()
        heartbeat = asyncio.create_task(self._heartbeat(job_id, progress))
        log.info("import started", extra={"ctx_job": str(job_id), "ctx_rows": len(rows), "ctx_kind": job.kind})
        try:
            async with self._units() as uow:
                importer = self._importers[ImportKind(job.kind)]
                codes = await importer(uow, principal_of(job), job.header, rows, self._topics, progress)
                await stop(heartbeat)
                done = await uow.session.execute(
                    update(ImportJob)
                    .where(ImportJob.id == job_id, ImportJob.claimed_by == self.owner)
                    .values(
                        status=ImportStatus.SUCCEEDED,
                        rows=None,
                        rows_checked=len(rows),
                        codes=codes,
                        lease_until=None,
                        finished_at=datetime.now(UTC),
                    )
                )
                if done.rowcount != 1:  # type: ignore[attr-defined]
                    raise LostClaim(str(job_id))
                uow.emit(audit(self._topics, job, AuditAction.IMPORT_FINISHED, COMPLETED))
        except LostClaim:
            log.warning("import taken over by another worker", extra={"ctx_job": str(job_id)})
            return
        except Problem as problem:  # the file's rows (import-invalid), or its author's rights
            await stop(heartbeat)
            errors = problem.extra.get("errors", [])
            await self.finish_failed(
                job_id,
                reason=problem.detail or problem.title,
                code=problem.code,
                errors=errors,
                error_count=int(problem.extra.get("error_count", len(errors))),
                rows_checked=progress.rows_checked,
            )
            return
        except Exception as err:  # a fault of ours, not of the file: said so, and logged in full
            await stop(heartbeat)
            log.exception("import failed", extra={"ctx_job": str(job_id)})
            reason = f"导入时发生内部错误，未导入任何数据；请稍后重新提交 (internal error: {type(err).__name__})."
            await self.finish_failed(job_id, reason=reason, code="internal-error", rows_checked=progress.rows_checked)
            return
        finally:
            await stop(heartbeat)
        log.info("import succeeded", extra={"ctx_job": str(job_id), "ctx_rows": len(rows)})

    async def finish_failed(
        self,
        job_id: uuid.UUID,
        *,
        reason: str,
        code: str,
        errors: list[dict[str, Any]] | None = None,
        error_count: int = 0,
        rows_checked: int | None = None,
    ) -> None:
        """Mark the job failed (if it is still ours), with its report, and audit it."""
        async with self._units() as uow:
            values: dict[str, Any] = {
                "status": ImportStatus.FAILED,
                "rows": None,
                "reason": reason,
                "errors": errors or [],
                "error_count": error_count,
                "lease_until": None,
                "finished_at": datetime.now(UTC),
            }
            if rows_checked is not None:
                values["rows_checked"] = rows_checked
            job = await uow.session.scalar(
                update(ImportJob)
                .where(ImportJob.id == job_id, ImportJob.claimed_by == self.owner)
                .values(**values)
                .returning(ImportJob)
            )
            if job is not None:
                uow.emit(audit(self._topics, job, AuditAction.IMPORT_FINISHED, FAILED, reason=code))

    async def _heartbeat(self, job_id: uuid.UUID, progress: Progress) -> None:
        """Write the progress and renew the lease until stopped (a failed beat is retried)."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                async with self._sessions.begin() as session:
                    await session.execute(
                        update(ImportJob)
                        .where(
                            ImportJob.id == job_id,
                            ImportJob.claimed_by == self.owner,
                            ImportJob.status == ImportStatus.RUNNING,
                        )
                        .values(rows_checked=progress.rows_checked, lease_until=lease_expiry(self.lease_s))
                    )
            except Exception:
                log.warning("import heartbeat failed", extra={"ctx_job": str(job_id)}, exc_info=True)


async def stop(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
