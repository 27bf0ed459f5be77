"""Exchange routes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request
from starlette.responses import Response

from services.common.errors import PROBLEM_MEDIA_TYPE
from services.common.http import OrjsonResponse
from services.common.runtime import CurrentPrincipal, RuntimeDep
from services.exchange.schemas import QueryCreate, QueryResult
from services.exchange.service import Exchange, get_query

router = APIRouter(prefix="/v1/exchange", tags=["exchange"])


@router.post(
    "/queries",
    response_model=QueryResult,
    summary="Query a provider for data about one subject",
    responses={
        403: {"description": "denied: no-grant, purpose-not-granted, item-not-granted, grant-expired, grant-revoked"},
        429: {"description": "quota-exceeded"},
        502: {"description": "provider-error"},
        504: {"description": "provider-timeout"},
    },
)
async def create_query(
    body: QueryCreate,
    principal: CurrentPrincipal,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    exchange: Exchange = request.app.state.exchange
    answer = await exchange.query(principal, body, idempotency_key)
    if answer.status_code >= 400:
        return OrjsonResponse(answer.body, status_code=answer.status_code, media_type=PROBLEM_MEDIA_TYPE)
    return OrjsonResponse(answer.body, status_code=answer.status_code)


@router.get("/queries/{query_id}", summary="A query's outcome (only for the system that asked)")
async def read_query(query_id: uuid.UUID, principal: CurrentPrincipal, rt: RuntimeDep) -> Response:
    async with rt.sessions() as session:
        query = await get_query(session, principal, query_id)
    body = query.response or {
        "id": str(query.id),
        "status": query.status,
        "resource": query.resource_code,
        "provider": query.provider_dept,
    }
    return OrjsonResponse({**body, "id": str(query.id), "status": query.status})
