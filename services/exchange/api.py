"""Exchange routes."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from services.common.errors import CommonProblem, NotFound, problem_responses
from services.common.http import OrjsonResponse
from services.common.runtime import CurrentPrincipal, UnitOfWorkDep
from services.exchange.problems import DENIALS, ExchangeProblem
from services.exchange.schemas import QueryCreate, QueryResult
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


@router.get(
    "/providers/{dept}/jwks",
    summary="A provider's answer-signing public keys (to verify an answer's SD-JWT)",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def provider_jwks(dept: str, principal: CurrentPrincipal, request: Request) -> Response:
    """The JWKS the exchange verifies ``dept``'s answers with, for consumers to verify them too."""
    if not re.fullmatch(r"[0-9A-HJ-NPQRTUWXY]{18}", dept):
        raise NotFound("provider", dept)
    exchange: Exchange = request.app.state.exchange
    jwks = await exchange.provider_keys.jwks(dept)
    if not jwks.get("keys"):
        raise NotFound("provider", dept)
    return OrjsonResponse({"keys": jwks["keys"]})
