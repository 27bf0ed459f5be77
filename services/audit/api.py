"""Audit routes (auditors only)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response

from services.audit import service
from services.audit.models import DeadLetter
from services.audit.problems import AuditProblem
from services.audit.schemas import (
    AuditRecordList,
    AuditRecordPublic,
    ConsistencyProof,
    CosignatureCreate,
    CosignaturePublic,
    DeadLetterList,
    DeadLetterPublic,
    InclusionProof,
    VerifyReport,
)
from services.common.contracts.audit import storable
from services.common.errors import CommonProblem, problem_responses
from services.common.identifiers import InvalidIdentifier
from services.common.runtime import CurrentPrincipal, UnitOfWorkDep
from services.common.subjects import SubjectType, normalise_subject, subject_hashes

router = APIRouter(prefix="/v1/audit", tags=["audit"])

Code = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=1000)]
# Sequence numbers are BIGINT: a cursor past it is a bad request, not a database error.
Cursor = Annotated[int | None, Query(ge=1, le=2**63 - 1)]
AUDITOR_ONLY = (CommonProblem.UNAUTHORIZED, CommonProblem.FORBIDDEN, CommonProblem.VALIDATION)


def hashed_subject(request: Request, subject_type: SubjectType, value: str) -> list[str]:
    """The subject's hashes under every subject key kept (current and retired): records made
    before a rotation stay findable."""
    try:
        normalised = normalise_subject(subject_type, value)
    except InvalidIdentifier as err:
        raise AuditProblem.INVALID_SUBJECT.problem(str(err)) from err
    keys = request.app.state.runtime.settings.subject_hash_keys
    return list(subject_hashes(keys, subject_type, normalised).values())


@router.get(
    "/events",
    response_model=AuditRecordList,
    summary="Search the audit trail",
    responses=problem_responses(*AUDITOR_ONLY, AuditProblem.INVALID_SUBJECT),
)
async def events(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
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
    limit: Limit = 100,
    cursor: Cursor = None,
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
    rows, next_cursor = await service.search(uow.session, filters, limit, cursor)
    return AuditRecordList(
        items=[AuditRecordPublic.model_validate(r, from_attributes=True) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/subjects/accesses",
    response_model=AuditRecordList,
    summary="Who accessed data about this person",
    responses=problem_responses(*AUDITOR_ONLY, AuditProblem.INVALID_SUBJECT),
)
async def subject_accesses(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    request: Request,
    value: Annotated[str, Query(min_length=1, max_length=32)],
    type: SubjectType = "id_card",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AuditRecordList:
    service.require_auditor(principal)
    filters = {"subject_hash": hashed_subject(request, type, value)}
    rows, next_cursor = await service.search(uow.session, filters, limit, cursor)
    return AuditRecordList(
        items=[AuditRecordPublic.model_validate(r, from_attributes=True) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/verify",
    response_model=VerifyReport,
    summary="Check the hash chain, the Merkle tree, every signed checkpoint and its cosignatures",
    responses=problem_responses(CommonProblem.UNAUTHORIZED, CommonProblem.FORBIDDEN),
)
async def verify(principal: CurrentPrincipal, uow: UnitOfWorkDep, request: Request) -> VerifyReport:
    service.require_auditor(principal)
    witnesses = request.app.state.runtime.settings.witnesses
    return VerifyReport.model_validate(await service.verify(uow.session, witnesses=witnesses))


@router.get(
    "/checkpoint",
    response_class=PlainTextResponse,
    summary="The latest signed checkpoint (C2SP tlog-checkpoint signed note), with its cosignatures",
    description="Public, like a certificate transparency log's: it names a tree size and a root hash, "
    "no record. Check it with the key at `/v1/audit/checkpoint/key`; the witnesses' cosignature lines "
    "(C2SP tlog-cosignature) follow the log's own. `tree_size` names an earlier checkpoint.",
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(AuditProblem.NO_CHECKPOINT)},
)
async def checkpoint(
    uow: UnitOfWorkDep, tree_size: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
) -> PlainTextResponse:
    if tree_size is None:
        found = await service.latest_checkpoint(uow.session)
        if found is None:
            raise AuditProblem.NO_CHECKPOINT.problem("no checkpoint has been signed yet")
    else:
        found = await service.checkpoint_at(uow.session, tree_size)
        if found is None:
            raise AuditProblem.NO_CHECKPOINT.problem(f"no checkpoint was signed at tree size {tree_size}")
    return PlainTextResponse(await service.served_note(uow.session, found))


@router.post(
    "/checkpoint/cosignatures",
    response_model=CosignaturePublic,
    summary="A witness's cosignature of a checkpoint (C2SP tlog-cosignature)",
    description="Open to any caller: only a cosignature by a configured witness key "
    "(`TONGBAN_AUDIT_WITNESS_KEYS`) that verifies over the checkpoint is kept. "
    "`python -m services.audit witness cosign` posts here.",
    responses=problem_responses(
        CommonProblem.VALIDATION,
        AuditProblem.NO_CHECKPOINT,
        AuditProblem.UNKNOWN_WITNESS,
        AuditProblem.BAD_COSIGNATURE,
        AuditProblem.STALE_COSIGNATURE,
    ),
)
async def add_cosignature(body: CosignatureCreate, uow: UnitOfWorkDep, request: Request) -> CosignaturePublic:
    witnesses = request.app.state.runtime.settings.witnesses
    cp, kept = await service.add_cosignature(
        uow.session, witnesses, body.tree_size, body.cosignature, datetime.now(UTC)
    )
    return CosignaturePublic(
        tree_size=kept.tree_size,
        witness=kept.witness,
        signed_at=kept.signed_at,
        cosignature=kept.line,
        checkpoint=await service.served_note(uow.session, cp),
    )


@router.get(
    "/checkpoint/key",
    response_class=PlainTextResponse,
    summary="The checkpoints' verifier key (signed-note verifier key format)",
    responses={200: {"content": {"text/plain": {}}}},
)
async def checkpoint_key(uow: UnitOfWorkDep, request: Request) -> PlainTextResponse:
    key = await service.signing_key(uow.session, request.app.state.runtime.settings.log_origin)
    return PlainTextResponse(service.verifier_key_of(key) + "\n")


@router.post(
    "/checkpoints",
    response_class=PlainTextResponse,
    summary="Sign a checkpoint of the tree now (auditors)",
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(*AUDITOR_ONLY, AuditProblem.NO_CHECKPOINT)},
)
async def take_checkpoint(principal: CurrentPrincipal, uow: UnitOfWorkDep, request: Request) -> PlainTextResponse:
    service.require_auditor(principal)
    taken = await service.take_checkpoint(uow.session, request.app.state.runtime.settings.log_origin)
    if taken is None:
        raise AuditProblem.NO_CHECKPOINT.problem("the log is empty: there is nothing to sign")
    return PlainTextResponse(taken.note)


@router.get(
    "/export",
    response_class=Response,
    summary="Export leaves [start, end) with their signed checkpoint, to verify offline (NDJSON)",
    description="Check it with `python -m services.audit verify <file> --key <verifier key>`, "
    "without the database. Default: the latest checkpoint, from leaf 0 to its end.",
    responses={
        200: {"content": {"application/x-ndjson": {}}},
        **problem_responses(*AUDITOR_ONLY, AuditProblem.NO_CHECKPOINT, AuditProblem.EXPORT_RANGE),
    },
)
async def export(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    start: Annotated[int, Query(ge=0, le=2**63 - 1, description="first leaf")] = 0,
    end: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="leaf after the last")] = None,
    tree_size: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="the checkpoint's")] = None,
) -> Response:
    service.require_auditor(principal)
    lines = await service.export_range(uow.session, start, end, tree_size)
    return Response(b"\n".join(lines) + b"\n", media_type="application/x-ndjson")


# A tree size is a count of records, so at least 1 for any proof, and within BIGINT.
TreeSize = Annotated[int, Query(ge=1, le=2**63 - 1)]


@router.get(
    "/events/{event_id}/proof",
    response_model=InclusionProof,
    summary="Inclusion proof of a record (RFC 9162)",
    responses=problem_responses(
        *AUDITOR_ONLY, AuditProblem.UNKNOWN_EVENT, AuditProblem.NO_CHECKPOINT, AuditProblem.TREE_SIZE
    ),
)
async def proof(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    event_id: Annotated[str, Path(min_length=1, max_length=64)],
    tree_size: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="default: the latest checkpoint's")] = None,
) -> InclusionProof:
    service.require_auditor(principal)
    return InclusionProof.model_validate(await service.inclusion(uow.session, event_id, tree_size))


@router.get(
    "/consistency",
    response_model=ConsistencyProof,
    summary="Consistency proof between two tree sizes (RFC 9162)",
    responses=problem_responses(*AUDITOR_ONLY, AuditProblem.CONSISTENCY_RANGE, AuditProblem.TREE_SIZE),
)
async def consistency(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    from_: Annotated[int, Query(alias="from", ge=1, le=2**63 - 1)],
    to: TreeSize,
) -> ConsistencyProof:
    service.require_auditor(principal)
    return ConsistencyProof.model_validate(await service.consistency(uow.session, from_, to))


def dead_letter_public(letter: DeadLetter) -> DeadLetterPublic:
    key_text = None
    if letter.key is not None:
        try:
            key_text = letter.key.decode()
        except UnicodeDecodeError:
            key_text = None
    return DeadLetterPublic(
        id=letter.id,
        source_topic=letter.source_topic,
        source_partition=letter.source_partition,
        source_offset=letter.source_offset,
        consumer_group=letter.consumer_group,
        key=storable(key_text) if key_text is not None else None,
        key_base64=base64.b64encode(letter.key).decode() if letter.key is not None else None,
        value_base64=base64.b64encode(letter.value).decode(),
        headers=letter.headers,
        reason=letter.reason,
        received_at=letter.received_at,
        replayed_at=letter.replayed_at,
    )


@router.get(
    "/dead-letters",
    response_model=DeadLetterList,
    summary="Messages no consumer could handle (死信), newest first",
    description="Replay them once the cause is fixed: `python -m services.audit dead-letters replay`.",
    responses=problem_responses(*AUDITOR_ONLY),
)
async def dead_letters(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    limit: Limit = 100,
    cursor: Cursor = None,
    replayed: Annotated[bool | None, Query(description="true: only replayed; false: only not yet")] = None,
) -> DeadLetterList:
    service.require_auditor(principal)
    rows, next_cursor = await service.list_dead_letters(uow.session, limit, cursor, replayed)
    return DeadLetterList(items=[dead_letter_public(r) for r in rows], next_cursor=next_cursor)
