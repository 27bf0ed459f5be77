"""Audit routes (auditors only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from services.audit import service
from services.audit.schemas import AuditRecordList, AuditRecordPublic, VerifyReport
from services.common.errors import Problem
from services.common.identifiers import InvalidIdentifier
from services.common.runtime import CurrentPrincipal, RuntimeDep
from services.common.subjects import SubjectType, normalise_subject, subject_hash

router = APIRouter(prefix="/v1/audit", tags=["audit"])

Code = Annotated[str | None, Query(max_length=64)]


def hashed_subject(request: Request, subject_type: SubjectType, value: str) -> str:
    try:
        normalised = normalise_subject(subject_type, value)
    except InvalidIdentifier as err:
        raise Problem(422, "invalid-subject", "Invalid subject identifier", str(err)) from err
    return subject_hash(request.app.state.runtime.settings.subject_hash_key, subject_type, normalised)


@router.get("/events", response_model=AuditRecordList, summary="Search the audit trail")
async def events(
    principal: CurrentPrincipal,
    rt: RuntimeDep,
    request: Request,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
    type: Code = None,
    consumer: Code = None,
    provider: Code = None,
    resource: Code = None,
    purpose: Code = None,
    outcome: Code = None,
    client_id: Code = None,
    subject: Annotated[
        str | None, Query(max_length=32, description="identifier in clear; matched by keyed hash")
    ] = None,
    subject_type: SubjectType = "id_card",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, Query(ge=1)] = None,
) -> AuditRecordList:
    service.require_auditor(principal)
    filters = {
        "from": from_,
        "to": to,
        "type": type,
        "consumer": consumer,
        "provider": provider,
        "resource": resource,
        "purpose": purpose,
        "outcome": outcome,
        "client_id": client_id,
        "subject_hash": hashed_subject(request, subject_type, subject) if subject else None,
    }
    async with rt.sessions() as session:
        rows, next_cursor = await service.search(session, filters, limit, cursor)
    return AuditRecordList(
        items=[AuditRecordPublic.model_validate(r, from_attributes=True) for r in rows], next_cursor=next_cursor
    )


@router.get("/subjects/accesses", response_model=AuditRecordList, summary="Who accessed data about this person")
async def subject_accesses(
    principal: CurrentPrincipal,
    rt: RuntimeDep,
    request: Request,
    value: Annotated[str, Query(min_length=1, max_length=32)],
    type: SubjectType = "id_card",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, Query(ge=1)] = None,
) -> AuditRecordList:
    service.require_auditor(principal)
    filters = {"subject_hash": hashed_subject(request, type, value)}
    async with rt.sessions() as session:
        rows, next_cursor = await service.search(session, filters, limit, cursor)
    return AuditRecordList(
        items=[AuditRecordPublic.model_validate(r, from_attributes=True) for r in rows], next_cursor=next_cursor
    )


@router.get("/verify", response_model=VerifyReport, summary="Check the hash chain")
async def verify(principal: CurrentPrincipal, rt: RuntimeDep) -> VerifyReport:
    service.require_auditor(principal)
    async with rt.sessions() as session:
        return VerifyReport.model_validate(await service.verify(session))
