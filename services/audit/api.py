"""Audit routes (auditors only)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from services.audit import anomalies, queries, service
from services.audit.config import AuditSettings
from services.audit.models import AlertRule, DeadLetter
from services.audit.problems import AuditProblem
from services.audit.schemas import (
    AggregateList,
    AlertList,
    AlertPublic,
    AuditRecordList,
    AuditRecordPublic,
    ConsistencyProof,
    CosignatureCreate,
    CosignaturePublic,
    DayCountPublic,
    DeadLetterList,
    DeadLetterPublic,
    InclusionProof,
    SubjectAccess,
    SubjectAccessList,
    SubjectAccessQuery,
    SubjectRef,
    VerifyReport,
)
from services.common.contracts.audit import AuditAction, AuditContext, audit_message, storable
from services.common.errors import CommonProblem, problem_responses
from services.common.runtime import CurrentPrincipal, UnitOfWorkDep
from services.common.security import Principal
from services.common.subjects import SubjectType

router = APIRouter(prefix="/v1/audit", tags=["audit"])

Code = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=1000)]
# Sequence numbers are BIGINT: a cursor past it is a bad request, not a database error.
Cursor = Annotated[int | None, Query(ge=1, le=2**63 - 1)]
AUDITOR_ONLY = (CommonProblem.UNAUTHORIZED, CommonProblem.FORBIDDEN, CommonProblem.VALIDATION)


# The filters an auditor's search takes (审计查询条件); any other query parameter is refused, so
# that a misspelt filter (``consumer_dept=``) is an error instead of a search of everything.
FILTERS = (
    "from",
    "to",
    "type",
    "consumer",
    "provider",
    "resource",
    "purpose",
    "outcome",
    "reason",
    "client_id",
    "bundle_id",
    "batch_id",
    "subject",
    "subject_type",
)
SUBJECT_DOC = (
    "identifier in clear, matched by its keyed hash; never stored or logged. Prefer POST "
    "/v1/audit/subjects/accesses for a person's report: a body stays out of URLs and proxy logs"
)


def refuse_unknown(request: Request, *allowed: str) -> None:
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        shown = ", ".join(name[:40] for name in unknown[:5])
        raise AuditProblem.UNKNOWN_FILTER.problem(f"unknown query parameter(s): {shown}; allowed: {', '.join(allowed)}")


def settings_of(request: Request) -> AuditSettings:
    settings: AuditSettings = request.app.state.runtime.settings
    return settings


def cursors_of(request: Request) -> queries.Cursors:
    return queries.Cursors(settings_of(request).subject_hash_key)


@dataclass(frozen=True, slots=True)
class FilterParams:
    """The filters as sent, before the caller's department and the subject's hash are applied."""

    from_: datetime | None
    to: datetime | None
    type: AuditAction | None
    consumer: str | None
    provider: str | None
    resource: str | None
    purpose: str | None
    outcome: str | None
    client_id: str | None
    subject: str | None
    subject_type: SubjectType
    bundle_id: str | None = None
    batch_id: str | None = None
    reason: str | None = None

    def described(self, **more: object) -> tuple[str, ...]:
        """The filter as given, for the look-up's own audit event (the subject only by its type)."""
        given = {
            "from": self.from_,
            "to": self.to,
            "type": self.type,
            "consumer": self.consumer,
            "provider": self.provider,
            "resource": self.resource,
            "purpose": self.purpose,
            "outcome": self.outcome,
            "reason": self.reason,
            "client_id": self.client_id,
            "bundle_id": self.bundle_id,
            "batch_id": self.batch_id,
            "subject_type": self.subject_type if self.subject else None,
        }
        return queries.described_filter(given | more)

    @property
    def subject_ref(self) -> tuple[SubjectType, str] | None:
        return (self.subject_type, self.subject) if self.subject else None

    def resolve(self, request: Request, principal: Principal) -> queries.RecordFilter:
        """The filter this caller may run: the time range checked, the subject hashed, a data
        administrator confined to their department."""
        dept = queries.visible_department(principal, self.consumer, self.provider)
        settings = settings_of(request)
        start, end = queries.time_range(self.from_, self.to, settings.zone)
        hashed = (
            queries.hashed_subject(settings.subject_hash_keys, self.subject_type, self.subject)
            if self.subject
            else None
        )
        return queries.RecordFilter(
            start=start,
            end=end,
            type=self.type,
            consumer=self.consumer,
            provider=self.provider,
            resource=self.resource,
            purpose=self.purpose,
            outcome=self.outcome,
            reason=self.reason,
            client_id=self.client_id,
            bundle_id=self.bundle_id,
            batch_id=self.batch_id,
            subject_hashes=hashed,
            dept=dept,
        )


def filter_params(
    from_: Annotated[datetime | None, Query(alias="from", description="occurred at or after (ISO 8601)")] = None,
    to: Annotated[datetime | None, Query(description="occurred before (ISO 8601; no offset: TONGBAN_TIMEZONE)")] = None,
    type: Annotated[AuditAction | None, Query(description="the action (AuditAction), e.g. exchange.query")] = None,
    consumer: Code = None,
    provider: Code = None,
    resource: Code = None,
    purpose: Code = None,
    outcome: Code = None,
    client_id: Code = None,
    subject: Annotated[str | None, Query(max_length=32, description=SUBJECT_DOC)] = None,
    subject_type: SubjectType = "id_card",
    bundle_id: Annotated[
        str | None, Query(max_length=40, description="every record of one evidence bundle (免提交材料包)")
    ] = None,
    batch_id: Annotated[str | None, Query(max_length=40, description="every record of one batch (批量查询)")] = None,
    reason: Annotated[
        str | None, Query(max_length=64, description="why a record was denied or failed (its problem code)")
    ] = None,
) -> FilterParams:
    return FilterParams(
        from_,
        to,
        type,
        consumer,
        provider,
        resource,
        purpose,
        outcome,
        client_id,
        subject,
        subject_type,
        bundle_id,
        batch_id,
        reason,
    )


Filters = Annotated[FilterParams, Depends(filter_params)]


async def record_own(uow: UnitOfWorkDep, request: Request, action: AuditAction, ctx: AuditContext) -> None:
    """Record what a caller did with the trail itself, in the trail: the event is staged in the
    audit service's outbox in the route's transaction, so the answer is sent only once its event
    is durably written (fail-closed), and it reaches the chain as any other service's event does
    — through ``audit.events``, appended in a batch — instead of holding the chain's lock in the
    request, which serialised every auditor's search with ingest."""
    settings = settings_of(request)
    uow.emit(audit_message(settings.topic("audit.events"), "audit", action, ctx, outcome="completed"))


async def record_lookup(
    uow: UnitOfWorkDep,
    request: Request,
    principal: Principal,
    action: AuditAction,
    described: tuple[str, ...],
    subject: tuple[SubjectType, str] | None,
) -> None:
    """审计查询留痕: a look-up of the records is itself recorded — who, with which filter, and
    the subject only as its keyed hash. Called after the look-up ran (and was allowed)."""
    settings = settings_of(request)
    ctx = queries.lookup_context(
        principal, settings.subject_hash_keys, settings.subject_hash_key_id, described, subject
    )
    await record_own(uow, request, action, ctx)


SEARCH_PROBLEMS = (
    *AUDITOR_ONLY,
    AuditProblem.INVALID_SUBJECT,
    AuditProblem.TIME_RANGE,
    AuditProblem.UNKNOWN_FILTER,
)


@router.get(
    "/events",
    response_model=AuditRecordList,
    summary="Search the audit trail (auditors: all; a data administrator: their department's)",
    responses=problem_responses(*SEARCH_PROBLEMS, AuditProblem.INVALID_CURSOR),
)
async def events(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    request: Request,
    filters: Filters,
    order: queries.Order = queries.Order.DESC,
    limit: Limit = 100,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> AuditRecordList:
    refuse_unknown(request, *FILTERS, "order", "limit", "cursor")
    f = filters.resolve(request, principal)
    rows, next_cursor = await queries.search(uow.session, f, order, limit, cursor, cursors_of(request))
    described = filters.described(order=order.value, limit=limit, page="next" if cursor else None)
    await record_lookup(uow, request, principal, AuditAction.RECORDS_SEARCHED, described, filters.subject_ref)
    return AuditRecordList(
        items=[AuditRecordPublic.model_validate(r, from_attributes=True) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/events/export",
    response_class=StreamingResponse,
    summary="Export the records a search finds, as CSV (UTF-8 with BOM, one header row), streamed",
    responses={200: {"content": {"text/csv": {}}}, **problem_responses(*SEARCH_PROBLEMS)},
)
async def export(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    request: Request,
    filters: Filters,
    order: queries.Order = queries.Order.DESC,
) -> StreamingResponse:
    refuse_unknown(request, *FILTERS, "order")
    f = filters.resolve(request, principal)  # every refusal happens here, before the first byte
    # Recorded (and committed, with the route's unit) before the first record is streamed.
    described = filters.described(format="csv", order=order.value)
    await record_lookup(uow, request, principal, AuditAction.RECORDS_EXPORTED, described, filters.subject_ref)
    return StreamingResponse(
        queries.export_csv(request.app.state.runtime.sessions, f, order),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit-records.csv"', "Cache-Control": "no-store"},
    )


@router.get(
    "/aggregates",
    response_model=AggregateList,
    summary="Records per day and per consumer, provider, resource, purpose or reason (按日统计)",
    description="Days are business days in TONGBAN_TIMEZONE; default range the last 30 days, at most 366.",
    responses=problem_responses(*SEARCH_PROBLEMS),
)
async def aggregates(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    request: Request,
    filters: Filters,
    by: queries.GroupBy,
) -> AggregateList:
    refuse_unknown(request, *FILTERS, "by")
    f = filters.resolve(request, principal)
    start, end = queries.aggregate_range(f.start, f.end, settings_of(request).zone)
    counts = await queries.aggregate(uow.session, replace(f, start=start, end=end), by, settings_of(request).zone)
    described = filters.described(by=by.value)
    await record_lookup(uow, request, principal, AuditAction.RECORDS_AGGREGATED, described, filters.subject_ref)
    return AggregateList(
        by=by.value, from_=start, to=end, items=[DayCountPublic.model_validate(c, from_attributes=True) for c in counts]
    )


SUBJECT_REPORT_PROBLEMS = problem_responses(
    CommonProblem.UNAUTHORIZED,
    CommonProblem.FORBIDDEN,
    CommonProblem.VALIDATION,
    AuditProblem.INVALID_SUBJECT,
    AuditProblem.TIME_RANGE,
    AuditProblem.INVALID_CURSOR,
    AuditProblem.UNKNOWN_FILTER,
)


@router.post(
    "/subjects/accesses",
    response_model=SubjectAccessList,
    summary="Who accessed data about this person (数据使用记录): the citizen portal and auditors only",
    description="The subject is sent in the body, never in the URL: URLs end up in proxy and browser "
    "logs, and the identifier must not. Only its keyed hash is looked up. Lists the exchange's queries "
    "that delivered data (completed or answered late) and the changes about the person that change "
    "feeds served (`action` `exchange.feed`), newest first.",
    responses=SUBJECT_REPORT_PROBLEMS,
)
async def subject_accesses(
    principal: CurrentPrincipal, uow: UnitOfWorkDep, request: Request, body: SubjectAccessQuery
) -> SubjectAccessList:
    queries.may_read_subject_report(principal)
    settings = settings_of(request)
    start, end = queries.time_range(body.from_, body.to, settings.zone)
    hashed = queries.hashed_subject(settings.subject_hash_keys, body.subject.type, body.subject.value)
    f = queries.subject_report_filter(hashed, start, end)
    rows, next_cursor = await queries.search(
        uow.session, f, queries.Order.DESC, body.limit, body.cursor, cursors_of(request)
    )
    described = queries.described_filter(
        {
            "from": start,
            "to": end,
            "subject_type": body.subject.type,
            "limit": body.limit,
            "page": "next" if body.cursor else None,
        }
    )
    subject = (body.subject.type, body.subject.value)
    await record_lookup(uow, request, principal, AuditAction.SUBJECT_REPORT_READ, described, subject)
    return SubjectAccessList(
        items=[SubjectAccess.model_validate(r, from_attributes=True) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/subjects/accesses",
    response_model=SubjectAccessList,
    summary="The same report with the subject in the query string (the normative form)",
    description="As the POST, for clients that follow the contract's `GET …?type=&value=`. Tongban's "
    "own logs record the route, never the query string, but proxies in between may: prefer the POST.",
    responses=SUBJECT_REPORT_PROBLEMS,
)
async def subject_accesses_by_query(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    request: Request,
    value: Annotated[str, Query(min_length=1, max_length=32, description=SUBJECT_DOC)],
    type: Annotated[SubjectType, Query()] = "id_card",
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: Annotated[datetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> SubjectAccessList:
    refuse_unknown(request, "type", "value", "from", "to", "limit", "cursor")
    query = SubjectAccessQuery.model_construct(
        subject=SubjectRef.model_construct(type=type, value=value), from_=from_, to=to, limit=limit, cursor=cursor
    )
    return await subject_accesses(principal, uow, request, query)


@router.get(
    "/verify",
    response_model=VerifyReport,
    summary="Check the hash chain, the Merkle tree, every signed checkpoint and its cosignatures",
    responses=problem_responses(CommonProblem.UNAUTHORIZED, CommonProblem.FORBIDDEN),
)
async def verify(principal: CurrentPrincipal, request: Request) -> VerifyReport:
    service.require_auditor(principal)
    runtime = request.app.state.runtime
    # A session of its own, not the request's unit of work (begun already): the verification
    # reads one snapshot, which only a transaction not yet begun can be made (service.verify).
    async with runtime.sessions() as session:
        report = await service.verify(session, witnesses=runtime.settings.witnesses)
    return VerifyReport.model_validate(report)


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
async def checkpoint_key(request: Request) -> PlainTextResponse:
    signer: service.CheckpointSigner = request.app.state.checkpoint_signer
    return PlainTextResponse(signer.verifier_key + "\n")


@router.post(
    "/checkpoints",
    response_class=PlainTextResponse,
    summary="Sign a checkpoint of the tree now (auditors)",
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(*AUDITOR_ONLY, AuditProblem.NO_CHECKPOINT)},
)
async def take_checkpoint(principal: CurrentPrincipal, uow: UnitOfWorkDep, request: Request) -> PlainTextResponse:
    service.require_auditor(principal)
    settings = request.app.state.runtime.settings
    taken = await service.take_checkpoint(uow.session, settings.log_origin, request.app.state.checkpoint_signer)
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
async def export_range(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    request: Request,
    start: Annotated[int, Query(ge=0, le=2**63 - 1, description="first leaf")] = 0,
    end: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="leaf after the last")] = None,
    tree_size: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="the checkpoint's")] = None,
) -> Response:
    service.require_auditor(principal)
    lines = await service.export_range(uow.session, start, end, tree_size)
    described = queries.described_filter({"format": "signed", "start": start, "end": end, "tree_size": tree_size})
    await record_lookup(uow, request, principal, AuditAction.RECORDS_EXPORTED, described, None)
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
        value_base64=base64.b64encode(letter.value).decode() if letter.value is not None else None,
        withheld=letter.withheld,
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


# ----------------------------------------------------------------------------- alerts


@router.get(
    "/alerts",
    response_model=AlertList,
    summary="Anomaly alerts (异常告警), newest first",
    responses=problem_responses(*AUDITOR_ONLY, AuditProblem.UNKNOWN_FILTER),
)
async def alerts(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    request: Request,
    limit: Limit = 100,
    cursor: Cursor = None,
    acknowledged: Annotated[bool | None, Query(description="true: only acknowledged; false: only open")] = None,
    rule: AlertRule | None = None,
) -> AlertList:
    service.require_auditor(principal)
    refuse_unknown(request, "limit", "cursor", "acknowledged", "rule")
    rows, next_cursor = await anomalies.list_alerts(uow.session, limit, cursor, acknowledged, rule)
    return AlertList(items=[AlertPublic.model_validate(a, from_attributes=True) for a in rows], next_cursor=next_cursor)


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=AlertPublic,
    summary="Acknowledge an alert (确认告警): an auditor has looked at it",
    responses=problem_responses(*AUDITOR_ONLY, AuditProblem.UNKNOWN_ALERT, AuditProblem.ALERT_ACKNOWLEDGED),
)
async def acknowledge_alert(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    request: Request,
    alert_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
) -> AlertPublic:
    service.require_auditor(principal)
    alert = await anomalies.acknowledge(uow.session, alert_id, principal.sub)
    ctx = AuditContext(actor=principal.sub, consumer_dept=principal.dept)
    await record_own(uow, request, AuditAction.ALERT_ACKNOWLEDGED, ctx)
    await request.app.state.alert_metrics.refresh(uow.session)
    return AlertPublic.model_validate(alert, from_attributes=True)
