"""Exchange routes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from services.common.errors import CommonProblem, problem_responses
from services.common.http import OrjsonResponse
from services.common.runtime import CurrentPrincipal, UnitOfWorkDep
from services.exchange.evidence import Evidence, read_bundle
from services.exchange.problems import DENIALS, ExchangeProblem
from services.exchange.schemas import EvidenceBundlePublic, EvidenceCreate, QueryCreate, QueryResult
from services.exchange.service import Exchange, get_query, query_view

router = APIRouter(
    prefix="/v1/exchange",
    tags=["exchange"],
    responses=problem_responses(CommonProblem.UNAUTHORIZED, CommonProblem.VALIDATION),
)


@router.post(
    "/queries",
    response_model=QueryResult,
    summary="Query a provider for data about one subject",
    responses=problem_responses(
        *DENIALS,
        ExchangeProblem.IDEMPOTENCY_IN_PROGRESS,
        ExchangeProblem.IDEMPOTENCY_KEY_REUSED,
        ExchangeProblem.SUBJECT_NOT_FOUND,
        ExchangeProblem.PROVIDER_ERROR,
        ExchangeProblem.PROVIDER_TIMEOUT,
        ExchangeProblem.QUERY_INTERRUPTED,
        ExchangeProblem.ANSWER_PURGED,
        CommonProblem.DATABASE_UNAVAILABLE,
    ),
)
async def create_query(
    body: QueryCreate,
    principal: CurrentPrincipal,
    request: Request,
    # Printable ASCII only: the key is stored, and compared byte for byte on a retry.
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")] = None,
) -> Response:
    exchange: Exchange = request.app.state.exchange
    # The hot path answers with the body as built (no response_model round trip).
    return OrjsonResponse(await exchange.query(principal, body, idempotency_key))


@router.get(
    "/queries/{query_id}",
    summary="A query's outcome (only for the system that asked)",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def read_query(query_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> Response:
    return OrjsonResponse(query_view(await get_query(uow.session, principal, query_id)))


@router.post(
    "/evidence",
    response_model=EvidenceBundlePublic,
    summary="免提交: fetch every government-issued material of a service item about one subject",
    responses=problem_responses(
        ExchangeProblem.NOT_A_CONSUMER,
        ExchangeProblem.INVALID_SUBJECT,
        ExchangeProblem.UNKNOWN_SERVICE_ITEM,
        CommonProblem.DATABASE_UNAVAILABLE,
    ),
)
async def create_evidence_bundle(
    body: EvidenceCreate,
    principal: CurrentPrincipal,
    request: Request,
    # Each material's query gets "<key>:<material id>", so the key leaves room for the suffix.
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,
) -> EvidenceBundlePublic:
    evidence: Evidence = request.app.state.evidence
    return await evidence.bundle(principal, body, idempotency_key)


@router.get(
    "/evidence/{bundle_id}",
    response_model=EvidenceBundlePublic,
    summary="An evidence bundle (only for the system that asked)",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def read_evidence_bundle(
    bundle_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> EvidenceBundlePublic:
    return await read_bundle(uow.session, principal, bundle_id)
